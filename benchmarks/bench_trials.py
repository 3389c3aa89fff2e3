"""Search throughput (issue 38): where a trial's wall goes besides training, for two checkouts in one run.

Each case is a real search through the command line's own pipeline (``opdf_ray.cli.main``), run in a fresh process
from the checkout under test, with a timing callback added beside the search's own (on the driver's clock):

  setup     the trial's start on the driver → its first training step (``training_started_at``)
  loop      first step → the final result reaching the driver (training, evaluations, merge, saving the student)
  after     the final result → the trial complete on the driver (its row written, the process released)
  plumbing  setup + after: what a trial costs besides its loop

Cases: ``quickstart`` (the README's: SST-2, 4 trials, 800 examples, MiniLM teacher, fresh storage; the tokenised
splits cached beforehand) and ``tiny`` (6 KD trials of the tiny random model on RTE). Trials per hour count the
trials' phase (first trial start → last trial complete), so the teacher's fine-tune and Ray's start are out of it.

    python benchmarks/bench_trials.py --before 21fbd8e [--cases quickstart tiny] [--repeats 1]

``--before`` is checked out as a git worktree beside this one; the two alternate (before, after, before, …) so
neither gets a warmer machine. Never run it beside another busy process (Ray workers run at nice 15).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CASES = {
    "quickstart": ["--task", "sst2", "--space", "search_spaces/quickstart.yaml", "--num-samples", "4",
                   "--max-train-samples", "800"],
    "tiny": ["--task", "rte", "--preset", "tiny", "--num-samples", "6", "--max-train-samples", "64",
             "--max-length", "32", "--max-epochs", "2", "--methods", "kd"],
}

# run inside the checkout under test: its own opdf_ray, a timing callback appended to the search's callbacks
HARNESS = r"""
import json, sys, time
try:
    import opdf_ray.hpo.tuner as tune_module
except ImportError:                       # a checkout before opdf_ray/hpo/
    import opdf_ray.tune as tune_module
from ray.tune import Callback

events = {}

class Timing(Callback):
    def on_trial_start(self, iteration, trials, trial, **info):
        events.setdefault(trial.trial_id, {})["start"] = time.time()

    def on_trial_result(self, iteration, trials, trial, result, **info):
        e = events.setdefault(trial.trial_id, {})
        e["last_result"] = time.time()
        if "training_started_at" in result:
            e["first_step"] = result["training_started_at"]
        if result.get("finished"):
            e["final_result"] = time.time()
            e["train_seconds"] = result.get("train_seconds")

    def on_trial_complete(self, iteration, trials, trial, **info):
        events.setdefault(trial.trial_id, {})["complete"] = time.time()

original = tune_module._callbacks
tune_module._callbacks = lambda *a, **k: [*original(*a, **k), Timing()]
from opdf_ray.cli import main
started = time.time()
code = main(sys.argv[2:])
json.dump({"code": code, "wall": time.time() - started, "trials": events}, open(sys.argv[1], "w"))
"""


def run_case(tree: Path, case: str, out: Path, cache: Path) -> dict:
    """One search from ``tree``; returns the harness's timings (wall includes Ray's start and the teacher)."""
    out.mkdir(parents=True, exist_ok=True)
    argv = [*CASES[case], "--storage", str(out / "storage"), "--cache-dir", str(cache), "--name", "bench"]
    env = os.environ | {"PYTHONPATH": str(tree), "RAY_USAGE_STATS_ENABLED": "0", "HF_HUB_OFFLINE": "1",
                        "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    timings = out / "timings.json"
    started = time.time()
    done = subprocess.run([sys.executable, "-c", HARNESS, str(timings), *argv], cwd=tree, env=env,
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{case} from {tree} failed:\n{done.stderr[-3000:]}")
    result = json.loads(timings.read_text())
    result["process_wall"] = time.time() - started
    import pandas as pd

    rows = [pd.read_parquet(f) for f in (out / "storage" / "leaderboard").rglob("*.parquet")]
    result["scores"] = sorted([r["method"], int(r["opdf_cores"]), float(r["lr"]), r["status"],
                               float(r["selection_score"])] for frame in rows for _, r in frame.iterrows())
    return result


def summary(result: dict) -> dict:
    trials = [t for t in result["trials"].values() if {"start", "first_step", "complete"} <= set(t)]
    setup = [t["first_step"] - t["start"] for t in trials]
    # a trial ASHA stopped has no final result: its loop ends with its last one
    after = [t["complete"] - t.get("final_result", t["last_result"]) for t in trials]
    phase = max(t["complete"] for t in trials) - min(t["start"] for t in trials)
    train = sum(t.get("train_seconds") or 0 for t in trials)     # a pruned trial: no final result
    return {"trials": len(trials), "search_wall_s": round(result["process_wall"], 1),
            "setup_s_median": round(statistics.median(setup), 2),
            "after_final_result_s_median": round(statistics.median(after), 2),
            "plumbing_s_median": round(statistics.median(s + a for s, a in zip(setup, after)), 2),
            "train_over_search_wall": round(train / result["process_wall"], 3),
            "trials_per_hour": round(len(trials) / phase * 3600, 1), "scores": result["scores"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", required=True, help="the git revision to compare against (a worktree)")
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--out", default="outputs/bench_trials")
    args = parser.parse_args()
    out = Path(args.out).resolve()
    work = Path(tempfile.mkdtemp(prefix="bench-trials-"))
    before = work / "before"
    subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(before), args.before], check=True,
                   capture_output=True)
    trees = {"before": before, "after": REPO}
    try:
        cache = out / "cache"                     # tokenised splits and models: warmed once, shared by both
        for case in args.cases:
            run_case(REPO, case, out / "warm" / case, cache)
        rows = {}
        for case in args.cases:
            for i in range(args.repeats):
                for label, tree in trees.items():
                    got = summary(run_case(tree, case, out / f"{case}-{label}-{i}", cache))
                    rows.setdefault(case, {}).setdefault(label, []).append(got)
                    print(json.dumps({"case": case, "tree": label, "repeat": i, **got}), flush=True)
        for case, by in rows.items():
            med = {t: {k: statistics.median(r[k] for r in rs) for k in rs[0] if k != "scores"} for t, rs in by.items()}
            same = all(r["scores"] == by["before"][0]["scores"] for rs in by.values() for r in rs)
            print(json.dumps({"case": case, "before": med["before"], "after": med["after"], "after_over_before": {
                k: round(med["after"][k] / med["before"][k], 3) for k in med["after"] if med["before"][k]},
                "same_trials_and_scores": same}))
    finally:
        subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(before)], capture_output=True)


if __name__ == "__main__":
    main()
