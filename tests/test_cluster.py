"""Every cluster config validates offline with Ray's own schema (private autoscaler API: Ray is pinned), plus
our rules: drivers stay on the head, GPU node types declare GPUs, setup installs this project, no open ports."""

from pathlib import Path

import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

from opdf_ray.tune import DRIVER_RESOURCE

CONFIGS = sorted((Path(__file__).resolve().parent.parent / "cluster").glob("*.yaml"))


def test_there_is_a_gpu_cluster_config():
    assert "gpu.yaml" in {p.name for p in CONFIGS}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_cluster_config_is_valid_and_follows_our_rules(path):
    raw = yaml.safe_load(path.read_text())
    config = prepare_config(raw)
    validate_config(config)                     # raises on any schema error
    types = config["available_node_types"]
    head = types[config["head_node_type"]]
    assert head["resources"].get(DRIVER_RESOURCE, 0) >= 1, "trial drivers must be able to stay on the head"
    assert head["resources"].get("GPU", 0) == 0
    for name, node in types.items():
        assert "resources" in node and "CPU" in node["resources"], f"{name}: declare resources explicitly"
        if name != config["head_node_type"]:
            assert node["resources"].get("GPU", 0) >= 1, f"{name}: a worker type must declare its GPUs"
            assert DRIVER_RESOURCE not in node["resources"]
    setup = " ".join(config["setup_commands"])
    assert "-e ~/opdf-ray" in setup and "ray[default,tune,train]==2.60.0" in setup and "torch==2.13.0" in setup
    starts = " ".join(config["head_start_ray_commands"] + config["worker_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in starts and starts.count("RAY_AUTH_MODE=token") == 2


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_no_credentials_and_only_ssh_is_opened(path):
    text = path.read_text()
    for secret in ("aws_access_key_id", "aws_secret_access_key", "AKIA", "private_key"):
        assert secret.lower() not in text.lower()
    rules = yaml.safe_load(text)["provider"].get("security_group", {}).get("IpPermissions", [])
    assert rules and all(r["FromPort"] == r["ToPort"] == 22 for r in rules)
    assert all(ip["CidrIp"] != "0.0.0.0/0" for r in rules for ip in r.get("IpRanges", []))
