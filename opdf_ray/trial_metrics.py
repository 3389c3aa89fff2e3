"""The metrics contract: every key a trial reports to Tune, built here and read back (leaderboard, search, CLI)
through the names defined here, so a renamed key fails a test instead of becoming a silent null column.

A trial reports three kinds of results (``ray.train.report`` on every worker, relayed to Tune):

* a **log** result every ``log_steps`` optimiser steps: ``step``, ``train/<term>`` (TensorBoard's per-step
  curves) and the best score so far (Tune insists on the searched metric in every result); it has no ``epoch``,
  so ASHA (which counts epochs) and the searcher ignore it;
* an **evaluation** result after each evaluation: the log keys plus ``epoch``, ``score``, ``best_score`` … (see
  ``evaluation_metrics``); ASHA decides on these, at ``epoch`` milestones;
* the **final** result: the evaluation keys, the final selection/dev/teacher metrics (``final_metrics``) and
  ``finished = 1``. A trial whose last result lacks ``finished`` was stopped early (pruned).
"""

from __future__ import annotations

import json
import math

STEP, EPOCH, EVALUATIONS = "step", "epoch", "evaluations"
SCORE, BEST_SCORE, BEST_STEP = "score", "best_score", "best_step"   # BEST_SCORE is what the search maximises
EXAMPLES_PER_SECOND, CURVE = "examples_per_second", "curve"
FINISHED, NONFINITE = "finished", "nonfinite_loss"
NODES, HARDWARE, RESTORED_AT_STEP = "nodes", "hardware", "restored_at_step"
WARM_START = "warm_start"                         # the trial's process had run a trial before (reuse_actors)
TRAINING_STARTED_AT = "training_started_at"       # wall clock when data and models were ready (the first step)
TRAINING_ENDED_AT = "training_ended_at"           # wall clock after the last step (final result only)
STEPS, TRAIN_SECONDS, WORKERS = "steps", "train_seconds", "workers"
TOTAL_STEPS = "total_steps"                       # the steps the trial will train (in every evaluation: the ETA)
TRAINABLE_PARAMS, INFERENCE_PARAMS = "trainable_params", "inference_params"
MERGE_DIFF, BYTES_ALL_REDUCED = "merge_max_abs_logit_diff", "bytes_all_reduced"
# mean ‖W − W0‖ / ‖W0‖ at the selected step: the deployed encoder matrices, and (OPDF) the trained cores
DRIFT_DEPLOYED, DRIFT_CORES, DRIFT_CURVE = "drift_deployed", "drift_cores", "drift_curve"
# added by Tune itself to every result
TRAINING_ITERATION, TIME_TOTAL_S = "training_iteration", "time_total_s"
# the optimiser step again under Tune's name for a result's x-axis: its TensorBoard and MLflow loggers plot on it
TIMESTEPS_TOTAL = "timesteps_total"

# the final numbers a run produces (``engine.finalize``) that travel as they are
RUN_SCALARS = (BEST_STEP, STEPS, TRAINABLE_PARAMS, INFERENCE_PARAMS, TRAIN_SECONDS, EXAMPLES_PER_SECOND, MERGE_DIFF,
               BYTES_ALL_REDUCED, WORKERS)
# drift_cores: OPDF runs only; both absent when a run resumed from a checkpoint written before drift was measured
OPTIONAL_RUN_SCALARS = (DRIFT_DEPLOYED, DRIFT_CORES)
# what the final result of a completed trial must carry (besides the per-split metrics, see ``missing_keys``)
REQUIRED_WHEN_COMPLETED = (FINISHED, BEST_SCORE, STEP, EPOCH, EVALUATIONS, CURVE, *RUN_SCALARS)
# what a trial that failed on a NaN/inf loss reports (the scheduler needs its metric; -inf ranks it last)
NONFINITE_METRICS = {NONFINITE: 1.0, BEST_SCORE: float("-inf"), SCORE: float("-inf")}


