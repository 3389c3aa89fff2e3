"""Search benchmarks (issue 4), all on the minilm preset and real RTE data, printed as ratios in one run.

  efficiency  grid over student lr × teacher lr × cores (ProKT; --method kd: lr × temperature × cores;
              --method kd-lr: KD's student lr alone across 1e-6..1e-3, a landscape whose configurations differ by
              far more than the selection noise; --method kd-opdf: the OPDF arm's lr × cores × core lr rule) vs Optuna TPE + ASHA on ranges around it, once per search seed:
              trial-epochs each needs to reach within 0.5 point of the grid's best selection score
  overhead    time from the search's start to the first training step, and a trial's wall time against the
              single-run command (python -m opdf_ray.run) on the same configuration
  allreduce   bytes all-reduced per step by 2 data-parallel workers, KD dense and OPDF (5 cores) with the
              per-forward reference path and with per-step dense weights

    python benchmarks/bench_search.py efficiency [--method kd --task mrpc --samples 1024 --epochs 3]
    python benchmarks/bench_search.py efficiency --method kd-lr --task sst2 --samples 1000 --epochs 3 \
        --search-seeds 0 1 2
    python benchmarks/bench_search.py efficiency --method kd-opdf --task sst2 --samples 1000 --epochs 3 \
        --search-seeds 0 1 2
    python benchmarks/bench_search.py overhead|allreduce
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

for _var, _value in (("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0"), ("RAY_USAGE_STATS_ENABLED", "0"),
                     ("RAY_TRAIN_ENABLE_V2_MIGRATION_WARNINGS", "0"), ("HF_HUB_OFFLINE", "1"),
                     ("TRANSFORMERS_OFFLINE", "1"), ("HF_DATASETS_OFFLINE", "1")):
    os.environ.setdefault(_var, _value)

from opdf_ray import trial_metrics as tm  # noqa: E402
from opdf_ray.config import RunSpec  # noqa: E402
from opdf_ray.leaderboard import read_leaderboard  # noqa: E402
from opdf_ray.search_space import parse_space  # noqa: E402
from opdf_ray.hpo.tuner import SearchSettings, run_search, startup_trials  # noqa: E402

FIXED = {"max_length": 64, "batch_size": 32, "eval_batch_size": 128, "teacher_epochs": 2}
BASE = dict(task="rte", preset="minilm", max_train_samples=512, seed=42)


def settings(out: Path, name: str, **kw) -> SearchSettings:
    import ray

    cpus = ray.cluster_resources()["CPU"]
    values = dict(name=name, storage=str(out / "storage"), leaderboard=str(out / "board"), max_concurrent=1,
                  workers_per_trial=1, cpus_per_worker=cpus - 0.01, seed=0)
    return SearchSettings(**(values | kw))


LR_DECADES = [1e-6, 3e-6, 1e-5, 3e-5, 1e-4, 3e-4, 1e-3]


def _range(low: float, high: float, kind: str = "loguniform") -> dict:
    return {"type": kind, "low": low, "high": high}


SPACES = {   # (grid choices, TPE parameters, OPDF core counts searched) per --method
    "prokt": ({"lr": [3e-5, 3e-4], "teacher_lr": [3e-5, 3e-4]},
              {"lr": _range(1e-5, 5e-4), "teacher_lr": _range(1e-5, 3e-4)}, [0, 5]),
    "kd": ({"lr": [2e-5, 1e-4], "temperature": [1.0, 4.0]},
           {"lr": _range(1e-5, 3e-4), "temperature": _range(1.0, 4.0, "uniform")}, [0, 5]),
    "kd-lr": ({"lr": LR_DECADES}, {"lr": _range(LR_DECADES[0], LR_DECADES[-1])}, [0]),
    # the OPDF arm's landscape (issue 23 §2): every trial over-parameterised, its lr, cores and the cores' lr rule
    "kd-opdf": ({"lr": [3e-5, 1e-4, 3e-4], "opdf_core_lr": ["matched", "1.0"]},
                {"lr": _range(1e-5, 1e-3), "opdf_core_lr": {"type": "categorical", "choices": ["matched", "1.0"]}},
                [3, 7]),
}


def _space(method: str, epochs: int, params: dict, cores: list[int], sampler: str):
    fixed = FIXED | {"method": method.split("-")[0]} | ({"opdf_cores": cores[0]} if len(cores) == 1 else {}) | (
        {"t2_scaling": True} if "temperature" in params else {})        # a searched temperature needs T²
    axes = params | ({"opdf_cores": {"type": "categorical", "choices": cores}} if len(cores) > 1 else {})
    return parse_space({"fixed": fixed, "epochs": {"default": epochs}, "params": axes}, sampler)


def _trial_epochs_to(rows, target: float) -> float | None:
    """Trial-epochs spent, in finishing order, until a completed trial's selection score reaches ``target``."""
    spent = 0.0
    for _, r in rows.iterrows():
        spent += r["epochs_done"]
        if r["status"] == "completed" and r["selection_score"] >= target:
            return spent
    return None


