"""One distillation run: ``prepare`` (data, teacher, student, method with OPDF) → ``train`` → ``finalize``
(evaluate selection and dev, merge) → ``save_student``; ``run`` chains them in one process.

Nothing here holds global state besides torch's RNG/threads, so a Ray Train worker calls the same functions.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import platform
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from opdf_ray import __version__, mpo
from opdf_ray import trial_metrics as tm
from opdf_ray.batches import Data, prepare_data, to_device
from opdf_ray.checkpoint import Progress
from opdf_ray.config import RunSpec
from opdf_ray.data import default_cache_dir, selection_split
from opdf_ray.tasks import Task, task_of
from opdf_ray.loop import Plan, banner, evaluate, fit, make_plan
from opdf_ray.methods import Method, get_method
from opdf_ray.methods.base import model_inputs
from opdf_ray.models import (check_checkpoint, from_pretrained, keep_layers, load_classifier, load_tokenizer, run_device,
                             takes_token_types)
from opdf_ray.parallel import Parallel
from opdf_ray.storage import check_folder
from opdf_ray.teacher import shared_train_logits, starting_models, teacher_from_finetuned, teacher_source

log = logging.getLogger(__name__)


def check_spec_against_models(spec: RunSpec, source: str, lengths: tuple[int, ...] = ()) -> None:
    """Errors that would otherwise surface after minutes of teacher fine-tuning, or in every trial: a teacher that
    does not load, student layers it does not have, a length its examples do not fit (``spec.max_length`` and
    ``lengths``, the values a search space may draw), shapes MPO cannot factor."""
    from transformers import AutoConfig

    check_checkpoint(source, "teacher")                   # a missing source: the clear, specific error
    if spec.student:
        check_checkpoint(spec.student, "student")
    config = from_pretrained(AutoConfig, source)
    depth, layer_ids = config.num_hidden_layers, spec.student_layer_ids()
    if not spec.student and not all(0 <= i < depth for i in layer_ids):
        raise ValueError(f"student layers {layer_ids} do not exist in the {depth}-layer teacher {source}")
    if spec.method == "theseus" and depth % len(layer_ids):
        raise ValueError(f"BERT-of-Theseus needs the teacher depth ({depth}) to be a multiple of the student's "
                         f"({len(layer_ids)})")
    texts = len(task_of(spec).text_keys)
    least = load_tokenizer(source).num_special_tokens_to_add(pair=texts == 2) + texts
    most = getattr(config, "max_position_embeddings", None)
    for length in sorted({spec.max_length, *lengths}):
        if length < least or (most and length > most):
            # below ``least`` the tokenizer cannot truncate and returns whole examples, which overflow the positions
            raise ValueError(f"max_length={length} is invalid for {spec.task} with {source}; allowed: "
                             f"{least}..{most or ''} (its special tokens and a token of each of the task's {texts} "
                             f"text(s), up to its position embeddings)")
    pad = spec.pad_to_multiple_of
    if pad and most and -(-max((spec.max_length, *lengths)) // pad) * pad > most:
        raise ValueError(f"pad_to_multiple_of={pad} pads max_length={max((spec.max_length, *lengths))} beyond the "
                         f"{most} positions of {source}; allowed: a multiple that keeps batches within them")
    if spec.opdf:
        ffn = getattr(config, "intermediate_size", None) or config.hidden_dim            # DistilBERT: hidden_dim
        for rows, cols in {(config.hidden_size, config.hidden_size), (ffn, config.hidden_size)}:
            mpo.factor_shapes(rows, cols, spec.opdf_cores, spec.opdf_style)


@dataclass
class Job:
    """Everything one run trains and evaluates, built by ``prepare``."""

    spec: RunSpec
    device: torch.device
    data: Data
    method: Method
    plan: Plan
    params: dict[str, int]          # trainable (MPO cores included) and inference (the deployed student)
    teacher_info: dict
    parallel: Parallel
    started: float
    teacher_selection_start: dict | None = None   # a trained teacher (ProKT, LGTM) on the selection slice at start


def prepare(spec: RunSpec, parallel: Parallel | None = None, finetuned_teacher: str | None = None) -> Job:
    """Data, teacher and student (from the task-fine-tuned teacher, fine-tuned once and cached, when the run starts
    from it), method with OPDF applied; logs the start-up banner.

    ``finetuned_teacher``: a teacher already fine-tuned for this task (a search fine-tunes it once, before its
    trials); otherwise it is fine-tuned here when needed, cached under ``cache_dir``.
    """
    from transformers import set_seed

    started = time.time()
    parallel = parallel or Parallel()
    set_seed(spec.seed)
    if spec.threads:
        torch.set_num_threads(spec.threads)
    device = run_device(spec)
    cache_dir = Path(spec.cache_dir or default_cache_dir())
    check_folder("cache_dir", cache_dir)
    method_cls = get_method(spec.method)
    source = teacher_source(spec.preset, spec.teacher, cache_dir)
    check_spec_against_models(spec, source)
    data = prepare_data(spec, load_tokenizer(source), cache_dir, device)
    if not takes_token_types(source):
        data.without_token_types()
    plan = make_plan(spec, data.size("train"), parallel.world_size)   # a bad batch split fails before any work

    student_base, teacher, teacher_info, teacher_dir = starting_models(spec, method_cls, source, data, device,
                                                                       finetuned_teacher)
    set_seed(spec.seed)
    student = (load_classifier(spec.student, data.task.num_labels) if spec.student
               else keep_layers(student_base, spec.student_layer_ids()))
    deployed = sum(p.numel() for p in student.parameters())   # OPDF merges back to exactly this
    method = method_cls(spec, student.to(device), None if teacher is None else teacher.to(device), parallel)
    method.apply_opdf()
    params = {"trainable_params": method.trainable_parameter_count(), "inference_params": deployed}
    teacher_start = None
    if method.trains_teacher:      # whether the teacher it trains ends better or worse than it started
        teacher_start = evaluate(method.teacher, data.loader("selection", spec.eval_batch_size, False,
                                                             parallel=parallel), data.task, device, parallel,
                                 spec.bf16_on(device))
    if parallel.is_main:
        opdf = f"OPDF {spec.opdf_cores} cores" if spec.opdf else "dense"
        log.info(banner(f"{spec.task} {spec.method} ({opdf}) on {device}", plan, **params))
    if method_cls.caches_teacher_logits and spec.cache_teacher_logits:
        shared_train_logits(method, data, spec, device, teacher_dir)
    return Job(spec, device, data, method, plan, params, teacher_info, parallel, started, teacher_start)


def train(job: Job, resume_from: str | Path | None = None, on_evaluate=None, on_log=None) -> Progress:
    spec = job.spec
    return fit(job.method, spec, job.data, job.device, job.plan, desc=f"{spec.task} {spec.method}",
               parallel=job.parallel, resume_from=resume_from, on_evaluate=on_evaluate, on_log=on_log)


def finalize(job: Job, fitted: Progress) -> tuple[dict, torch.nn.Module]:
    """Evaluate the selected student on selection and dev, merge it; return ``(results, merged student)``."""
    spec, data, method, device, parallel = job.spec, job.data, job.method, job.device, job.parallel
    task = data.task

    def on(model, name):
        return evaluate(model, data.loader(name, spec.eval_batch_size, False, parallel=parallel), task, device,
                        parallel, spec.bf16_on(device))

    model = method.eval_model()
    select_split = selection_split(task, spec.select_on)
    # the loop evaluated the selection split at the best step, the student now restored to it: its metrics are
    # reused (a second, equal pass cost ~1.4 s a trial, 4% of the quick start; tests/test_run.py checks equality)
    selection = (fitted.best_metrics if select_split == "selection" and fitted.best_metrics is not None
                 else on(model, "selection"))
    results = {"selection": selection, "dev": {name: on(model, name) for name in task.dev_splits}}
    if method.teacher is not None:
        results["teacher_dev"] = (frozen_teacher_dev(job)
                                  or {name: on(method.teacher, name) for name in task.dev_splits})
    if job.teacher_selection_start is not None:
        results["teacher_selection"] = {"start": job.teacher_selection_start, "end": on(method.teacher, "selection")}
    if method.core_step_ratios:
        results["core_step_ratios"] = method.core_step_ratios      # κ per matrix (opdf_core_lr=matched)
    exported = method.export_student()
    probe = to_device(next(iter(data.loader(task.dev_splits[0], spec.eval_batch_size, False))), device)
    with torch.inference_mode():
        merge_diff = (exported(**model_inputs(probe)).logits - model(**model_inputs(probe)).logits).abs().max().item()
    results |= selected_drift(fitted)
    selected = results["selection"] if select_split == "selection" else results["dev"][select_split]
    results.update({
        "spec": spec.to_dict(), "task": task.name, "method": spec.method, "opdf": spec.opdf,
        "protocol": spec.select_on, "selection_metric": task.selection_metric,
        "selection_score": selected[task.selection_metric],
        "best_step": fitted.best_step, "steps": fitted.step, "history": fitted.history,
        **job.params, "plan": dataclasses.asdict(job.plan),
        "merge_max_abs_logit_diff": merge_diff, "train_seconds": fitted.train_seconds,
        "examples_per_second": fitted.examples_per_second,
        "wall_seconds": time.time() - job.started, "workers": parallel.world_size,
        "bytes_all_reduced": parallel.bytes_all_reduced,
        "teacher_finetune": job.teacher_info, "data_sources": data.splits.sources,
        "sizes": {k: len(v["labels"]) for k, v in data.encoded.items()},
        "versions": {"opdf_ray": __version__, "torch": torch.__version__, "python": platform.python_version()},
        "device": str(device),
    })
    return results, exported


def selected_drift(fitted: Progress) -> dict[str, float]:
    """``drift_deployed`` (and, for OPDF, ``drift_cores``) of the selected student: measured at each evaluation
    (``loop.fit``), read at the best step, whose weights the student now holds."""
    at_best = next((h for h in fitted.history if h["step"] == fitted.best_step), {})
    return {k: at_best[k] for k in (tm.DRIFT_DEPLOYED, tm.DRIFT_CORES) if k in at_best}


def frozen_teacher_dev(job: Job) -> dict | None:
    """A frozen task-fine-tuned teacher (KD, Theseus) ends a run as it started: its dev scores are those its
    fine-tune measured (``teacher.json``), not evaluated again at every trial's end (on SST-2 that evaluation was
    as long as the student's selection and dev ones together). None for a teacher the method trains or one that
    did not come from the fine-tune."""
    dev = job.teacher_info.get("dev") or {}
    if (job.method.trains_teacher or not teacher_from_finetuned(job.spec, type(job.method))
            or set(dev) != set(job.data.task.dev_splits)):
        return None
    return dev


def name_labels(config, task: Task) -> None:
    """Give a classifier's config the task's label names (``pipeline`` prints them instead of LABEL_0/LABEL_1);
    a regression head (STS-B) keeps its one unnamed output."""
    names = task.label_names
    if names:
        config.id2label = dict(enumerate(names))
        config.label2id = {name: i for i, name in enumerate(names)}


def save_student(results: dict, exported: torch.nn.Module, tokenizer, out_dir: Path) -> None:
    """The merged student as a stock Hugging Face checkpoint (safetensors), its tokenizer and ``results.json``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    name_labels(exported.config, task_of(results["spec"]))
    exported.save_pretrained(out_dir / "model")
    tokenizer.save_pretrained(out_dir / "model")
    (out_dir / "results.json").write_text(json.dumps(results, indent=2, default=str))


def run(spec: RunSpec) -> dict:
    """Train one configuration in this process, evaluate on selection and dev, save the merged student."""
    out_dir = Path(spec.resolved_output_dir())
    if spec.save_model:
        check_folder("output_dir", out_dir)
    job = prepare(spec)
    results, exported = finalize(job, train(job))
    results["output_dir"] = str(out_dir) if spec.save_model else None
    if spec.save_model:
        save_student(results, exported, job.data.tokenizer, out_dir)
    return results
