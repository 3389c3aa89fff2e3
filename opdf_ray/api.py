"""The Python API: what ``opdf-ray search`` and ``opdf-ray run`` do, with the same checks and the same errors.

    import opdf_ray

    outcome = opdf_ray.search("sst2", methods=["kd", "theseus"], num_samples=4, max_train_samples=1000,
                              max_epochs=2, max_length=64, settings={"eval_steps": 16})
    print(outcome.best)                                  # best completed row per (task, method, OPDF on/off)
    results = opdf_ray.distill("rte", method="kd", opdf_cores=5, max_train_samples=256, epochs=1)

Bad input raises ``ValueError`` or ``FileNotFoundError`` with the message the command line prints, before Ray
starts or any model trains.
"""

from __future__ import annotations

from opdf_ray.hpo.execute import SearchOutcome


def search(task: str | list[str], *, settings: dict | None = None, **options) -> SearchOutcome:
    """Search ``task`` (a GLUE task, a list of tasks, ``"all"``, or your own data: a file, a folder or a hub
    dataset id) as ``opdf-ray search`` does; returns a
    ``SearchOutcome``: ``leaderboard`` (its folder), ``rows`` (every row, a DataFrame), ``best`` (the best row per
    task, method and OPDF on/off) and ``failed`` (the tasks whose search stopped early).

    ``options``, the search's flags as keyword arguments (``opdf-ray search --help`` has them all, in sections):

    - what: ``space`` (a search-space YAML; default ``search_spaces/default.yaml``), ``methods`` (a list kept from
      the space), ``preset`` ("minilm", "bert-base", "tiny"), ``teacher``, ``data_dir``, ``seed`` (42),
      ``max_train_samples``, ``max_epochs``, ``max_length``; your own data's ``text_columns`` ("sentence" or
      "question,passage"), ``label_column`` ("label"), ``problem_type`` (detected), ``label_names`` (a JSON list);
    - the search: ``num_samples`` (8 trials a task), ``sampler`` ("tpe" with ASHA, or "grid"),
      ``no_early_stopping``, ``no_cover_cells``, ``tpe_startup_trials``, ``grace_epochs`` (1), ``name`` ("opdf"),
      ``resume``;
    - execution: ``address`` (a Ray cluster; default: a local Ray), ``max_concurrent``, ``workers_per_trial`` (1),
      ``cpus_per_worker``, ``gpus_per_worker``, ``max_failures`` (2), ``cache_dir``;
    - results: ``storage`` ("outputs/search"), ``leaderboard``, ``optuna_storage`` (default: a journal under
      ``storage``), ``mlflow`` (a URI, or "" for one under ``storage``), ``mlflow_students``, ``wandb`` (a project),
      ``verbose`` (0: a line per trial event; 1, 2: Ray's and Tune's detail).

    ``settings`` are run settings every trial gets (``{"eval_steps": 16}``: what ``--set`` and ``--config`` give;
    ``opdf-ray run --help`` lists them). Bad input raises ``ValueError`` before Ray starts.
    """
    from opdf_ray.cli import build_parser
    from opdf_ray.commands import split_list
    from opdf_ray.hpo.checks import check_trial_settings
    from opdf_ray.hpo.execute import execute
    from opdf_ray.commands import as_flags, parse_or_raise
    from opdf_ray.config import typed_settings

    parser = build_parser()
    actions = {a.dest: a for a in parser._actions if a.option_strings}
    allowed = sorted(k for k in actions if k not in ("task", "config", "set", "help", "print_config"))
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ValueError(f"search() got unknown option(s) {unknown}; allowed: {', '.join(allowed)}, settings")
    if not isinstance(task, str) and not (isinstance(task, list) and all(isinstance(t, str) for t in task)):
        raise ValueError(f"search(task={task!r}): expected a task name, a list of them, or 'all'")
    for key, value in options.items():        # Python values of the flag's type, not text the shell would give
        kind = actions[key].type
        values = value if isinstance(value, list) else [value]
        if kind in (int, float) and any(isinstance(v, (str, bool)) or not isinstance(v, (int, float)) for v in values
                                        if v is not None):
            raise ValueError(f"search({key}={value!r}): expected {'an int' if kind is int else 'a number'}")
    # the options as the flags they are: argparse checks their types and choices exactly as on the command line
    flags = [token for key, value in options.items() if value is not None
             for token in as_flags(actions[key], value, f"search({key}=…)")]
    args = parse_or_raise(parser, ["--task", task if isinstance(task, str) else ",".join(task), *flags], "search()")
    args.methods = split_list(args.methods)
    args.config_settings = typed_settings(settings or {}, "settings")
    check_trial_settings(args.config_settings, "settings")
    return execute(args)


def distill(task: str, **settings) -> dict:
    """Train one configuration in this process as ``opdf-ray run`` does (``settings``: run settings, e.g.
    ``method="kd", opdf_cores=5``; ``task``: a GLUE name, or your own data with ``text_columns`` and
    ``label_column``); returns its results (selection and dev metrics, where the student was saved)."""
    from opdf_ray.config import RunSpec, typed_settings
    from opdf_ray.engine import run
    from opdf_ray.userdata import resolve

    return run(RunSpec.from_dict(resolve({"task": task} | typed_settings(settings, "distill()"))))