def efficiency(out: Path, method: str = "prokt", task: str = "rte", samples: int = 512, epochs: int = 2,
               search_seeds: tuple[int, ...] = (0,), tpe_startup_trials: int | None = None) -> None:
    grid_choices, ranges, cores = SPACES[method]
    grid_space = _space(method, epochs, {k: {"type": "categorical", "choices": v} for k, v in grid_choices.items()},
                        cores, "grid")
    tpe_space = _space(method, epochs, ranges, cores, "tpe")
    base = RunSpec(**BASE | {"task": task, "max_train_samples": samples})
    n_grid = len(cores) * math.prod(len(v) for v in grid_choices.values())
    startup = startup_trials(settings(out, "tpe", num_samples=n_grid, tpe_startup_trials=tpe_startup_trials))
    tpe = f"tpe-st{startup}"                 # random trials before TPE models the results: part of the name
    runs = [("grid", grid_space, dict(sampler="grid", early_stopping=False))]
    runs += [(f"{tpe}-s{seed}", tpe_space, dict(seed=seed, tpe_startup_trials=startup))   # ASHA stops the hopeless
             for seed in search_seeds]
    walls = {}
    for name, space, kw in runs:             # a finished search is not run again, a cut one resumes (rerunnable)
        done = read_leaderboard(str(out / "board")) if (out / "board").exists() else None
        if done is not None and (done["run_id"] == f"{name}-{task}").sum() >= n_grid:
            walls[name] = round(done.loc[done["run_id"] == f"{name}-{task}", "wall_seconds"].sum())
            continue
        t0 = time.time()
        run_search(base, space, settings(out, name, num_samples=n_grid, **kw), resume=True)
        walls[name] = round(time.time() - t0)
    board = read_leaderboard(str(out / "board")).sort_values("finished_at")
    grid = board[board["run_id"] == f"grid-{task}"]
    best = grid["selection_score"].max()
    grid_cost = grid["epochs_done"].sum()
    searches = {}
    for seed in search_seeds:
        rows = board[board["run_id"] == f"{tpe}-s{seed}-{task}"]
        reached = _trial_epochs_to(rows, best - 0.5)
        searches[f"seed {seed}"] = {
            "trials": len(rows), "pruned": int((rows["status"] == "pruned").sum()),
            "trial_epochs": float(rows["epochs_done"].sum()), "best_selection": float(rows["selection_score"].max()),
            "trial_epochs_to_within_0.5": reached, "wall_s": walls[f"{tpe}-s{seed}"],
            "fraction_of_grid": None if reached is None else round(reached / grid_cost, 3)}
    fractions = [s["fraction_of_grid"] for s in searches.values()]
    reached_all = [f for f in fractions if f is not None]
    # a search that never got there counts all it spent: a lower bound on what it would have needed
    censored = [s["fraction_of_grid"] if s["fraction_of_grid"] is not None else s["trial_epochs"] / grid_cost
                for s in searches.values()]
    summary = {
        "method": method, "task": task, "train_samples": samples, "epochs": epochs,
        "grid_trials": len(grid), "grid_trial_epochs": float(grid_cost), "grid_best_selection": best,
        "grid_best_dev": float(grid.loc[grid["selection_score"].idxmax(), "dev_score"]),
        "grid_trial_epochs_to_within_0.5": _trial_epochs_to(grid, best - 0.5), "grid_wall_s": walls["grid"],
        "tpe_startup_trials": startup, "searches": searches,
        "searches_reaching": f"{len(reached_all)} of {len(fractions)}",
        "mean_fraction_of_grid_of_those_reaching": round(statistics.mean(reached_all), 3) if reached_all else None,
        "mean_fraction_of_grid_at_least": round(statistics.mean(censored), 3),
        "std_fraction_of_grid_at_least": round(statistics.stdev(censored), 3) if len(censored) > 1 else None,
    }
    print(json.dumps(summary, indent=2))
    print(board[["run_id", "trial_id", "status", *grid_choices, "opdf_cores", "epochs_done",
                 "selection_score", "dev_score"]].to_string(index=False))


