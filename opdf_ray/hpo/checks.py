"""Pre-flight checks of a search: everything that can be checked before Ray starts (tasks, space, settings, data,
the teacher, storage, a resumed search's signature) and, once the cluster is known, what it must offer. Each raises
``ValueError``/``FileNotFoundError`` with one line saying what to fix."""

from __future__ import annotations

import dataclasses
import logging
import math
from pathlib import Path

from opdf_ray.commands import split_list
from opdf_ray.config import SET_BY_THE_SEARCH, SET_BY_THE_SEARCH_HELP, RunSpec, parse_setting
from opdf_ray.tasks import DATASET_SETTINGS, TASKS, task_of
from opdf_ray.hpo.cluster import check_address
from opdf_ray.hpo.sizing import overrides, search_settings
from opdf_ray.storage import join

log = logging.getLogger("opdf_ray")


def _tasks(value: str) -> list[str]:
    """``--task``'s entries: GLUE names and datasets (a file, folder or hub id: ``userdata.resolve`` reads them)."""
    if value == "all":
        return list(TASKS)
    tasks = [value] if Path(value).expanduser().exists() else [t.strip() for t in value.split(",") if t.strip()]
    if not tasks:
        raise ValueError(f"--task {value!r}: no task; allowed: {', '.join(TASKS)}, 'all', or your own data (a file, "
                         f"a folder or a hub dataset id)")
    twice = sorted({t for t in tasks if tasks.count(t) > 1})
    if twice:
        raise ValueError(f"--task {value!r} names {', '.join(twice)} more than once; each task is searched once")
    return tasks


def resolve_tasks(args, space) -> dict[str, dict]:
    """Each task of the search by name → its task settings: a GLUE name's own, a dataset's read from its data
    with ``--text-columns``/``--label-column``/``--problem-type``/``--label-names``."""
    from opdf_ray.userdata import resolve

    wanted = _tasks(args.task)
    given = {name: getattr(args, name) for name in DATASET_SETTINGS if getattr(args, name, None) is not None}
    if given and all(t in TASKS for t in wanted):
        raise ValueError(f"{', '.join('--' + n.replace('_', '-') for n in given)} describe your own data, but "
                         f"--task {args.task!r} is GLUE's only (its tasks have their own columns); leave them out")
    out = {}
    for entry in wanted:
        values = {"task": entry} if entry in TASKS else resolve({"task": entry} | given)
        if values["task"] in out:
            raise ValueError(f"--task {args.task!r}: two datasets are both named {values['task']!r} (a task's name is "
                             f"its file's or folder's); rename one")
        out[values["task"]] = values
    for key in space.epochs:
        if key not in TASKS and key != "default" and key not in out:
            raise ValueError(f"the search space's epochs.{key} names no task of this search ({', '.join(out)}) "
                             f"and no GLUE task; a dataset's name is its file's or folder's")
    return out


def check_trial_settings(settings: dict, where: str) -> None:
    """Settings a search hands every trial must not be ones it sets per task or per trial itself."""
    searched = sorted(k for k in settings if k in SET_BY_THE_SEARCH)
    if searched:
        raise ValueError(f"{where} sets {searched}: {SET_BY_THE_SEARCH_HELP}")


def absolute_local_paths(values: dict) -> dict:
    """The run settings that name local paths, made absolute: Ray tasks and trials resolve a relative path from
    their own working directories, not the user's (a relative ``--cache-dir`` landed in Ray's). A teacher or
    student that is not a local folder is a hub id and stays as given."""
    out = dict(values)
    for key in ("cache_dir", "data_dir", "teacher", "student"):
        value = out.get(key)
        if value and (key in ("cache_dir", "data_dir") or Path(value).expanduser().exists()):
            out[key] = join(value)
    return out


