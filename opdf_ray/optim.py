"""The optimiser of a model whose matrices may be MPO cores: AdamW parameter groups in which a deployed (merged)
matrix steps and decays as the same dense matrix would, and the learning-rate schedule.

Why a core needs its own lr and decay: AdamW moves every trainable entry by about ``lr`` per step, whatever it
is. A dense matrix ``W: (I, J)`` has ``IJ`` entries, so its first step moves it by ``lr·√(IJ)``; an MPO matrix's
entries are its cores, and the contracted ``W`` they give moves κ times further for the same gradient (κ ≈ 3–6 for
MiniLM's matrices with 5 cores: docs/results.md). Decoupled weight decay multiplies every core by ``1 − lr·wd``,
so ``W`` (a product of ``n`` trained cores) shrinks by ``(1 − lr·wd)^n``, ``n`` times a dense weight's decay.

Each MPO matrix therefore gets a group of its own (``mpo_matrix`` names it) with

* lr ``s·lr``: ``s`` a fixed multiplier (``opdf_core_lr`` a number; ``1.0`` is the published recipe) or ``1/κ``
  (``matched``), κ calibrated on the first gradient the cores receive (``calibrate``);
* weight decay ``wd / (s·n_t)`` over ``n_t`` trained cores, so one step shrinks ``W`` by ``(1 − lr·wd/n_t)^{n_t}
  ≈ 1 − lr·wd``, what it shrinks a dense weight by.

Embeddings, LayerNorm, biases and the head keep the dense lr (no decay on biases and LayerNorm weights).
"""

from __future__ import annotations

import logging
import re
import statistics

import torch
from torch import nn

from opdf_ray import mpo
from opdf_ray.layers import MPOLinear
from opdf_ray.overparam import LAYER_MATRICES, find_targets, mpo_modules

log = logging.getLogger(__name__)
ADAMW_EPS = 1e-8              # torch's default, what AdamW's first step divides by


def make_optimizer(module: nn.Module, lr: float, weight_decay: float, core_lr: float | None = 1.0,
                   dense_like_cores: int = 0, style: str = "paper") -> torch.optim.AdamW:
    """AdamW over the trainable parameters of ``module`` (see the module docstring for the groups).

    Args:
        core_lr: the cores' lr as a multiple of ``lr``, or ``None`` for ``matched`` (each matrix's multiplier is
            ``1/κ``, set by ``calibrate`` before the cores' first step; ``1.0`` until then).
        dense_like_cores: a dense model's control for OPDF at one lr (``dense_lr_as_cores``): each encoder matrix
            gets a group whose lr becomes ``κ·lr`` (``calibrate_dense``), κ being how much further an MPO of it
            with this many cores (``style``) would move at the same lr. 0: off.
    """
    layers = mpo_modules(module)
    core_ids = {id(c) for m in layers.values() for c in m.cores}
    matrices = {f"{name}.weight": name for name in find_targets(module)} if dense_like_cores else {}
    decay, no_decay, own = [], [], []
    for name, p in module.named_parameters():
        if p.requires_grad and id(p) not in core_ids:
            if name in matrices:
                own.append({"params": [p], "weight_decay": weight_decay, "dense_matrix": matrices[name],
                            "like_cores": dense_like_cores, "style": style, "kappa": None, "lr_scale": None})
            else:
                (no_decay if name.endswith("bias") or "LayerNorm" in name else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}, *own]
    scale = 1.0 if core_lr is None else core_lr
    for name, layer in layers.items():
        cores = [c for c in layer.cores if c.requires_grad]
        if cores:
            groups.append({"params": cores, "lr": scale * lr, "weight_decay": weight_decay / (scale * len(cores)),
                           "mpo_matrix": name, "kappa": None, "core_lr_scale": None if core_lr is None else scale})
    params = [p for g in groups for p in g["params"]]
    fused = all(p.is_cuda or p.device.type == "cpu" for p in params)
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=lr, fused=fused)


