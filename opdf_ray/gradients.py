"""One optimiser's gradients when some of its parameters are MPO cores read through per-step dense weights.

``MPOLinear.per_step`` layers collect the gradient of every forward of an optimiser step on their dense weight
``W`` (``layers.MPOLinear``). Here that gradient is averaged across data-parallel workers *as a dense gradient*
and only then pushed into the cores with one VJP per layer. The VJP is linear and every worker holds the same
cores, so the cores' gradients are exactly those of averaging the core gradients, for the bytes of the dense
student (an OPDF student all-reduces what a dense one does). Gradients that reach the cores directly, not through
``W``, come from losses on the parameters alone (OPDF's alignment loss), are identical on every worker and are
not communicated.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from opdf_ray.layers import MPOLinear, core_gradients, group_step_weights, push_gradients
from opdf_ray.parallel import Parallel


class OptimizerGradients:
    """The parameters of one optimiser, split into the per-step MPO layers whose cores they hold and the rest.

    A gradient here is a list aligned with ``targets()``: the other parameters, then each layer's dense weight,
    then, with ``direct_cores``, each layer's cores (direct gradients only). Without it (no loss reaches these
    cores but through their dense weights: no alignment on them) the list has no core entries, rather than one
    zero tensor per core, each a kernel launch and an add on a GPU (LGTM's teacher: 180 cores, 3 lists a step).
    """

    def __init__(self, params: Iterable[nn.Parameter], modules: Iterable[MPOLinear], batched: bool = True,
                 direct_cores: bool = True):
        self.params = list(params)
        self.direct_cores = direct_cores
        ids = {id(p) for p in self.params}
        self.layers = [m for m in modules if m.per_step and (trained := m.trainable_cores())
                       and all(id(c) in ids for c in trained)]
        self.cores = [c for m in self.layers for c in m.trainable_cores()]
        core_ids = {id(c) for c in self.cores}
        self.others = [p for p in self.params if id(p) not in core_ids]
        # by chain shape, contracted and back-propagated together (batched=False: one by one, the reference)
        self.groups = group_step_weights(self.layers) if batched else []

    # -- the .grad path (loss.backward(), then reduce, clip, step) ------------------------------------------------
    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None
        for m in self.layers:
            if m.dense_gradient() is not None:
                m.set_dense_gradient(None)

    def reduce_(self, parallel: Parallel) -> None:
        """Average the gradients in ``.grad`` across workers (dense for the layers), then push them into the cores."""
        self.average_(parallel)
        self.push_()

    def average_(self, parallel: Parallel) -> None:
        """Average the gradients in ``.grad`` across workers: the other parameters' and the layers' dense ones.

        A tensor no worker used keeps ``grad = None``, so AdamW leaves it (and its moments) alone, exactly as with
        one worker; one that only some workers used gets a zero gradient on the others, so every worker reduces
        the same tensors and results do not depend on the worker count.
        """
        if parallel.world_size > 1:
            used = parallel.any_each([p.grad is not None for p in self.others]
                                     + [m.dense_gradient() is not None for m in self.layers])
            for p, u in zip(self.others, used):
                if u and p.grad is None:
                    p.grad = torch.zeros_like(p)
            for m, u in zip(self.layers, used[len(self.others):]):
                if u and m.dense_gradient() is None:
                    m.set_dense_gradient(torch.zeros_like(m.step_weight()))
            parallel.average_([p.grad for p in self.others if p.grad is not None]
                              + [g for m in self.layers if (g := m.dense_gradient()) is not None])

    def push_(self) -> None:
        """Push every layer's dense gradient into its cores' ``.grad`` (one VJP per group of layers)."""
        push_gradients(self.layers)

    def layer_gradients_in_grad(self) -> list[tuple[MPOLinear, torch.Tensor, list[torch.Tensor]]]:
        """``(layer, dense gradient, its trained cores' total gradient)`` for the layers holding a dense gradient
        in ``.grad`` (after ``average_``, before ``push_``): the cores' gradient is the VJP of the dense one plus
        what reached them directly."""
        used = [m for m in self.layers if m.dense_gradient() is not None]
        dense = [m.dense_gradient() for m in used]
        return [(m, d, [g if c.grad is None else c.grad + g for c, g in zip(m.trainable_cores(), grads)])
                for m, d, grads in zip(used, dense, core_gradients(used, dense))]

    def cores_changed(self) -> None:
        """After the optimiser stepped: the layers rebuild their dense weights at their next forward."""
        for m in self.layers:
            m.cores_changed()

    # -- the autograd path (LGTM: gradients as values, combined before they are set) -------------------------------
    def targets(self) -> list[torch.Tensor]:
        dense = [m.step_weight() for m in self.layers]
        return self.others + dense + (self.cores if self.direct_cores else [])

    def raw_grad(self, loss: torch.Tensor) -> list[torch.Tensor]:
        """``∂loss/∂targets()`` (zeros where unused); build the step weights (a forward) before the loss."""
        targets = self.targets()
        grads = torch.autograd.grad(loss, targets, allow_unused=True)
        return [torch.zeros_like(t) if g is None else g for t, g in zip(targets, grads)]

    def average_dense_(self, raw: list[torch.Tensor], parallel: Parallel) -> None:
        """Average across workers what depends on the worker's data: the other parameters' and the dense parts."""
        parallel.average_(raw[:len(self.others) + len(self.layers)])

    def layer_gradients(self, raw: list[torch.Tensor]) -> list[tuple[MPOLinear, torch.Tensor, list[torch.Tensor]]]:
        """``(layer, dense part, its trained cores' total gradient)`` per layer of a raw gradient: the dense part
        pushed into the cores (one VJP) and added to their direct part."""
        n_other, n_layer = len(self.others), len(self.layers)
        dense = raw[n_other:n_other + n_layer]
        pushed = core_gradients(self.layers, dense)
        if not self.direct_cores:
            return [(m, d, list(grads)) for m, d, grads in zip(self.layers, dense, pushed)]
        direct = iter(raw[n_other + n_layer:])
        return [(m, d, [next(direct) + g for g in grads]) for m, d, grads in zip(self.layers, dense, pushed)]

    def to_params(self, raw: list[torch.Tensor], layer_grads: list | None = None) -> list[torch.Tensor]:
        """Gradients aligned with ``self.params`` (``layer_grads``: ``layer_gradients(raw)``, if already made)."""
        by_id = {id(p): g for p, g in zip(self.others, raw[:len(self.others)])}
        for m, _, grads in self.layer_gradients(raw) if layer_grads is None else layer_grads:
            by_id.update(zip(map(id, m.trainable_cores()), grads))
        return [by_id[id(p)] for p in self.params]

    def set_grad(self, raw: list[torch.Tensor]) -> None:
        """Put a raw gradient into ``.grad`` (dense parts on the layers' weights), ready for ``reduce_``."""
        n_other, n_layer = len(self.others), len(self.layers)
        for p, g in zip(self.others, raw[:n_other]):
            p.grad = g
        for m, g in zip(self.layers, raw[n_other:n_other + n_layer]):
            m.set_dense_gradient(g)
        for c, g in zip(self.cores, raw[n_other + n_layer:]):      # none without direct_cores: push_ sets them
            c.grad = g

