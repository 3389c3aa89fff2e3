"""Operators one training step dispatches, OPDF / dense: the CPU proxy for a launch-bound GPU step.

    python benchmarks/bench_ops.py [--methods kd prokt lgtm theseus] [--cores 5] [--seq 32]
    python benchmarks/bench_ops.py --host [--repeats 3]     # host time per step instead of operators

On a GPU every ATen operator a step dispatches is (at least) one kernel launch, and a MiniLM step is bound by
launches, not FLOPs (docs/benchmarks.md), so the ratio of operators counted here, eager on CPU, predicts the
GPU's OPDF / dense step-time ratio without a GPU. Counted with a ``TorchDispatchMode`` around one steady-state
``train_step`` (after two warm-up steps, so one-off work such as the matched core lr's calibration is not
counted) of real ``Method`` objects on the minilm preset (6-layer all-MiniLM-L6-v2 teacher → 3-layer student),
with each method's defaults. Views and metadata-only operators are counted too (each is a dispatch; on a GPU a
host-side cost though not a kernel), and listed separately.

``--host`` times the same steps on a model of MiniLM's shape but width 32 (6 layers, 2 heads, FFN 128; student
layers 0, 2, 4; batch 2 × 8 tokens; one thread), whose arithmetic is negligible: what is left is the host's
work per step (Python, dispatch, autograd's bookkeeping), which is what a launch-bound GPU step waits on. Median
ms of 60 steps after 5 warm-up steps, the fastest of ``--repeats`` interleaved rounds.
"""

from __future__ import annotations

import argparse
import collections
import sys
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_mpo import minilm_teacher  # noqa: E402
from bench_steps import batch_of, make_method  # noqa: E402

VIEW_OPS = {"view", "_unsafe_view", "reshape", "expand", "permute", "t", "transpose", "unsqueeze", "squeeze",
            "select", "slice", "as_strided", "detach", "alias", "unbind", "split", "split_with_sizes", "chunk",
            "lift_fresh", "_reshape_alias", "narrow", "flatten", "unflatten", "view_as", "expand_as"}


class OpCounter(TorchDispatchMode):
    """Counts every ATen operator dispatched inside it, by name."""

    def __init__(self):
        super().__init__()
        self.counts: collections.Counter[str] = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.counts[func.overloadpacket.__name__] += 1
        return func(*args, **(kwargs or {}))

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def read_backs(self) -> int:
        """``.item()``, ``float()``, ``bool()`` of a tensor: each a device sync on a GPU (a ``.tolist()`` is one more
        there, not counted: on a CPU it dispatches nothing)."""
        return self.counts["_local_scalar_dense"]

    @property
    def compute(self) -> int:
        return sum(n for op, n in self.counts.items() if op not in VIEW_OPS)


def count_step(method, batch, held, warmup: int = 2) -> OpCounter:
    for _ in range(warmup):
        method.train_step(batch, held)
    method.log_details = False              # as on 9 steps in 10 (log_steps 10): no diagnostics nobody reads
    with OpCounter() as counter:
        method.train_step(batch, held)
    return counter


def tiny_minilm_teacher():
    """MiniLM's shape (6 layers, 12 → 2 heads) at width 32: every product is tiny, so a step's time is host time."""
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    return BertForSequenceClassification(BertConfig(hidden_size=32, num_hidden_layers=6, num_attention_heads=2,
                                                    intermediate_size=128, max_position_embeddings=64,
                                                    num_labels=2))


def host_ms(method, batch, held, steps: int = 60, warmup: int = 5) -> float:
    import statistics
    import time

    for _ in range(warmup):
        method.train_step(batch, held)
    method.log_details = False
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        method.train_step(batch, held)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def host_table(methods: list[str], cores: int, repeats: int) -> None:
    torch.set_num_threads(1)
    print(f"# bench_ops --host\n\ntorch {torch.__version__}; eager, CPU, 1 thread; MiniLM's shape at width 32, "
          f"batch 2 × 8 tokens; median ms per train_step, fastest of {repeats} interleaved rounds\n")
    print(f"| method | dense ms | OPDF-{cores} ms | **OPDF / dense** | OPDF adds (ms) |")
    print("|---|---|---|---|---|", flush=True)
    teacher = tiny_minilm_teacher()
    batch, held = batch_of(8, 2, 0), batch_of(8, 2, 1)
    for name in methods:
        best = {0: float("inf"), cores: float("inf")}
        for _ in range(repeats):
            for n in best:
                torch.manual_seed(0)
                best[n] = min(best[n], host_ms(make_method(name, n, "per-step", teacher, 2), batch, held))
        print(f"| {name} | {best[0]:.2f} | {best[cores]:.2f} | **{best[cores] / best[0]:.2f}×** | "
              f"{best[cores] - best[0]:.2f} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="+", default=["kd", "prokt", "lgtm", "theseus"])
    parser.add_argument("--cores", type=int, default=5)
    parser.add_argument("--seq", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--top", type=int, default=0, help="also list the N operators OPDF adds most of")
    parser.add_argument("--host", action="store_true", help="time the host's work per step (a tiny model)")
    parser.add_argument("--repeats", type=int, default=3, help="--host: interleaved rounds, the fastest kept")
    args = parser.parse_args()
    if args.host:
        return host_table(args.methods, args.cores, args.repeats)
    print(f"# bench_ops\n\ntorch {torch.__version__}; eager, CPU; batch {args.batch_size} × {args.seq} tokens; "
          f"one steady-state train_step per method (after 2 warm-up steps)\n")
    print(f"| method | dense ops | OPDF-{args.cores} ops | **ratio** | compute ops (no views): dense → OPDF | ratio | "
          f"read-backs: dense → OPDF |")
    print("|---|---|---|---|---|---|---|", flush=True)
    teacher = minilm_teacher()
    batch, held = batch_of(args.seq, args.batch_size, 0), batch_of(args.seq, args.batch_size, 1)
    for name in args.methods:
        torch.manual_seed(0)
        dense = count_step(make_method(name, 0, "per-step", teacher, args.batch_size), batch, held)
        torch.manual_seed(0)
        opdf = count_step(make_method(name, args.cores, "per-step", teacher, args.batch_size), batch, held)
        print(f"| {name} | {dense.total} | {opdf.total} | **{opdf.total / dense.total:.2f}×** | "
              f"{dense.compute} → {opdf.compute} | {opdf.compute / dense.compute:.2f}× | "
              f"{dense.read_backs} → {opdf.read_backs} |", flush=True)
        if args.top:
            extra = opdf.counts - dense.counts
            print("  OPDF adds: " + ", ".join(f"{op} {n}" for op, n in extra.most_common(args.top)), flush=True)


if __name__ == "__main__":
    main()
