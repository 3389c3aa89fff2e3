"""GPU check of the search path: KD and LGTM, each dense and with OPDF (5 cores), through ``tune_main.py`` on every
GPU of this machine (one Ray Train worker per GPU, NCCL, bf16 autocast), then from the leaderboard: the merged
student matches the trained one, and OPDF's throughput against dense in the same run.

    python benchmarks/gpu_check.py [--out outputs/gpu_check] [--task mrpc] [--samples 2048] [--cases lgtm-5 ...]
    python benchmarks/gpu_check.py --dry-run       # CPU/CI: builds and validates every command, runs none

Record what it prints in docs/benchmarks.md ("GPU check").
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from opdf_ray import cli  # noqa: E402
from opdf_ray.hpo import checks  # noqa: E402
from opdf_ray.leaderboard import read_leaderboard  # noqa: E402

CASES = [("kd", 0), ("kd", 5), ("lgtm", 0), ("lgtm", 5)]
CASE_NAMES = tuple(f"{method}-{cores}" for method, cores in CASES)      # --cases: rerun some (a lease is short)
MERGE_TOLERANCE = 1e-3      # max |logit| difference, merged vs trained student (both evaluated in fp32)


def write_space(out: Path, method: str, cores: int) -> Path:
    """A one-configuration space: the method, OPDF on/off, a fixed learning rate (no search)."""
    space = {"fixed": {"method": method, "opdf_cores": cores, "batch_size": 32, "max_length": 128},
             "epochs": {"default": 1},
             "params": {"lr": {"type": "categorical", "choices": [5e-5]}}}
    path = out / f"space-{method}-{cores}.yaml"
    path.write_text(yaml.safe_dump(space))
    return path


def commands(out: Path, task: str, samples: int, gpus: int, cases=CASE_NAMES) -> list[list[str]]:
    out.mkdir(parents=True, exist_ok=True)
    return [[sys.executable, str(REPO / "tune_main.py"), "--task", task, "--preset", "minilm", "--num-samples", "1",
             "--space", str(write_space(out, method, cores)), "--name", f"gpu-{method}-{cores}",
             "--workers-per-trial", str(gpus), "--gpus-per-worker", "1", "--max-epochs", "1",
             "--max-train-samples", str(samples), "--storage", str(out / "storage"),
             "--leaderboard", str(out / "leaderboard")] for method, cores in CASES if f"{method}-{cores}" in cases]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="outputs/gpu_check")
    p.add_argument("--task", default="mrpc")
    p.add_argument("--samples", type=int, default=2048)
    p.add_argument("--cases", nargs="+", default=CASE_NAMES, choices=CASE_NAMES, help="which runs (default: all)")
    p.add_argument("--dry-run", action="store_true", help="validate every command without running it")
    args = p.parse_args(argv)
    import torch

    gpus = torch.cuda.device_count()
    if not gpus and not args.dry_run:
        print("error: no CUDA device here; use --dry-run to check the commands", file=sys.stderr)
        return 2
    runs = commands(Path(args.out), args.task, args.samples, max(gpus, 1), args.cases)
    for cmd in runs:
        parsed = cli.build_parser().parse_args(cmd[2:])
        checks.validate(parsed)                       # what tune_main.py checks before Ray starts
        print("would run:" if args.dry_run else "running:", " ".join(cmd[1:]))
        if not args.dry_run:
            subprocess.run(cmd, check=True, cwd=REPO)
    if args.dry_run:
        return 0
    board = read_leaderboard(str(Path(args.out) / "leaderboard"))
    done = board[board["status"] == "completed"].set_index(["method", "opdf_cores"])
    worst = float(done["merge_max_abs_logit_diff"].max())
    print(f"device: {gpus}x {torch.cuda.get_device_name(0)}, bf16 autocast, NCCL; {args.task}, {args.samples} "
          f"examples, 1 epoch, len 128, batch 32 (global)")
    for method in ("kd", "lgtm"):
        rows = {c: done.loc[(method, c)] for c in (0, 5) if (method, c) in done.index}
        print(f"{method}: " + ", ".join(f"{'OPDF-5' if c else 'dense'} {float(r['examples_per_second']):.1f} ex/s "
                                        f"(dev {float(r['dev_score']):.2f})" for c, r in rows.items()), end="")
        if len(rows) == 2:
            print(f"; dense/OPDF time ratio "
                  f"{float(rows[0]['examples_per_second']) / float(rows[5]['examples_per_second']):.2f}x", end="")
        print()
    print(f"merged vs trained student: max |logit diff| {worst:.2e} (tolerance {MERGE_TOLERANCE:g})")
    return 0 if worst <= MERGE_TOLERANCE else 1


if __name__ == "__main__":
    raise SystemExit(main())
