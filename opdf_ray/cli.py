"""``tune_main.py``: parse and validate everything (flags, search space, data) before Ray starts, then search.

    python tune_main.py --task rte --preset minilm --num-samples 4 --max-train-samples 512

``--task`` takes one task, a comma list or ``all``; each task is its own Tune experiment (``<name>-<task>``) and
Optuna study under ``--storage``, so ``--resume`` continues exactly that search.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import math
import os
import socket
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from opdf_ray import log_to_console
from opdf_ray import trial_metrics as tm
from opdf_ray.commands import CONFIG_HELP, HelpFormatter, parse_with_config, split_list
from opdf_ray.config import PRESETS, SET_BY_THE_SEARCH, RunSpec, parse_setting
from opdf_ray.data import TASKS
from opdf_ray.storage import is_uri, join
from opdf_ray.text import shell_join

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger("opdf_ray")


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description="Ray Tune + Optuna + ASHA search of OPDF "
                                "distillation over GLUE tasks; every finished trial lands in a Parquet leaderboard.",
                                formatter_class=HelpFormatter)
    p.add_argument("--task", help=f"one task, a comma list, or 'all' ({', '.join(TASKS)}); required here or in "
                   f"--config")
    p.add_argument("--config", help=CONFIG_HELP + "; settings without a flag here reach every trial, as --set does")
    p.set_defaults(config_settings={})      # filled by parse_args: the --config settings that have no flag here
    p.add_argument("--preset", default="minilm", choices=tuple(PRESETS),
                   help="model preset (see python -m opdf_ray.run)")
    p.add_argument("--teacher", help="teacher path or hub id (overrides the preset's)")
    p.add_argument("--space", default=None, help="search space YAML (default: search_spaces/default.yaml)")
    p.add_argument("--methods", nargs="+", help="methods to keep from the space, e.g. kd,lgtm or kd lgtm")
    p.add_argument("--num-samples", type=int, default=None, help="trials per task (default: 8; with --sampler grid, "
                   "the grid's size)")
    p.add_argument("--sampler", default="tpe", choices=("tpe", "grid"), help="tpe: Optuna TPE with ASHA early "
                   "stopping; grid: every combination of an all-categorical space once, each trial to its last epoch "
                   "(fixed configurations, e.g. a multi-seed study with --seed)")
    p.add_argument("--no-early-stopping", action="store_true", help="ASHA off: every trial runs all its epochs")
    p.add_argument("--no-cover-cells", action="store_true", help="TPE: do not start with one trial per (method, "
                   "OPDF on/off) cell of the space (the first trials then are TPE's random start)")
    p.add_argument("--tpe-startup-trials", type=int, default=None, help="random trials before TPE models the results "
                   "(default: a third of --num-samples, 2 to 10; Optuna's own 10 keeps small searches random)")
    p.add_argument("--max-concurrent", type=int, default=None, help="trials at once (default: what the cluster fits)")
    p.add_argument("--workers-per-trial", type=int, default=1, help="data-parallel Ray Train workers per trial")
    p.add_argument("--cpus-per-worker", type=float, default=None, help="default: the CPUs a trial's share allows")
    p.add_argument("--gpus-per-worker", type=float, default=None, help="default: 1 when the cluster has GPUs, else 0; "
                   "a fraction (0.25) packs single-worker trials onto one GPU")
    p.add_argument("--storage", default="outputs/search", help="local directory or cloud URI for the experiments")
    p.add_argument("--name", default="opdf", help="search name; experiments are <name>-<task> (deterministic)")
    p.add_argument("--resume", action="store_true", help="restore the interrupted search of the same name")
    p.add_argument("--leaderboard", default=None, help="Parquet leaderboard directory (default: <storage>/leaderboard)")
    p.add_argument("--data-dir", help="GLUE folder (default: $OPDF_GLUE_DIR, the bundled data/glue, then the hub)")
    p.add_argument("--cache-dir", help="tokenised splits and models cache (default: ~/.cache/opdf-ray)")
    p.add_argument("--seed", type=int, default=42, help="trial seed (data split, init) and the Optuna sampler seed")
    p.add_argument("--max-train-samples", type=int, help="quick runs: at most this many training examples")
    p.add_argument("--max-epochs", type=int, help="quick runs: cap the space's epochs per task")
    p.add_argument("--max-length", type=int, help="override the space's max_length")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="any other run setting for every trial, repeatable (e.g. --set mpo_weight=per-forward "
                   "--set student=PATH; python -m opdf_ray.run --help lists them); the space must not set it too")
    p.add_argument("--grace-epochs", type=int, default=1, help="ASHA: epochs every trial gets before it can stop")
    p.add_argument("--max-failures", type=int, default=2, help="worker errors a trial recovers from (checkpoint)")
    p.add_argument("--optuna-storage", help="Optuna RDB URL (e.g. sqlite:///optuna.db) for optuna-dashboard")
    p.add_argument("--address", help="Ray cluster address (default: start Ray locally; 'auto' on a cluster)")
    p.add_argument("--mlflow", nargs="?", const="", metavar="TRACKING_URI",
                   help="log every trial to MLflow (default URI: sqlite:///<storage>/mlflow.db)")
    p.add_argument("--wandb", metavar="PROJECT", help="log every trial to this Weights & Biases project "
                   "(offline: WANDB_MODE=offline, then `wandb sync`)")
    return p


def _tasks(value: str) -> list[str]:
    tasks = list(TASKS) if value == "all" else [t.strip() for t in value.split(",") if t.strip()]
    unknown = [t for t in tasks if t not in TASKS]
    if unknown or not tasks:
        raise ValueError(f"--task {value!r}: unknown task(s) {unknown}; allowed: {', '.join(TASKS)}, or 'all'")
    twice = sorted({t for t in tasks if tasks.count(t) > 1})
    if twice:
        raise ValueError(f"--task {value!r} names {', '.join(twice)} more than once; each task is searched once")
    return tasks


CPU_QUICK = {"max_epochs": 2, "max_length": 64}   # a search without GPUs and without budget flags


def parse_args(argv: list[str] | None = None, prog: str | None = None) -> argparse.Namespace:
    """The search's arguments, a ``--config`` file's settings included (flags override it). Raises ``ValueError``
    or ``FileNotFoundError`` for a bad config file."""
    parser = build_parser(prog)
    args, unflagged = parse_with_config(parser, argv)
    args.config_settings = unflagged
    if not args.task:
        parser.error("the following arguments are required: --task (or task: in --config)")
    check_trial_settings(args.config_settings, f"--config {args.config}")
    args.methods = split_list(args.methods)
    return args


def check_trial_settings(settings: dict, where: str) -> None:
    """Settings a search hands every trial must not be ones it sets per task or per trial itself."""
    searched = sorted(k for k in settings if k in SET_BY_THE_SEARCH)
    if searched:
        raise ValueError(f"{where} sets {searched}: a search sets it itself (task: --task; epochs: the space's "
                         f"epochs section and --max-epochs; threads, progress, save_model: per trial)")


def overrides(args) -> dict:
    """RunSpec values set explicitly for every trial (``--config`` settings without a flag of their own, then every
    ``--set KEY=VALUE``, then ``--max-length``): each trial gets them, and its row records them."""
    values = args.config_settings | dict(parse_setting(text) for text in args.set)
    return values | ({} if args.max_length is None else {"max_length": args.max_length})


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

    tasks = _tasks(args.task)
    space = load_space(args.space or default_space_path())
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
    from opdf_ray.tune import (check_teacher_storage, experiment_name, starts_from_finetuned_teacher, teacher_variants,
                               trial_epochs)

    bases, as_trials = {}, {}
    for task in tasks:
        values = {"task": task, "preset": args.preset, "teacher": args.teacher, "data_dir": args.data_dir,
                  "cache_dir": args.cache_dir, "seed": args.seed, "max_train_samples": args.max_train_samples}
        bases[task] = RunSpec.from_dict(absolute_local_paths(values | overrides(args)))
        spec = as_trials[task] = RunSpec.from_dict(bases[task].to_dict() | space.fixed | overrides(args))
        load_glue(task, spec.data_dir, spec.selection_fraction, spec.selection_cap, spec.seed,
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
    from opdf_ray.tune import grid_of

    size = math.prod(len(choices) for choices in grid_of(space).values())
    if args.num_samples is not None and args.num_samples > size:
        raise ValueError(f"--num-samples {args.num_samples} exceeds the {size} combinations of the grid; allowed: "
                         f"1..{size}")
    args.num_samples = size if args.num_samples is None else args.num_samples


def search_settings(args, cpus: float, concurrent: int, gpus: float, max_epochs: int | None):
    """The validated ``SearchSettings``: explicit flags win over what the cluster's size suggests."""
    from opdf_ray.tune import SearchSettings

    def given(value, default):
        return default if value is None else value

    return SearchSettings(
        name=args.name, storage=args.storage, leaderboard=args.leaderboard or join(args.storage, "leaderboard"),
        num_samples=args.num_samples, max_concurrent=given(args.max_concurrent, concurrent),
        workers_per_trial=args.workers_per_trial, cpus_per_worker=given(args.cpus_per_worker, cpus),
        gpus_per_worker=gpus, seed=args.seed, max_epochs=max_epochs, grace_epochs=args.grace_epochs,
        max_failures=args.max_failures, optuna_storage=args.optuna_storage, mlflow_uri=mlflow_uri(args),
        wandb_project=args.wandb, sampler=args.sampler, tpe_startup_trials=args.tpe_startup_trials,
        early_stopping=not (args.no_early_stopping or args.sampler == "grid"), cover_cells=not args.no_cover_cells)