def train_key(term: str) -> str:
    return f"train/{term}"


def selection_key(metric: str) -> str:
    return f"selection/{metric}"


DEV_PREFIX = "dev/"


def dev_key(split: str, metric: str) -> str:
    return f"{DEV_PREFIX}{split}/{metric}"


def teacher_dev_key(split: str, metric: str) -> str:
    """The run's teacher at the end (ProKT and LGTM train theirs)."""
    return f"teacher_dev/{split}/{metric}"


def finetuned_teacher_dev_key(split: str, metric: str) -> str:
    """The task-fine-tuned teacher the run started from (its ``teacher.json``): the study's reference teacher."""
    return f"finetuned_teacher_dev/{split}/{metric}"


def log_metrics(step: int, logs: dict[str, float], best_score: float) -> dict[str, float]:
    """A log result: the step, this step's loss terms and the best score so far."""
    return ({STEP: step, TIMESTEPS_TOTAL: step, BEST_SCORE: best_score}
            | {train_key(k): float(v) for k, v in logs.items()})


def is_evaluation(result: dict) -> bool:
    """An evaluation (or final) result, as opposed to a log result."""
    return EPOCH in result


def evaluation_metrics(progress, score: float | None, selection_metric: str, select_split: str) -> dict:
    """An evaluation result from the loop's ``Progress`` (``checkpoint.Progress``) right after an evaluation;
    ``score`` is that evaluation's selection metric (``None``: report the best so far)."""
    last = progress.history[-1] if progress.history else {}
    curve = [[round(h[EPOCH], 4), h[f"{select_split}_{selection_metric}"]] for h in progress.history]
    drift = [[round(h[EPOCH], 4), h[DRIFT_DEPLOYED]] for h in progress.history if DRIFT_DEPLOYED in h]
    out = {STEP: progress.step, TIMESTEPS_TOTAL: progress.step, EPOCH: last.get(EPOCH, 0.0),
           EVALUATIONS: len(progress.history),
           SCORE: progress.best_score if score is None else score, BEST_SCORE: progress.best_score,
           BEST_STEP: progress.best_step, EXAMPLES_PER_SECOND: progress.examples_per_second,
           CURVE: json.dumps(curve), DRIFT_CURVE: json.dumps(drift)}
    return out | {train_key(k): v for k, v in last.items() if k not in (STEP, EPOCH) and isinstance(v, float)}


def final_metrics(results: dict) -> dict[str, float]:
    """The final results of a run (``engine.finalize``) as flat scalar metrics: ``selection/<metric>``,
    ``dev/<split>/<metric>``, ``teacher_dev/<split>/<metric>``, ``finetuned_teacher_dev/<split>/<metric>`` and
    ``RUN_SCALARS``."""
    out = {selection_key(k): v for k, v in results["selection"].items()}
    out |= {dev_key(split, k): v for split, metrics in results["dev"].items() for k, v in metrics.items()}
    out |= {teacher_dev_key(split, k): v for split, metrics in results.get("teacher_dev", {}).items()
            for k, v in metrics.items()}
    out |= {finetuned_teacher_dev_key(split, k): v
            for split, metrics in (results.get("teacher_finetune") or {}).get("dev", {}).items()
            for k, v in metrics.items()}
    out |= {key: results[key] for key in RUN_SCALARS}
    return out | {key: results[key] for key in OPTIONAL_RUN_SCALARS if key in results}


def missing_keys(result: dict, metrics: tuple[str, ...], dev_splits: tuple[str, ...]) -> list[str]:
    """Keys a completed trial's final result must have but lacks (empty: the contract holds)."""
    needed = [*REQUIRED_WHEN_COMPLETED, *(selection_key(m) for m in metrics),
              *(dev_key(s, m) for s in dev_splits for m in metrics)]
    return [k for k in needed if k not in result]


def finite_or_none(value):
    """A NaN trial reports -inf: store "no score", not a number."""
    return None if isinstance(value, float) and not math.isfinite(value) else value
