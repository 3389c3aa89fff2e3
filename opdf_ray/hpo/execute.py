"""Run a parsed search (the command line and ``opdf_ray.search`` alike): checks, Ray, sizing, each task's search,
the outcome."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
import time
from typing import TYPE_CHECKING

from opdf_ray import log_to_console
from opdf_ray import trial_metrics as tm
from opdf_ray.hpo.checks import check_fits, check_shared, search_signature, validate, write_signature
from opdf_ray.hpo.cluster import (autoscaler_gpu_node_types, bind_local_ray_to_loopback, other_local_ray_instances,
                                  second_local_instance_warning, start_ray)
from opdf_ray.hpo.console import choose_token_auth, quiet_libraries
from opdf_ray.hpo.sizing import local_resources, size_search
from opdf_ray.storage import join

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger("opdf_ray")


@dataclasses.dataclass
class SearchOutcome:
    """What a search leaves: its leaderboard (every row so far, all searches that share it), the best completed
    row per (task, method, OPDF on/off), and the tasks whose search stopped early."""

    leaderboard: str
    rows: pd.DataFrame | None
    best: pd.DataFrame | None
    failed: list[str]


def execute(args: argparse.Namespace) -> SearchOutcome:
    """Run a parsed search (``parse_args``, or ``opdf_ray.search``): validate, start or join Ray, size the trials,
    search each task. Bad input raises ``ValueError``/``FileNotFoundError`` before any work; a task whose search
    fails is reported in one line and listed in the outcome, and the other tasks go on."""
    started = time.time()
    if args.address is None:
        bind_local_ray_to_loopback()
        choose_token_auth(args.verbose)
    log_to_console()
    quiet_libraries(args.verbose)
    tasks, bases, space = validate(args)
    import ray

    from opdf_ray.hpo.tuner import EarlyTeachers, experiment_name, run_search
    from opdf_ray.leaderboard import best_per_cell, read_leaderboard

    local, early = args.address is None, None
    if not ray.is_initialized():
        if local and not local_resources().get("GPU"):   # the teacher's fine-tune overlaps Ray's start
            planned = size_search(args, local_resources(), local)
            early = EarlyTeachers(bases[tasks[0]], space, *planned)
        others = other_local_ray_instances() if args.address is None else []
        if others:
            log.warning(second_local_instance_warning(others))
        try:
            start_ray(args.address, args.verbose)
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


def _dev(metrics: dict) -> str:
    values = [f"{k[len(tm.DEV_PREFIX):]}={v:.2f}" for k, v in metrics.items() if k.startswith(tm.DEV_PREFIX)]
    return " ".join(values) or "n/a (stopped early)"
