"""The one small interface every distillation method implements, plus the pieces they share."""

from __future__ import annotations

import copy
import logging
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from opdf_ray import optim
from opdf_ray.anchor import StartingPoint
from opdf_ray.gradients import OptimizerGradients
from opdf_ray.layers import MPOLinear
from opdf_ray.losses import TensorAlignment, kd_loss, tensor_alignment_loss
from opdf_ray.models import encoder_layer_list
from opdf_ray.optim import linear_schedule, make_optimizer
from opdf_ray.overparam import default_layer_map, merge, mpo_modules, overparameterize
from opdf_ray.parallel import Parallel

log = logging.getLogger(__name__)
MODEL_INPUTS = ("input_ids", "token_type_ids", "attention_mask")


def model_inputs(batch: dict) -> dict:
    """What a model's forward takes from a batch (no ``token_type_ids`` for a family without them: DistilBERT)."""
    return {k: batch[k] for k in MODEL_INPUTS if k in batch}


def task_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy on class logits ``(B, C)``; MSE for a single regression output ``(B, 1)`` (STS-B)."""
    if logits.shape[-1] == 1:
        return F.mse_loss(logits.squeeze(-1), labels.float())
    return F.cross_entropy(logits, labels)


class Method:
    """One distillation method: owns its optimisers and performs one training step per batch.

    Hand-written rather than a ``transformers.Trainer``: ProKT alternates two models, LGTM differentiates through
    a simulated student step, Theseus trains a subset, and gradients are averaged where each optimiser steps
    (``opdf_ray.parallel``), none of which a generic trainer loop expresses.

    Life cycle (driven by ``opdf_ray.engine`` and ``opdf_ray.loop.fit``), each hook called once, in this order:

    1. construct with the spec, student and teacher;
    2. ``apply_opdf()``: over-parameterise the layers the method trains (and the teacher's, for alignment), then
       note the student's starting point (L2-SP's anchor, drift's origin);
    3. ``cache_teacher_logits(batches, n)``, only when ``caches_teacher_logits`` and the spec ask for it;
    4. ``setup(total_steps)``: optimisers and schedules (``optimizers()`` returns them from then on);
    5. ``train_step(batch, held_batch)`` per batch; ``eval_model()`` whenever the loop evaluates;
    6. ``export_student()``: the merged, stock student.
    """

    name: ClassVar[str] = ""
    uses_teacher: ClassVar[bool] = True
    trains_teacher: ClassVar[bool] = False
    needs_finetuned_teacher: ClassVar[bool] = False   # KD/Theseus: a task-fine-tuned, frozen teacher
    uses_held_batch: ClassVar[bool] = False           # LGTM: a batch from the selection slice per step
    caches_teacher_logits: ClassVar[bool] = False     # KD: a frozen teacher's logits can be computed once

    def __init__(self, spec, student: nn.Module, teacher: nn.Module | None, parallel: Parallel | None = None):
        self.spec, self.student, self.teacher = spec, student, teacher
        self.parallel = parallel or Parallel()
        self.steps_done = 0
        self.student_opt: torch.optim.AdamW | None = None          # built by setup()
        self.student_sched: torch.optim.lr_scheduler.LRScheduler | None = None
        self.align_targets: nn.ModuleList | None = None                # set by apply_opdf() when aligning
        self.align_map: dict[int, int] = {}
        self._gradients: dict[int, OptimizerGradients] = {}           # by id(optimizer), see gradients_of
        self.core_step_ratios: dict[str, float] = {}                  # κ per calibrated MPO matrix (matched lr)
        self.alignment: TensorAlignment | None = None                   # set by apply_opdf() when aligning
        self.start: StartingPoint | None = None                          # set by apply_opdf()
        self.log_details = True     # the loop clears it on steps whose logs nobody reads (diagnostics skipped)
        self.batch_step_weights = True   # False: contract and back-propagate MPO layers one by one (the reference)

    # -- structure (Theseus overrides) ------------------------------------------------------------------------
    def student_layers(self) -> nn.ModuleList:
        return encoder_layer_list(self.student)

    def teacher_layers(self) -> nn.ModuleList:
        return encoder_layer_list(self.teacher)

    def eval_model(self) -> nn.Module:
        """The model whose predictions are the student's (evaluated, selected, exported)."""
        return self.student

    # -- OPDF ------------------------------------------------------------------------------------------------------
    @property
    def aligns(self) -> bool:
        """Whether the alignment loss acts: OPDF on, a teacher with cores, a strength > 0, and aligned cores that
        train (central-only training leaves the auxiliary cores nothing to align)."""
        s = self.spec
        strength = s.opdf_align_ratio > 0 or s.opdf_align_weight > 0
        trained = not (s.opdf_train_cores == "central" and s.opdf_align_cores == "auxiliary")
        return s.opdf and self.uses_teacher and s.opdf_teacher and strength and trained

    def alignment_layer_map(self) -> dict[int, int]:
        """Student layer i → teacher layer: the one it was initialised from (``opdf_align_map=init``), or the last
        of its block (``block-last``, the published ``2i+1`` for a teacher twice as deep)."""
        if self.spec.opdf_align_map == "block-last":
            return default_layer_map(len(self.student_layers()), len(self.teacher_layers()))
        return dict(enumerate(self.spec.student_layer_ids()))

    def apply_opdf(self) -> None:
        """Over-parameterise (``_decompose``), then keep the student's starting point (``StartingPoint``)."""
        self._decompose()
        self.start = StartingPoint(self.student_layers())

    def _decompose(self) -> None:
        """Over-parameterise the student's encoder matrices; OPDF off: no-op.

        The teacher's forward stays exact: a frozen teacher (KD, Theseus) stays dense, a trained one (ProKT, LGTM,
        with ``opdf_teacher``) trains as full-rank MPO like the published LGTM+OPDF. The alignment targets are the
        teacher's cores at the student's rank: the trained teacher's own live cores when the student is full rank,
        otherwise (a frozen teacher, or a compressed student) cores of a frozen copy of the mapped teacher layers.
        """
        s = self.spec
        if not s.opdf:
            return
        mapping = self.alignment_layer_map() if self.aligns else {}
        if self.aligns and not (self.trains_teacher and s.opdf_bond_dim is None):
            teacher_layers = self.teacher_layers()
            self.align_targets = nn.ModuleList(copy.deepcopy(teacher_layers[j]) for _, j in sorted(mapping.items()))
            overparameterize(self.align_targets, s.opdf_cores, s.opdf_bond_dim, style=s.opdf_style,
                             name="the alignment targets (frozen teacher layers)")
            self.align_targets.requires_grad_(False)
            self.align_map = {i: k for k, (i, _) in enumerate(sorted(mapping.items()))}
        if self.uses_teacher and s.opdf_teacher and self.trains_teacher:
            overparameterize(self.teacher_layers(), s.opdf_cores, None, style=s.opdf_style, name="the teacher")
            if self.aligns and s.opdf_bond_dim is None:
                self.align_targets, self.align_map = self.teacher_layers(), mapping
        overparameterize(self.student_layers(), s.opdf_cores, s.opdf_bond_dim, style=s.opdf_style,
                         name="the student")
        if s.opdf_train_cores == "central":
            for layer in mpo_modules(self.student_layers()).values():
                for core in layer.auxiliary_cores():
                    core.requires_grad_(False)
        for model in (self.eval_model(), self.teacher if self.trains_teacher else None):
            for layer in mpo_modules(model).values() if model is not None else ():
                layer.per_step = s.mpo_weight == "per-step"
        if self.aligns:                     # pairs checked now, not at step 1; frozen targets' scales kept
            live = self.align_targets is self.teacher_layers()
            self.alignment = TensorAlignment(self.student_layers(), self.align_targets, self.align_map,
                                             s.opdf_align_cores, normalize=True, frozen_targets=not live)

    def _alignment_args(self, weight: float | None = None) -> dict:
        s = self.spec
        return {"student": self.student_layers(), "teacher": self.align_targets, "layer_map": self.align_map,
                "cores": s.opdf_align_cores, "weight": s.opdf_align_weight if weight is None else weight,
                "normalize": True}

    @property
    def align_by_ratio(self) -> bool:
        """The alignment's strength is a gradient ratio (``opdf_align_ratio``), applied after the backward pass,
        rather than a weight in the loss."""
        return self.aligns and self.spec.opdf_align_ratio > 0

    def alignment_loss(self) -> torch.Tensor | None:
        """The weighted alignment term (None: no alignment, or one applied by ratio), as a differentiable loss: the
        definition that the closed form training adds to the gradient (``add_alignment``) matches."""
        return tensor_alignment_loss(**self._alignment_args()) if self.aligns and not self.align_by_ratio else None

    def add_alignment(self, logs: dict) -> dict:
        """Add the alignment's gradient to the aligned cores' ``.grad`` (after the distillation gradient was
        reduced: the alignment depends on the parameters only, so it is the same on every worker), weighted by
        ``opdf_align_weight`` or, under ``opdf_align_ratio``, by the weight that makes ‖∇ alignment‖ / ‖∇ rest‖ that
        ratio (re-chosen every step; 0 while the cores sit on their targets). Logs ``align`` (under a weight, it
        is also part of ``loss``) and, on ``log_details`` steps or by ratio, ``align_grad_ratio``."""
        loss, grads, align_norm = self.alignment.pull()
        cores = self.alignment.trained
        held = [k for k, p in enumerate(cores) if p.grad is not None]      # the others: no gradient but this one
        missing = [k for k, p in enumerate(cores) if p.grad is None]
        rest = [cores[k].grad for k in held]
        if self.align_by_ratio or self.log_details:
            rest_norm = torch.stack(torch._foreach_norm(rest)).square().sum().sqrt() if rest else align_norm * 0
        if self.align_by_ratio:
            weight = torch.where(align_norm > 0, self.spec.opdf_align_ratio * rest_norm / align_norm.clamp_min(
                torch.finfo(align_norm.dtype).tiny), 0.0)
            logs = logs | {"align": loss, "align_weight": weight}
        else:
            weight = self.spec.opdf_align_weight
            logs = logs | {"loss": logs["loss"] + weight * loss, "align": weight * loss}
        if held and isinstance(weight, torch.Tensor):
            torch._foreach_add_(rest, torch._foreach_mul([grads[k] for k in held], weight))
        elif held:
            torch._foreach_add_(rest, [grads[k] for k in held], alpha=weight)
        for k, g in zip(missing, torch._foreach_mul([grads[k] for k in missing], weight) if missing else ()):
            cores[k].grad = g
        if self.align_by_ratio or self.log_details:
            logs["align_grad_ratio"] = weight * align_norm / rest_norm.clamp_min(1e-12)
        return logs

    def add_alignment_to(self, gradients: OptimizerGradients, raw: list[torch.Tensor]) -> None:
        """Add the weighted alignment gradient to a raw gradient (LGTM's look-ahead), as ``add_alignment`` adds
        it to ``.grad`` (under ``opdf_align_ratio``, the look-ahead leaves it out)."""
        if not self.aligns or self.align_by_ratio:
            return
        position = {id(t): k for k, t in enumerate(gradients.targets())}
        _, grads, _ = self.alignment.pull()
        for core, g in zip(self.alignment.trained, grads):
            k = position[id(core)]
            raw[k] = raw[k] + self.spec.opdf_align_weight * g

    @staticmethod
    def scalars(logs: dict) -> dict[str, float]:
        """A step's logs as floats: every tensor among them read back in one device sync."""
        keys = [k for k, v in logs.items() if isinstance(v, torch.Tensor)]
        if not keys:
            return logs
        values = torch.stack([logs[k].detach().reshape(()).float() for k in keys]).tolist()
        return logs | dict(zip(keys, values))

    def trainable_parameter_count(self) -> int:
        """Parameters the student trains with (MPO cores included): what OPDF over-parameterises."""
        return sum(p.numel() for p in self.eval_model().parameters() if p.requires_grad)

    # -- training --------------------------------------------------------------------------------------------------
    def cache_teacher_logits(self, batches, n_examples: int) -> None:
        """Compute the frozen teacher's logits for every training example once (``caches_teacher_logits``)."""
        raise NotImplementedError(f"{self.name} does not cache teacher logits")

    def setup(self, total_steps: int) -> None:
        s = self.spec
        self.student_opt = make_optimizer(self.eval_model(), s.lr, s.weight_decay, s.core_lr_multiplier,
                                          s.dense_lr_as_cores, s.opdf_style)
        self.student_sched = linear_schedule(self.student_opt, total_steps, s.warmup_ratio)
        if self.uses_teacher and not self.trains_teacher:
            self.teacher.eval().requires_grad_(False)

    def train_step(self, batch: dict, held_batch: dict | None = None) -> dict[str, float]:
        """One optimiser step (of each model the method trains) on ``batch``.

        Args:
            batch: a padded batch on the device (``input_ids``, ``token_type_ids``, ``attention_mask``,
                ``labels``, ``index``), this worker's share of the global batch.
            held_batch: a batch of the selection slice for methods with ``uses_held_batch`` (LGTM), else None.

        Returns:
            The step's loss terms as floats; ``"loss"`` (the student's total) is always there. ``fit`` stops
            every worker when any value is NaN/inf, shows ``loss`` on the progress bar, and every key is
            recorded in the history and reported as ``train/<key>``.
        """
        raise NotImplementedError

    def student_loss(self, s_logits, t_logits, labels) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``α·KD(p_t‖p_s) + (1−α)·task loss``, with its named terms (0-d tensors; ``student_step`` adds OPDF's
        alignment to the gradient and to ``loss``)."""
        s = self.spec
        kd = kd_loss(s_logits, t_logits, s.temperature, s.t2_scaling)
        loss = s.alpha_kd * kd
        terms = {"kd": kd.detach()}
        if s.alpha_kd < 1:
            ce = task_loss(s_logits, labels)
            loss = loss + (1 - s.alpha_kd) * ce
            terms["ce"] = ce.detach()
        return loss, {"loss": loss.detach(), **terms}

    def student_step(self, loss: torch.Tensor, logs: dict) -> dict:
        """Back-propagate the student's loss, add the alignment's gradient, step its optimiser."""
        self.gradients_of(self.student_opt).zero_grad()
        if loss.requires_grad:          # Theseus: False when every block drew its frozen predecessors
            loss.backward()
        logs = self.reduce_gradients(self.student_opt, logs)
        if self.aligns:
            logs = self.add_alignment(logs)
        self.clip_and_step(self.student_opt, self.student_sched)
        return logs

    def optimizer_step(self, loss: torch.Tensor, optimizer, scheduler) -> None:
        self.gradients_of(optimizer).zero_grad()
        loss.backward()
        self.reduce_gradients(optimizer)
        self.clip_and_step(optimizer, scheduler)

    def gradients_of(self, optimizer) -> OptimizerGradients:
        """``optimizer``'s parameters with the per-step MPO layers whose cores it steps (``opdf_ray.gradients``)."""
        key = id(optimizer)
        if key not in self._gradients:
            layers = [m for model in (self.eval_model(), self.teacher) if model is not None
                      for m in mpo_modules(model).values()]
            params = [p for g in optimizer.param_groups for p in g["params"]]
            aligned = self.aligns and optimizer is self.student_opt    # the alignment: the only direct core loss
            self._gradients[key] = OptimizerGradients(params, layers, batched=self.batch_step_weights,
                                                      direct_cores=aligned)
        return self._gradients[key]

    def reduce_gradients(self, optimizer, logs: dict | None = None) -> dict | None:
        """Average the gradients in ``.grad`` across data-parallel workers (MPO layers: their dense weight's
        gradient) and push the dense gradients into the cores; see ``OptimizerGradients.reduce_``. In between, a
        matched core lr still waiting for its first gradient is calibrated from the averaged dense gradients, and
        the student's optimiser (``logs`` given) gets the L2-SP pull on those dense gradients (``add_l2sp``: the
        same on every worker, so added after the average). Returns ``logs`` with the pull's terms."""
        grads = self.gradients_of(optimizer)
        grads.average_(self.parallel)
        if optim.pending_groups(optimizer):
            self.calibrate_core_lr(optimizer, grads.layer_gradients_in_grad())
        if optim.pending_dense_groups(optimizer):
            self.calibrate_dense_lr(optimizer)
        if logs is not None and optimizer is self.student_opt and self.spec.l2sp:
            logs = self.add_l2sp(logs)
        grads.push_()
        return logs

    def add_l2sp(self, logs: dict) -> dict:
        """L2-SP (``anchor``): pull the student's encoder matrices toward their start, by ``l2sp_weight`` (then
        also part of ``loss``) or to the gradient ratio ``l2sp_ratio``."""
        s = self.spec
        terms = self.start.pull_(s.l2sp_ratio, s.l2sp_weight)
        if terms and s.l2sp_ratio == 0:
            logs = logs | {"loss": logs["loss"] + terms["l2sp"]}
        return logs | terms

    def add_l2sp_to(self, gradients: OptimizerGradients, raw: list[torch.Tensor]) -> None:
        """Add the fixed-weight L2-SP gradient to a raw gradient (LGTM's look-ahead), as ``add_l2sp`` adds it to
        ``.grad`` (under ``l2sp_ratio``, the look-ahead leaves it out, as it does the alignment's)."""
        s = self.spec
        if s.l2sp_weight == 0:
            return
        position = {id(p): k for k, p in enumerate(gradients.others)}
        position |= {id(m): len(gradients.others) + k for k, m in enumerate(gradients.layers)}   # dense parts
        for m, g in zip(self.start.matrices, self.start.gradient()):
            k = position.get(id(m) if isinstance(m, MPOLinear) else id(m.weight))
            if k is not None:
                raw[k] = raw[k] + s.l2sp_weight * g

    def calibrate_dense_lr(self, optimizer) -> None:
        """``dense_lr_as_cores``: each encoder matrix's lr becomes κ × lr (``optim.calibrate_dense``); log κ."""
        scheduler = next(sched for opt, sched in self.optimizers().values() if opt is optimizer)
        found = optim.calibrate_dense(optimizer, scheduler)
        if found and self.parallel.is_main:
            log.info("dense control: lr × κ of a %d-core MPO per matrix, κ by type %s", self.spec.dense_lr_as_cores,
                     optim.describe(found))
        self.core_step_ratios |= found

    def calibrate_core_lr(self, optimizer, layer_grads: list) -> None:
        """``opdf_core_lr=matched``: set the lr of ``optimizer``'s core groups still waiting for it from their
        layers' ``(layer, dense gradient, core gradients)`` (``optim.calibrate``); log κ per matrix type."""
        scheduler = next(sched for opt, sched in self.optimizers().values() if opt is optimizer)
        found = optim.calibrate(optimizer, scheduler, layer_grads)
        if found and self.parallel.is_main:
            name = next(n for n, (opt, _) in self.optimizers().items() if opt is optimizer)
            log.info("matched core lr (%s): lr/κ per matrix, κ by type %s", name, optim.describe(found))
        if optimizer is self.student_opt:
            self.core_step_ratios |= found

    def clip_and_step(self, optimizer, scheduler) -> None:
        """Clip the (reduced) gradients of what ``optimizer`` updates and step it and its schedule."""
        if self.spec.max_grad_norm > 0:   # only what this optimiser updates (the published Theseus clipped all)
            params = [p for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
            torch.nn.utils.clip_grad_norm_(params, self.spec.max_grad_norm)
        optimizer.step()
        self.gradients_of(optimizer).cores_changed()
        scheduler.step()

    def optimizers(self) -> dict[str, tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]]:
        """Every (optimiser, scheduler) the method steps, by name: what a resumable checkpoint must hold."""
        return {"student": (self.student_opt, self.student_sched)}

    # -- checkpoints -----------------------------------------------------------------------------------------------
    def trainable_state(self) -> dict[str, torch.Tensor]:
        """A detached copy of the student's trainable parameters (what checkpoint selection keeps)."""
        return {n: p.detach().clone() for n, p in self.eval_model().named_parameters() if p.requires_grad}

    def load_trainable_state(self, state: dict[str, torch.Tensor]) -> None:
        unexpected = self.eval_model().load_state_dict(state, strict=False).unexpected_keys
        if unexpected:
            raise ValueError(f"checkpoint has keys the student lacks: {unexpected[:5]}")

    def training_state(self) -> tuple[dict[str, torch.Tensor], dict]:
        """Everything needed to resume training: trainable tensors (student, and the teacher when it trains),
        optimiser and scheduler states, the step count. Returns ``(tensors, json-able metadata)``."""
        tensors = {f"student.{n}": p.detach() for n, p in self.eval_model().named_parameters() if p.requires_grad}
        if self.trains_teacher:
            tensors |= {f"teacher.{n}": p.detach() for n, p in self.teacher.named_parameters() if p.requires_grad}
        meta = {"steps_done": self.steps_done, "optimizers": {}}
        for name, (opt, sched) in self.optimizers().items():
            state = opt.state_dict()
            for index, slots in state["state"].items():
                tensors |= {f"opt.{name}.{index}.{k}": v for k, v in slots.items()}
            meta["optimizers"][name] = {"param_groups": state["param_groups"], "scheduler": sched.state_dict()}
        return tensors, meta

    def load_training_state(self, tensors: dict[str, torch.Tensor], meta: dict) -> None:
        """Inverse of ``training_state`` (after ``apply_opdf`` and ``setup``)."""
        def load(module, prefix):
            part = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
            missing = [n for n, p in module.named_parameters() if p.requires_grad and n not in part]
            if missing:
                raise ValueError(f"checkpoint lacks trainable parameters {missing[:3]}… (different method/OPDF "
                                 f"settings?)")
            module.load_state_dict(part, strict=False)

        load(self.eval_model(), "student.")
        if self.trains_teacher:
            load(self.teacher, "teacher.")
        for name, (opt, sched) in self.optimizers().items():
            saved = meta["optimizers"][name]
            slots: dict[int, dict] = {}
            for key, value in tensors.items():
                if key.startswith(f"opt.{name}."):
                    index, slot = key[len(f"opt.{name}."):].split(".", 1)
                    slots.setdefault(int(index), {})[slot] = value
            groups = [g | {"betas": tuple(g["betas"])} for g in saved["param_groups"]]
            opt.load_state_dict({"state": slots, "param_groups": groups})
            sched.load_state_dict(saved["scheduler"])
        self.steps_done = meta["steps_done"]

    def export_student(self) -> nn.Module:
        """A stock Hugging Face student (MPO cores merged): what gets saved and deployed."""
        return merge(copy.deepcopy(self.eval_model())).eval()