def overhead(out: Path) -> None:
    # ProKT: no teacher fine-tuning before the first step, so this measures the machinery alone
    space = parse_space({"fixed": FIXED | {"method": "prokt", "lr": 5e-5}, "epochs": {"default": 1}, "params": {
        "opdf_cores": {"type": "categorical", "choices": [0]}}}, "fixed")
    base = RunSpec(**BASE)
    import ray

    t0 = time.time()
    ray.init()
    t_ray = time.time() - t0
    grid = run_search(base, space, settings(out, "overhead", num_samples=1, sampler="grid", early_stopping=False))
    result = grid[0].metrics
    first_step = result[tm.TRAINING_STARTED_AT] - t0
    trial_wall = result["time_total_s"]
    train_s = result["train_seconds"]
    ray.shutdown()
    t1 = time.time()
    cmd = [sys.executable, "-m", "opdf_ray.run", "--task", "rte", "--method", "prokt", "--preset", "minilm",
           "--max-train-samples", "512", "--max-length", "64", "--epochs", "1", "--lr", "5e-5",
           "--teacher-epochs", "2", "--eval-batch-size", "128", "--no-progress", "--no-save-model",
           "--cache-dir", str(out / "single-cache")]
    subprocess.run(cmd, check=True, capture_output=True)
    single = time.time() - t1
    print(json.dumps({"ray_init_s": round(t_ray, 1), "start_to_first_training_step_s": round(first_step, 1),
                      "trial_train_seconds": round(train_s, 1), "tune_trial_wall_s": round(trial_wall, 1),
                      "single_run_process_wall_s": round(single, 1),
                      "trial_over_single_run": round(trial_wall / single, 3)}, indent=2))


def allreduce(out: Path) -> None:
    """KD dense, OPDF with the per-forward reference path (core gradients all-reduced) and OPDF per step (dense
    gradients all-reduced, then pushed into the cores)."""
    import ray

    ray.init()
    rows = {}
    for label, cores, path in (("dense", 0, "per-step"), ("opdf5_per_forward", 5, "per-forward"),
                               ("opdf5_per_step", 5, "per-step")):
        space = parse_space({"fixed": FIXED | {"method": "kd", "lr": 5e-5, "max_steps": 4, "eval_steps": 4},
                             "epochs": {"default": 1},
                             "params": {"opdf_cores": {"type": "categorical", "choices": [cores]}}}, "fixed")
        name = f"allreduce-{label}".replace("_", "-")
        core_lr = "1.0" if path == "per-forward" else "matched"      # matched needs the per-step dense gradient
        run_search(RunSpec(**BASE | {"max_train_samples": 256, "mpo_weight": path, "opdf_core_lr": core_lr}), space,
                   settings(out, name, num_samples=1, sampler="grid", early_stopping=False, workers_per_trial=2,
                            cpus_per_worker=0.99))
        board = read_leaderboard(str(out / "board"))
        r = board[board["run_id"] == f"{name}-rte"].iloc[0]
        rows[label] = {"bytes_per_step": int(r["bytes_all_reduced"]) // int(r["steps"]),
                       "trainable_params": int(r["trainable_params"])}
    dense = rows["dense"]["bytes_per_step"]
    print(json.dumps(rows | {f"{k}_over_dense": round(v["bytes_per_step"] / dense, 3) for k, v in rows.items()
                             if k != "dense"}, indent=2))


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("which", choices=["efficiency", "overhead", "allreduce"])
    parser.add_argument("--out", default="outputs/bench_search")
    parser.add_argument("--method", default="prokt", choices=sorted(SPACES), help="efficiency: the method searched")
    parser.add_argument("--task", default="rte", help="efficiency: the task")
    parser.add_argument("--samples", type=int, default=512, help="efficiency: training examples")
    parser.add_argument("--epochs", type=int, default=2, help="efficiency: epochs per trial")
    parser.add_argument("--search-seeds", type=int, nargs="+", default=[0],
                        help="efficiency: one Optuna TPE + ASHA search per seed (the grid runs once)")
    parser.add_argument("--tpe-startup-trials", type=int, default=None,
                        help="efficiency: random trials before TPE models (default: the product's, a third)")
    args = parser.parse_args()
    if args.which == "efficiency":
        import ray

        ray.init()
        efficiency(Path(args.out).resolve() / f"efficiency-{args.method}-{args.task}", args.method, args.task,
                   args.samples, args.epochs, tuple(args.search_seeds), args.tpe_startup_trials)
    else:
        {"overhead": overhead, "allreduce": allreduce}[args.which](Path(args.out).resolve() / args.which)
