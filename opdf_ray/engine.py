"""One distillation run as a function: data → models → method (+ OPDF) → fit → evaluate → export.

``run(spec)`` has no global state besides torch's RNG/threads, so a Ray trial can call it as is.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import platform
import random
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, DistributedSampler, Subset

from opdf_ray import __version__, mpo
from opdf_ray.checkpoint import Progress, load_checkpoint
from opdf_ray.config import RunSpec
from opdf_ray.data import (GlueSplits, GlueTask, TokenizedDataset, compute_metrics, default_cache_dir, load_glue,
                           make_collate, tokenize)
from opdf_ray.methods import Method, get_method
from opdf_ray.methods.base import model_inputs
from opdf_ray.parallel import Parallel
from opdf_ray.models import (fingerprint, from_pretrained, get_preset, keep_layers, load_classifier,
                             load_tokenizer, teacher_source)

log = logging.getLogger(__name__)


class NonFiniteLossError(FloatingPointError):
    """Training produced a NaN/inf loss: the run is failed, not silently continued."""


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device={name!r} but CUDA is not available here; use --device cpu or auto")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@dataclass
class Data:
    """Tokenised splits and their loaders' ingredients."""

    task: GlueTask
    splits: GlueSplits
    encoded: dict[str, dict[str, list]]   # "train", "selection", and each dev split name
    pad_token_id: int

    def size(self, name: str) -> int:
        return len(self.encoded[name]["labels"])

    def loader(self, name: str, batch_size: int, shuffle: bool, seed: int = 0,
               parallel: Parallel | None = None) -> DataLoader:
        """Shuffled: a seeded sampler over this worker's share that reshuffles per ``set_epoch`` (resumable).
        Not shuffled: this worker's contiguous share in order (gathered in rank order, no duplicates)."""
        parallel = parallel or Parallel()
        dataset = TokenizedDataset(self.encoded[name])
        collate = make_collate(self.pad_token_id, self.task.is_regression)
        private = torch.Generator().manual_seed(seed)   # loaders never draw from the global RNG (exact resume)
        if shuffle:
            sampler = DistributedSampler(dataset, parallel.world_size, parallel.rank, shuffle=True, seed=seed)
            return DataLoader(dataset, batch_size=batch_size, sampler=sampler, collate_fn=collate, generator=private)
        subset = Subset(dataset, parallel.shard(len(dataset)).tolist())
        return DataLoader(subset, batch_size=batch_size, shuffle=False, collate_fn=collate, generator=private)


def prepare_data(spec: RunSpec, tokenizer, cache_dir: Path) -> Data:
    splits = load_glue(spec.task, spec.data_dir, spec.selection_fraction, spec.selection_cap, spec.seed,
                       spec.max_train_samples)
    frames = {"train": splits.train, "selection": splits.selection, **splits.dev}
    encoded = {name: tokenize(df, splits.task, tokenizer, spec.max_length, cache_dir) for name, df in frames.items()}
    return Data(splits.task, splits, encoded, tokenizer.pad_token_id)


