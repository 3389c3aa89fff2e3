"""What the training-loss logs of a trial cost its step (Ray Train V2, one worker, no checkpoints).

A trial reports its loss terms every ``log_steps`` steps (default 10). Ray Train V2's controller takes one report
per poll of its workers, every 2 s, and a worker holds one unconsumed report at most, so a report made sooner
blocks until the next poll: on the lent H200 a MiniLM trial trained at ~0.2 s a step against 33 ms in one process.
This runs one Train worker through a loop of sleeps standing in for steps, three ways in one Ray run: no reports
(the baseline), a report every ``--log-steps`` steps (the old trial), and the same paced by
``opdf_ray.hpo.trial.ReportPacer`` (what a trial does now), and prints seconds per step and the ratio to the baseline.

    python benchmarks/bench_report.py [--step-ms 33] [--steps 200] [--log-steps 10]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

for _var, _value in (("RAY_USAGE_STATS_ENABLED", "0"), ("RAY_TRAIN_ENABLE_V2_MIGRATION_WARNINGS", "0"),
                     ("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")):
    os.environ.setdefault(_var, _value)

MODES = ("no reports", "report every log step", "paced (ReportPacer)")


def worker_loop(config: dict) -> None:
    import ray.train

    from opdf_ray.parallel import Parallel
    from opdf_ray.hpo.trial import ReportPacer

    timings = {}
    for mode in MODES:
        pacer, reports = ReportPacer(Parallel()), 0
        started = time.perf_counter()
        for step in range(1, config["steps"] + 1):
            time.sleep(config["step_s"])
            if mode != MODES[0] and step % config["log_steps"] == 0 and (mode == MODES[1] or pacer.log_due()):
                ray.train.report({"step": step, "mode": MODES.index(mode)})
                pacer.sent()
                reports += 1
        timings[mode] = {"seconds": time.perf_counter() - started, "reports": reports}
        time.sleep(2 * pacer.interval_s)                 # let the controller drain the queue before the next mode
    with open(config["out"], "w") as f:
        json.dump(timings, f)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--step-ms", type=float, default=33.0, help="the stand-in step (33 ms: MiniLM KD on an H200)")
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--log-steps", type=int, default=10)
    args = p.parse_args(argv)
    import ray
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    ray.init(include_dashboard=False, num_cpus=2)
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "timings.json")
        TorchTrainer(worker_loop, train_loop_config={"steps": args.steps, "step_s": args.step_ms / 1000,
                                                     "log_steps": args.log_steps, "out": out},
                     scaling_config=ScalingConfig(num_workers=1, resources_per_worker={"CPU": 1}),
                     run_config=RunConfig(storage_path=tmp, name="report-cost")).fit()
        with open(out) as f:
            timings = json.load(f)
    base = timings[MODES[0]]["seconds"]
    print(f"ray {ray.__version__}, {args.steps} steps of {args.step_ms:g} ms, a log every {args.log_steps} steps, "
          f"one Train worker:")
    for mode in MODES:
        t = timings[mode]
        print(f"  {mode:24s} {1000 * t['seconds'] / args.steps:7.1f} ms/step  {t['seconds'] / base:5.2f}x  "
              f"({t['reports']} reports)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
