"""``MPOLinear``: a linear layer whose weight is trained as MPO cores and merged back to ``nn.Linear`` to deploy."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from opdf_ray import mpo


class MPOLinear(nn.Module):
    """``y = x Wᵀ + b`` with ``W: (out, in)`` rebuilt from trainable MPO cores ``T_k: (d_{k-1}, i_k, j_k, d_k)``.

    The forward contracts the cores once (cheapest order, see ``mpo.contract``) and calls ``F.linear``, so every
    core gets a gradient. In eval mode, when no gradient is needed, the dense weight is cached and rebuilt only
    when a core changes (tracked by tensor version counters, which every in-place update bumps).
    """

    def __init__(self, cores: Sequence[torch.Tensor], row_shape: Sequence[int], col_shape: Sequence[int],
                 bias: torch.Tensor | None = None):
        super().__init__()
        self.row_shape, self.col_shape = tuple(row_shape), tuple(col_shape)
        mpo.check_cores(cores, self.row_shape, self.col_shape)
        self.out_features, self.in_features = math.prod(self.row_shape), math.prod(self.col_shape)
        # contiguous: SVD factors come out as transposed views, and an optimiser state restored from a checkpoint
        # is contiguous; fused AdamW needs the two laid out alike
        self.cores = nn.ParameterList(nn.Parameter(c.detach().clone(memory_format=torch.contiguous_format))
                                      for c in cores)
        self.bias = None if bias is None else nn.Parameter(bias.detach().clone(), requires_grad=bias.requires_grad)
        self._cache: tuple[tuple, torch.Tensor] | None = None

    @classmethod
    def from_linear(cls, linear: nn.Linear, n_cores: int, bond_dim: int | None = None,
                    style: str = "paper", shapes: tuple[Sequence[int], Sequence[int]] | None = None) -> MPOLinear:
        """Over-parameterise ``linear``: decompose its weight (float64 SVD, cast back to its dtype and device).

        Args:
            linear: the layer to copy; it is not modified.
            n_cores: number of cores (≥ 2); ignored when ``shapes`` is given.
            bond_dim: ``None`` = full rank (exact), else the maximum bond size (a truncated approximation).
            style: ``"paper"`` or ``"balanced"`` (see ``mpo.factor_shapes``).
            shapes: explicit ``(row_shape, col_shape)`` overriding ``n_cores``/``style``.
        """
        if not isinstance(linear, nn.Linear):
            raise ValueError(f"MPOLinear.from_linear needs an nn.Linear, got {type(linear).__name__}")
        row_shape, col_shape = shapes if shapes is not None else mpo.factor_shapes(
            linear.out_features, linear.in_features, n_cores, style)
        cores = mpo.decompose(linear.weight, row_shape, col_shape, bond_dim)
        layer = cls(cores, row_shape, col_shape, linear.bias)
        layer.cores.requires_grad_(linear.weight.requires_grad)
        return layer

    @property
    def n_cores(self) -> int:
        return len(self.cores)

    @property
    def central_index(self) -> int:
        """Index of the central core, ``(n−1)//2``; every other core is auxiliary."""
        return mpo.central_index(self.n_cores)

    def central_core(self) -> nn.Parameter:
        return self.cores[self.central_index]

    def auxiliary_cores(self) -> list[nn.Parameter]:
        """The cores OPDF's tensor-alignment loss pulls toward the teacher's (all but the central one)."""
        return [c for k, c in enumerate(self.cores) if k != self.central_index]

    def weight(self) -> torch.Tensor:
        """The dense weight ``W: (out, in)`` the cores represent (differentiable)."""
        return mpo.contract(list(self.cores), self.row_shape, self.col_shape)

    def _weight_for_forward(self) -> torch.Tensor:
        needs_grad = torch.is_grad_enabled() and any(c.requires_grad for c in self.cores)
        if self.training or needs_grad:
            self._cache = None
            return self.weight()
        key = tuple((c.data_ptr(), c._version, c.dtype, c.device) for c in self.cores)
        if self._cache is None or self._cache[0] != key:
            with torch.no_grad():
                self._cache = (key, self.weight())
        return self._cache[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self._weight_for_forward(), self.bias)

    @torch.no_grad()
    def to_linear(self) -> nn.Linear:
        """Merge the cores into a plain ``nn.Linear`` computing the same function (same dtype and device)."""
        w = self.weight()
        linear = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None,
                           device=w.device, dtype=w.dtype)
        linear.weight.copy_(w)
        if self.bias is not None:
            linear.bias.copy_(self.bias)
        return linear

    def num_dense_params(self) -> int:
        """Parameters of the merged layer (what is deployed)."""
        return self.out_features * self.in_features + (0 if self.bias is None else self.out_features)

    def extra_repr(self) -> str:
        bonds = [int(c.shape[0]) for c in self.cores[1:]]
        n_params = sum(c.numel() for c in self.cores)
        return (f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
                f"row_shape={self.row_shape}, col_shape={self.col_shape}, bonds={bonds}, "
                f"core_params={n_params} ({n_params / (self.in_features * self.out_features):.3f}× dense)")
