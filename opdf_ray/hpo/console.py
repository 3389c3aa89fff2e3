"""The search's console. Quiet by default: our lines only, one per trial event (started, each evaluation with
its step of the total and an ETA, finished), through Ray's and Tune's public knobs (Tune's ``verbose``, the driver's
``ray`` log level, ``log_to_driver``); ``-v`` gives Tune's status tables and every trial process's own log, ``-vv``
Tune's per-result detail too. A trial's full log is always in its Ray session's log folder and its error in the
leaderboard's ``error`` column."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time

from opdf_ray import trial_metrics as tm
from opdf_ray.config import METHOD_TITLES

log = logging.getLogger("opdf_ray")


NEW_OUTPUT = "RAY_AIR_NEW_OUTPUT"
AUTH_MODE = "RAY_AUTH_MODE"


def choose_token_auth(verbose: int) -> None:
    """Before Ray is imported, for a local Ray: ask for its default authentication (a token) by its documented
    variable; Ray then starts without its "token authentication is enabled" notice. Not once Ray is imported (it
    has read its settings then), nor where the user chose a mode."""
    if not verbose and "ray" not in sys.modules:
        os.environ.setdefault(AUTH_MODE, "token")


def ray_init_options(verbose: int) -> dict:
    """``ray.init`` keyword arguments for this verbosity: quiet keeps the trial processes' output (model loading bars,
    Ray Train's checkpoint notices, core-worker shutdown chatter) off the driver's console, and Ray's INFO lines."""
    return {"log_to_driver": verbose > 0, "logging_level": logging.INFO if verbose > 0 else logging.WARNING}


def quiet_libraries(verbose: int) -> None:
    """No progress bars from transformers (loading and writing weights) in this process when quiet."""
    if not verbose:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()


def tune_verbosity(verbose: int) -> int:
    """Tune's ``RunConfig(verbose=…)``: 0 silent (our lines say it), 1 its status table, 2 every result."""
    return min(verbose, 2)


@contextlib.contextmanager
def tune_output(verbose: int):
    """Around ``Tuner.fit``: quiet, Tune's console is its classic reporter (``RAY_AIR_NEW_OUTPUT=0``, Ray's documented
    switch), which at verbosity 0 prints nothing; the newer one still prints its experiment box and a TensorBoard hint
    that points into Ray's temporary session folder, not the experiment's. The variable is restored after."""
    if verbose:
        yield
        return
    before = os.environ.get(NEW_OUTPUT)
    os.environ[NEW_OUTPUT] = "0"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(NEW_OUTPUT, None)
        else:
            os.environ[NEW_OUTPUT] = before


def trial_label(spec: dict) -> str:
    """What a trial trains, in a few words: method, OPDF cores, lr."""
    cores = int(spec.get("opdf_cores") or 0)
    opdf = f" + OPDF ({cores} cores)" if cores else ""
    return f"{METHOD_TITLES.get(spec['method'], spec['method'])}{opdf}, lr {spec['lr']:.1e}"


def duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    return f"{seconds // 60} min {seconds % 60:02d} s" if seconds >= 60 else f"{seconds} s"


def progress_line(trial_id: str, result: dict, metric: str, started: float, now: float) -> str | None:
    """An evaluation's line: step of the total, its selection score and the best so far, and the time left at this
    trial's pace. None for a result that is not an evaluation (a log result)."""
    if not tm.is_evaluation(result) or tm.SCORE not in result or result.get(tm.FINISHED):   # the end: its own line
        return None
    step, total = int(result[tm.STEP]), int(result.get(tm.TOTAL_STEPS) or 0)
    began = result.get(tm.TRAINING_STARTED_AT) or started
    spent = max(0.0, now - began)
    left = f", ~{duration(spent * (total - step) / step)} left" if total and 0 < step < total else ""
    of = f"/{total}" if total else ""
    return (f"  {trial_id} step {step}{of}: selection {metric} {result[tm.SCORE]:.1f} (best "
            f"{result[tm.BEST_SCORE]:.1f}); {duration(spent)} so far{left}")


def finished_line(trial_id: str, status: str, result: dict, metric: str, wall: float | None,
                  error: str | None = None) -> str:
    """A finished trial's one line: status, selection (and dev) score, wall time; a failure's last error line."""
    took = f" in {duration(wall)}" if wall is not None else ""
    if status == "failed":
        lines = [line for line in (error or "").strip().splitlines() if line.strip()]
        return f"trial {trial_id} failed{took}: {lines[-1] if lines else 'see its error in the leaderboard'}"
    best = result.get(tm.BEST_SCORE)
    score = f"selection {metric} {best:.1f}" if best is not None and best > float("-inf") else "no score yet"
    dev = [f"dev {k.rsplit('/', 1)[-1]} {v:.1f}" for k, v in result.items()
           if k.startswith(tm.DEV_PREFIX) and isinstance(v, float)]
    if status == "pruned":
        return f"trial {trial_id} stopped by ASHA after epoch {result.get(tm.EPOCH, 0):.0f}: {score}{took}"
    return f"trial {trial_id} completed: {', '.join([score, *dev[:1]])}{took}"


class Console:
    """The quiet console's state on the driver: which trial is which of how many, when each started, and how long
    finished ones took (for the search's ETA). ``RecordTrials`` calls it from Tune's callback hooks."""

    def __init__(self, total_trials: int, metric: str):
        self.total, self.metric = total_trials, metric
        self.number: dict[str, int] = {}
        self.started: dict[str, float] = {}
        self.walls: list[float] = []

    def trial_started(self, trial_id: str, spec: dict) -> None:
        self.number.setdefault(trial_id, len(self.number) + 1)
        self.started[trial_id] = time.time()
        log.info("trial %d/%d %s started: %s", self.number[trial_id], self.total, trial_id, trial_label(spec))

    def trial_result(self, trial_id: str, result: dict) -> None:
        line = progress_line(trial_id, result, self.metric, self.started.get(trial_id, time.time()), time.time())
        if line:
            log.info("%s", line)

    def trial_finished(self, trial_id: str, status: str, result: dict, error: str | None = None) -> None:
        wall = time.time() - self.started[trial_id] if trial_id in self.started else None
        log.info("%s", finished_line(trial_id, status, result or {}, self.metric, wall, error))
        if wall is not None:
            self.walls.append(wall)
        left = self.total - len(self.walls)
        if self.walls and left > 0:
            typical = sorted(self.walls)[len(self.walls) // 2]
            log.info("search: %d of %d trials done; at most ~%s left (ASHA may stop some sooner)", len(self.walls),
                     self.total, duration(typical * left))
