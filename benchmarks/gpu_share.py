"""Many trials on one GPU (issue 24 §2): the quick-start search shape (search_spaces/quickstart.yaml: KD and
Theseus, with and without OPDF, 2 epochs) on a full task, once with a whole GPU per trial and once with a share,
through ``tune_main.py`` (one Ray Train worker per trial). Prints trials per hour and per-trial ms per training
step for each, and their ratio, measured in the same call.

    python benchmarks/gpu_share.py --teacher DIR [--task mrpc] [--shares 1.0 0.25] [--trials 4 8]

First a one-trial search fine-tunes the teacher into the shared cache (``--no-warm``: the first measured search
does, before its trials start).
ASHA is off (every trial runs both epochs) so the two searches do the same work per trial. Trials per hour count
from the first trial's start to the last trial's end (leaderboard rows), which leaves Ray's start-up out; the
search's whole wall time is printed beside it. Record what it prints in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from opdf_ray.leaderboard import read_leaderboard  # noqa: E402


def search(args, name: str, share: float, trials: int) -> tuple[float, Path]:
    """One search of ``trials`` trials at ``share`` of a GPU each; returns (wall seconds, leaderboard)."""
    board = args.out / f"board-{name}"
    concurrent = max(1, round(1 / share))
    command = [sys.executable, str(REPO / "tune_main.py"), "--task", args.task,
               "--space", str(REPO / "search_spaces" / "quickstart.yaml"), "--num-samples", str(trials),
               "--teacher", str(args.teacher), *(["--gpus-per-worker", str(share)] if args.gpu else []),
               "--cpus-per-worker", str(args.cpus_per_worker), "--max-concurrent", str(concurrent),
               "--no-early-stopping", "--storage", str(args.out / "storage"), "--name", name,
               "--leaderboard", str(board), "--cache-dir", str(args.out / "cache"), "--seed", "0"]
    if args.max_train_samples:
        command += ["--max-train-samples", str(args.max_train_samples)]
    if args.address:
        command += ["--address", args.address]
    print("+", " ".join(command), flush=True)
    started = time.perf_counter()
    subprocess.run(command, check=True)
    return time.perf_counter() - started, board


def summary(board: Path) -> dict:
    rows = read_leaderboard(str(board))
    rows = rows[rows["status"] != "failed"]
    ends = rows["finished_at"].map(lambda t: t.timestamp())
    starts = ends - rows["wall_seconds"]
    span = float(ends.max() - starts.min())
    return {"trials": len(rows), "span_s": span, "trials_per_hour": 3600 * len(rows) / span,
            "ms_per_step": statistics.median(1000 * rows["train_seconds"] / rows["steps"]),
            "trial_wall_s": statistics.median(rows["wall_seconds"])}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--teacher", type=Path, required=True, help="teacher folder (timing only: random weights do)")
    p.add_argument("--task", default="mrpc")
    p.add_argument("--max-train-samples", type=int, default=None, help="default: the whole training split")
    p.add_argument("--shares", type=float, nargs=2, default=[1.0, 0.25], metavar=("WHOLE", "SHARE"))
    p.add_argument("--trials", type=int, nargs=2, default=[4, 8], metavar=("AT_WHOLE", "AT_SHARE"))
    p.add_argument("--cpus-per-worker", type=float, default=3)
    p.add_argument("--warm", action=argparse.BooleanOptionalAction, default=True,
                   help="a one-trial search first (--no-warm: the first measured search fine-tunes the teacher, "
                        "before its first trial starts, so outside the trials-per-hour span)")
    p.add_argument("--address", help="a running Ray cluster (default: each search starts Ray locally)")
    p.add_argument("--out", type=Path, default=Path("outputs/gpu_share"))
    args = p.parse_args(argv)
    args.out = args.out.resolve()          # trials resolve relative paths from their own folders
    args.teacher = args.teacher.resolve()
    import torch

    args.gpu = torch.cuda.is_available()
    if not args.gpu:
        print("no CUDA device: the searches run on CPUs with the same concurrency (a check of this script only)")
    if args.warm:
        search(args, "warm", 1.0, 1)       # the teacher's fine-tune, cached for both measured searches
    results = {}
    for share, trials in zip(args.shares, args.trials):
        wall, board = search(args, f"share-{share:g}", share, trials)
        results[share] = summary(board) | {"search_wall_s": wall}
    print(f"\n{args.task}, quick-start space, 2 epochs, ASHA off, one worker per trial, "
          f"{args.cpus_per_worker:g} CPUs per trial")
    print("| GPU per trial | trials at once | trials | search wall s | first start → last end s | trials per hour "
          "| median trial wall s | median ms per step |")
    print("|---|---|---|---|---|---|---|---|")
    for share, r in results.items():
        print(f"| {share:g} | {max(1, round(1 / share))} | {r['trials']} | {r['search_wall_s']:.0f} | "
              f"{r['span_s']:.0f} | {r['trials_per_hour']:.0f} | {r['trial_wall_s']:.1f} | {r['ms_per_step']:.1f} |")
    whole, shared = (results[s] for s in args.shares)
    print(f"trials per hour, {args.shares[1]:g} / {args.shares[0]:g} GPU: "
          f"{shared['trials_per_hour'] / whole['trials_per_hour']:.2f}x; ms per step: "
          f"{shared['ms_per_step'] / whole['ms_per_step']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
