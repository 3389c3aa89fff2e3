"""The search-efficiency replay (benchmarks/bench_hpo_replay.py): ASHA's rule as Ray has it, costs as runs pay."""

import importlib.util
from pathlib import Path

import pytest


def replay():
    path = Path(__file__).resolve().parent.parent / "benchmarks" / "bench_hpo_replay.py"
    spec = importlib.util.spec_from_file_location("bench_hpo_replay", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_asha_stops_below_rays_cutoff_and_never_the_first_trial_at_a_rung():
    bench = replay()
    rungs = {}
    assert not bench.asha_stop(rungs, 1, 50.0, 3)                 # nothing recorded yet: it goes on
    assert not bench.asha_stop(rungs, 1, 80.0, 3)                 # above the 67th percentile of [50]
    assert bench.asha_stop(rungs, 1, 60.0, 3)                     # below that of [50, 80] (70)
    assert rungs[1] == [50.0, 80.0, 60.0]


def test_a_replayed_search_pays_the_epochs_its_trials_ran_and_reaches_only_with_a_completed_trial():
    bench = replay()
    configs = {("kd", 0, f"c{k}"): [(1, 50.0 + k), (2, 50.0 + k), (3, 50.0 + k)] for k in range(6)}
    configs[("kd", 0, "best")] = [(1, 40.0), (2, 60.0), (3, 90.0)]          # slow starter: ASHA may stop it
    budget = 3.0 * len(configs)
    for kind in ("grid", "random", "tpe+asha"):
        for seed in range(5):
            spent, reached = bench.search(kind, seed, configs, 89.0, budget)
            assert 0 < spent <= budget and (reached or spent == budget)
            if kind == "grid":
                assert reached and spent % 3 == 0                    # whole trials, the best one among them
    spent, reached = bench.search("grid", 0, configs, 99.0, budget)        # an unreachable band: the whole budget
    assert (spent, reached) == (budget, False)
    assert bench.search("tpe+asha", 0, configs, 99.0, budget) == pytest.approx((budget, False))