def _to(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def evaluate(model: torch.nn.Module, loader: DataLoader, task: GlueTask, device: torch.device,
             parallel: Parallel | None = None) -> dict[str, float]:
    """Task metrics (percent) of ``model`` on every example of the split: each worker predicts its share of
    ``loader`` (see ``Data.loader``), the shares are gathered in rank order, so nothing is counted twice."""
    model.eval()
    predictions, labels = [], []
    with torch.inference_mode():
        for batch in loader:
            logits = model(**model_inputs(_to(batch, device))).logits.float().cpu()
            predictions.append(logits.squeeze(-1) if task.is_regression else logits.argmax(-1))
            labels.append(batch["labels"])
    mine = (torch.cat(predictions).numpy() if predictions else np.empty(0),
            torch.cat(labels).numpy() if labels else np.empty(0))
    shares = (parallel or Parallel()).gather(mine)
    return compute_metrics(task, np.concatenate([p for p, _ in shares]), np.concatenate([y for _, y in shares]))


def _check_spec_against_models(spec: RunSpec, source: str, layer_ids: list[int]) -> None:
    """Errors that would otherwise surface after minutes of teacher fine-tuning."""
    from transformers import AutoConfig

    try:
        config = from_pretrained(AutoConfig, source)
    except FileNotFoundError:
        return                              # load_classifier will raise the clear, specific error
    depth = config.num_hidden_layers
    if not spec.student and not all(0 <= i < depth for i in layer_ids):
        raise ValueError(f"student layers {layer_ids} do not exist in the {depth}-layer teacher {source}")
    if spec.method == "theseus" and depth % len(layer_ids):
        raise ValueError(f"BERT-of-Theseus needs the teacher depth ({depth}) to be a multiple of the student's "
                         f"({len(layer_ids)})")
    if spec.opdf:
        for rows, cols in {(config.hidden_size, config.hidden_size), (config.intermediate_size, config.hidden_size)}:
            mpo.factor_shapes(rows, cols, spec.opdf_cores, spec.opdf_style)


def per_worker_batch(spec: RunSpec, parallel: Parallel) -> int:
    """``batch_size`` is global (results do not depend on the worker count); each worker takes its share."""
    if spec.batch_size % parallel.world_size:
        raise ValueError(f"batch_size={spec.batch_size} is not divisible by the {parallel.world_size} workers; "
                         f"use a multiple of {parallel.world_size}")
    return spec.batch_size // parallel.world_size


def total_steps(spec: RunSpec, data: Data, parallel: Parallel | None = None) -> int:
    parallel = parallel or Parallel()
    share = math.ceil(data.size("train") / parallel.world_size)       # DistributedSampler pads shares equal
    total = spec.epochs * math.ceil(share / per_worker_batch(spec, parallel))
    return min(total, spec.max_steps) if spec.max_steps else total


def fit(method: Method, spec: RunSpec, data: Data, device: torch.device, steps: int, desc: str = "",
        parallel: Parallel | None = None, resume_from: str | Path | None = None, on_evaluate=None) -> Progress:
    """Train up to step ``steps``, evaluating every ``eval_steps`` (default: each epoch) on the selection slice
    (or dev, under the papers' protocol); keep the best student in memory and restore it at the end.

    ``resume_from`` is a checkpoint directory (``opdf_ray.checkpoint``) to continue from: the epoch's batches
    already seen are skipped, so the data order is the uninterrupted one. ``on_evaluate(progress, metrics)`` is
    called after every evaluation (Ray reports and checkpoints there).
    """
    from tqdm.auto import tqdm

    parallel = parallel or Parallel()
    task = data.task
    batch = per_worker_batch(spec, parallel)
    train_loader = data.loader("train", batch, shuffle=True, seed=spec.seed, parallel=parallel)
    select_name = "selection" if spec.select_on == "selection" else task.dev_splits[0]
    select_loader = data.loader(select_name, spec.eval_batch_size, shuffle=False, parallel=parallel)
    held_batches = None
    if method.uses_held_batch:
        held_loader = data.loader("selection", batch, shuffle=True, seed=spec.seed + 1, parallel=parallel)
        held_batches = _cycle(held_loader)
    per_epoch = len(train_loader)
    eval_every = spec.eval_steps or per_epoch
    method.setup(steps)
    progress = load_checkpoint(resume_from, method) if resume_from else Progress()
    if resume_from:
        log.info("resumed from %s at step %d", resume_from, progress.step)
    bar = tqdm(total=steps, initial=progress.step, desc=desc, disable=not (spec.progress and parallel.is_main),
               leave=False)
    while progress.step < steps:
        epoch, skip = divmod(progress.step, per_epoch)
        train_loader.sampler.set_epoch(epoch)
        for i, batch in enumerate(train_loader):
            if i < skip:
                continue
            held = _to(next(held_batches), device) if held_batches is not None else None
            t0 = time.perf_counter()
            logs = method.train_step(_to(batch, device), held)
            progress.train_seconds += time.perf_counter() - t0
            progress.examples += len(batch["labels"]) * parallel.world_size
            progress.step += 1
            if parallel.any(not all(math.isfinite(v) for v in logs.values())):   # every worker stops together
                raise NonFiniteLossError(f"non-finite loss at step {progress.step} (this worker: {logs})")
            bar.update(1)
            bar.set_postfix(loss=f"{logs['loss']:.4f}")
            if progress.step % eval_every == 0 or progress.step == steps:
                metrics = evaluate(method.eval_model(), select_loader, task, device, parallel)
                score = metrics[task.selection_metric]
                progress.history.append({"step": progress.step, "epoch": progress.step / per_epoch, **logs,
                                         **{f"{select_name}_{k}": v for k, v in metrics.items()}})
                log.info("step %d: %s %s = %.2f", progress.step, select_name, task.selection_metric, score)
                if score > progress.best_score:
                    progress.best_score, progress.best_step = score, progress.step
                    progress.best_state = method.trainable_state()
                if on_evaluate is not None:
                    on_evaluate(progress, metrics)
            if progress.step >= steps:
                break
    bar.close()
    method.load_trainable_state(progress.best_state)
    return progress


def _cycle(loader):
    while True:
        yield from loader


def teacher_settings(spec: RunSpec) -> dict:
    """What the fine-tuned teacher depends on besides its source and the data (its cache key)."""
    return {k: getattr(spec, k) for k in ("task", "seed", "teacher_epochs", "teacher_finetune_lr", "max_length",
                                          "batch_size", "max_train_samples", "max_steps", "selection_fraction",
                                          "selection_cap", "select_on", "weight_decay", "warmup_ratio")}


def teacher_cache_path(spec: RunSpec, source: str, data: Data, cache_dir: Path) -> Path:
    """Where the single-run command keeps a fine-tuned teacher: one per (teacher, task, seed, settings)."""
    key = fingerprint(source, teacher_settings(spec), data.splits.sources)
    return cache_dir / "teachers" / f"{spec.task}-{key}"


def finetune_teacher(spec: RunSpec, source: str, data: Data, device: torch.device, path: Path) -> tuple[str, dict]:
    """Fine-tune the teacher into ``path`` (with ``teacher.json``), or reuse what is already there."""
    settings = teacher_settings(spec)
    if (path / "teacher.json").is_file():
        info = json.loads((path / "teacher.json").read_text())
        log.info("reusing fine-tuned teacher %s (dev %s)", path, info["dev"])
        return str(path), info
    from opdf_ray.methods.finetune import FineTune

    ft_spec = dataclasses.replace(spec, method="finetune", lr=spec.teacher_finetune_lr, epochs=spec.teacher_epochs,
                                  opdf_cores=0, opdf_bond_dim=None)
    teacher = load_classifier(source, data.task.num_labels).to(device)
    method = FineTune(ft_spec, teacher, None)
    t0 = time.time()
    fitted = fit(method, ft_spec, data, device, total_steps(ft_spec, data), desc="teacher fine-tuning")
    info = {"source": source, "settings": settings, "best_step": fitted.best_step,
            "seconds": time.time() - t0, "examples_per_second": fitted.examples / max(fitted.train_seconds, 1e-9),
            "dev": {name: evaluate(teacher, data.loader(name, spec.eval_batch_size, False), data.task, device)
                    for name in data.task.dev_splits}}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    teacher.save_pretrained(tmp)
    (tmp / "teacher.json").write_text(json.dumps(info, indent=2))
    try:
        os.replace(tmp, path)
    except OSError:                                  # another run finished the same teacher first
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("fine-tuned teacher saved to %s (dev %s)", path, info["dev"])
    return str(path), info


@dataclass
class Job:
    """Everything one run trains and evaluates, built by ``prepare``."""

    spec: RunSpec
    device: torch.device
    tokenizer: object
    data: Data
    method: Method
    teacher_info: dict
    parallel: Parallel
    started: float


def prepare(spec: RunSpec, parallel: Parallel | None = None, finetuned_teacher: str | None = None) -> Job:
    """Data, teacher (fine-tuned once and cached, for KD/Theseus), student, method with OPDF applied.

    ``finetuned_teacher``: a teacher already fine-tuned for this task (a search fine-tunes it once, before its
    trials); otherwise KD/Theseus fine-tune it here, cached under ``cache_dir``.
    """
    started = time.time()
    parallel = parallel or Parallel()
    seed_everything(spec.seed)
    if spec.threads:
        torch.set_num_threads(spec.threads)
    device = resolve_device(spec.device)
    cache_dir = Path(spec.cache_dir or default_cache_dir())
    method_cls = get_method(spec.method)
    layer_ids = spec.layer_ids() or list(get_preset(spec.preset).student_layers)
    source = teacher_source(spec.preset, spec.teacher, cache_dir)
    _check_spec_against_models(spec, source, layer_ids)
    tokenizer = load_tokenizer(source)
    data = prepare_data(spec, tokenizer, cache_dir)
    task = data.task

    teacher_info = {}
    if method_cls.needs_finetuned_teacher:
        if finetuned_teacher:
            info_file = Path(finetuned_teacher) / "teacher.json"
            teacher_info = json.loads(info_file.read_text()) if info_file.is_file() else {}
            base = load_classifier(finetuned_teacher, task.num_labels)
        else:
            ft_source, teacher_info = finetune_teacher(spec, source, data, device,
                                                       teacher_cache_path(spec, source, data, cache_dir))
            base = load_classifier(ft_source, task.num_labels)
    else:
        base = load_classifier(source, task.num_labels)
    seed_everything(spec.seed)
    student = load_classifier(spec.student, task.num_labels) if spec.student else keep_layers(base, layer_ids)
    teacher = base if method_cls.uses_teacher else None
    method = method_cls(spec, student.to(device), None if teacher is None else teacher.to(device), parallel)
    method.apply_opdf()
    if getattr(method, "precompute_teacher_logits", None) and spec.cache_teacher_logits:
        loader = data.loader("train", spec.eval_batch_size, False, parallel=parallel)
        method.precompute_teacher_logits(_device_loader(loader, device), data.size("train"))
    return Job(spec, device, tokenizer, data, method, teacher_info, parallel, started)


def train(job: Job, resume_from: str | Path | None = None, on_evaluate=None) -> Progress:
    spec = job.spec
    return fit(job.method, spec, job.data, job.device, total_steps(spec, job.data, job.parallel),
               desc=f"{spec.task} {spec.method}", parallel=job.parallel, resume_from=resume_from,
               on_evaluate=on_evaluate)


def finalize(job: Job, fitted: Progress) -> tuple[dict, torch.nn.Module]:
    """Evaluate the selected student on selection and dev, merge it; return ``(results, merged student)``."""
    spec, data, method, device, parallel = job.spec, job.data, job.method, job.device, job.parallel
    task = data.task

    def on(model, name):
        return evaluate(model, data.loader(name, spec.eval_batch_size, False, parallel=parallel), task, device,
                        parallel)

    model = method.eval_model()
    results = {"selection": on(model, "selection"), "dev": {name: on(model, name) for name in task.dev_splits}}
    if method.teacher is not None:
        results["teacher_dev"] = {name: on(method.teacher, name) for name in task.dev_splits}
    exported = method.export_student()
    probe = _to(next(iter(data.loader(task.dev_splits[0], spec.eval_batch_size, False))), device)
    with torch.inference_mode():
        merge_diff = (exported(**model_inputs(probe)).logits - model(**model_inputs(probe)).logits).abs().max().item()
    trainable = sum(p.numel() for g in method.student_opt.param_groups for p in g["params"])
    results.update({
        "spec": spec.to_dict(), "task": task.name, "method": spec.method, "opdf": spec.opdf,
        "protocol": spec.select_on, "selection_metric": task.selection_metric,
        "selection_score": results["selection"][task.selection_metric] if spec.select_on == "selection"
        else results["dev"][task.dev_splits[0]][task.selection_metric],
        "best_step": fitted.best_step, "steps": fitted.step, "history": fitted.history,
        "trainable_params": trainable, "inference_params": sum(p.numel() for p in exported.parameters()),
        "merge_max_abs_logit_diff": merge_diff, "train_seconds": fitted.train_seconds,
        "examples_per_second": fitted.examples / max(fitted.train_seconds, 1e-9),
        "wall_seconds": time.time() - job.started, "workers": parallel.world_size,
        "bytes_all_reduced": parallel.bytes_all_reduced,
        "teacher_finetune": job.teacher_info, "data_sources": data.splits.sources,
        "sizes": {k: len(v["labels"]) for k, v in data.encoded.items()},
        "versions": {"opdf_ray": __version__, "torch": torch.__version__, "python": platform.python_version()},
        "device": str(device),
    })
    return results, exported


def save_student(results: dict, exported: torch.nn.Module, tokenizer, out_dir: Path) -> None:
    """The merged student as a stock Hugging Face checkpoint (safetensors), its tokenizer and ``results.json``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    exported.save_pretrained(out_dir / "model")
    tokenizer.save_pretrained(out_dir / "model")
    (out_dir / "results.json").write_text(json.dumps(results, indent=2, default=str))


def run(spec: RunSpec) -> dict:
    """Train one configuration in this process, evaluate on selection and dev, save the merged student."""
    job = prepare(spec)
    results, exported = finalize(job, train(job))
    out_dir = Path(spec.resolved_output_dir())
    results["output_dir"] = str(out_dir) if spec.save_model else None
    if spec.save_model:
        save_student(results, exported, job.tokenizer, out_dir)
    return results


def _device_loader(loader, device):
    for batch in loader:
        yield _to(batch, device)