def mlflow_uri(args) -> str | None:
    """``--mlflow`` alone: an SQLite store beside the experiments (MLflow 3 refuses its old file store)."""
    if args.mlflow is None:
        return None
    if args.mlflow:
        return args.mlflow
    if is_uri(args.storage):
        raise ValueError(f"--mlflow without a tracking URI keeps the runs under --storage, but {args.storage} is "
                         f"not a local path; pass one: --mlflow http://host:5000 or --mlflow sqlite:////path/mlflow.db")
    Path(join(args.storage)).mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{join(args.storage, 'mlflow.db')}"


def other_local_ray_instances(proc: Path = Path("/proc")) -> list[str]:
    """GCS addresses of the Ray instances already running on this machine: each local Ray has one ``raylet``
    process, started with ``--gcs-address=HOST:PORT``. Read from ``/proc`` (Linux; elsewhere none are found, which
    must never stop a search)."""
    found = set()
    for cmdline in proc.glob("[0-9]*/cmdline"):
        try:
            argv = cmdline.read_bytes().decode(errors="replace").split("\0")
        except OSError:                         # a process that ended meanwhile, or another user's
            continue
        if argv and Path(argv[0]).name == "raylet":
            found.update(a.split("=", 1)[1] for a in argv[1:] if a.startswith("--gcs-address="))
    return sorted(found)


