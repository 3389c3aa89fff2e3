"""Whole-method train steps, OPDF / dense: the per-forward reference path against per-step dense weights.

    python benchmarks/bench_steps.py [--seq 128 32] [--repeats 5] [--methods kd prokt lgtm]

For each method (real ``Method`` objects: KD with cached teacher logits, ProKT, LGTM with its held-out batch) on
the minilm preset (6-layer all-MiniLM-L6-v2 teacher → 3-layer student, layers 0, 2, 4), batch 32 × ``seq``
tokens, it times ``train_step`` interleaved for dense, OPDF 5 cores per forward (``--mpo-weight per-forward``)
and OPDF 5 cores per step (the default), and prints the ratios to dense measured in the same run, the number of
weight contractions per step, and the floor: the time of contracting every MPO layer the step trains once and
back-propagating into its cores once (what no exact full-rank scheme avoids), over the dense step.
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_mpo import cpu_name, interleaved_median, minilm_teacher  # noqa: E402


def make_method(name: str, cores: int, path: str, teacher, batch_size: int):
    from opdf_ray.config import RunSpec
    from opdf_ray.methods import get_method
    from opdf_ray.models import keep_layers

    # the matched core lr is calibrated on the dense gradient only the per-step path has; the per-forward
    # reference runs the published one lr (the step's cost does not depend on the lr)
    spec = RunSpec(task="sst2", method=name, opdf_cores=cores, mpo_weight=path,
                   opdf_core_lr="1.0" if path == "per-forward" else "matched")
    teacher = copy.deepcopy(teacher)
    m = get_method(name)(spec, keep_layers(teacher, [0, 2, 4]), teacher)
    m.apply_opdf()
    if m.caches_teacher_logits:                    # as in a real KD run: the frozen teacher's logits are cached
        m.cached_logits = torch.randn(batch_size, 2)
    m.setup(total_steps=10_000)
    return m


def batch_of(seq: int, batch_size: int, seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {"input_ids": torch.randint(1000, 30000, (batch_size, seq), generator=g),
            "token_type_ids": torch.zeros(batch_size, seq, dtype=torch.long),
            "attention_mask": torch.ones(batch_size, seq, dtype=torch.long),
            "labels": torch.randint(0, 2, (batch_size,), generator=g), "index": torch.arange(batch_size)}


def count_contractions(method, batch, held) -> tuple[int, int]:
    """(matrices contracted, contraction calls) in one steady-state step: per step, the layers of one chain shape
    are contracted in one batched call (``mpo.contract_stacked``)."""
    from opdf_ray import mpo

    matrices, calls = [0], [0]
    contract, stacked = mpo.contract, mpo.contract_stacked

    def one(*args, **kw):
        matrices[0], calls[0] = matrices[0] + 1, calls[0] + 1
        return contract(*args, **kw)

    def many(stacks, *args, **kw):
        matrices[0], calls[0] = matrices[0] + len(stacks[0]), calls[0] + 1
        return stacked(stacks, *args, **kw)

    method.train_step(batch, held)                 # steady state: the first step also builds what later ones reuse
    mpo.contract, mpo.contract_stacked = one, many
    try:
        method.train_step(batch, held)
    finally:
        mpo.contract, mpo.contract_stacked = contract, stacked
    return matrices[0], calls[0]


def contraction_floor(method, repeats: int) -> float:
    """Seconds to contract every MPO layer of what the step trains once and push a gradient into its cores once."""
    from opdf_ray.overparam import mpo_modules

    models = [method.eval_model()] + ([method.teacher] if method.trains_teacher else [])
    layers = [m for model in models for m in mpo_modules(model).values()]

    def run():
        for layer in layers:
            w = layer.weight()
            torch.autograd.backward(w, torch.ones_like(w))
    times = []
    for _ in range(repeats + 1):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    for layer in layers:
        for c in layer.cores:
            c.grad = None
    return statistics.median(times[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seq", type=int, nargs="+", default=[128, 32], help="tokens per example")
    parser.add_argument("--methods", nargs="+", default=["kd", "prokt", "lgtm"])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"# bench_steps\n\nmachine: {cpu_name()} ({os.cpu_count()} logical CPUs), {platform.system()}; torch "
          f"threads {torch.get_num_threads()}; torch {torch.__version__}; batch {args.batch_size}; "
          f"{args.repeats} interleaved repeats, medians\n", flush=True)
    print("| method | seq | dense (s/step) | OPDF per forward (s) | ratio | OPDF per step (s) | ratio | "
          "matrices contracted per step: per forward → per step | floor (s) | floor ratio |")
    print("|---|---|---|---|---|---|---|---|---|---|", flush=True)
    teacher = minilm_teacher()
    for seq in args.seq:
        batch, held = batch_of(seq, args.batch_size, 0), batch_of(seq, args.batch_size, 1)
        for name in args.methods:
            variants = {"dense": make_method(name, 0, "per-step", teacher, args.batch_size),
                        "per-forward": make_method(name, 5, "per-forward", teacher, args.batch_size),
                        "per-step": make_method(name, 5, "per-step", teacher, args.batch_size)}
            counts = {k: count_contractions(m, batch, held) for k, m in variants.items() if k != "dense"}
            t = interleaved_median({k: (lambda m=m: m.train_step(batch, held)) for k, m in variants.items()},
                                   args.repeats, warmup=1)
            floor = contraction_floor(variants["per-step"], args.repeats)
            d = t["dense"]
            print(f"| {name} | {seq} | {d:.3f} | {t['per-forward']:.3f} | {t['per-forward'] / d:.2f}× | "
                  f"{t['per-step']:.3f} | **{t['per-step'] / d:.2f}×** | {counts['per-forward'][0]} → "
                  f"{counts['per-step'][0]} in {counts['per-step'][1]} calls | {floor:.3f} | {(d + floor) / d:.2f}× |",
                  flush=True)


if __name__ == "__main__":
    main()
