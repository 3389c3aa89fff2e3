"""Benchmark the OPDF core: decomposition, MPOLinear forward+backward, a MiniLM student train step, merged inference.

Every number is a ratio against a baseline measured in the same run (timings on shared machines drift ±20%).

    python benchmarks/bench_mpo.py [--quick] [--threads N]

Sections:
  1. decomposition time: ours vs a textbook numpy TT-SVD (every bond, float32, like the published code's first
     step) and vs ours with ``torch.linalg.svd`` instead of the Gram route; plus a whole BERT-base-sized
     teacher (12 layers) and student (6 layers): 108 matrices;
  2. forward+backward at batch 32 × seq 128: ``MPOLinear`` vs ``nn.Linear`` and vs a naive
     contract-with-tensordot-then-permute layer over the same cores (and the weight contraction alone);
  3. a 3-layer student built from the packaged all-MiniLM-L6-v2 (layers 0, 2, 4): AdamW train step,
     over-parameterised (5 cores) / dense;
  4. merged inference latency / original for that student;
  and the over-parameterisation factor per core count.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def median_time(fn, repeats: int, warmup: int = 1) -> float:
    """Median wall time of ``fn()`` over ``repeats`` runs after ``warmup`` runs (seconds)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def interleaved_median(fns: dict, repeats: int, warmup: int = 2) -> dict[str, float]:
    """Median times of several functions run in alternation, so drift hits all of them alike."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(ts) for name, ts in times.items()}


# -------------------------------------------------------------------------------------------------------- baselines


def numpy_tt_svd(weight: np.ndarray, row_shape, col_shape) -> list[np.ndarray]:
    """Textbook TT-SVD in numpy: one ``np.linalg.svd`` per bond, left-canonical cores (no gauge, no shortcuts)."""
    n = len(row_shape)
    t = weight.reshape(*row_shape, *col_shape).transpose([a for k in range(n) for a in (k, n + k)])
    rest, d_prev, cores = t.reshape(-1), 1, []
    for k in range(n - 1):
        u, s, vh = np.linalg.svd(rest.reshape(d_prev * row_shape[k] * col_shape[k], -1), full_matrices=False)
        cores.append(u.reshape(d_prev, row_shape[k], col_shape[k], -1))
        rest, d_prev = s[:, None] * vh, len(s)
    cores.append(rest.reshape(d_prev, row_shape[-1], col_shape[-1], 1))
    return cores


def naive_contract(cores, row_shape, col_shape) -> torch.Tensor:
    """Left-to-right ``tensordot`` over every leg, then one permute: the straightforward reconstruction."""
    n = len(cores)
    t = cores[0]
    for c in cores[1:]:
        t = torch.tensordot(t, c, dims=([t.ndim - 1], [0]))
    t = t.reshape([a for ij in zip(row_shape, col_shape) for a in ij]).permute(*range(0, 2 * n, 2),
                                                                             *range(1, 2 * n, 2))
    return t.reshape(math.prod(row_shape), math.prod(col_shape))


def chain_cost(tree, bonds, legs) -> tuple[int, int, int, int]:
    """Multiply-adds of contracting a plan tree: returns (cost, d_left, physical size, d_right)."""
    if isinstance(tree, int):
        return 0, bonds[tree], legs[tree], bonds[tree + 1]
    (cl, dl, pl, db), (cr, _, pr, dr) = chain_cost(tree[0], bonds, legs), chain_cost(tree[1], bonds, legs)
    return cl + cr + dl * pl * db * pr * dr, dl, pl * pr, dr


def flop_ratio(layer) -> float:
    """Multiply-adds of the naive left-to-right chain / those of our plan (forward; backward scales alike)."""
    from opdf_ray import mpo

    bonds = tuple(int(c.shape[0]) for c in layer.cores) + (1,)
    legs = tuple(i * j for i, j in zip(layer.row_shape, layer.col_shape))
    left_to_right = 0
    for k in range(1, len(legs)):
        left_to_right = (left_to_right, k) if k > 1 else (0, 1)
    return chain_cost(left_to_right, bonds, legs)[0] / chain_cost(mpo._contraction_plan(bonds, legs), bonds, legs)[0]


class NaiveMPOLinear(nn.Module):
    """Same cores as an ``MPOLinear``, weight rebuilt with ``naive_contract`` on every forward."""

    def __init__(self, layer):
        super().__init__()
        self.cores = nn.ParameterList(nn.Parameter(c.detach().clone()) for c in layer.cores)
        self.bias = nn.Parameter(layer.bias.detach().clone())
        self.row_shape, self.col_shape = layer.row_shape, layer.col_shape

    def forward(self, x):
        return F.linear(x, naive_contract(list(self.cores), self.row_shape, self.col_shape), self.bias)


# -------------------------------------------------------------------------------------------------------- sections


def bench_decompose(repeats: int, whole_model: bool) -> list[str]:
    from transformers import BertConfig, BertForSequenceClassification

    from opdf_ray import mpo
    from opdf_ray.overparam import overparameterize

    lines = ["## 1. Decomposition time", "",
             "| matrix | cores | ours (s) | numpy TT-SVD (s) | numpy / ours | ours with gesdd (s) | gesdd / ours "
             "| rel. error (fp32) |",
             "|---|---|---|---|---|---|---|---|"]
    torch.manual_seed(0)
    for rows, cols in ((768, 768), (3072, 768)):
        w = torch.randn(rows, cols) * 0.02
        for n in (5, 7):
            shapes = mpo.factor_shapes(rows, cols, n)
            ours = median_time(lambda: mpo.decompose(w, *shapes), repeats)
            ref = median_time(lambda: numpy_tt_svd(w.numpy(), *shapes), max(1, repeats // 2), warmup=0)
            unfold = (w.double().reshape(shapes[0][0], shapes[0][-1], shapes[1][0], shapes[1][-1])
                      .permute(0, 2, 1, 3).reshape(shapes[0][0] * shapes[1][0], -1))
            gesdd = median_time(lambda: torch.linalg.svd(unfold, full_matrices=False), repeats)
            err = ((mpo.contract(mpo.decompose(w, *shapes), *shapes) - w).norm() / w.norm()).item()
            lines.append(f"| {rows}×{cols} | {n} | {ours:.3f} | {ref:.3f} | {ref / ours:.1f}× | {gesdd:.3f} | "
                         f"{gesdd / ours:.2f}× | {err:.1e} |")
    lines += ["", "Published numpy code on this machine class (ALGORITHMS.md §1.3, not re-run): 16 s for 768×768 "
              "with 5 cores, 172 s for 3072×768 with 7 cores.", ""]
    if whole_model:
        for layers in (12, 6):
            torch.manual_seed(0)
            model = BertForSequenceClassification(BertConfig(num_hidden_layers=layers, num_labels=2))
            t0 = time.perf_counter()
            overparameterize(model, 7)
            lines.append(f"- BERT-base-sized {layers}-layer model, {6 * layers} matrices, 7 cores: "
                         f"**{time.perf_counter() - t0:.1f} s**")
            del model
        lines.append("")
    return lines


def bench_linear(repeats: int) -> list[str]:
    from opdf_ray.layers import MPOLinear

    tokens = 32 * 128
    lines = ["## 2. Forward+backward at batch 32 × seq 128 (4096 tokens)", "",
             "| matrix | cores | nn.Linear (ms) | MPOLinear (ms) | MPO / dense | naive (ms) | naive / ours "
             "| contraction only: ours (ms) | naive (ms) | naive / ours | FLOP ratio naive / ours |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for out_f, in_f in ((768, 768), (3072, 768)):
        for n in (5, 7):
            torch.manual_seed(0)
            dense = nn.Linear(in_f, out_f)
            ours = MPOLinear.from_linear(dense, n).train()
            naive = NaiveMPOLinear(ours).train()
            x = torch.randn(tokens, in_f)

            def step(layer):
                return lambda: layer(x).sum().backward()

            def contract_step(fn, layer):
                return lambda: fn(list(layer.cores), layer.row_shape, layer.col_shape).sum().backward()

            from opdf_ray import mpo
            t = interleaved_median({"dense": step(dense), "ours": step(ours), "naive": step(naive),
                                    "c_ours": contract_step(mpo.contract, ours),
                                    "c_naive": contract_step(naive_contract, naive)}, repeats)
            lines.append(f"| {out_f}×{in_f} | {n} | {1e3 * t['dense']:.0f} | {1e3 * t['ours']:.0f} | "
                         f"{t['ours'] / t['dense']:.2f}× | {1e3 * t['naive']:.0f} | {t['naive'] / t['ours']:.2f}× | "
                         f"{1e3 * t['c_ours']:.0f} | {1e3 * t['c_naive']:.0f} | {t['c_naive'] / t['c_ours']:.2f}× | "
                         f"{flop_ratio(ours):.2f} |")
    return lines + [""]


def minilm_teacher():
    """The packaged all-MiniLM-L6-v2 with a fresh 2-label head (seeded)."""
    from transformers import AutoModelForSequenceClassification
    from transformers.utils import logging as hf_logging

    from opdf_ray.models import packaged_minilm_path

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    torch.manual_seed(0)
    return AutoModelForSequenceClassification.from_pretrained(packaged_minilm_path(), num_labels=2)


def minilm_student():
    from opdf_ray.models import keep_layers

    return keep_layers(minilm_teacher(), [0, 2, 4])


def bench_student(repeats: int) -> list[str]:
    import copy

    from opdf_ray.overparam import merge, overparameterize, parameter_counts

    dense = minilm_student().train()
    over = overparameterize(copy.deepcopy(dense), 5).train()
    torch.manual_seed(1)
    batch = {"input_ids": torch.randint(1000, 30000, (32, 128)), "attention_mask": torch.ones(32, 128, dtype=int),
             "labels": torch.randint(0, 2, (32,))}

    def train_step(model, optimizer):
        def run():
            optimizer.zero_grad(set_to_none=True)
            model(**batch).loss.backward()
            optimizer.step()
        return run

    opt_dense = torch.optim.AdamW(dense.parameters(), lr=1e-5, fused=True)
    opt_over = torch.optim.AdamW(over.parameters(), lr=1e-5, fused=True)
    t = interleaved_median({"dense": train_step(dense, opt_dense), "over": train_step(over, opt_over)}, repeats)
    counts = parameter_counts(over)
    lines = ["## 3. MiniLM 3-layer student (layers 0, 2, 4 of all-MiniLM-L6-v2), AdamW (fused) train step, "
             "batch 32 × seq 128", "",
             f"- dense: {t['dense']:.2f} s/step ({counts['inference']:,} parameters)",
             f"- over-parameterised, 5 cores: {t['over']:.2f} s/step ({counts['train']:,} parameters, "
             f"{counts['train'] / counts['inference']:.2f}×)",
             f"- **ratio over / dense: {t['over'] / t['dense']:.2f}×** (target ≤ 1.3×)", ""]

    original = minilm_student().eval()
    merged = merge(over).eval()
    x = {k: v for k, v in batch.items() if k != "labels"}

    def infer(model):
        def run():
            with torch.inference_mode():
                model(**x)
        return run

    t = interleaved_median({"original": infer(original), "merged": infer(merged)}, repeats * 2)
    lines += ["## 4. Merged inference latency (same student, batch 32 × seq 128, eval, inference_mode)", "",
              f"- original: {1e3 * t['original']:.0f} ms; merged: {1e3 * t['merged']:.0f} ms; "
              f"**ratio merged / original: {t['merged'] / t['original']:.3f}** (target 1.00 ± 0.03); "
              f"parameters {parameter_counts(merged)['train']:,} vs {parameter_counts(original)['train']:,}", ""]
    return lines


def factor_table() -> list[str]:
    from opdf_ray import mpo

    lines = ["## Over-parameterisation factor (core parameters / dense weight, paper style, full rank)", "",
             "| cores | 768×768 | 3072×768 | 384×384 (MiniLM) | 1536×384 (MiniLM) |", "|---|---|---|---|---|"]
    for n in range(2, 8):
        cells = [mpo.count_params(*mpo.factor_shapes(r, c, n)) / (r * c)
                 for r, c in ((768, 768), (3072, 768), (384, 384), (1536, 384))]
        lines.append(f"| {n} | " + " | ".join(f"{x:.3f}" for x in cells) + " |")
    return lines + [""]


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats, skip the whole-model decomposition")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    import ray
    import transformers
    repeats = 3 if args.quick else 7
    header = [f"# bench_mpo ({'quick' if args.quick else 'full'})", "",
              f"machine: {cpu_name()} ({os.cpu_count()} logical CPUs), {platform.system()}; "
              f"torch threads: {torch.get_num_threads()}; python {platform.python_version()}; torch "
              f"{torch.__version__}; transformers {transformers.__version__}; ray {ray.__version__}; "
              f"numpy {np.__version__}", ""]
    print("\n".join(header), flush=True)
    for section in (lambda: bench_decompose(repeats, not args.quick), lambda: bench_linear(repeats),
                    lambda: bench_student(repeats), factor_table):
        print("\n".join(section()), flush=True)


if __name__ == "__main__":
    main()
