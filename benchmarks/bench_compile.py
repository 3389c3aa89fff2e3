"""Does ``torch.compile`` pay for a student train step on this CPU? Eager vs compiled (inductor, dynamic shapes,
as length-grouped batches vary in length), dense and OPDF-5, MiniLM 3-layer student, batch 32.

    python benchmarks/bench_compile.py [--seqs 24 40 64]

Prints the first-call (compile) time and the median step time per length, measured in the same run.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_mpo import minilm_student  # noqa: E402


def step_fn(model, optimizer):
    def run(batch):
        optimizer.zero_grad(set_to_none=True)
        model(**batch).loss.backward()
        optimizer.step()
    return run


def batch(seq: int) -> dict:
    g = torch.Generator().manual_seed(seq)
    return {"input_ids": torch.randint(1000, 30000, (32, seq), generator=g),
            "attention_mask": torch.ones(32, seq, dtype=torch.long), "labels": torch.randint(0, 2, (32,), generator=g)}


def main() -> None:
    from opdf_ray.overparam import overparameterize

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seqs", type=int, nargs="+", default=[24, 40, 64])
    p.add_argument("--repeats", type=int, default=5)
    a = p.parse_args()
    base = minilm_student().train()
    print("| student | mode | first call (s) | " + " | ".join(f"seq {s} (s/step)" for s in a.seqs) + " |")
    print("|---|---|---|" + "---|" * len(a.seqs), flush=True)
    for name, model in (("dense", base), ("OPDF-5", overparameterize(copy.deepcopy(base), 5).train())):
        for mode in ("eager", "compiled"):
            m = copy.deepcopy(model)
            run = step_fn(torch.compile(m, dynamic=True) if mode == "compiled" else m,
                          torch.optim.AdamW(m.parameters(), lr=1e-5, fused=True))
            t0 = time.perf_counter()
            run(batch(a.seqs[0]))
            first = time.perf_counter() - t0
            cells = []
            for s in a.seqs:
                run(batch(s))                                      # a new length: any recompilation happens here
                times = []
                for _ in range(a.repeats):
                    t0 = time.perf_counter()
                    run(batch(s))
                    times.append(time.perf_counter() - t0)
                cells.append(f"{statistics.median(times):.3f}")
            print(f"| {name} | {mode} | {first:.1f} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
