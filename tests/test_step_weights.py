"""MPO dense weights built once per optimiser step (``MPOLinear.per_step``) and their gradients all-reduced densely
(``opdf_ray.gradients``): the same numbers as the per-forward reference path, for fewer contractions and bytes."""

import copy
import dataclasses
import pickle

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from opdf_ray import mpo
from opdf_ray.layers import MPOLinear
from opdf_ray.methods import get_method
from opdf_ray.models import keep_layers
from opdf_ray.overparam import mpo_modules
from tests.test_methods import build, make_batch, teacher_model


def layer(per_step: bool) -> MPOLinear:
    torch.manual_seed(0)
    m = MPOLinear.from_linear(nn.Linear(12, 8), n_cores=3)
    m.per_step = per_step
    return m


def test_one_contraction_per_core_version_collects_every_forward():
    ref, shared = layer(False), layer(True)
    x1, x2 = torch.randn(5, 12), torch.randn(3, 12)
    (ref(x1).pow(2).sum() + ref(x2).sin().sum()).backward()
    w1 = shared.step_weight()
    shared(x1).pow(2).sum().backward()
    shared(x2).sin().sum().backward()                     # a second pass of the same step: same leaf
    assert shared.step_weight() is w1 and all(c.grad is None for c in shared.cores)
    shared.push_gradient()
    for a, b in zip(ref.cores, shared.cores):
        torch.testing.assert_close(b.grad, a.grad, rtol=1e-5, atol=1e-6)
    assert shared.dense_gradient() is None
    with torch.no_grad():
        shared.cores[0].add_(0.1)                         # an optimiser step: the next forward rebuilds
    assert shared.step_weight() is not w1
    torch.testing.assert_close(shared.step_weight().detach(), shared.weight().detach())


def test_cores_changed_before_the_dense_gradient_was_pushed_is_an_error_not_a_lost_gradient():
    m = layer(True)
    m(torch.randn(2, 12)).sum().backward()
    with torch.no_grad():
        m.cores[1].mul_(2)
    with pytest.raises(RuntimeError, match="push_gradient"):
        m(torch.randn(2, 12))


def test_swapped_in_cores_get_their_gradient_and_leave_the_step_weight_alone():
    """LGTM's look-ahead calls the student with plain tensors in place of its cores (functional_call)."""
    m = layer(True)
    w = m.step_weight()
    swapped = {f"cores.{k}": (c.detach() * 1.5).requires_grad_() for k, c in enumerate(m.cores)}
    out = torch.func.functional_call(m, swapped, (torch.randn(4, 12),))
    grads = torch.autograd.grad(out.sum(), list(swapped.values()))
    assert all(g.abs().sum() > 0 for g in grads)
    assert m.step_weight() is w and m.dense_gradient() is None
    m.eval()
    x = torch.randn(3, 12)
    with torch.no_grad():                                  # eval, no grad: swapped tensors are never cached
        for scale in (1.0, -1.0):                          # (two temporaries may share an address)
            tensors = {k: v.detach() * scale for k, v in swapped.items()}
            expected = F.linear(x, mpo.contract(list(tensors.values()), m.row_shape, m.col_shape), m.bias)
            torch.testing.assert_close(torch.func.functional_call(m, tensors, (x,)), expected)


def test_inference_mode_evaluation_does_not_leave_a_weight_training_cannot_use():
    m = layer(True)
    with torch.inference_mode():
        m.eval()(torch.randn(2, 12))
    m.train()(torch.randn(2, 12)).sum().backward()         # would fail on an inference tensor
    m.push_gradient()
    assert all(c.grad is not None for c in m.cores)


def test_a_layer_holding_a_step_weight_copies_and_pickles():
    m = layer(True)
    m(torch.randn(2, 12)).sum().backward()
    for clone in (copy.deepcopy(m), pickle.loads(pickle.dumps(m))):
        torch.testing.assert_close(clone(torch.ones(1, 12)), m(torch.ones(1, 12)).detach())


def run_steps(method, mpo_weight, steps=3, opdf_cores=3, **overrides):
    m = build(method, opdf_cores, mpo_weight=mpo_weight, **overrides)
    torch.manual_seed(1)                                  # dropout and Theseus draws: the same on both paths
    logs = [m.train_step(make_batch(step), make_batch(10 + step)) for step in range(steps)]
    return m, logs


