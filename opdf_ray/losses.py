"""Distillation losses: logit KD and OPDF's tensor-alignment loss on live MPO cores."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from opdf_ray.choices import CORE_SELECTIONS
from opdf_ray.overparam import pair_mpo_layers



def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0,
            t2_scaling: bool = False, target_grad: bool = False) -> torch.Tensor:
    """Logit distillation: ``KL(softmax(z_t/T) ‖ softmax(z_s/T))``, mean over the batch.

    The teacher logits are the target and never receive gradient from this loss (ProKT's teacher step calls it
    with the roles swapped). ``t2_scaling`` multiplies by ``T²`` (Hinton et al., keeps gradient size comparable
    across temperatures); it is off by default because LGTM's published loss has no ``T²`` (identical at T=1).
    With a single output (regression, STS-B) the loss is the MSE between the two predictions.

    ``target_grad=True`` lets the gradient reach the teacher logits too (LGTM's distillation influence
    differentiates the student's KD loss with respect to the teacher).

    Shapes: ``student_logits, teacher_logits: (B, C)``.
    """
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}")
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(f"student logits {tuple(student_logits.shape)} and teacher logits "
                         f"{tuple(teacher_logits.shape)} must have the same shape (B, num_labels)")
    target = teacher_logits if target_grad else teacher_logits.detach()
    if student_logits.shape[-1] == 1:
        return F.mse_loss(student_logits, target)
    log_p_s = F.log_softmax(student_logits / temperature, dim=-1)
    log_p_t = F.log_softmax(target / temperature, dim=-1)
    loss = F.kl_div(log_p_s, log_p_t, reduction="batchmean", log_target=True)
    return loss * temperature ** 2 if t2_scaling else loss


def _core_indices(n_cores: int, central: int, cores: str | Sequence[int]) -> list[int]:
    if isinstance(cores, str):
        if cores not in CORE_SELECTIONS:
            raise ValueError(f"cores must be one of {CORE_SELECTIONS} or a list of core indices, got {cores!r}")
        return {"auxiliary": [k for k in range(n_cores) if k != central], "central": [central],
                "all": list(range(n_cores))}[cores]
    idx = list(cores)
    if not idx or any(isinstance(k, bool) or not isinstance(k, int) or not 0 <= k < n_cores for k in idx):
        raise ValueError(f"core indices must be a non-empty list of ints in 0..{n_cores - 1}, got {cores!r}")
    return idx


def tensor_alignment_loss(student: nn.Module, teacher: nn.Module,
                          layer_map: Sequence[int] | dict[int, int] | None = None,
                          cores: str | Sequence[int] = "auxiliary", weight: float = 1.0,
                          normalize: bool = False) -> torch.Tensor:
    """OPDF's tensor-alignment loss: pull the student's MPO cores toward the teacher's.

    ``L = weight · mean_{pairs} mean_{k ∈ cores} MSE(T^s_k, T^t_k)`` over every over-parameterised matrix of student
    layer i paired with the same matrix of teacher layer ``layer_map[i]`` (default i → 2i+1 for a teacher twice
    as deep; see ``overparam.default_layer_map``). The paper's per-matrix term is ``(1/n) Σ_k MSE`` over the
    auxiliary cores (the central core stays free); averaging over matrices keeps ``weight`` independent of depth.

    Computed on the live parameters, so gradients reach every selected student core (the published code read
    ``state_dict()`` copies and trained nothing); teacher cores are detached and never receive gradient.

    ``normalize=True`` divides each core's MSE by the teacher core's mean square: a relative squared error, so one
    ``weight`` means the same for every width, core count and core size (what training uses).

    Cores of one shape are stacked and reduced together: a handful of kernels per shape instead of ~10 per core,
    forward and backward (on a GPU, launching them bounded the OPDF step).

    Raises:
        ValueError: bad ``cores``/``layer_map``, or paired cores of different shapes (say which pair and shapes).
    """
    total = None
    for group in _aligned_groups(student, teacher, layer_map, cores):
        s_stack, t_stack = group.stacks()
        mse = (s_stack - t_stack).square().mean(1)                                     # (cores in the group,)
        if normalize:
            mse = mse / _mean_square(t_stack)
        term = group.share * mse.sum()
        total = term if total is None else total + term
    return weight * total


class TensorAlignment:
    """``tensor_alignment_loss`` of one training run, prepared once, with its gradient in closed form.

    Training adds the alignment's gradient to the cores' ``.grad`` directly rather than back-propagating a loss:
    ``∂L/∂S_k = weight · share_k · 2 (S_k − T_k) / (numel_k · [mean square of T_k])``, so the value, the gradient
    and the gradient's norm all come from one multi-tensor difference ``S − T`` and its norms: a handful of
    kernels for every core, no autograd graph, no host sync (on a GPU the per-core ops bounded the OPDF step).
    Frozen targets (KD, Theseus, a compressed student's copies) have their scales computed once.
    """

    def __init__(self, student: nn.Module, teacher: nn.Module,
                 layer_map: Sequence[int] | dict[int, int] | None = None, cores: str | Sequence[int] = "auxiliary",
                 normalize: bool = True, frozen_targets: bool = False):
        self.student: list[torch.Tensor] = []
        self.teacher: list[torch.Tensor] = []
        self._base: list[float] = []                       # 2 · share / numel per core
        for group in _aligned_groups(student, teacher, layer_map, cores):
            for s_core, t_core in zip(group.student, group.teacher):
                self.student.append(s_core)
                self.teacher.append(t_core)
                self._base.append(2 * group.share / s_core.numel())
        self.normalize, self.frozen_targets = normalize, frozen_targets
        self.trained_index = [k for k, c in enumerate(self.student) if c.requires_grad]
        self.trained = [self.student[k] for k in self.trained_index]     # the cores the gradient is for
        self._frozen_scales: tuple[torch.Tensor, list[float]] | None = None

    def _scales(self) -> tuple[torch.Tensor, list[float] | list[torch.Tensor]]:
        """``(scale (K,), the trained cores' scales)`` with ``∂L/∂S_k = scale_k (S_k − T_k)`` at weight 1."""
        if self._frozen_scales is not None:
            return self._frozen_scales
        t = self.teacher
        scale = torch.tensor(self._base, dtype=t[0].dtype, device=t[0].device)
        if self.normalize:
            numel = torch.tensor([c.numel() for c in t], dtype=t[0].dtype, device=t[0].device)
            mean_square = torch.stack(torch._foreach_norm(t)).square() / numel
            scale = scale / mean_square.clamp_min(torch.finfo(mean_square.dtype).tiny)
        trained = scale[self.trained_index]
        if self.frozen_targets:                            # one host sync per run: scalars for the multi-tensor mul
            self._frozen_scales = (scale, trained.tolist())
            return self._frozen_scales
        return scale, list(trained.unbind())

    @torch.no_grad()
    def pull(self) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor]:
        """``(loss, gradient of each trained core, the gradient's norm)`` at weight 1 (0-d tensors, no sync)."""
        diff = torch._foreach_sub(self.student, self.teacher)                  # S − T, every aligned core
        scale, trained_scales = self._scales()
        norms = torch.stack(torch._foreach_norm(diff))
        loss = (norms.square() * scale).sum() / 2
        grads = torch._foreach_mul([diff[k] for k in self.trained_index], trained_scales)
        grad_norm = (norms * scale)[self.trained_index].square().sum().sqrt()
        return loss, grads, grad_norm


def _mean_square(t_stack: torch.Tensor) -> torch.Tensor:
    return t_stack.square().mean(1).clamp_min(torch.finfo(t_stack.dtype).tiny)


@dataclass
class _CoreGroup:
    """Paired cores of one shape and one weight in the loss (``share``: 1 / (cores per matrix · matrices))."""

    share: float
    student: list[torch.Tensor]
    teacher: list[torch.Tensor]

    def stacks(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(n, numel)`` stacks of the student cores (differentiable) and the detached teacher cores."""
        return (torch.stack(self.student).flatten(1),
                torch.stack([t.detach() for t in self.teacher]).flatten(1))


def _aligned_groups(student: nn.Module, teacher: nn.Module, layer_map, cores) -> list[_CoreGroup]:
    pairs = pair_mpo_layers(student, teacher, layer_map)
    groups: dict[tuple, _CoreGroup] = {}
    for name, s_mod, t_mod in pairs:
        if s_mod.n_cores != t_mod.n_cores:
            raise ValueError(f"{name}: student has {s_mod.n_cores} cores, teacher {t_mod.n_cores}; over-parameterise "
                             f"both with the same n_cores")
        idx = _core_indices(s_mod.n_cores, s_mod.central_index, cores)
        share = 1 / (len(idx) * len(pairs))
        for k in idx:
            s_core, t_core = s_mod.cores[k], t_mod.cores[k]
            if s_core.shape != t_core.shape:
                raise ValueError(f"{name} core {k}: student shape {tuple(s_core.shape)} ≠ teacher shape "
                                 f"{tuple(t_core.shape)}; use the same MPO shapes and bond_dim on both")
            group = groups.setdefault((tuple(s_core.shape), share), _CoreGroup(share, [], []))
            group.student.append(s_core)
            group.teacher.append(t_core)
    return list(groups.values())
