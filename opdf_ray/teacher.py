"""Everything about the teacher: where the pre-trained one comes from, its task fine-tuning with the cache key it
is stored under, and which models (fine-tuned or pre-trained) a run's student and teacher start from."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import time
from pathlib import Path

import torch
from torch import nn

from opdf_ray import log_to_console
from opdf_ray.batches import Data, on_device, prepare_data
from opdf_ray.config import RunSpec, get_preset
from opdf_ray.data import default_cache_dir, frame_digest
from opdf_ray.loop import autocast, banner, evaluate, fit, make_plan
from opdf_ray.models import (build_tiny_model, fingerprint, load_classifier, load_tokenizer, packaged_minilm_path,
                             run_device, takes_token_types)
from opdf_ray.storage import published

log = logging.getLogger(__name__)
INFO_FILE = "teacher.json"
# what the fine-tuned teacher depends on besides its source and the data files (its cache key); the student's
# optimiser settings (lr, warm-up, decay) are not among them: the teacher's fine-tuning has its own
FINETUNE_SETTINGS = ("task", "seed", "teacher_epochs", "teacher_finetune_lr", "max_length", "batch_size",
                     "max_train_samples", "max_steps", "selection_fraction", "selection_cap", "select_on")


def teacher_source(preset: str, teacher: str | None, cache_dir: str | os.PathLike) -> str:
    """Path or hub id of the (pre-trained, not task-tuned) teacher for a preset, unless overridden."""
    if teacher:
        return teacher
    if preset == "minilm":
        return str(packaged_minilm_path())
    if preset == "tiny":
        return str(build_tiny_model(cache_dir))
    return get_preset(preset).teacher


# the files of a local checkpoint that loading a classifier and its tokenizer reads
CHECKPOINT_SUFFIXES = (".json", ".safetensors", ".bin", ".txt", ".model")


def source_digest(source: str) -> str:
    """A teacher source's identity: the content of a local checkpoint (so a moved copy is the same teacher and a
    file overwritten in place is not), or the hub id as given (pin a revision by downloading it)."""
    path = Path(source)
    if not path.is_dir():
        return source
    digest = hashlib.sha256()
    for file in sorted(f for f in path.iterdir() if f.is_file() and f.suffix in CHECKPOINT_SUFFIXES):
        with file.open("rb") as fh:
            digest.update(file.name.encode() + hashlib.file_digest(fh, "sha256").digest())
    return digest.hexdigest()


def teacher_key(spec: RunSpec, source: str, data: Data) -> str:
    """The fine-tuned teacher's cache key: its source's content, the settings it was fine-tuned under and the rows
    it saw (train, selection slice and dev), never paths."""
    rows = {name: frame_digest(df) for name, df in
            {"train": data.splits.train, "selection": data.splits.selection, **data.splits.dev}.items()}
    return fingerprint(source_digest(source), teacher_settings(spec), rows)


def teacher_settings(spec: RunSpec) -> dict:
    return {k: getattr(spec, k) for k in FINETUNE_SETTINGS}


def teacher_settings_key(spec: RunSpec) -> str:
    """The settings of ``spec`` its fine-tuned teacher depends on, as text: which of a search's teachers a trial
    loads (one per distinct key)."""
    return json.dumps(teacher_settings(spec), sort_keys=True)


def finetune_spec(spec: RunSpec) -> RunSpec:
    """The run spec of the teacher's task fine-tuning: plain fine-tuning, dense, with the teacher's epochs and lr, no
    warm-up and no decay (a search over the student's warm-up or decay shares one teacher); whatever the method,
    it selects checkpoints on the whole held-out slice."""
    return dataclasses.replace(spec, method="finetune", lr=spec.teacher_finetune_lr, epochs=spec.teacher_epochs,
                               opdf_cores=0, opdf_bond_dim=None, warmup_ratio=0.0, weight_decay=0.0,
                               eval_steps=None)


def finetune_teacher(spec: RunSpec, source: str, tokenizer, device: torch.device, root: Path) -> tuple[str, dict]:
    """Fine-tune the teacher of ``spec`` under ``root/teachers/<task>-<key>`` (with ``teacher.json``), or reuse
    what is there. The key (``teacher_key``) covers the source, every setting the fine-tuning depends on and the
    data, so a teacher is never reused under other settings. Returns ``(path, info)``."""
    ft_spec = finetune_spec(spec)
    cache_dir = Path(spec.cache_dir or default_cache_dir())
    data = prepare_data(ft_spec, tokenizer, cache_dir, device)
    if not takes_token_types(source):
        data.without_token_types()
    path = root / "teachers" / f"{spec.task}-{teacher_key(spec, source, data)}"
    if (path / INFO_FILE).is_file():
        info = json.loads((path / INFO_FILE).read_text())
        log.info("reusing fine-tuned teacher %s (dev %s)", path, info["dev"])
        return str(path), info
    from transformers import set_seed

    from opdf_ray.methods.finetune import FineTune

    set_seed(spec.seed)        # its head and dropout: the same teacher from a search's Ray task as from a run
    teacher = load_classifier(source, data.task.num_labels).to(device)
    method = FineTune(ft_spec, teacher, None)
    plan = make_plan(ft_spec, data.size("train"))
    log.info(banner(f"fine-tuning the {spec.task} teacher {source}", plan,
                    trainable_params=method.trainable_parameter_count()))
    t0 = time.time()
    fitted = fit(method, ft_spec, data, device, plan, desc="teacher fine-tuning")
    info = {"source": source, "settings": teacher_settings(spec), "best_step": fitted.best_step,
            "seconds": time.time() - t0, "examples_per_second": fitted.examples_per_second,
            "dev": {name: evaluate(teacher, data.loader(name, spec.eval_batch_size, False), data.task, device,
                                   bf16=ft_spec.bf16_on(device))
                    for name in data.task.dev_splits}}
    with published(path) as (_, tmp):          # a concurrent run that finished the same teacher first wins
        teacher.save_pretrained(tmp)
        Path(tmp, INFO_FILE).write_text(json.dumps(info, indent=2))
    log.info("fine-tuned teacher saved to %s (dev %s)", path, info["dev"])
    return str(path), info


def finetune_teacher_into(spec_dict: dict, root: str) -> str:
    """Fine-tune the task teacher of ``spec_dict`` (a ``RunSpec`` dict) under ``root`` and return its path: a
    search runs this once per task, as a Ray task, before its trials."""
    spec = RunSpec.from_dict(spec_dict)
    if spec.threads:                       # a Ray task starts with one thread (OMP_NUM_THREADS=1)
        torch.set_num_threads(spec.threads)
    log_to_console()
    source = teacher_source(spec.preset, spec.teacher, Path(spec.cache_dir or default_cache_dir()))
    return finetune_teacher(spec, source, load_tokenizer(source), run_device(spec), Path(root))[0]


def student_from_finetuned(spec: RunSpec) -> bool:
    """The student's layers are copied from the task-fine-tuned teacher (not for an explicit ``--student``)."""
    return spec.student_init == "finetuned" and not spec.student


def teacher_from_finetuned(spec: RunSpec, method_cls) -> bool:
    """The method's teacher is the task-fine-tuned one: always for a frozen teacher (KD, Theseus), by
    ``teacher_init`` for one the method trains (ProKT, LGTM); ``False`` for a method without a teacher."""
    return method_cls.uses_teacher and (method_cls.needs_finetuned_teacher or spec.teacher_init == "finetuned")


def starts_from_finetuned_teacher(spec: RunSpec, method_cls) -> bool:
    """Whether a run of ``method_cls`` (a ``Method`` class) needs the task-fine-tuned teacher at all."""
    return student_from_finetuned(spec) or teacher_from_finetuned(spec, method_cls)


def starting_models(spec: RunSpec, method_cls, source: str, data: Data, device: torch.device,
                    finetuned: str | None = None) -> tuple[nn.Module | None, nn.Module | None, dict, str | None]:
    """``(student base, teacher, teacher.json info, teacher folder)``: the model the student's layers are copied
    from (None with an explicit ``--student``), the teacher the method starts with (None for a method without one)
    and, when that teacher is the task-fine-tuned one, its folder (where its logits are kept).

    Each is the task-fine-tuned teacher or the pre-trained ``source`` (see ``student_from_finetuned`` and
    ``teacher_from_finetuned``); each model is loaded once, so both roles may be the same object (the student is
    a copy). The fine-tuned teacher comes from ``finetuned`` (a search fine-tunes it once, before its trials) or
    is fine-tuned here and cached under ``cache_dir``. ``data``: the run's data (tokenizer, label count).
    """
    info, loaded = {}, {}

    def model(tuned: bool) -> nn.Module:
        nonlocal finetuned, info
        if tuned not in loaded:
            if tuned and finetuned:
                info_file = Path(finetuned) / INFO_FILE
                info = json.loads(info_file.read_text()) if info_file.is_file() else {}
            elif tuned:
                finetuned, info = finetune_teacher(spec, source, data.tokenizer, device,
                                                   Path(spec.cache_dir or default_cache_dir()))
            loaded[tuned] = load_classifier(finetuned if tuned else source, data.task.num_labels)
        return loaded[tuned]

    student_base = None if spec.student else model(student_from_finetuned(spec))
    tuned_teacher = method_cls.uses_teacher and teacher_from_finetuned(spec, method_cls)
    teacher = model(tuned_teacher) if method_cls.uses_teacher else None
    return student_base, teacher, info, finetuned if tuned_teacher else None


LOGITS_DIR = "logits"     # in a fine-tuned teacher's folder: its logits on a training split, one file per key


def train_logits_key(data: Data, batch_size: int, bf16: bool, device: torch.device, workers: int) -> str:
    """What a frozen teacher's training-split logits depend on besides the teacher itself: the tokenised rows in
    their order, and how they were batched and computed (batch size, padding, precision, device, workers, threads:
    each can move the last bits), so logits read back are exactly those computed."""
    rows = hashlib.sha256()
    for column in sorted(data.encoded["train"]):
        rows.update(column.encode() + json.dumps(data.encoded["train"][column]).encode())
    return fingerprint(rows.hexdigest(), batch_size, data.pad_to_multiple_of, bf16, device.type, workers,
                       torch.get_num_threads())


def shared_train_logits(method, data: Data, spec: RunSpec, device: torch.device, teacher_dir: str | None) -> None:
    """KD's frozen-teacher logits for the training split (``Method.cache_teacher_logits``), computed once per
    teacher and data and kept in the fine-tuned teacher's folder: every later trial of a search (and every search
    of that storage) with the same teacher and rows reads them instead of running the teacher over the split."""
    from safetensors.torch import load_file, save_file

    bf16 = spec.bf16_on(device)
    target = None
    if teacher_dir:
        key = train_logits_key(data, spec.eval_batch_size, bf16, device, method.parallel.world_size)
        target = Path(teacher_dir) / LOGITS_DIR / f"{spec.task}-{key}.safetensors"
    if target is not None and target.is_file():
        method.cached_logits = load_file(target, device=str(device))["logits"]
        log.info("teacher logits of %d training examples read from %s", len(method.cached_logits), target)
        return
    loader = data.loader("train", spec.eval_batch_size, False, parallel=method.parallel)
    with autocast(device, bf16):
        method.cache_teacher_logits(on_device(loader, device), data.size("train"))
    if target is not None and method.parallel.is_main:
        with published(target) as (_, tmp):             # trials that compute it at once: the first rename wins
            save_file({"logits": method.cached_logits.detach().cpu().contiguous()}, tmp)