@pytest.mark.parametrize("method", ["kd", "prokt", "lgtm", "theseus"])
def test_every_method_gives_the_per_forward_results_per_step(method):
    """Same losses, same trained student (and teacher) to float tolerance over a few steps, OPDF with alignment."""
    # a fixed core lr: the matched one is calibrated on the dense gradient only the per-step path has
    extra = {"opdf_core_lr": 1.0} | ({"replacing_rate": 0.5} if method == "theseus" else {})
    ref, ref_logs = run_steps(method, "per-forward", **extra)
    new, new_logs = run_steps(method, "per-step", **extra)
    assert all(m.per_step for m in mpo_modules(new.eval_model()).values())
    for a, b in zip(ref_logs, new_logs):
        assert a.keys() == b.keys() and "align" in a
        for k in a:
            if k != "influence_norm":      # measured on the dense weights per step, on the cores per forward
                assert b[k] == pytest.approx(a[k], rel=1e-4, abs=1e-6), k
    models = [(ref.eval_model(), new.eval_model())] + ([(ref.teacher, new.teacher)] if ref.trains_teacher else [])
    for before, after in models:
        for (name, p), q in zip(before.named_parameters(), after.parameters()):
            torch.testing.assert_close(q, p, rtol=1e-4, atol=2e-6, msg=name)


def trained_tensors(m) -> dict[str, torch.Tensor]:
    models = {"student": m.eval_model()} | ({"teacher": m.teacher} if m.trains_teacher else {})
    return {f"{k}.{n}": p.detach().clone() for k, model in models.items() for n, p in model.named_parameters()}


@pytest.mark.parametrize("method", ["kd", "prokt", "lgtm", "theseus"])
def test_batched_contraction_trains_bitwise_like_one_layer_at_a_time(method):
    """Layers of one chain shape contracted and back-propagated together (the default) give bit for bit the weights
    and logs of contracting them one by one, with every default on (alignment, matched core lr)."""
    runs = {}
    for batched in (True, False):
        m = build(method, 3, **({"replacing_rate": 0.5} if method == "theseus" else {}))
        m.batch_step_weights = batched
        torch.manual_seed(1)
        logs = [m.train_step(make_batch(step), make_batch(10 + step)) for step in range(3)]
        runs[batched] = (trained_tensors(m), logs, m.gradients_of(m.student_opt).groups)
    (new, new_logs, groups), (ref, ref_logs, no_groups) = runs[True], runs[False]
    assert len(groups) == 3 and not no_groups                # Q/K/V/attention-output, FFN in, FFN out
    assert new_logs == ref_logs and "align" in new_logs[-1]
    assert new.keys() == ref.keys()
    for name in ref:
        assert torch.equal(new[name], ref[name]), name


def _rank(rank: int, store: str, out: str) -> None:
    """One of two gloo workers: LGTM (look-ahead, teacher and student steps all reduce) dense, OPDF per forward,
    OPDF per step and per step one layer at a time; KD, ProKT and Theseus batched and one layer at a time. Records
    the bytes each all-reduced and the trained weights."""
    import torch.distributed as dist

    from opdf_ray.config import RunSpec
    from opdf_ray.parallel import TorchDistributed

    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    try:
        results = {}
        for name, cores, path in (("dense", 0, "per-step"), ("per-forward", 3, "per-forward"),
                                  ("per-step", 3, "per-step"), ("one-by-one", 3, "per-step")):
            spec = RunSpec(task="rte", method="lgtm", preset="tiny", opdf_cores=cores, mpo_weight=path,
                           opdf_core_lr=1.0)
            teacher = teacher_model(dropout=0.0)
            parallel = TorchDistributed()
            m = get_method("lgtm")(spec, keep_layers(teacher, [0, 2]), teacher, parallel)
            m.apply_opdf()
            m.setup(total_steps=10)
            m.batch_step_weights = name != "one-by-one"
            for step in range(2):
                m.train_step(make_batch(2 * step + rank), make_batch(10 + 2 * step + rank))
            results[name] = {"bytes": parallel.bytes_all_reduced,
                             "student": {n: p.detach().clone() for n, p in m.student.named_parameters()},
                             "teacher": {n: p.detach().clone() for n, p in m.teacher.named_parameters()}}
        for method in ("kd", "prokt", "theseus"):          # every default on: alignment, matched core lr
            for batched in (True, False):
                spec = RunSpec(task="rte", method=method, preset="tiny", opdf_cores=3, replacing_rate=0.5)
                teacher = teacher_model(dropout=0.0)
                m = get_method(method)(spec, keep_layers(teacher, [0, 2]), teacher, TorchDistributed())
                m.apply_opdf()
                m.setup(total_steps=10)
                m.batch_step_weights = batched
                torch.manual_seed(1)
                for step in range(3):
                    m.train_step(make_batch(2 * step + rank))
                results[(method, batched)] = trained_tensors(m)
        if rank == 0:
            torch.save(results, out)
    finally:
        dist.destroy_process_group()


