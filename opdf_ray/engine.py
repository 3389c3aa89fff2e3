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
from torch.utils.data import DataLoader

from opdf_ray import __version__, mpo
from opdf_ray.config import RunSpec
from opdf_ray.data import (GlueSplits, GlueTask, TokenizedDataset, compute_metrics, default_cache_dir, load_glue,
                           make_collate, tokenize)
from opdf_ray.methods import Method, get_method
from opdf_ray.methods.base import model_inputs
from opdf_ray.models import (fingerprint, get_preset, keep_layers, load_classifier, load_tokenizer,
                             teacher_source)

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

    def loader(self, name: str, batch_size: int, shuffle: bool, seed: int = 0) -> DataLoader:
        generator = torch.Generator().manual_seed(seed)
        return DataLoader(TokenizedDataset(self.encoded[name]), batch_size=batch_size, shuffle=shuffle,
                          generator=generator, collate_fn=make_collate(self.pad_token_id, self.task.is_regression))


def prepare_data(spec: RunSpec, tokenizer, cache_dir: Path) -> Data:
    splits = load_glue(spec.task, spec.data_dir, spec.selection_fraction, spec.selection_cap, spec.seed,
                       spec.max_train_samples)
    frames = {"train": splits.train, "selection": splits.selection, **splits.dev}
    encoded = {name: tokenize(df, splits.task, tokenizer, spec.max_length, cache_dir) for name, df in frames.items()}
    return Data(splits.task, splits, encoded, tokenizer.pad_token_id)


