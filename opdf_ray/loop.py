"""The training loop for any ``Method``: the run's plan (batch sizes, steps), ``fit`` (steps, evaluations,
best-checkpoint selection, exact resume) and the one ``evaluate`` every split and model goes through."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from opdf_ray.batches import Data, cycle, set_epoch, to_device
from opdf_ray.checkpoint import Progress, load_checkpoint
from opdf_ray.data import compute_metrics, selection_split
from opdf_ray.tasks import Task
from opdf_ray.methods import Method
from opdf_ray.methods.base import model_inputs
from opdf_ray.parallel import Parallel

log = logging.getLogger(__name__)


class NonFiniteLossError(FloatingPointError):
    """Training produced a NaN/inf loss: the run is failed, not silently continued."""


@dataclass(frozen=True)
class Plan:
    """The numbers derived from a spec, the data and the workers; logged in the start-up banner and stored with
    the results (``batch_size`` is global, so results do not depend on the worker count)."""

    global_batch: int
    workers: int
    per_worker_batch: int
    train_examples: int
    steps_per_epoch: int
    epochs: int
    total_steps: int              # epochs × steps_per_epoch, or ``max_steps`` when smaller
    eval_every: int               # steps between evaluations (``eval_steps``, default one epoch)


def make_plan(spec, train_examples: int, workers: int = 1) -> Plan:
    """The run's plan (``spec``: a ``RunSpec``). Raises ``ValueError`` when the batch does not split evenly."""
    if spec.batch_size % workers:
        raise ValueError(f"batch_size={spec.batch_size} is not divisible by the {workers} workers; "
                         f"use a multiple of {workers}")
    per_worker = spec.batch_size // workers
    share = math.ceil(train_examples / workers)               # DistributedSampler pads shares equal
    per_epoch = math.ceil(share / per_worker)
    total = spec.epochs * per_epoch
    total = min(total, spec.max_steps) if spec.max_steps else total
    return Plan(spec.batch_size, workers, per_worker, train_examples, per_epoch, spec.epochs, total,
                spec.eval_steps or per_epoch)


def banner(title: str, plan: Plan, **extra) -> str:
    """One line saying what is about to run, in the order a reader checks it (nanoGPT/run_glue style)."""
    parts = [f"{plan.train_examples:,} training examples", f"global batch {plan.global_batch} = "
             f"{plan.per_worker_batch} per worker × {plan.workers} worker(s)", f"{plan.total_steps:,} steps "
             f"({plan.steps_per_epoch:,}/epoch, {plan.epochs} epoch(s))", f"evaluate every {plan.eval_every} steps"]
    parts += [f"{k.replace('_', ' ')} {v:,}" if isinstance(v, int) else f"{k.replace('_', ' ')} {v}"
              for k, v in extra.items()]
    return f"{title}: " + ", ".join(parts)


def autocast(device: torch.device, bf16: bool):
    """bfloat16 autocast on ``device`` when ``bf16`` (``RunSpec.bf16_on``: CUDA by default, CPU on request)."""
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=bf16)


def evaluate(model: torch.nn.Module, loader: DataLoader, task: Task, device: torch.device,
             parallel: Parallel | None = None, bf16: bool = False) -> dict[str, float]:
    """Task metrics (percent) of ``model`` on every example of the split: each worker predicts its share of
    ``loader`` (see ``Data.loader``), the shares are gathered in rank order, so nothing is counted twice."""
    model.eval()
    predictions, labels = [], []
    with torch.inference_mode(), autocast(device, bf16):
        for batch in loader:
            logits = model(**model_inputs(to_device(batch, device))).logits.float().cpu()
            predictions.append(logits.squeeze(-1) if task.is_regression else logits.argmax(-1))
            labels.append(batch["labels"])
    mine = (torch.cat(predictions).numpy() if predictions else np.empty(0),
            torch.cat(labels).numpy() if labels else np.empty(0))
    shares = (parallel or Parallel()).gather(mine)
    return compute_metrics(task, np.concatenate([p for p, _ in shares]), np.concatenate([y for _, y in shares]))


