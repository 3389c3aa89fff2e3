"""Search efficiency on a recorded landscape: TPE + ASHA against random search and a shuffled grid, many seeds each.

    python benchmarks/bench_hpo_replay.py [--csv benchmarks/study/results/lr.csv] [--seeds 20] [--selection-size 2000]

The landscape is a grid whose every configuration ran to its last epoch once (the study's lr step: SST-2, every
method × OPDF off/5 cores × its lrs, seed 0, a 3-epoch curve each). A trial of a configuration is deterministic
(its seed, data and teacher are fixed), so a search over these configurations can be replayed exactly from the
recorded curves: each sampler draws configurations (method → OPDF → lr, define-by-run, as a space would), ASHA
stops a trial at a rung when its score there is below Ray's cutoff (the (1 − 1/rf) percentile of the scores
recorded at that rung, ``ray.tune.schedulers.AsyncHyperBandScheduler``'s rule), and a search costs the epochs its
trials ran. Measure: trial-epochs until a completed trial is within the band of the grid's best, as a fraction of
the whole grid's trial-epochs (a search that never gets there within that budget counts the whole budget: a lower
bound), with its 95% t-interval over the search seeds. The band is one standard error of a selection score.

Samplers: ``tpe+asha`` (Optuna TPE, opdf-ray's start-up count, seeded; ASHA grace 1, reduction 3 as a search
runs), ``random`` (Optuna's random sampler, every trial to its end) and ``grid`` (the grid in a seeded random
order). A replay, not a run: no wall time is measured, and it says nothing about a landscape unlike this one.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from opdf_ray.report.stats import mean_interval  # noqa: E402
from opdf_ray.hpo.tuner import SearchSettings, startup_trials  # noqa: E402


def landscape(csv: Path) -> dict[tuple, list[tuple[float, float]]]:
    """(method, opdf_cores, config_id) → [(epoch, selection score), …] of every completed row (a cell's
    configurations differ by lr, and some by other settings too: the configuration is the leaf, not the lr)."""
    rows = pd.read_csv(csv)
    rows = rows[rows["status"] == "completed"]
    return {(r.method, int(r.opdf_cores), r.config_id): [tuple(p) for p in json.loads(r.curve)]
            for r in rows.itertuples()}


def draw(trial, configs: dict) -> tuple:
    """One configuration, drawn as a space draws it: the method, then OPDF on/off, then one of that cell's
    configurations (its lr, and its other settings where the cell's differ)."""
    methods = sorted({m for m, _, _ in configs})
    method = trial.suggest_categorical("method", methods)
    cores = trial.suggest_categorical(f"cores|{method}", sorted({c for m, c, _ in configs if m == method}))
    ids = sorted(i for m, c, i in configs if (m, c) == (method, cores))
    return method, cores, trial.suggest_categorical(f"config|{method}|{cores}", ids)


def asha_stop(rungs: dict, epoch: float, score: float, rf: int) -> bool:
    """Record ``score`` at the rung ``epoch`` and say whether Ray's ASHA stops the trial there."""
    recorded = rungs.setdefault(epoch, [])
    cutoff = float(np.nanpercentile(recorded, (1 - 1 / rf) * 100)) if recorded else None
    recorded.append(score)
    return cutoff is not None and score < cutoff


def search(kind: str, seed: int, configs: dict, target: float, budget: float, rf: int = 3,
           grace: int = 1) -> tuple[float, bool]:
    """``(trial-epochs until a completed trial reaches target, whether one did)``; ``budget`` when none did."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    n = len(configs)
    if kind == "grid":
        order = [list(configs)[k] for k in np.random.default_rng(seed).permutation(n)]
    else:
        sampler = (optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup_trials(
            SearchSettings(name="r", storage="s", leaderboard="l", num_samples=n)))
            if kind == "tpe+asha" else optuna.samplers.RandomSampler(seed=seed))
        study = optuna.create_study(direction="maximize", sampler=sampler)
    rungs, spent, k = {}, 0.0, 0
    while spent < budget:
        if kind == "grid":
            if k == n:
                break
            config, trial = order[k], None
        else:
            trial = study.ask()
            config = draw(trial, configs)
        k += 1
        curve, best, stopped = configs[config], -math.inf, False
        milestones = {grace * rf ** j for j in range(8)}
        for epoch, score in curve:
            spent += 1.0
            best = max(best, score)
            if trial is not None:
                trial.report(score, int(epoch))
            if kind == "tpe+asha" and epoch in milestones and epoch < curve[-1][0] and asha_stop(rungs, epoch, score,
                                                                                                   rf):
                stopped = True
                break
        if trial is not None:
            if stopped:
                study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            else:
                study.tell(trial, best)
        if not stopped and best >= target:
            return min(spent, budget), True
    return budget, False


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--csv", default=str(HERE / "study" / "results" / "lr.csv"))
    p.add_argument("--seeds", type=int, default=20, help="search seeds per sampler (≥ 5)")
    p.add_argument("--selection-size", type=int, default=2000, help="examples in the selection slice (its SE)")
    a = p.parse_args()
    configs = landscape(Path(a.csv))
    finals = {c: max(s for _, s in curve) for c, curve in configs.items()}
    best = max(finals.values())
    se = 100 * math.sqrt(best / 100 * (1 - best / 100) / a.selection_size)
    target = best - se
    grid_cost = float(sum(len(curve) for curve in configs.values()))
    in_band = sum(v >= target for v in finals.values())
    print(f"landscape: {len(configs)} configurations, {grid_cost:.0f} trial-epochs; best selection {best:.2f}; band: "
          f"one standard error = {se:.2f} points (≥ {target:.2f}); {in_band} of {len(configs)} configurations in it "
          f"(a random first trial lands there with p = {in_band / len(configs):.2f})")
    print("| sampler | trial-epochs to the band, fraction of the grid's (mean ± 95% t-interval) | reached | seeds |")
    print("|---|---|---|---|")
    for kind in ("tpe+asha", "random", "grid"):
        found = [search(kind, seed, configs, target, grid_cost) for seed in range(a.seeds)]
        reached = sum(ok for _, ok in found)
        mean, half, n = mean_interval([spent / grid_cost for spent, _ in found])
        print(f"| {kind} | {mean:.3f} ± {half:.3f} | {reached} of {n} | 0–{a.seeds - 1} |")


if __name__ == "__main__":
    main()
