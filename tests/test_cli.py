"""tune_main.py rejects bad flags, spaces and data before Ray starts, with a message saying what to fix."""

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow   # one subprocess per case (imports torch + transformers)

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("args,message", [
    (["--task", "rtee"], "--task 'rtee' is not a GLUE task (cola, sst2"),
    (["--task", "rte", "--methods", "kd,distil"], "--methods ['distil'] not in the space's methods"),
    (["--task", "rte", "--num-samples", "0"], "--num-samples must be ≥ 1"),
    (["--task", "rte", "--tpe-startup-trials", "0"], "--tpe-startup-trials must be ≥ 1"),
    (["--task", "qnli"], "GLUE qnli/train not found"),
    (["--task", "rte", "--space", "missing.yaml"], "search space missing.yaml not found"),
    (["--task", "rte", "--max-length", "0"], "max_length=0 is invalid"),
    (["--task", "rte", "--max-epochs", "0"], "max_epochs=0 is invalid"),
    (["--task", "rte", "--max-concurrent", "0"], "max_concurrent=0 is invalid"),
    (["--task", "rte", "--gpus-per-worker", "-1"], "gpus_per_worker=-1.0 is invalid"),
    (["--task", "rte", "--name", "a/b"], "name='a/b' is invalid"),
    (["--task", "rte", "--storage", "s3://bucket/x"], "needs a filesystem every node shares"),
    (["--task", "rte", "--sampler", "grid"], "a grid search needs categorical, unconditional parameters"),
    (["--task", "rte", "--sampler", "grid", "--num-samples", "13", "--space",
      str(REPO / "benchmarks/study/spaces/lr.yaml")], "--num-samples 13 exceeds the 12 combinations of the grid"),
])
def test_bad_input_fails_before_ray_starts(args, message, tmp_path):
    storage = [] if "--storage" in args else ["--storage", str(tmp_path)]
    done = subprocess.run([sys.executable, str(REPO / "tune_main.py"), *args, *storage],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert message in done.stderr and "Traceback" not in done.stderr
    assert "Ray" not in done.stderr and not list(tmp_path.iterdir())     # nothing started, nothing written


def test_bad_yaml_space_fails_before_ray_starts(tmp_path):
    space = tmp_path / "space.yaml"
    space.write_text("params:\n  lr: {type: loguniform, low: 0.1, high: 0.01}\n")
    done = subprocess.run([sys.executable, str(REPO / "tune_main.py"), "--task", "rte", "--space", str(space),
                           "--storage", str(tmp_path / "s")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "low=0.1 must be smaller than high=0.01" in done.stderr
    assert not (tmp_path / "s").exists()


def test_a_second_local_ray_instance_is_found_and_explained():
    """A search that would start its own Ray beside a running one is told how to join it instead."""
    import ray

    from opdf_ray.hpo.cluster import other_local_ray_instances, second_local_instance_warning

    ray.init(num_cpus=1, include_dashboard=False)
    try:
        address = ray.get_runtime_context().gcs_address
        others = other_local_ray_instances()
    finally:
        ray.shutdown()
    assert address in others
    message = second_local_instance_warning([address])
    assert f"--address {address}" in message and "placement group" in message


def test_a_local_ray_listens_on_loopback_only_and_keeps_its_token_private(tmp_path):
    """Before: a search's local Ray listened on every interface behind a token any local user could read (0644)."""
    import os

    script = ("from opdf_ray.hpo import cluster\n"
              "cluster.bind_local_ray_to_loopback()\n"
              "cluster.start_ray(None)\n"
              "import ray\n"
              "print('NODE', ray.nodes()[0]['NodeManagerAddress'], ray.get_runtime_context().gcs_address)\n"
              "ray.shutdown()\n")
    env = {k: v for k, v in os.environ.items()
           if k != "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"} | {
        "HOME": str(tmp_path), "RAY_USAGE_STATS_ENABLED": "0"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=180, env=env)
    assert done.returncode == 0, done.stderr
    node, gcs = done.stdout.split("NODE ")[1].split()[:2]
    assert node == "127.0.0.1" and gcs.startswith("127.0.0.1:")
    token = tmp_path / ".ray" / "auth_token"
    assert token.is_file() and token.stat().st_mode & 0o777 == 0o600


def test_the_pre_flight_data_check_logs_the_split_the_trials_get(tmp_path, caplog):
    """The driver's data line states the run's seed and sizes, not ``load_glue``'s defaults."""
    import logging

    from opdf_ray.cli import build_parser
    from opdf_ray.hpo.checks import validate

    args = build_parser().parse_args(["--task", "mrpc", "--seed", "7", "--max-train-samples", "300",
                                      "--storage", str(tmp_path)])
    with caplog.at_level(logging.INFO, logger="opdf_ray"):
        validate(args)
    (line,) = [r.getMessage() for r in caplog.records if "held out of train" in r.getMessage()]
    assert "300 train" in line and "seed 7" in line, line


def test_local_paths_reach_trials_absolute_and_hub_ids_stay(tmp_path, monkeypatch):
    """Ray tasks and trials resolve relative paths from their own working directories: the search hands them
    absolute ones (a relative --cache-dir once filled the Ray workers' folder instead of the user's)."""
    from opdf_ray.hpo.checks import absolute_local_paths

    monkeypatch.chdir(tmp_path)
    (tmp_path / "my-teacher").mkdir()
    got = absolute_local_paths({"cache_dir": "cache", "data_dir": "glue", "teacher": "my-teacher",
                                "student": "bert-base-uncased", "seed": 0})
    assert got == {"cache_dir": str(tmp_path / "cache"), "data_dir": str(tmp_path / "glue"),
                   "teacher": str(tmp_path / "my-teacher"), "student": "bert-base-uncased", "seed": 0}
