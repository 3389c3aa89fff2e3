"""Fault drill for the search tests, kept out of the shipped worker: Ray runs ``arm`` in every worker process
(``runtime_env={"worker_process_setup_hook": "fault_drill.arm"}``). With ``OPDF_RAY_FAIL_ONCE=<step>:<marker>`` in
the environment, a training worker then raises at its first evaluation at or after ``step`` unless ``marker``
exists, creating it first (so the restarted worker goes on)."""

from __future__ import annotations

import os
from pathlib import Path

FAIL_ONCE_ENV = "OPDF_RAY_FAIL_ONCE"


def fail_once(step: int) -> None:
    value = os.environ.get(FAIL_ONCE_ENV)
    if not value:
        return
    at, marker = value.split(":", 1)
    if step >= int(at) and not Path(marker).exists():
        Path(marker).write_text(str(step))
        raise RuntimeError(f"{FAIL_ONCE_ENV}: injected worker failure at step {step}")


def arm() -> None:
    """Wrap the worker's ``train`` so each evaluation first passes through ``fail_once``."""
    import opdf_ray.hpo.trial as worker

    train = worker.train
    if getattr(train, "fault_drill", False):
        return

    def train_with_fault(job, *args, on_evaluate=None, **kwargs):
        def evaluate_or_fail(progress, metrics):
            fail_once(progress.step)
            if on_evaluate is not None:
                on_evaluate(progress, metrics)

        return train(job, *args, on_evaluate=evaluate_or_fail, **kwargs)

    train_with_fault.fault_drill = True
    worker.train = train_with_fault
