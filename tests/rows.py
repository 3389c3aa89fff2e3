"""Trial results shaped exactly as a worker reports them (built through ``opdf_ray.trial_metrics``)."""

import json

from opdf_ray import trial_metrics as tm
from opdf_ray.tasks import TASKS


def completed_result(task: str, selection: float, dev: float, trainable: int = 10, inference: int = 10,
                     epochs: float = 3.0, curve=None, other_below: float = 5.0, teacher: dict | None = None) -> dict:
    """The final result of a completed trial: ``selection`` is its best selection score, ``dev`` the dev value of
    the task's first metric (the others are ``dev - other_below``); ``teacher``: the teacher's dev metrics."""
    metrics = TASKS[task].metrics
    dev_metrics = {m: dev if i == 0 else dev - other_below for i, m in enumerate(metrics)}
    results = {"selection": {m: selection for m in metrics},
               "dev": {split: dict(dev_metrics) for split in TASKS[task].dev_splits},
               "best_step": 30, "steps": 30, "trainable_params": trainable, "inference_params": inference,
               "train_seconds": 12.0, "examples_per_second": 50.0, "merge_max_abs_logit_diff": 1e-6,
               "bytes_all_reduced": 0, "workers": 1}
    if teacher:                   # a frozen teacher: the fine-tuned one, at the end as at the start
        results["teacher_dev"] = {split: dict(teacher) for split in TASKS[task].dev_splits}
        results["teacher_finetune"] = {"dev": results["teacher_dev"]}
    evaluation = {tm.STEP: 30, tm.EPOCH: epochs, tm.EVALUATIONS: int(epochs), tm.SCORE: selection,
                  tm.BEST_SCORE: selection, tm.CURVE: json.dumps(curve or [[1.0, 50.0], [epochs, selection]]),
                  tm.TRAINING_ITERATION: 7}
    return evaluation | tm.final_metrics(results) | {tm.FINISHED: 1.0}


def stopped_result(score: float) -> dict:
    """The last result of a trial ASHA stopped after one evaluation."""
    return {tm.STEP: 10, tm.EPOCH: 1.0, tm.EVALUATIONS: 1, tm.SCORE: score, tm.BEST_SCORE: score,
            tm.TRAINING_ITERATION: 2}