def linear_schedule(optimizer, total_steps: int, warmup_ratio: float) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up over ``warmup_ratio·total`` steps, then linear decay to 0 (the HF default the papers use)."""
    from transformers import get_linear_schedule_with_warmup

    return get_linear_schedule_with_warmup(optimizer, int(warmup_ratio * total_steps), total_steps)


def pending_groups(optimizer: torch.optim.Optimizer) -> list[dict]:
    """The core groups whose lr waits for calibration (``matched``, no gradient seen yet)."""
    return [g for g in optimizer.param_groups if "mpo_matrix" in g and g["core_lr_scale"] is None]


@torch.no_grad()
def step_ratio(layer: MPOLinear, dense_grad: torch.Tensor, core_grads: list[torch.Tensor]) -> float:
    """κ: how much further AdamW's first step moves the contracted ``W`` than it moves a dense ``W``, for the same
    gradient.

    AdamW's first step moves each entry by ``lr·g/(|g|+ε)`` (bias-corrected moments ``m̂ = g``, ``v̂ = g²``): a
    dense ``W`` by ``lr·‖G/(|G|+ε)‖`` (``lr·√(IJ)`` where ``|G| ≫ ε``), the cores by ``u_k = g_k/(|g_k|+ε)``,
    which move ``W`` by ``lr·Σ_k ∂W/∂T_k[u_k]`` to first order (a JVP of the contraction; exact as lr → 0).

    Args:
        layer: the MPO matrix; its cores are read, not changed.
        dense_grad: ``G: (out, in)``, the gradient of the loss with respect to the contracted weight.
        core_grads: the gradient of each of ``layer.trainable_cores()`` (the others stay fixed).
    """
    cores = [c.detach().float() for c in layer.cores]
    tangents = [torch.zeros_like(c) for c in cores]
    position = {id(c): k for k, c in enumerate(layer.cores)}
    for core, g in zip(layer.trainable_cores(), core_grads, strict=True):
        tangents[position[id(core)]] = g.float() / (g.float().abs() + ADAMW_EPS)
    with torch.autocast(cores[0].device.type, enabled=False):
        _, moved = torch.func.jvp(lambda *cs: mpo.contract(list(cs), layer.row_shape, layer.col_shape),
                                  tuple(cores), tuple(tangents))
    dense = dense_grad.float()
    return float(moved.norm() / (dense / (dense.abs() + ADAMW_EPS)).norm().clamp_min(1e-30))


def calibrate(optimizer: torch.optim.Optimizer, scheduler: torch.optim.lr_scheduler.LRScheduler,
              layer_grads: list[tuple[MPOLinear, torch.Tensor, list[torch.Tensor]]]) -> dict[str, float]:
    """Give every pending ``matched`` core group lr/κ and decay wd·κ/n_t, κ from its layer's gradients
    (``step_ratio``); call it before the optimiser's step. A group whose layer has no gradient yet (a Theseus
    successor no block drew) waits for one. The schedule's base lr follows, so its warm-up and decay apply.

    Args:
        layer_grads: ``(layer, dense gradient, trained cores' gradients)`` of the layers that have one, averaged
            across workers (so every worker computes the same κ).

    Returns:
        κ by matrix name, for the groups calibrated by this call.
    """
    of_layer = {id(m.trainable_cores()[0]): (m, dense, grads) for m, dense, grads in layer_grads}
    found = {}
    for index, group in enumerate(optimizer.param_groups):
        if "mpo_matrix" not in group or group["core_lr_scale"] is not None or id(group["params"][0]) not in of_layer:
            continue
        kappa = step_ratio(*of_layer[id(group["params"][0])])
        if not kappa > 0:                               # no gradient reached these cores: wait for one
            continue
        group["core_lr_scale"] = _scale_lr(group, index, scheduler, 1 / kappa)
        group["kappa"] = kappa
        found[group["mpo_matrix"]] = kappa
    return found


def _scale_lr(group: dict, index: int, scheduler: torch.optim.lr_scheduler.LRScheduler, scale: float) -> float:
    """Multiply group ``index``'s lr by ``scale`` where the schedule is now and in its base (so warm-up and decay
    apply to the new lr), and divide its decoupled decay by ``scale`` (AdamW shrinks by lr·wd: unchanged)."""
    base = scheduler.base_lrs[index]
    factor = group["lr"] / base                         # where the schedule is now (0 during a warm-up's start)
    scheduler.base_lrs[index] = group["initial_lr"] = base * scale
    group["lr"] = base * scale * factor
    group["weight_decay"] = group["weight_decay"] / scale
    return scale


def pending_dense_groups(optimizer: torch.optim.Optimizer) -> list[dict]:
    """The dense matrices' groups whose ``κ·lr`` waits for their first gradient (``dense_lr_as_cores``)."""
    return [g for g in optimizer.param_groups if "dense_matrix" in g and g["lr_scale"] is None]


def calibrate_dense(optimizer: torch.optim.Optimizer, scheduler: torch.optim.lr_scheduler.LRScheduler
                    ) -> dict[str, float]:
    """Give every pending dense matrix group lr·κ and decay wd/κ (so its decay stays a dense one's), κ the step
    ratio an MPO of the matrix with ``like_cores`` cores would have for this gradient (``step_ratio``): the matrix
    then steps as far as OPDF at one lr (``opdf_core_lr 1.0``) moves it. Call it before the optimiser's step,
    with the (averaged) gradients in ``.grad``. Returns κ by matrix name."""
    found = {}
    for index, group in enumerate(optimizer.param_groups):
        if "dense_matrix" not in group or group["lr_scale"] is not None or group["params"][0].grad is None:
            continue
        weight = group["params"][0].detach().float()
        rows, cols = mpo.factor_shapes(weight.shape[0], weight.shape[1], group["like_cores"], group["style"])
        cores = mpo.decompose(weight, rows, cols)
        _, vjp = torch.func.vjp(lambda *cs: mpo.contract(list(cs), rows, cols), *cores)
        grad = group["params"][0].grad.float()
        layer = MPOLinear([c.clone() for c in cores], rows, cols)
        kappa = step_ratio(layer, grad, list(vjp(grad)))
        if not kappa > 0:
            continue
        group["kappa"] = group["lr_scale"] = _scale_lr(group, index, scheduler, kappa)
        found[group["dense_matrix"]] = kappa
    return found


def matrix_type(name: str) -> str:
    """``bert.encoder.layer.3.attention.self.query`` → ``query``; the six encoder matrices by their role."""
    for pattern in LAYER_MATRICES:
        match = re.search(rf"(?:^|\.)({pattern})$", name)
        if match:
            return match.group(1).removeprefix("attention.self.")
    return name


def describe(kappas: dict[str, float]) -> str:
    """κ per matrix type, median (min–max) over layers: the start-up log line of a matched core lr."""
    by_type: dict[str, list[float]] = {}
    for name, kappa in kappas.items():
        by_type.setdefault(matrix_type(name), []).append(kappa)
    return ", ".join(f"{t} {statistics.median(v):.2f} ({min(v):.2f}–{max(v):.2f})" for t, v in by_type.items())
