"""The CPU proxies for a launch-bound GPU step (benchmarks/bench_ops.py) run and count what they claim to."""

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
from bench_ops import OpCounter, count_step, host_ms, tiny_minilm_teacher  # noqa: E402
from bench_steps import batch_of, make_method  # noqa: E402


def test_operators_read_backs_and_host_time_of_a_tiny_kd_step():
    teacher = tiny_minilm_teacher()
    batch, held = batch_of(8, 2, 0), batch_of(8, 2, 1)
    dense, opdf = (make_method("kd", cores, "per-step", teacher, 2) for cores in (0, 5))
    dense_ops, opdf_ops = count_step(dense, batch, held), count_step(opdf, batch, held)
    assert opdf_ops.total > dense_ops.total and opdf_ops.counts["bmm"] > dense_ops.counts["bmm"]   # contraction
    assert opdf_ops.read_backs == dense_ops.read_backs          # OPDF reads nothing back a dense step does not
    with OpCounter() as counter:
        float(torch.ones(())), bool(torch.ones(()))
    assert counter.read_backs == 2
    assert 0 < host_ms(dense, batch, held, steps=2, warmup=1)
