"""What one ``ray.train.report`` of metrics costs a training worker (Ray Train V2, one worker, no checkpoint).

A search's trial reports its loss terms every ``log_steps`` steps (default 10) besides each evaluation. On the lent
H200 a trial trained at ~0.2 s per step where the same loop in one process takes 33 ms (docs/benchmarks.md); every
report is a barrier through the Train controller, so this measures that cost alone, against a step-sized sleep.

    python benchmarks/bench_report.py [--reports 50]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

for _var, _value in (("RAY_USAGE_STATS_ENABLED", "0"), ("RAY_TRAIN_ENABLE_V2_MIGRATION_WARNINGS", "0")):
    os.environ.setdefault(_var, _value)


def worker_loop(config: dict) -> None:
    import ray.train

    spent = []
    for i in range(config["reports"]):
        started = time.perf_counter()
        ray.train.report({"step": i, "loss": 1.0 / (i + 1)})
        spent.append(time.perf_counter() - started)
    with open(config["out"], "w") as f:
        json.dump(spent, f)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--reports", type=int, default=50)
    args = p.parse_args(argv)
    import ray
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    ray.init(include_dashboard=False, num_cpus=2)
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "spent.json")
        TorchTrainer(worker_loop, train_loop_config={"reports": args.reports, "out": out},
                     scaling_config=ScalingConfig(num_workers=1, resources_per_worker={"CPU": 1}),
                     run_config=RunConfig(storage_path=tmp, name="report-cost")).fit()
        with open(out) as f:
            spent = json.load(f)[1:]                  # the first report also sets things up
    ms = [1000 * s for s in spent]
    print(f"ray {ray.__version__}: {len(ms)} metrics-only reports from one Train worker: median {statistics.median(ms):.1f} "
          f"ms, mean {statistics.mean(ms):.1f} ms, max {max(ms):.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
