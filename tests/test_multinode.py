"""A trial's data-parallel workers spread over the nodes of a real 2-node Ray cluster (one machine)."""

import pytest

from ray_helpers import settings, tiny_base, tiny_space  # noqa: I001 — sets Ray's env first

import ray  # noqa: E402
from ray.cluster_utils import Cluster  # noqa: E402

from opdf_ray.leaderboard import read_leaderboard  # noqa: E402
from opdf_ray.hpo.tuner import run_search  # noqa: E402

pytestmark = pytest.mark.slow   # real Ray searches: minutes


@pytest.fixture
def two_nodes():
    if ray.is_initialized():
        ray.shutdown()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    cluster.add_node(num_cpus=1)
    ray.init(address=cluster.address)
    yield cluster
    ray.shutdown()
    cluster.shutdown()


def test_workers_of_one_trial_land_on_both_nodes(two_nodes, tmp_path):
    space = tiny_space(method={"type": "categorical", "choices": ["kd"]})
    conf = settings(tmp_path, name="nodes", num_samples=1, workers_per_trial=2, cpus_per_worker=0.9,
                    placement="STRICT_SPREAD")
    grid = run_search(tiny_base(tmp_path), space, conf)
    row = read_leaderboard(conf.leaderboard).iloc[0]
    assert grid.num_errors == 0 and row["status"] == "completed"
    assert row["workers"] == 2 and row["nodes"] == 2 and row["bytes_all_reduced"] > 0