def feedback_batches(method: Method, spec, data: Data, plan: Plan, parallel: Parallel | None = None,
                     start: int = 0):
    """LGTM's held-out batches, one per step from overall step ``start``, reshuffled every pass; None for a method
    without them."""
    if not method.uses_held_batch:
        return None
    loader = data.loader(data.feedback_split, plan.per_worker_batch, shuffle=True, seed=spec.seed + 1,
                         parallel=parallel)
    return cycle(loader, start=start)


def fit(method: Method, spec, data: Data, device: torch.device, plan: Plan, desc: str = "",
        parallel: Parallel | None = None, resume_from: str | Path | None = None,
        on_evaluate: Callable[[Progress, dict], None] | None = None,
        on_log: Callable[[Progress, dict], None] | None = None) -> Progress:
    """Train to ``plan.total_steps``, evaluating every ``plan.eval_every`` steps on the selection slice (or dev,
    under the papers' protocol); keep the best student in memory and restore it at the end.

    ``resume_from`` is a checkpoint directory (``opdf_ray.checkpoint``) to continue from: the epoch's batches
    already seen are skipped, so the data order is the uninterrupted one. ``on_evaluate(progress, metrics)`` is
    called after every evaluation (Ray reports and checkpoints there), ``on_log(progress, logs)`` every
    ``spec.log_steps`` steps between evaluations (per-step curves).
    """
    from tqdm.auto import tqdm

    parallel = parallel or Parallel()
    task = data.task
    train_loader = data.loader("train", plan.per_worker_batch, shuffle=True, seed=spec.seed, parallel=parallel,
                               group_by_length=spec.group_by_length)
    select_name = selection_split(task, spec.select_on)
    select_loader = data.loader(select_name, spec.eval_batch_size, shuffle=False, parallel=parallel)
    steps, per_epoch = plan.total_steps, plan.steps_per_epoch
    method.setup(steps)
    progress = load_checkpoint(resume_from, method) if resume_from else Progress()
    if resume_from:
        log.info("resumed from %s at step %d", resume_from, progress.step)
    held_batches = feedback_batches(method, spec, data, plan, parallel, start=progress.step)
    bar = tqdm(total=steps, initial=progress.step, desc=desc, disable=not (spec.progress and parallel.is_main),
               leave=False)
    while progress.step < steps:
        epoch, skip = divmod(progress.step, per_epoch)
        set_epoch(train_loader, epoch)
        for i, batch in enumerate(train_loader):
            if i < skip:
                continue
            held = to_device(next(held_batches), device) if held_batches is not None else None
            t0 = time.perf_counter()
            upcoming = progress.step + 1              # diagnostics only where logs are read (evaluations, log steps)
            method.log_details = (upcoming % plan.eval_every == 0 or upcoming == steps
                                  or upcoming % spec.log_steps == 0)
            with autocast(device, spec.bf16_on(device)):
                logs = method.train_step(to_device(batch, device), held)
            progress.train_seconds += time.perf_counter() - t0
            progress.examples += len(batch["labels"]) * parallel.world_size
            progress.step += 1
            if parallel.any(not all(math.isfinite(v) for v in logs.values())):   # every worker stops together
                raise NonFiniteLossError(f"non-finite loss at step {progress.step} (this worker: {logs})")
            bar.update(1)
            bar.set_postfix(loss=f"{logs['loss']:.4f}")
            if progress.step % plan.eval_every == 0 or progress.step == steps:
                metrics = evaluate(method.eval_model(), select_loader, task, device, parallel,
                                   spec.bf16_on(device))
                score = metrics[task.selection_metric]
                drift = method.start.drift() if method.start is not None else {}   # how far from the start
                progress.history.append({"step": progress.step, "epoch": progress.step / per_epoch, **logs,
                                         **{f"{select_name}_{k}": v for k, v in metrics.items()}, **drift})
                log.info("step %d/%d: %s %s = %.2f", progress.step, steps, select_name, task.selection_metric, score)
                if score > progress.best_score:
                    progress.best_score, progress.best_step = score, progress.step
                    progress.best_state, progress.best_metrics = method.trainable_state(), metrics
                if on_evaluate is not None:
                    on_evaluate(progress, metrics)
            elif on_log is not None and progress.step % spec.log_steps == 0:
                on_log(progress, logs)
            if progress.step >= steps:
                break
    bar.close()
    method.load_trainable_state(progress.best_state)
    return progress