def test_two_workers_all_reduce_the_dense_students_bytes_and_train_the_same_weights(tmp_path):
    torch.multiprocessing.spawn(_rank, args=(str(tmp_path / "store"), str(tmp_path / "out.pt")), nprocs=2)
    r = torch.load(tmp_path / "out.pt")
    assert r["per-step"]["bytes"] == r["dense"]["bytes"] < r["per-forward"]["bytes"]
    for method in ("kd", "prokt", "theseus"):
        batched, one_by_one = r[(method, True)], r[(method, False)]
        assert batched.keys() == one_by_one.keys()
        for name, p in one_by_one.items():
            assert torch.equal(batched[name], p), (method, name)
    for model in ("student", "teacher"):
        for name, p in r["one-by-one"][model].items():      # batched contraction: the same bits
            assert torch.equal(r["per-step"][model][name], p), name
        ref, new = r["per-forward"][model], r["per-step"][model]
        assert ref.keys() == new.keys()
        for name in ref:
            torch.testing.assert_close(new[name], ref[name], rtol=1e-4, atol=2e-6, msg=name)


def test_per_forward_is_an_execution_setting_not_a_hyperparameter():
    from opdf_ray.config import RunSpec

    assert "mpo_weight" not in RunSpec.hyperparameters()
    with pytest.raises(ValueError, match="mpo_weight='sometimes' is invalid; allowed: per-step, per-forward"):
        dataclasses.replace(RunSpec(), mpo_weight="sometimes")


def test_cpu_bf16_is_opt_in_and_trains_through_the_per_step_weights():
    from opdf_ray.config import RunSpec

    cpu = torch.device("cpu")
    assert not RunSpec().bf16_on(cpu) and RunSpec(cpu_bf16=True).bf16_on(cpu)
    assert not RunSpec(bf16=False, cpu_bf16=True).bf16_on(cpu) and RunSpec().bf16_on(torch.device("cuda"))
    results = {}
    for path in ("per-forward", "per-step"):
        m = build("kd", 3, mpo_weight=path, alpha_kd=0.5, cpu_bf16=True, opdf_core_lr=1.0)
        torch.manual_seed(1)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logs = m.train_step(make_batch(0))
        results[path] = logs
        layer = next(iter(mpo_modules(m.student).values()))
        assert layer.cores[0].dtype == torch.float32 and layer.cores[0].grad.dtype == torch.float32
    assert results["per-step"]["loss"] == pytest.approx(results["per-forward"]["loss"], rel=1e-2)


