"""The student's starting point: its encoder matrices (and MPO cores) as training found them, the L2-SP pull toward
them, and how far training moved from them (drift).

L2-SP (Li, Grandvalet & Davoudi, ICML 2018) is the dense regulariser OPDF's ``init`` alignment resembles: at that
map the alignment pulls the auxiliary cores toward the student's own starting cores. The pull here acts on the
matrices a deployed student has, ``W: (out, in)`` (an OPDF layer: its merged weight, before the gradient reaches
the cores), so a dense student can have the same anchor at dense cost:

    L2SP = Σ_m ‖W_m − W0_m‖² / Σ_m ‖W0_m‖²,    ∂L2SP/∂W_m = 2 (W_m − W0_m) / Σ_m ‖W0_m‖²

Drift is ``mean_m ‖W_m − W0_m‖ / ‖W0_m‖`` (deployed matrices) and the same over the trained cores.
"""

from __future__ import annotations

import torch
from torch import nn

from opdf_ray.layers import MPOLinear
from opdf_ray.overparam import encoder_matrices


def _weight(m: nn.Linear | MPOLinear) -> torch.Tensor:
    """The matrix a layer deploys now (an MPO layer's contraction of its current cores)."""
    return m.weight.detach() if isinstance(m, nn.Linear) else m.weight().detach()


class StartingPoint:
    """The encoder matrices of ``layers`` (and, for OPDF, their trained cores) at construction; built after OPDF is
    applied and before the first step, so ``W0`` of an MPO layer is its cores' contraction (with a bond dimension:
    the truncated start, which is what training starts from)."""

    def __init__(self, layers: nn.Module):
        self.matrices = [m for m in encoder_matrices(layers).values()
                         if (m.weight.requires_grad if isinstance(m, nn.Linear) else m.trainable_cores())]
        if not self.matrices:
            raise ValueError("the student has no encoder matrices to anchor (query/key/value/…/output.dense)")
        with torch.no_grad():
            self.w0 = [_weight(m).clone() for m in self.matrices]
            self.cores = [c for m in self.matrices if isinstance(m, MPOLinear) for c in m.trainable_cores()]
            self.c0 = [c.detach().clone() for c in self.cores]
            self.w0_square = torch.stack(torch._foreach_norm(self.w0)).square().sum()    # Σ ‖W0‖², 0-d

    @torch.no_grad()
    def drift(self) -> dict[str, float]:
        """``drift_deployed`` (and ``drift_cores`` for OPDF): the mean relative distance from the start."""
        out = {"drift_deployed": _mean_relative([_weight(m) for m in self.matrices], self.w0)}
        if self.cores:
            out["drift_cores"] = _mean_relative([c.detach() for c in self.cores], self.c0)
        return out

    @torch.no_grad()
    def pull_(self, ratio: float, weight: float) -> dict[str, torch.Tensor]:
        """Add the L2-SP gradient to the dense gradients of the matrices that hold one this step (a dense
        parameter's ``.grad``; an MPO layer's per-step dense gradient, which is then pushed into its cores),
        weighted by ``weight`` or, with ``ratio > 0``, by the weight that makes ‖∇ pull‖ / ‖∇ rest‖ on those
        matrices that ratio (0 while they sit on their start). Returns the step's logs (0-d tensors, no sync):
        ``l2sp`` (the unweighted relative distance; under a fixed weight, the weighted term), ``l2sp_weight``
        and ``l2sp_grad_ratio``."""
        held = [(k, g) for k, m in enumerate(self.matrices) if (g := _dense_gradient(m)) is not None]
        if not held:
            return {}
        rest = [g for _, g in held]
        current = [_step_weight(self.matrices[k]) for k, _ in held]
        diff = torch._foreach_sub(current, [self.w0[k] for k, _ in held])            # W − W0
        scale = 2 / self.w0_square                                                   # ∂/∂W = scale (W − W0)
        diff_norm = torch.stack(torch._foreach_norm(diff)).square().sum().sqrt()
        value = diff_norm.square() / self.w0_square
        pull_norm = scale * diff_norm
        rest_norm = torch.stack(torch._foreach_norm(rest)).square().sum().sqrt()
        if ratio > 0:
            strength = torch.where(pull_norm > 0, ratio * rest_norm / pull_norm.clamp_min(
                torch.finfo(pull_norm.dtype).tiny), 0.0)
            logs = {"l2sp": value, "l2sp_weight": strength}
        else:
            strength = torch.as_tensor(weight, dtype=value.dtype, device=value.device)
            logs = {"l2sp": weight * value}
        torch._foreach_add_(rest, torch._foreach_mul(diff, strength * scale))
        logs["l2sp_grad_ratio"] = strength * pull_norm / rest_norm.clamp_min(1e-12)
        return logs

    @torch.no_grad()
    def gradient(self) -> list[torch.Tensor]:
        """``∂L2SP/∂W`` of every matrix at weight 1 (LGTM's look-ahead adds it under a fixed weight)."""
        return torch._foreach_mul(torch._foreach_sub([_weight(m) for m in self.matrices], self.w0),
                                  2 / self.w0_square)


def _dense_gradient(m: nn.Linear | MPOLinear) -> torch.Tensor | None:
    return m.weight.grad if isinstance(m, nn.Linear) else m.dense_gradient()


def _step_weight(m: nn.Linear | MPOLinear) -> torch.Tensor:
    """The weight this step's gradient was taken at: the parameter, or the MPO layer's per-step leaf."""
    return m.weight.detach() if isinstance(m, nn.Linear) else m.step_weight(build=False).detach()


def _mean_relative(now: list[torch.Tensor], start: list[torch.Tensor]) -> float:
    distance = torch.stack(torch._foreach_norm(torch._foreach_sub(now, start)))
    size = torch.stack(torch._foreach_norm(start)).clamp_min(torch.finfo(distance.dtype).tiny)
    return float((distance / size).mean())
