"""cluster/k8s: the KubeRay RayCluster and RayJob validated against KubeRay's own CRD schemas (../shared/kuberay),
strictly (an unknown field is an error, as `kubectl apply --validate=strict` makes it), and the job's entrypoint
parsed by the search's own parser."""

import copy
import functools
import shlex
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
CRDS = REPO.parent / "shared" / "kuberay"
K8S = REPO / "cluster" / "k8s"


def strict(schema: dict) -> dict:
    """A CRD's OpenAPI v3 schema as JSON Schema that refuses unknown fields: objects with ``properties`` get
    ``additionalProperties: false`` unless they preserve unknown fields; ``int-or-string`` accepts both."""
    schema = copy.deepcopy(schema)

    def walk(node):
        if isinstance(node, dict):
            if node.pop("x-kubernetes-int-or-string", False):
                node.pop("type", None)
                node["anyOf"] = [{"type": "integer"}, {"type": "string"}]
            if ("properties" in node and "additionalProperties" not in node
                    and not node.get("x-kubernetes-preserve-unknown-fields")):
                node["additionalProperties"] = False
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)
    walk(schema)
    return schema


def validator(crd: str):
    if not (CRDS / crd).is_file():
        pytest.skip(f"{CRDS / crd} is absent (KubeRay's CRDs live in ../shared/kuberay); manifests not validated")
    return _validator(crd)


@functools.lru_cache
def _validator(crd: str):
    import jsonschema

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)           # the CRDs are 1-2 MB of YAML
    definition = yaml.load((CRDS / crd).read_text(), Loader=loader)
    (version,) = [v for v in definition["spec"]["versions"] if v["name"] == "v1"]
    return jsonschema.Draft7Validator(strict(version["schema"]["openAPIV3Schema"]))


def errors(crd: str, manifest: dict) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator(crd).iter_errors(manifest)]


@pytest.mark.parametrize("name, crd", [("raycluster.yaml", "ray.io_rayclusters.yaml"),
                                       ("rayjob.yaml", "ray.io_rayjobs.yaml")])
def test_the_manifests_pass_kuberays_schemas_strictly(name, crd):
    manifest = yaml.safe_load((K8S / name).read_text())
    assert errors(crd, manifest) == []
    typo = copy.deepcopy(manifest)
    spec = typo["spec"].get("rayClusterSpec", typo["spec"])
    spec["workerGroupSpecs"][0]["maxReplica"] = spec["workerGroupSpecs"][0].pop("maxReplicas")
    assert any("maxReplica" in e for e in errors(crd, typo))            # the check can fail: a typo is caught


def test_the_job_runs_a_search_the_cli_accepts_on_the_clusters_shared_storage():
    from opdf_ray import cli

    job = yaml.safe_load((K8S / "rayjob.yaml").read_text())["spec"]
    argv = shlex.split(job["entrypoint"])
    assert argv[:2] == ["opdf-ray", "search"]
    args = cli.parse_args(argv[2:])
    assert args.address == "auto" and args.storage.startswith("/storage")   # joins the cluster; a shared volume
    cluster = job["rayClusterSpec"]
    groups = [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]
    mounts = [{m["mountPath"] for c in g["template"]["spec"]["containers"] for m in c.get("volumeMounts", [])}
              for g in groups]
    assert all("/storage" in m for m in mounts)                         # every pod sees the teacher and the rows
    claim = yaml.safe_load((K8S / "storage.yaml").read_text())
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    assert "opdf_driver" in cluster["headGroupSpec"]["rayStartParams"]["resources"]   # drivers stay on the head
    assert yaml.safe_load((K8S / "raycluster.yaml").read_text())["spec"] == cluster   # one cluster definition