def second_local_instance_warning(others: list[str]) -> str:
    """Two local Ray instances on one machine stall searches: Ray Train's placement-group cleaner asks the State API
    without an address, fails with "Found multiple active Ray instances", and a finished trial's workers stay
    reserved, so every later trial times out waiting for them (seen with Ray 2.60: docs/reliability.md)."""
    return (f"another Ray instance is running on this machine ({', '.join(others)}). With two local instances Ray "
            f"Train cannot free a finished trial's placement group, and later trials can stall waiting for workers. "
            f"Join it with --address {others[0]}, or run one search per machine.")


def bind_local_ray_to_loopback() -> None:
    """Before Ray is imported: a local cluster binds and advertises 127.0.0.1 only. Otherwise its ports listen on
    every interface of the machine, guarded by nothing but the token. A value the user set is kept."""
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")


def start_ray(address: str | None) -> None:
    """Join the cluster at ``address``, or start a local Ray (with ray[default]: the State API Ray Train needs to
    free placement groups) whose auth token only this user can read (Ray writes it world-readable)."""
    import ray

    ray.init(address=address)
    token = Path.home() / ".ray" / "auth_token"
    if address is None and token.is_file() and token.stat().st_mode & 0o077:
        token.chmod(0o600)


def check_address(address: str | None, timeout: float = 5.0) -> None:
    """A cluster address where nothing answers fails in seconds (``ray.init`` retries it for minutes)."""
    if address in (None, "auto", "local"):
        return
    host, colon, port = address.removeprefix("ray://").rpartition(":")
    if not colon or not host or not port.isdigit():
        raise ValueError(f"--address {address!r} is invalid; allowed: HOST:PORT (the head's GCS port, 6379 unless "
                         f"`ray start --port` chose another), ray://HOST:PORT (Ray Client) or auto")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as e:
        raise ValueError(f"--address {address}: nothing answers at {host}:{port} ({e.strerror or e}); is the "
                         f"cluster up (`ray status` on its head), and is the port open to this machine?") from None


