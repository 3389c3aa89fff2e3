"""Shared pieces of the Ray tests: a tiny search space and settings (CPU, seconds per trial)."""

import os

for _var, _value in (("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0"), ("RAY_USAGE_STATS_ENABLED", "0"),
                     ("RAY_TRAIN_ENABLE_V2_MIGRATION_WARNINGS", "0")):
    os.environ.setdefault(_var, _value)   # bind Ray to 127.0.0.1 only; no telemetry

from opdf_ray.config import RunSpec  # noqa: E402
from opdf_ray.search_space import parse_space  # noqa: E402
from opdf_ray.hpo.tuner import SearchSettings  # noqa: E402

TINY_SPACE = {
    "fixed": {"max_length": 32, "batch_size": 16, "eval_batch_size": 64, "teacher_epochs": 1, "log_steps": 1},
    "epochs": {"default": 2},
    "params": {
        "method": {"type": "categorical", "choices": ["kd", "prokt"]},
        "lr": {"type": "loguniform", "low": 1e-5, "high": 1e-3},
        "opdf": {"type": "categorical", "choices": [True, False]},
        "opdf_cores": {"type": "categorical", "choices": [3], "when": {"opdf": [True]}},
    },
}


def tiny_space(**params):
    raw = {**TINY_SPACE, "params": {**TINY_SPACE["params"], **params}}
    return parse_space(raw, "tiny-test-space")


def tiny_base(tmp_path, task="rte"):
    return RunSpec(task=task, preset="tiny", max_train_samples=64, cache_dir=str(tmp_path / "cache"))


def settings(tmp_path, name="t", **kw):
    values = dict(name=name, storage=str(tmp_path / "storage"), leaderboard=str(tmp_path / "board"),
                  num_samples=3, max_concurrent=1, workers_per_trial=1, cpus_per_worker=1.0, seed=0)
    return SearchSettings(**(values | kw))