def _to(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def evaluate(model: torch.nn.Module, loader: DataLoader, task: GlueTask, device: torch.device) -> dict[str, float]:
    """Task metrics (percent) of ``model`` on every example of ``loader`` (one pass, no duplicates)."""
    model.eval()
    predictions, labels = [], []
    with torch.inference_mode():
        for batch in loader:
            logits = model(**model_inputs(_to(batch, device))).logits.float().cpu()
            predictions.append(logits.squeeze(-1) if task.is_regression else logits.argmax(-1))
            labels.append(batch["labels"])
    return compute_metrics(task, torch.cat(predictions).numpy(), torch.cat(labels).numpy())


def _check_spec_against_models(spec: RunSpec, source: str, layer_ids: list[int]) -> None:
    """Errors that would otherwise surface after minutes of teacher fine-tuning."""
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(source)
    except OSError:
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


def fit(method: Method, spec: RunSpec, data: Data, device: torch.device, total_steps: int,
        desc: str = "") -> dict:
    """Train for ``total_steps``, evaluating every ``eval_steps`` (default: each epoch) on the selection slice
    (or dev, under the papers' protocol); keep the best student state in memory and restore it at the end."""
    from tqdm.auto import tqdm

    task = data.task
    train_loader = data.loader("train", spec.batch_size, shuffle=True, seed=spec.seed)
    select_name = "selection" if spec.select_on == "selection" else task.dev_splits[0]
    select_loader = data.loader(select_name, spec.eval_batch_size, shuffle=False)
    held_iter = None
    if method.uses_held_batch:
        held_loader = data.loader("selection", spec.batch_size, shuffle=True, seed=spec.seed + 1)
        held_iter = _cycle(held_loader)
    eval_every = spec.eval_steps or len(train_loader)
    method.setup(total_steps)
    best_score, best_step, best_state, history = -math.inf, 0, None, []
    train_seconds, examples, step = 0.0, 0, 0
    bar = tqdm(total=total_steps, desc=desc, disable=not spec.progress, leave=False)
    while step < total_steps:
        for batch in train_loader:
            held = _to(next(held_iter), device) if held_iter is not None else None
            t0 = time.perf_counter()
            logs = method.train_step(_to(batch, device), held)
            train_seconds += time.perf_counter() - t0
            examples += len(batch["labels"])
            step += 1
            if not all(math.isfinite(v) for v in logs.values()):
                raise NonFiniteLossError(f"non-finite loss at step {step}: {logs}")
            bar.update(1)
            bar.set_postfix(loss=f"{logs['loss']:.4f}")
            if step % eval_every == 0 or step == total_steps:
                metrics = evaluate(method.eval_model(), select_loader, task, device)
                score = metrics[task.selection_metric]
                history.append({"step": step, "epoch": step / len(train_loader), **logs,
                                **{f"{select_name}_{k}": v for k, v in metrics.items()}})
                log.info("step %d: %s %s = %.2f", step, select_name, task.selection_metric, score)
                if score > best_score:
                    best_score, best_step, best_state = score, step, method.trainable_state()
            if step >= total_steps:
                break
    bar.close()
    method.load_trainable_state(best_state)
    return {"best_step": best_step, "history": history, "train_seconds": train_seconds,
            "train_examples": examples, "examples_per_second": examples / max(train_seconds, 1e-9),
            "steps": step}


def _cycle(loader):
    while True:
        yield from loader


def _total_steps(spec: RunSpec, data: Data) -> int:
    per_epoch = math.ceil(len(data.encoded["train"]["labels"]) / spec.batch_size)
    total = spec.epochs * per_epoch
    return min(total, spec.max_steps) if spec.max_steps else total


def finetune_teacher(spec: RunSpec, source: str, data: Data, device: torch.device, cache_dir: Path) -> tuple[str, dict]:
    """Fine-tune the teacher once per (teacher, task, seed, settings) and reuse it from ``cache_dir/teachers``."""
    settings = {k: getattr(spec, k) for k in ("task", "seed", "teacher_epochs", "teacher_finetune_lr", "max_length",
                                              "batch_size", "max_train_samples", "max_steps", "selection_fraction",
                                              "selection_cap", "select_on", "weight_decay", "warmup_ratio")}
    key = fingerprint(source, settings, data.splits.sources)
    path = cache_dir / "teachers" / f"{spec.task}-{key}"
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
    fitted = fit(method, ft_spec, data, device, _total_steps(ft_spec, data), desc="teacher fine-tuning")
    info = {"source": source, "settings": settings, "best_step": fitted["best_step"],
            "seconds": time.time() - t0, "examples_per_second": fitted["examples_per_second"],
            "dev": {name: evaluate(teacher, data.loader(name, spec.eval_batch_size, False), data.task, device)
                    for name in data.task.dev_splits}}
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    teacher.save_pretrained(tmp)
    (tmp / "teacher.json").write_text(json.dumps(info, indent=2))
    try:
        os.replace(tmp, path)
    except OSError:                                  # another run finished the same teacher first
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("fine-tuned teacher saved to %s (dev %s)", path, info["dev"])
    return str(path), info


def run(spec: RunSpec) -> dict:
    """Train one configuration, evaluate on selection and dev, save the merged student; return the results."""
    t_start = time.time()
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
        ft_source, teacher_info = finetune_teacher(spec, source, data, device, cache_dir)
        base = load_classifier(ft_source, task.num_labels)
    else:
        base = load_classifier(source, task.num_labels)
    seed_everything(spec.seed)
    student = load_classifier(spec.student, task.num_labels) if spec.student else keep_layers(base, layer_ids)
    teacher = base if method_cls.uses_teacher else None
    method = method_cls(spec, student.to(device), None if teacher is None else teacher.to(device))
    method.apply_opdf()
    if getattr(method, "precompute_teacher_logits", None) and spec.cache_teacher_logits:
        method.precompute_teacher_logits(_device_loader(data.loader("train", spec.eval_batch_size, False), device))

    fitted = fit(method, spec, data, device, _total_steps(spec, data), desc=f"{spec.task} {spec.method}")
    model = method.eval_model()
    results = {
        "selection": evaluate(model, data.loader("selection", spec.eval_batch_size, False), task, device),
        "dev": {name: evaluate(model, data.loader(name, spec.eval_batch_size, False), task, device)
                for name in task.dev_splits},
    }
    if teacher is not None:
        results["teacher_dev"] = {name: evaluate(teacher, data.loader(name, spec.eval_batch_size, False), task,
                                                 device) for name in task.dev_splits}
    exported = method.export_student()
    probe = _to(next(iter(data.loader(task.dev_splits[0], spec.eval_batch_size, False))), device)
    with torch.inference_mode():
        merge_diff = (exported(**model_inputs(probe)).logits - model(**model_inputs(probe)).logits).abs().max().item()
    trainable = sum(p.numel() for g in method.student_opt.param_groups for p in g["params"])
    out_dir = Path(spec.resolved_output_dir())
    results.update({
        "spec": spec.to_dict(), "task": task.name, "method": spec.method, "opdf": spec.opdf,
        "protocol": spec.select_on, "selection_metric": task.selection_metric,
        "selection_score": results["selection"][task.selection_metric] if spec.select_on == "selection"
        else results["dev"][task.dev_splits[0]][task.selection_metric],
        "best_step": fitted["best_step"], "steps": fitted["steps"], "history": fitted["history"],
        "trainable_params": trainable, "inference_params": sum(p.numel() for p in exported.parameters()),
        "merge_max_abs_logit_diff": merge_diff, "train_seconds": fitted["train_seconds"],
        "examples_per_second": fitted["examples_per_second"], "wall_seconds": time.time() - t_start,
        "teacher_finetune": teacher_info, "data_sources": data.splits.sources,
        "sizes": {k: len(v["labels"]) for k, v in data.encoded.items()},
        "versions": {"opdf_ray": __version__, "torch": torch.__version__, "python": platform.python_version()},
        "device": str(device), "output_dir": str(out_dir) if spec.save_model else None,
    })
    if spec.save_model:
        out_dir.mkdir(parents=True, exist_ok=True)
        exported.save_pretrained(out_dir / "model")
        tokenizer.save_pretrained(out_dir / "model")
        (out_dir / "results.json").write_text(json.dumps(results, indent=2, default=str))
    return results


def _device_loader(loader, device):
    for batch in loader:
        yield _to(batch, device)