@dataclasses.dataclass
class SearchOutcome:
    """What a search leaves: its leaderboard (every row so far, all searches that share it), the best completed
    row per (task, method, OPDF on/off), and the tasks whose search stopped early."""

    leaderboard: str
    rows: pd.DataFrame | None
    best: pd.DataFrame | None
    failed: list[str]


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    try:
        args = parse_args(argv, prog)
        outcome = execute(args)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:           # at any phase (the teacher's fine-tune included): one line, resumable
        print("interrupted: every finished trial is in the leaderboard and a fine-tuned teacher is kept only "
              "when complete; run the same command with --resume to go on", file=sys.stderr)
        return 130
    if outcome.rows is not None:
        print(f"leaderboard: {outcome.leaderboard} ({len(outcome.rows)} rows); best per (task, method, OPDF on/off):")
        best = outcome.best
        print(best.to_string(index=False) if len(best) else "  (no completed trial yet)")
        if (best["status"] == "completed").any():
            command = shell_join(["opdf-ray", "export", outcome.leaderboard, "--out", "best"])
            print(f"take the best student home: {command}" + (" --task TASK" if best["task"].nunique() > 1 else ""))
    if outcome.failed:
        print(f"error: the search of {', '.join(outcome.failed)} stopped early (see above); the other tasks "
              f"finished", file=sys.stderr)
        return 1
    return 0


def execute(args: argparse.Namespace) -> SearchOutcome:
    """Run a parsed search (``parse_args``, or ``opdf_ray.search``): validate, start or join Ray, size the trials,
    search each task. Bad input raises ``ValueError``/``FileNotFoundError`` before any work; a task whose search
    fails is reported in one line and listed in the outcome, and the other tasks go on."""
    started = time.time()
    if args.address is None:
        bind_local_ray_to_loopback()
    log_to_console()
    tasks, bases, space = validate(args)
    import ray

    from opdf_ray.leaderboard import best_per_cell, read_leaderboard
    from opdf_ray.tune import EarlyTeachers, experiment_name, run_search

    local, early = args.address is None, None
    if not ray.is_initialized():
        if local and not local_resources().get("GPU"):   # the teacher's fine-tune overlaps Ray's start
            planned = size_search(args, local_resources(), local)
            early = EarlyTeachers(bases[tasks[0]], space, *planned)
        others = other_local_ray_instances() if args.address is None else []
        if others:
            log.warning(second_local_instance_warning(others))
        try:
            start_ray(args.address)
        except (ConnectionError, RuntimeError, ValueError) as e:
            raise ValueError(f"could not start or reach Ray (--address {args.address}): "
                             f"{str(e).splitlines()[0]}") from None
    total = ray.cluster_resources()
    settings, run_overrides = size_search(args, total, local, quiet=False)
    check_shared(args, multi_node=len([n for n in ray.nodes() if n.get("Alive")]) > 1 or (
        not local and bool(autoscaler_gpu_node_types())))
    check_fits(settings, total, local)
    log.info("search: tasks %s, %d trials each, %d at once, %d worker(s) × %s CPU / %s GPU per trial; "
             "Ray up after %.1f s", tasks, settings.num_samples, settings.max_concurrent,
             settings.workers_per_trial, settings.cpus_per_worker, settings.gpus_per_worker, time.time() - started)
    # the teachers fine-tuned while Ray started, when Ray's machine is the one foreseen (else run_search fine-tunes
    # them, or finds the same ones under storage: a teacher is keyed by its settings and data)
    ready = early.result() if early is not None else None
    teachers = {tasks[0]: ready} if ready is not None and early.planned == (settings, run_overrides) else {}

    def search(task):
        experiment = experiment_name(settings, task)
        write_signature(settings.storage, experiment, search_signature(args, space, bases[task]),
                        resumed=args.resume)
        grid = run_search(bases[task], space, settings, resume=args.resume, overrides=run_overrides,
                          teachers=teachers.get(task))
        summarise_search(task, grid, join(settings.storage, experiment_name(settings, task)))

    failed = run_each(tasks, search)
    try:
        board = read_leaderboard(settings.leaderboard)
    except FileNotFoundError:
        board = None
    return SearchOutcome(settings.leaderboard, board, None if board is None else best_per_cell(board, pruned_too=True),
                         failed)


def local_resources() -> dict:
    """What a local Ray will find on this machine: the CPUs this process may use and the CUDA GPUs."""
    import torch

    return {"CPU": float(len(os.sched_getaffinity(0))), "GPU": float(torch.cuda.device_count())}


