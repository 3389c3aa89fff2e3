"""``MPOLinear``: a linear layer whose weight is trained as MPO cores and merged back to ``nn.Linear`` to deploy."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from opdf_ray import mpo


class MPOLinear(nn.Module):
    """``y = x Wᵀ + b`` with ``W: (out, in)`` rebuilt from trainable MPO cores ``T_k: (d_{k-1}, i_k, j_k, d_k)``.

    Two ways to get the dense weight, same numbers:

    * per forward (the default, a layer used alone): every forward contracts the cores (cheapest order, see
      ``mpo.contract``) and calls ``F.linear``, so autograd reaches every core. In eval mode, when no gradient is
      needed, the weight is cached and rebuilt only when a core changes (tensor version counters, which every
      in-place update bumps).
    * per step (``per_step = True``, set by the training engine): the weight is contracted once per version of
      the cores, i.e. once per optimiser step, and every forward of that step (micro-batches, ProKT's and
      LGTM's extra passes, evaluation) reads it as a leaf tensor that collects their gradients. Whoever steps the
      optimiser then pushes that dense gradient into the cores with one VJP (``push_gradient``), after averaging
      it across workers if data-parallel (``opdf_ray.gradients``): the cores' gradients are a linear function of
      it, so this is exact. The engine calls ``cores_changed`` after each optimiser step (a fused optimiser does
      not bump version counters; in-place edits such as ``load_state_dict`` are caught by them). Cores swapped
      for plain tensors (``torch.func.functional_call``, LGTM's look-ahead) are contracted per forward, so
      gradients reach those tensors.
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
        self._core_keys = tuple(str(k) for k in range(len(self.cores)))    # their names in ``self.cores``
        self.bias = None if bias is None else nn.Parameter(bias.detach().clone(), requires_grad=bias.requires_grad)
        self._cache: tuple[tuple, torch.Tensor] | None = None
        self.per_step = False
        self._step: _StepWeight | None = None
        self._group: StepWeightGroup | None = None     # layers whose step weights are contracted together

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_step"] = state["_cache"] = None   # derived from the cores (and an autograd graph cannot be copied)
        state["_group"] = None                    # a copy is a layer of its own
        return state

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

    def core_list(self) -> list[torch.Tensor]:
        """The cores as the module holds them now (a tensor ``functional_call`` swapped in included), read from the
        list's registry: iterating ``self.cores`` costs ~1 µs a core in ``ParameterList.__getitem__``, a tenth of
        an OPDF step's host time, and a GPU step waits on its host."""
        params = self.cores._parameters
        return [params[k] for k in self._core_keys]

    def weight(self) -> torch.Tensor:
        """The dense weight ``W: (out, in)`` the cores represent (differentiable)."""
        return mpo.contract(self.core_list(), self.row_shape, self.col_shape)

    def _weight_for_forward(self) -> torch.Tensor:
        cores = self.core_list()
        registered = all(isinstance(c, nn.Parameter) for c in cores)
        if self.per_step and registered:
            step = self.step_weight(build=not torch.is_inference_mode_enabled())
            if step is not None:
                return step
        needs_grad = torch.is_grad_enabled() and any(c.requires_grad for c in cores)
        if not registered:          # swapped-in tensors: their memory may be reused, so never cache by address
            return self.weight()
        if self.training or needs_grad:
            self._cache = None
            return self.weight()
        key = _version_key(cores)
        if self._cache is None or self._cache[0] != key:
            with torch.no_grad():
                self._cache = (key, self.weight())
        return self._cache[1]

    # -- per-step weight (engine-managed) ---------------------------------------------------------------------------
    def step_weight(self, build: bool = True) -> torch.Tensor | None:
        """The dense weight of the cores' current version, as a leaf collecting the gradient of every forward;
        contracted on first use after the cores change (``build=False``: None instead). Raises ``RuntimeError``
        when the cores changed while the previous weight still held a gradient not pushed into them (it would
        be lost)."""
        cores = self.core_list()
        key = _version_key(cores)
        if self._step is not None and self._step.key == key:
            return self._step.leaf
        self._check_no_pending_gradient()
        if not build:
            return None
        if self._group is not None:
            self._group.build()
            return self._step.leaf
        needs_graph = any(c.requires_grad for c in cores)
        # under the ambient autocast, as a per-forward contraction would be; kept in the cores' dtype (fp32), so
        # the gradient it collects (and all-reduces) is the dense student's
        with torch.enable_grad() if needs_graph else torch.no_grad():
            built = self.weight().to(cores[0].dtype)
        self._step = _StepWeight(key, built, built.detach().requires_grad_(needs_graph), None)
        return self._step.leaf

    def cores_changed(self) -> None:
        """Drop the weights built from the cores: an optimiser stepped them. Needed because fused optimisers
        (AdamW ``fused=True``) update parameters without bumping their version counters."""
        self._check_no_pending_gradient()
        self._step = self._cache = None

    def _check_no_pending_gradient(self) -> None:
        if self._step is not None and self._step.leaf.grad is not None:
            raise RuntimeError("the MPO cores changed while their per-step dense weight still held a gradient; "
                               "push_gradient() must run before the optimiser steps")

    def dense_gradient(self) -> torch.Tensor | None:
        """The gradient the forwards of this step left on the dense weight (None: the weight was not used)."""
        return None if self._step is None else self._step.leaf.grad

    def set_dense_gradient(self, grad: torch.Tensor | None) -> None:
        if self._step is None:
            raise RuntimeError("no per-step weight to hold a gradient: no forward used this layer this step")
        self._step.leaf.grad = grad

    def trainable_cores(self) -> list[nn.Parameter]:
        """The cores that train (``opdf_train_cores=central`` freezes the auxiliary ones)."""
        return [c for c in self.core_list() if c.requires_grad]

    def core_gradients(self, dense_grad: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """``∂⟨W, dense_grad⟩/∂cores`` for ``trainable_cores()``: the VJP of the contraction of the current step
        weight (one per call)."""
        return core_gradients([self], [dense_grad])[0]

    def push_gradient(self) -> None:
        """Add the dense weight's gradient into the cores' ``.grad`` (one VJP) and clear it; no-op when unused."""
        push_gradients([self])

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


class _StepWeight(NamedTuple):
    key: tuple               # the cores' versions it was built from
    built: torch.Tensor      # contracted with autograd history to the cores (kept for the VJP): (I, J) or (G, I, J)
    leaf: torch.Tensor       # this layer's weight, detached: what forwards read and accumulate gradient into
    index: int | None        # its place in a group's ``built``; None when contracted alone
    trained_stacks: tuple = ()   # a group's stacks of its trained cores (core k of every layer): the VJP's inputs


class StepWeightGroup:
    """Per-step layers of one chain shape, stepped by one optimiser: their dense weights are contracted together
    (core k of every layer stacked, one batched matmul chain, ``mpo.contract_stacked``) and their cores'
    gradients pushed together (one VJP), so G layers cost the kernel launches of one. Same numbers as contracting
    them one by one (the batched products are the per-matrix products). Made by ``group_step_weights``."""

    def __init__(self, layers: Sequence[MPOLinear]):
        self.layers = list(layers)
        if len({_chain_signature(m) for m in self.layers}) != 1:
            raise ValueError("a StepWeightGroup needs layers of one chain shape, dtype, device and trained cores")
        for m in self.layers:
            m._group = self

    def build(self) -> None:
        """Contract every layer's weight for its cores' current version (one batched chain)."""
        layers = self.layers
        for m in layers:
            m._check_no_pending_gradient()
            m._step = None              # the last step's weights are dead before a captured contraction reuses them
        cores = [m.core_list() for m in layers]
        keys = [_version_key(c) for c in cores]
        first = layers[0]
        needs_graph = any(c.requires_grad for c in cores[0])
        with torch.enable_grad() if needs_graph else torch.no_grad():
            stacks = [torch.stack(same_place) for same_place in zip(*cores)]
            built = mpo.contract_stacked(stacks, first.row_shape, first.col_shape).to(cores[0][0].dtype)
        trained = tuple(stack for stack, core in zip(stacks, cores[0]) if core.requires_grad)
        for i, (m, key, leaf) in enumerate(zip(layers, keys, built.detach().unbind(0))):
            m._step = _StepWeight(key, built, leaf.requires_grad_(needs_graph), i, trained)


def _chain_signature(m: MPOLinear) -> tuple:
    return (m.row_shape, m.col_shape, tuple(tuple(c.shape) for c in m.cores), m.cores[0].dtype, m.cores[0].device,
            tuple(c.requires_grad for c in m.cores))


def group_step_weights(layers: Sequence[MPOLinear]) -> list[StepWeightGroup]:
    """Group ``layers`` (per-step layers one optimiser steps) by chain shape, so each group's step weights are
    contracted and back-propagated together; a layer alone in its shape stays ungrouped."""
    by_signature: dict[tuple, list[MPOLinear]] = {}
    for m in layers:
        by_signature.setdefault(_chain_signature(m), []).append(m)
    return [StepWeightGroup(group) for group in by_signature.values() if len(group) > 1]


def core_gradients(layers: Sequence[MPOLinear], dense_grads: Sequence[torch.Tensor]) -> list[tuple[torch.Tensor, ...]]:
    """``∂⟨W_m, dense_grads[m]⟩/∂cores`` of every layer's ``trainable_cores()`` through its current step weight:
    one VJP per group of layers contracted together (their gradients stacked, zero for the group's other
    layers), one per layer contracted alone."""
    out: dict[int, tuple[torch.Tensor, ...]] = {}
    batches: dict[int, list[tuple[int, MPOLinear, torch.Tensor]]] = {}
    for pos, (m, grad) in enumerate(zip(layers, dense_grads)):
        step = m._step
        if step is None or step.key != _version_key(m.core_list()):
            raise RuntimeError("no per-step weight for the cores' current version to back-propagate through")
        batches.setdefault(id(step.built), []).append((pos, m, grad))
    for members in batches.values():
        built = members[0][1]._step.built
        if members[0][1]._step.index is None:                   # contracted alone
            pos, m, grad = members[0]
            out[pos] = torch.autograd.grad(built, m.trainable_cores(), grad, retain_graph=True)
            continue
        stacked: list[torch.Tensor | None] = [None] * built.shape[0]
        for _, m, grad in members:
            stacked[m._step.index] = grad
        if any(g is None for g in stacked):                     # layers of the group no forward used
            zero = torch.zeros_like(members[0][2])
            stacked = [zero if g is None else g for g in stacked]
        grad_out = torch.stack(stacked)
        # with respect to the stacks: (G, core) gradients split by one unbind each, not a select per core
        stacks = members[0][1]._step.trained_stacks
        per_core = [g.unbind(0) for g in torch.autograd.grad(built, stacks, grad_out, retain_graph=True)]
        for pos, m, _ in members:
            out[pos] = tuple(g[m._step.index] for g in per_core)
    return [out[pos] for pos in range(len(layers))]


def push_gradients(layers: Sequence[MPOLinear]) -> None:
    """Add each layer's dense-weight gradient into its cores' ``.grad`` (batched VJPs, in-place multi-tensor adds)
    and clear it; layers no forward used this step are left alone."""
    used = [m for m in layers if m.dense_gradient() is not None]
    if not used:
        return
    grads = core_gradients(used, [m.dense_gradient() for m in used])
    into, adds = [], []
    for m, core_grads in zip(used, grads):
        for core, g in zip(m.trainable_cores(), core_grads):
            if core.grad is None:
                core.grad = g
            else:
                into.append(core.grad)
                adds.append(g)
        m._step.leaf.grad = None
    if into:
        torch._foreach_add_(into, adds)


def _version_key(cores) -> tuple:
    """Changes whenever a core is replaced or updated in place (``load_state_dict``, ``.to``; fused optimisers do
    not bump versions: see ``cores_changed``) and with the autocast state, since a weight contracted under bf16
    autocast must not serve an fp32 forward."""
    device = cores[0].device.type
    autocast = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else None
    return (autocast, *((c.data_ptr(), c._version, c.dtype, c.device) for c in cores))