@pytest.mark.parametrize("method, per_forward, per_step, per_step_calls", [
    ("kd", 12, 12, 3),             # the student's 12 matrices (2 layers × 6), once per step, in 3 chain shapes
    ("prokt", 72, 36, 6),          # student eval + train, teacher (24) train + eval → each model once
    ("lgtm", 168, 72, 6 + 36),     # + LGTM's look-ahead θ′ and θ ± εv students (36, out of place, one by one)
])
def test_each_model_contracts_once_per_optimiser_step(method, per_forward, per_step, per_step_calls, monkeypatch):
    """Matrices contracted per step, and contraction calls: per step, the layers of one chain shape (Q, K, V and
    attention output; FFN in; FFN out) are contracted in one batched call."""
    counts, calls_of = {}, {}
    for path in ("per-forward", "per-step"):
        m = build(method, 3, mpo_weight=path, opdf_core_lr=1.0)
        m.train_step(make_batch(0), make_batch(10))              # steady state from the second step on
        matrices, calls = [], []
        contract, stacked = mpo.contract, mpo.contract_stacked
        monkeypatch.setattr(mpo, "contract", lambda *a, **k: matrices.append(1) or calls.append(1) or contract(*a, **k))
        monkeypatch.setattr(mpo, "contract_stacked", lambda stacks, *a: matrices.append(len(stacks[0]))
                            or calls.append(1) or stacked(stacks, *a))
        m.train_step(make_batch(1), make_batch(11))
        monkeypatch.setattr(mpo, "contract", contract)
        monkeypatch.setattr(mpo, "contract_stacked", stacked)
        counts[path], calls_of[path] = sum(matrices), len(calls)
    assert calls_of["per-step"] == per_step_calls
    assert counts == {"per-forward": per_forward, "per-step": per_step}


@pytest.mark.filterwarnings("ignore:Dynamo detected a call to a `functools.lru_cache`")   # a pure plan of ints
def test_the_parameter_side_work_compiles_as_one_graph_without_host_syncs():
    """What a CUDA graph would capture (the batched contraction with its VJP, and the closed-form alignment)
    compiles with ``fullgraph=True``: no graph break, hence no host sync (``.item()`` would break the graph)."""
    torch.manual_seed(0)
    students = [MPOLinear.from_linear(nn.Linear(24, 36), n_cores=5) for _ in range(3)]
    targets = nn.ModuleList([nn.Sequential(copy.deepcopy(m)) for m in students])
    with torch.no_grad():
        for m in students:
            for c in m.cores:
                c.add_(0.01 * torch.randn_like(c))
    n = students[0].n_cores

    def weights(*cores):
        stacks = [torch.stack(cores[k::n]) for k in range(n)]
        return mpo.contract_stacked(stacks, students[0].row_shape, students[0].col_shape)

    cores = [c for m in students for c in m.cores]
    compiled = torch.compile(weights, fullgraph=True, backend="aot_eager")
    grad_out = torch.randn(3, 36, 24)
    got = compiled(*cores)
    got_grads = torch.autograd.grad(got, cores, grad_out)
    want = weights(*cores)
    assert torch.equal(got.detach(), want.detach())
    for g, w in zip(got_grads, torch.autograd.grad(want, cores, grad_out)):
        torch.testing.assert_close(g, w)

    from opdf_ray.losses import TensorAlignment

    alignment = TensorAlignment(nn.ModuleList([nn.Sequential(m) for m in students]), targets, layer_map=[0, 1, 2],
                                frozen_targets=True)
    eager = alignment.pull()                       # frozen targets: their scales are read back once, here
    captured = torch.compile(alignment.pull, fullgraph=True, backend="aot_eager")()
    torch.testing.assert_close(captured[0], eager[0])
    for a, b in zip(captured[1], eager[1]):
        torch.testing.assert_close(a, b)


def test_a_gradient_without_direct_core_entries_sets_the_same_core_gradients():
    """LGTM's teacher: no loss reaches its cores but through their dense weights, so its gradients as values carry
    no core entries (one zero tensor per core before); setting and pushing one gives the same ``.grad``."""
    from opdf_ray.gradients import OptimizerGradients

    grads = {}
    for direct in (True, False):
        torch.manual_seed(0)
        model = nn.Sequential(MPOLinear.from_linear(nn.Linear(12, 8), n_cores=3), nn.Tanh(), nn.Linear(8, 2))
        model[0].per_step = True
        g = OptimizerGradients(list(model.parameters()), [model[0]], direct_cores=direct)
        model[0].step_weight()
        raw = g.raw_grad(model(torch.randn(4, 12)).square().sum())
        assert len(raw) == len(g.others) + 1 + (3 if direct else 0)
        g.zero_grad()
        g.set_grad(raw)
        g.push_()
        grads[direct] = [p.grad.clone() for p in model.parameters()]
        assert [len(cores) for _, _, cores in g.layer_gradients(raw)] == [3]
    for with_zeros, without in zip(grads[True], grads[False], strict=True):
        assert torch.equal(with_zeros, without)