def size_search(args, total: dict, local: bool, quiet: bool = True) -> tuple:
    """``(SearchSettings, overrides for every trial)`` for a cluster of ``total`` resources (``ray.cluster_resources``
    or, before a local Ray starts, ``local_resources``): trials sized to it, explicit flags winning."""
    from opdf_ray.tune import default_parallelism

    scalable = [] if local else autoscaler_gpu_node_types()
    gpus = args.gpus_per_worker if args.gpus_per_worker is not None else (
        1.0 if total.get("GPU") or scalable else 0.0)
    if scalable and not total.get("GPU") and gpus:     # GPU nodes come when trials ask: size trials for them
        node = scalable[0]
        cpus = max(1.0, math.floor(node["CPU"] / node["GPU"] * gpus))
        concurrent = max(1, int(node["max_workers"] * node["GPU"] // (args.workers_per_trial * gpus)))
    else:
        cpus, concurrent = default_parallelism(total.get("CPU", 1), total.get("GPU", 0), args.workers_per_trial,
                                               gpus)
    quick = local and not gpus and args.max_epochs is None and args.max_length is None   # never on a cluster
    max_epochs = CPU_QUICK["max_epochs"] if quick else args.max_epochs
    run_overrides = overrides(args) | ({"max_length": CPU_QUICK["max_length"]} if quick else {})
    if quick and not quiet:
        log.warning("no GPU in the Ray cluster: capping epochs at %d and max_length at %d so the search finishes "
                    "in minutes (set --max-epochs/--max-length to choose; the leaderboard records both)",
                    CPU_QUICK["max_epochs"], CPU_QUICK["max_length"])
    return search_settings(args, cpus, concurrent, gpus, max_epochs), run_overrides


def check_not_all_failed(trials: int, failed: int) -> None:
    """A search whose every trial failed is an error (the command exits 1), not an empty success."""
    if trials and failed == trials:
        raise RuntimeError(f"every trial failed ({failed} of {trials}); each one's error is in the leaderboard's "
                           f"error column")


def failed_trials(grid) -> int:
    """Trials that errored, and those whose loss became NaN/inf (they end without an error: a NaN is not retried)."""
    return sum(1 for result in grid if result.error or (result.metrics or {}).get(tm.NONFINITE))


def summarise_search(task: str, grid, experiment: str) -> None:
    """Print one task's search outcome (``grid``: its Tune ``ResultGrid``); raise when every trial failed."""
    failed = failed_trials(grid)
    print(f"{task}: {len(grid)} trials, {failed} failed; experiment in {experiment}")
    check_not_all_failed(len(grid), failed)
    try:
        best = grid.get_best_result(metric=tm.BEST_SCORE, mode="max", filter_nan_and_inf=True)
        spec = best.config["spec"]
        print(f"{task}: best trial {best.path.rsplit('/', 1)[-1]}: {spec['method']} opdf_cores="
              f"{spec['opdf_cores']} lr={spec['lr']:.2e} selection={best.metrics.get(tm.BEST_SCORE):.2f} "
              f"dev={_dev(best.metrics)}")
    except (RuntimeError, KeyError, TypeError):
        print(f"{task}: no trial reported a score")


def autoscaler_gpu_node_types(config_path: str | Path = "~/ray_bootstrap_config.yaml") -> list[dict]:
    """The GPU node types an autoscaler may launch (``resources`` + ``max_workers``), read from the config `ray up`
    leaves on the head; empty when there is none (a fixed or local cluster)."""
    import yaml

    path = Path(config_path).expanduser()
    if not path.is_file():
        return []
    types = (yaml.safe_load(path.read_text()) or {}).get("available_node_types", {})
    return [{**t.get("resources", {}), "max_workers": t.get("max_workers", 0)} for t in types.values()
            if t.get("resources", {}).get("GPU", 0) > 0 and t.get("max_workers", 0) > 0]


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


def run_each(tasks: list[str], search) -> list[str]:
    """``search(task)`` for every task; one that raises (its teacher fine-tune, its leaderboard) is reported in
    one line and the next task goes on. Returns the tasks that failed."""
    failed = []
    for task in tasks:
        try:
            search(task)
        except Exception as e:  # noqa: BLE001 — any failure of one task must not end the others
            failed.append(task)
            log.debug("%s failed", task, exc_info=True)
            print(f"error: {task}: the search stopped: {_one_line(e)}", file=sys.stderr)
    return failed


def _one_line(error: BaseException) -> str:
    """The last line of a (possibly Tune-wrapped) error: what actually went wrong."""
    lines = [line for line in str(error).strip().splitlines() if line.strip()]
    return lines[-1] if lines else type(error).__name__


def check_fits(settings, total: dict, local: bool) -> None:
    """A trial that can never be scheduled makes Ray Train wait forever: refuse it now. On a local Ray (no
    autoscaler) the cluster is what it is; on a cluster, an autoscaler may still add nodes, so only warn."""
    from opdf_ray.tune import DRIVER_CPU

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


def _dev(metrics: dict) -> str:
    values = [f"{k[len(tm.DEV_PREFIX):]}={v:.2f}" for k, v in metrics.items() if k.startswith(tm.DEV_PREFIX)]
    return " ".join(values) or "n/a (stopped early)"


if __name__ == "__main__":
    raise SystemExit(main())
