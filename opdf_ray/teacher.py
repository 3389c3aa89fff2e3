"""Everything about the teacher: where the pre-trained one comes from, its task fine-tuning (KD, Theseus) with
the cache key it is stored under, and loading the teacher a run distils from."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from pathlib import Path

import torch
from torch import nn

from opdf_ray.batches import Data, prepare_data
from opdf_ray.config import RunSpec, get_preset
from opdf_ray.loop import banner, evaluate, fit, make_plan
from opdf_ray.data import default_cache_dir
from opdf_ray.models import (build_tiny_model, fingerprint, load_classifier, load_tokenizer, packaged_minilm_path,
                             resolve_device)
from opdf_ray.storage import published

log = logging.getLogger(__name__)
INFO_FILE = "teacher.json"
# what the fine-tuned teacher depends on besides its source and the data files (its cache key)
FINETUNE_SETTINGS = ("task", "seed", "teacher_epochs", "teacher_finetune_lr", "max_length", "batch_size",
                     "max_train_samples", "max_steps", "selection_fraction", "selection_cap", "select_on",
                     "weight_decay", "warmup_ratio")


def teacher_source(preset: str, teacher: str | None, cache_dir: str | os.PathLike) -> str:
    """Path or hub id of the (pre-trained, not task-tuned) teacher for a preset, unless overridden."""
    if teacher:
        return teacher
    if preset == "minilm":
        return str(packaged_minilm_path())
    if preset == "tiny":
        return str(build_tiny_model(cache_dir))
    return get_preset(preset).teacher


def teacher_settings(spec: RunSpec) -> dict:
    return {k: getattr(spec, k) for k in FINETUNE_SETTINGS}


def teacher_cache_path(spec: RunSpec, source: str, data: Data, cache_dir: Path) -> Path:
    """Where the single-run command keeps a fine-tuned teacher: one per (teacher, task, seed, settings)."""
    key = fingerprint(source, teacher_settings(spec), data.splits.sources)
    return cache_dir / "teachers" / f"{spec.task}-{key}"


def finetune_teacher(spec: RunSpec, source: str, data: Data, device: torch.device, path: Path) -> tuple[str, dict]:
    """Fine-tune the teacher into ``path`` (with ``teacher.json``), or reuse what is already there."""
    if (path / INFO_FILE).is_file():
        info = json.loads((path / INFO_FILE).read_text())
        log.info("reusing fine-tuned teacher %s (dev %s)", path, info["dev"])
        return str(path), info
    from opdf_ray.methods.finetune import FineTune

    ft_spec = dataclasses.replace(spec, method="finetune", lr=spec.teacher_finetune_lr, epochs=spec.teacher_epochs,
                                  opdf_cores=0, opdf_bond_dim=None)
    teacher = load_classifier(source, data.task.num_labels).to(device)
    method = FineTune(ft_spec, teacher, None)
    plan = make_plan(ft_spec, data.size("train"))
    log.info(banner(f"fine-tuning the {spec.task} teacher {source}", plan,
                    trainable_params=method.trainable_parameter_count()))
    t0 = time.time()
    fitted = fit(method, ft_spec, data, device, plan, desc="teacher fine-tuning")
    info = {"source": source, "settings": teacher_settings(spec), "best_step": fitted.best_step,
            "seconds": time.time() - t0, "examples_per_second": fitted.examples_per_second,
            "dev": {name: evaluate(teacher, data.loader(name, spec.eval_batch_size, False), data.task, device)
                    for name in data.task.dev_splits}}
    with published(path) as (_, tmp):          # a concurrent run that finished the same teacher first wins
        teacher.save_pretrained(tmp)
        Path(tmp, INFO_FILE).write_text(json.dumps(info, indent=2))
    log.info("fine-tuned teacher saved to %s (dev %s)", path, info["dev"])
    return str(path), info


def finetune_teacher_into(spec_dict: dict, target: str) -> str:
    """Fine-tune the task teacher of ``spec_dict`` (a ``RunSpec`` dict) into ``target``, on its own: a search
    runs this once per task, as a Ray task, before its trials."""
    spec = RunSpec.from_dict(spec_dict)
    cache_dir = Path(spec.cache_dir or default_cache_dir())
    source = teacher_source(spec.preset, spec.teacher, cache_dir)
    data = prepare_data(spec, load_tokenizer(source), cache_dir)
    return finetune_teacher(spec, source, data, resolve_device(spec.device), Path(target))[0]


def load_teacher(spec: RunSpec, needs_finetuning: bool, source: str, data: Data, device: torch.device,
                 cache_dir: Path, finetuned: str | None = None) -> tuple[nn.Module, dict]:
    """The teacher a run starts from and what is known about it (``teacher.json``).

    ``needs_finetuning`` (KD, Theseus): the task-fine-tuned teacher, from ``finetuned`` (a search fine-tunes it
    once, before its trials) or fine-tuned here and cached under ``cache_dir``. Otherwise the pre-trained
    ``source`` (ProKT and LGTM train it inside the run).
    """
    if not needs_finetuning:
        return load_classifier(source, data.task.num_labels), {}
    if finetuned:
        info_file = Path(finetuned) / INFO_FILE
        info = json.loads(info_file.read_text()) if info_file.is_file() else {}
        return load_classifier(finetuned, data.task.num_labels), info
    path, info = finetune_teacher(spec, source, data, device, teacher_cache_path(spec, source, data, cache_dir))
    return load_classifier(path, data.task.num_labels), info
