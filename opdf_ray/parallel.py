"""Data-parallel collectives the training loop needs, behind one object: a no-op for one process, torch.distributed
(gloo on CPU, NCCL on GPUs) for Ray Train workers.

Methods take custom steps (ProKT alternates models, LGTM differentiates through a look-ahead, Theseus trains a
subset), so gradients are averaged explicitly where each optimiser steps instead of through DDP's autograd hooks:
one flattened all-reduce per optimiser step, counted in ``bytes_all_reduced`` (our communication hook).
"""

from __future__ import annotations

import numpy as np
import torch


class Parallel:
    """One process: every collective is the identity."""

    rank: int = 0
    world_size: int = 1

    def __init__(self):
        self.bytes_all_reduced = 0
        self.all_reduce_calls = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def average_(self, tensors: list[torch.Tensor]) -> None:
        """Average ``tensors`` in place across workers."""

    def sum_(self, tensor: torch.Tensor) -> None:
        """Sum ``tensor`` in place across workers."""

    def any(self, flag: bool) -> bool:
        """True on every worker when ``flag`` is true on any (so all leave a loop together, none hangs)."""
        return flag

    def any_each(self, flags: list[bool]) -> list[bool]:
        """Element-wise ``any`` across workers (one collective for the whole list)."""
        return list(flags)

    def gather(self, value):
        """Every worker's ``value`` (a picklable object), in rank order, on every worker."""
        return [value]

    def shard(self, n: int) -> np.ndarray:
        """This worker's contiguous, non-overlapping share of ``range(n)`` (shares differ by at most one)."""
        return np.array_split(np.arange(n), self.world_size)[self.rank]


class TorchDistributed(Parallel):
    """The default ``torch.distributed`` process group (set up by Ray Train's ``TorchTrainer``)."""

    def __init__(self):
        super().__init__()
        import torch.distributed as dist

        self._bucket: torch.Tensor | None = None      # the flat all-reduce buffer, kept across steps

        if not dist.is_initialized():
            raise RuntimeError("TorchDistributed needs an initialised torch.distributed process group")
        self.dist = dist
        self.rank, self.world_size = dist.get_rank(), dist.get_world_size()
        nccl = dist.get_backend() == "nccl"          # NCCL reduces CUDA tensors only
        self.device = torch.device("cuda", torch.cuda.current_device()) if nccl else torch.device("cpu")

    def average_(self, tensors):
        if not tensors:
            return
        sizes = [t.numel() for t in tensors]
        n, dtype, device = sum(sizes), tensors[0].dtype, tensors[0].device
        if self._bucket is None or self._bucket.numel() < n or self._bucket.dtype != dtype \
                or self._bucket.device != device:
            self._bucket = torch.empty(n, dtype=dtype, device=device)
        flat = self._bucket[:n]
        torch.cat([t.reshape(-1) for t in tensors], out=flat)      # one bucket: (Σ numel,)
        self.dist.all_reduce(flat)
        self.bytes_all_reduced += flat.numel() * flat.element_size()
        self.all_reduce_calls += 1
        flat /= self.world_size
        torch._foreach_copy_(tensors, [part.view_as(t) for part, t in zip(flat.split(sizes), tensors)])

    def sum_(self, tensor):
        self.dist.all_reduce(tensor)

    def any(self, flag):
        t = torch.tensor([1.0 if flag else 0.0], device=self.device)
        self.dist.all_reduce(t, op=self.dist.ReduceOp.MAX)
        return bool(t.item())

    def any_each(self, flags):
        if not flags:
            return []
        t = torch.tensor([1.0 if f else 0.0 for f in flags], device=self.device)
        self.dist.all_reduce(t, op=self.dist.ReduceOp.MAX)
        return [bool(v) for v in t.tolist()]

    def gather(self, value):
        out = [None] * self.world_size
        self.dist.all_gather_object(out, value)
        return out