def validate(args) -> tuple[list[str], dict[str, RunSpec], object]:
    """Everything that can be checked without Ray: tasks, space, base specs, data, the teacher, where results go.
    Raises ``ValueError`` or ``FileNotFoundError`` with a one-line message."""
    from opdf_ray.data import default_cache_dir, load_glue
    from opdf_ray.search_space import default_space_path, load_space

    space = load_space(args.space or default_space_path())
    task_settings = resolve_tasks(args, space)
    tasks = list(task_settings)
    if args.methods:
        space = space.restrict_methods(split_list(args.methods))
    given = [*args.config_settings, *(key for key, _ in map(parse_setting, args.set))] + (
        ["max_train_samples"] if args.max_train_samples is not None else [])
    clash = sorted(k for k in given if k in space.fixed or any(p.name == k for p in space.params))
    if clash:
        raise ValueError(f"{clash} set for every trial (--config, --set or a budget flag) and by the search space "
                         f"({space.source}); keep each setting in one place")
    resolve_num_samples(args, space)
    for name in ("num_samples", "workers_per_trial", "grace_epochs", "tpe_startup_trials"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be ≥ 1, got {getattr(args, name)}")
    from opdf_ray.engine import check_spec_against_models
    from opdf_ray.storage import check_folder
    from opdf_ray.teacher import teacher_source
    from opdf_ray.hpo.tuner import (check_teacher_storage, experiment_name, starts_from_finetuned_teacher, teacher_variants,
                               trial_epochs)

    bases, as_trials = {}, {}
    for task in tasks:
        values = task_settings[task] | {"preset": args.preset, "teacher": args.teacher, "data_dir": args.data_dir,
                  "cache_dir": args.cache_dir, "seed": args.seed, "max_train_samples": args.max_train_samples}
        bases[task] = RunSpec.from_dict(absolute_local_paths(values | overrides(args)))
        spec = as_trials[task] = RunSpec.from_dict(bases[task].to_dict() | space.fixed | overrides(args))
        load_glue(task_of(spec), spec.data_dir, spec.selection_fraction, spec.selection_cap, spec.seed,
                  spec.max_train_samples)            # missing data fails here; logs the trials' split sizes
    for task in tasks:                   # a value that cannot act there: an error alone, a warning among tasks
        inert = space.inert_given(as_trials[task].to_dict(), tuple(given))
        if inert:
            message = (f"{', '.join(inert)} set by the search space ({space.source}) or for every trial cannot act "
                       f"on {task} for its method(s) {', '.join(space.methods())} (config.inert_settings)")
            if len(tasks) == 1:
                raise ValueError(f"{message}; remove it")
            log.warning("%s: not used there, stored empty", message)
    base = as_trials[tasks[0]]
    cache_dir = base.cache_dir or default_cache_dir()
    check_folder("cache_dir", cache_dir)
    source = teacher_source(base.preset, base.teacher, cache_dir)
    drawn_lengths = space.values_of("max_length") if args.max_length is None else ()   # --max-length wins
    for task in tasks:                   # a length a task's examples do not fit depends on its number of texts
        check_spec_against_models(as_trials[task], source, drawn_lengths)
    check_teacher_storage(base, space, args.storage)
    if starts_from_finetuned_teacher(base, space):
        teacher_variants(space)          # a teacher per distinct seed or data setting: their values must be a list
    settings = search_settings(args, cpus=1.0, concurrent=1, gpus=args.gpus_per_worker or 0.0,
                               max_epochs=args.max_epochs)
    longest = max(trial_epochs(space, task, settings) for task in tasks)
    if args.grace_epochs is not None and settings.early_stopping and args.grace_epochs > longest:
        raise ValueError(f"--grace-epochs {args.grace_epochs} is beyond the trials' {longest} epoch(s): ASHA would "
                         f"stop no trial early; lower it, or pass --no-early-stopping")
    from opdf_ray.leaderboard import check_writable

    check_storage(args.storage, [experiment_name(settings, task) for task in tasks], args.resume)
    if args.resume:
        for task in tasks:
            check_resume_signature(args.storage, experiment_name(settings, task),
                                   search_signature(args, space, bases[task]))
    check_writable(settings.leaderboard)
    check_address(args.address)
    return tasks, bases, space


def check_storage(storage: str, experiments: list[str], resume: bool) -> None:
    """Before Ray and the teacher: ``--storage`` must be a folder (or not exist yet), and ``--resume`` needs at least
    one of the experiments it resumes (none there is a typo in --name or --storage, not a fresh start)."""
    import pyarrow.fs as pafs

    from opdf_ray.storage import filesystem

    fs, base = filesystem(storage)
    kind = fs.get_file_info(base).type
    if kind == pafs.FileType.File:
        raise ValueError(f"--storage {storage} is a file; pass a folder (or a URI) for the experiments")
    if resume:
        missing = [e for e in experiments if fs.get_file_info(f"{base}/{e}").type != pafs.FileType.Directory]
        if missing and len(missing) < len(experiments):      # --task a,b stopped before b began: b starts fresh
            log.info("--resume: no earlier search %s under %s; it starts fresh", ", ".join(missing), storage)
        elif missing:
            there = sorted(i.base_name for i in fs.get_file_info(pafs.FileSelector(base, allow_not_found=True))
                           if i.type == pafs.FileType.Directory and i.base_name not in ("leaderboard", "teachers"))
            raise ValueError(f"--resume: no search {', '.join(missing)} under {storage} to resume (searches there: "
                             f"{', '.join(there) or 'none'}); check --name and --storage, or drop --resume")


SIGNATURE = "opdf-search.json"      # in each experiment folder: what the search was started with


def search_signature(args, space, base: RunSpec) -> dict:
    """What a search is, as given: its space, its task's base settings, the settings every trial gets and the
    search's own knobs. ``--resume`` restores the pickled search, which ignores any of these given anew; a resume
    that changes one is refused instead (``check_resume_signature``)."""
    import json

    knobs = ("sampler", "num_samples", "no_early_stopping", "no_cover_cells", "tpe_startup_trials", "grace_epochs",
             "max_epochs", "methods")
    signature = {"space": {"fixed": space.fixed, "epochs": space.epochs,
                           "params": [dataclasses.asdict(p) for p in space.params]},
                 "base": {k: v for k, v in base.to_dict().items() if k not in ("cache_dir", "output_dir")},
                 "every_trial": overrides(args), "search": {k: getattr(args, k) for k in knobs}}
    return json.loads(json.dumps(signature, default=str))       # the form it has once written and read back


def write_signature(storage: str, experiment: str, signature: dict, resumed: bool) -> None:
    """Record a new search's signature (a resumed one keeps the one it was started with)."""
    import json

    import pyarrow.fs as pafs

    from opdf_ray.storage import filesystem

    fs, base = filesystem(storage)
    if resumed and fs.get_file_info(f"{base}/{experiment}").type == pafs.FileType.Directory:
        return
    fs.create_dir(f"{base}/{experiment}", recursive=True)
    with fs.open_output_stream(f"{base}/{experiment}/{SIGNATURE}") as out:
        out.write(json.dumps(signature, indent=1, sort_keys=True).encode())


def check_resume_signature(storage: str, experiment: str, signature: dict) -> None:
    """``--resume`` with a space or settings other than the search's own: one line naming what changed. (A search
    started before opdf-ray wrote signatures resumes unchecked.)"""
    import json

    import pyarrow.fs as pafs

    from opdf_ray.storage import filesystem

    fs, base = filesystem(storage)
    path = f"{base}/{experiment}/{SIGNATURE}"
    if fs.get_file_info(path).type != pafs.FileType.File:
        return
    with fs.open_input_stream(path) as f:
        before = json.loads(f.read())
    changed = sorted(f"{part}.{key}" for part in signature
                     for key in set(before.get(part, {})) | set(signature[part])
                     if before.get(part, {}).get(key) != signature[part].get(key))
    if changed:
        raise ValueError(f"--resume: {experiment} was started with other settings ({', '.join(changed)} differ); "
                         f"a resumed search keeps its own, so resume it as it was started, or give the new search "
                         f"its own --name")


def resolve_num_samples(args, space) -> None:
    """``--num-samples`` when not given: 8 trials, or the grid's size with ``--sampler grid`` (never more)."""
    if args.sampler != "grid":
        args.num_samples = 8 if args.num_samples is None else args.num_samples
        return
    from opdf_ray.hpo.tuner import grid_of

    size = math.prod(len(choices) for choices in grid_of(space).values())
    if args.num_samples is not None and args.num_samples > size:
        raise ValueError(f"--num-samples {args.num_samples} exceeds the {size} combinations of the grid; allowed: "
                         f"1..{size}")
    args.num_samples = size if args.num_samples is None else args.num_samples


def check_shared(args, multi_node: bool, mounts: str | None = None) -> None:
    """On a multi-node cluster every node reads and writes the search's storage, teacher and data: refuse a path
    on one node's own disk with the fix, instead of trials that cannot find their checkpoints or teacher."""
    from opdf_ray.storage import filesystem_type, is_shared

    if not multi_node:
        return
    paths = {"--storage": args.storage, "--leaderboard": args.leaderboard, "--data-dir": args.data_dir}
    for flag, path in paths.items():
        if path and not is_shared(path, mounts):
            raise ValueError(f"{flag} {path} is on a node-local disk ({filesystem_type(path, mounts)}) but this Ray "
                             f"cluster has several nodes; use a shared mount every node sees (EFS/NFS, e.g. "
                             f"/mnt/efs/opdf) or a URI (s3://bucket/opdf)")


def check_fits(settings, total: dict, local: bool) -> None:
    """A trial that can never be scheduled makes Ray Train wait forever: refuse it now. On a local Ray (no
    autoscaler) the cluster is what it is; on a cluster, an autoscaler may still add nodes, so only warn."""
    from opdf_ray.hpo.tuner import DRIVER_CPU

    need_cpu = settings.workers_per_trial * settings.cpus_per_worker + DRIVER_CPU
    need_gpu = settings.workers_per_trial * settings.gpus_per_worker
    problems = []
    if need_cpu > total.get("CPU", 0) + 1e-9:
        problems.append(f"a trial needs {settings.workers_per_trial} worker(s) × {settings.cpus_per_worker} CPU + "
                        f"{DRIVER_CPU} for its driver = {need_cpu:g} CPUs, the cluster has {total.get('CPU', 0):g}; "
                        f"use fewer --workers-per-trial or a smaller --cpus-per-worker")
    if need_gpu > total.get("GPU", 0) + 1e-9:
        problems.append(f"a trial needs {need_gpu:g} GPU(s) ({settings.workers_per_trial} worker(s) × "
                        f"{settings.gpus_per_worker}), the cluster has {total.get('GPU', 0):g}; use "
                        f"--gpus-per-worker 0 (CPU) or a cluster with GPUs")
    if problems and local:
        raise ValueError("; ".join(problems))
    for problem in problems:
        log.warning("%s (waiting for the autoscaler to add nodes)", problem)
