"""Real-run training throughput (examples/s of the training steps, from ``results.json``), dense vs OPDF, before and
after this repo's speed work, one ``python -m opdf_ray.run`` per cell, all in one invocation.

    python benchmarks/bench_throughput.py [--task sst2 --samples 1000 --epochs 1 --methods kd prokt lgtm]

Settings: ``before`` = the per-forward MPO path and the plain shuffle (the code before issue 12), ``after`` = the
defaults (per-step MPO weights, length-grouped batches), ``after+bf16`` = the defaults with ``--cpu-bf16``.
Finished cells are kept (``--out``), so an interrupted run resumes. The teacher fine-tune is cached and shared.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

SETTINGS = {"before": ["--mpo-weight", "per-forward", "--no-group-by-length", "--opdf-core-lr", "1.0"], "after": [],
            "after+bf16": ["--cpu-bf16"]}


def run_cell(out: Path, name: str, args: list[str]) -> dict:
    result = out / name / "results.json"
    if not result.exists():
        log = out / f"{name}.log"
        with open(log, "w") as f:
            rc = subprocess.run([sys.executable, "-m", "opdf_ray.run", *args, "--output-dir", str(out / name),
                                 "--no-progress"], stdout=f, stderr=subprocess.STDOUT).returncode
        if rc:
            raise SystemExit(f"{name} failed (exit {rc}); see {log}")
    return json.loads(result.read_text())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--task", default="sst2")
    p.add_argument("--samples", type=int, default=1000)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--max-length", type=int, default=64)
    p.add_argument("--cores", type=int, default=5)
    p.add_argument("--methods", nargs="+", default=["kd", "prokt", "lgtm"])
    p.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    p.add_argument("--out", default="outputs/bench_throughput")
    a = p.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    out = Path(a.out) / f"{a.task}-{a.samples}x{a.epochs}-len{a.max_length}"
    out.mkdir(parents=True, exist_ok=True)
    common = ["--task", a.task, "--preset", "minilm", "--max-train-samples", str(a.samples), "--epochs",
              str(a.epochs), "--max-length", str(a.max_length), "--seed", "42"]
    print(f"{a.task}, {a.samples} training examples × {a.epochs} epoch(s), max length {a.max_length}, minilm, "
          f"OPDF {a.cores} cores; train examples/s (training steps only)\n")
    print("| method | setting | dense ex/s | OPDF ex/s | OPDF slowdown (dense / OPDF ex/s) | dense speed-up vs before "
          "| OPDF speed-up vs before | dev dense | dev OPDF |")
    print("|---|---|---|---|---|---|---|---|---|", flush=True)
    for method in a.methods:
        base = {}
        for setting in a.settings:
            r = {cores: run_cell(out, f"{method}-{setting}-{cores}", common + ["--method", method, "--opdf-cores",
                                                                            str(cores), *SETTINGS[setting]])
                 for cores in (0, a.cores)}
            eps = {c: r[c]["examples_per_second"] for c in r}
            base = base or eps
            dev = {c: next(iter(r[c]["dev"].values()))[r[c]["selection_metric"]] for c in r}
            print(f"| {method} | {setting} | {eps[0]:.1f} | {eps[a.cores]:.1f} | {eps[0] / eps[a.cores]:.2f}× | "
                  f"{eps[0] / base[0]:.2f}× | {eps[a.cores] / base[a.cores]:.2f}× | {dev[0]:.1f} | "
                  f"{dev[a.cores]:.1f} |", flush=True)


if __name__ == "__main__":
    main()
