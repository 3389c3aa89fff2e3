"""L2-SP (the dense anchor every OPDF verdict is read against) and drift from the start, on tiny BERTs."""

import copy

import pytest
import torch
from test_methods import build, make_batch

from opdf_ray import engine
from opdf_ray.anchor import StartingPoint
from opdf_ray.config import RunSpec
from opdf_ray.layers import push_gradients
from opdf_ray.overparam import encoder_matrices, overparameterize


def student_layers(cores=0, seed=0):
    torch.manual_seed(seed)
    m = build("kd", opdf_cores=0, dropout=0.0)
    layers = copy.deepcopy(m.student_layers())
    if cores:
        overparameterize(layers, cores)
    return layers


def l2sp_loss(weights, w0):
    """The definition: Σ‖W − W0‖² / Σ‖W0‖²."""
    return sum((w - s).square().sum() for w, s in zip(weights, w0)) / sum(s.square().sum() for s in w0)


def moved(layers, scale=0.01, seed=1):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in encoder_matrices(layers).values():
            params = [m.weight] if isinstance(m, torch.nn.Linear) else list(m.cores)
            for p in params:
                p.add_(scale * p.abs().mean() * torch.randn(p.shape, generator=g))


def test_the_fixed_weight_pull_is_the_gradient_of_the_relative_squared_distance():
    layers = student_layers()
    start = StartingPoint(layers)
    matrices = list(encoder_matrices(layers).values())
    assert len(matrices) == 2 * 6                                  # six matrices a layer, two layers
    moved(layers)
    rest = [torch.zeros_like(m.weight) for m in matrices]          # what the pull adds, alone
    for m, g in zip(matrices, rest):
        m.weight.grad = g.clone()
    logs = start.pull_(ratio=0.0, weight=0.3)
    weights = [m.weight for m in matrices]
    expected = torch.autograd.grad(0.3 * l2sp_loss(weights, start.w0), weights)
    for m, g, e in zip(matrices, rest, expected):
        torch.testing.assert_close(m.weight.grad - g, e, rtol=1e-5, atol=1e-9)
    assert float(logs["l2sp"]) == pytest.approx(0.3 * float(l2sp_loss(weights, start.w0)), rel=1e-5)


def test_the_ratio_pull_has_that_ratio_to_the_rest_of_the_gradient_and_is_zero_at_the_start():
    layers = student_layers()
    start = StartingPoint(layers)
    matrices = list(encoder_matrices(layers).values())
    for m in matrices:
        m.weight.grad = torch.randn_like(m.weight)
    at_start = [m.weight.grad.clone() for m in matrices]
    start.pull_(ratio=0.1, weight=0.0)
    assert all(torch.equal(m.weight.grad, g) for m, g in zip(matrices, at_start))   # W = W0: nothing to pull
    moved(layers)
    logs = start.pull_(ratio=0.1, weight=0.0)
    added = torch.cat([(m.weight.grad - g).flatten() for m, g in zip(matrices, at_start)])
    rest = torch.cat([g.flatten() for g in at_start])
    assert float(added.norm() / rest.norm()) == pytest.approx(0.1, rel=1e-4)
    assert float(logs["l2sp_grad_ratio"]) == pytest.approx(0.1, rel=1e-4)
    direction = torch.cat([(m.weight - w).detach().flatten() for m, w in zip(matrices, start.w0)])
    assert float(torch.nn.functional.cosine_similarity(added, direction, dim=0)) == pytest.approx(1.0, abs=1e-5)


def test_an_opdf_students_pull_acts_on_its_merged_weight_and_reaches_the_cores_through_it():
    layers = student_layers(cores=3)
    for m in encoder_matrices(layers).values():
        m.per_step = True
    start = StartingPoint(layers)
    moved(layers)
    matrices = list(encoder_matrices(layers).values())
    dense = [torch.randn(m.out_features, m.in_features) for m in matrices]
    for m, g in zip(matrices, dense):
        m.step_weight()                                            # what a forward of the step builds
        m.set_dense_gradient(g.clone())
    start.pull_(ratio=0.0, weight=2.0)
    push_gradients(matrices)
    cores = [c for m in matrices for c in m.cores]
    merged = [m.weight() for m in matrices]                        # differentiable contraction of the cores
    total = sum((w * g).sum() for w, g in zip(merged, dense)) + 2.0 * l2sp_loss(merged, start.w0)
    for c, e in zip(cores, torch.autograd.grad(total, cores)):
        torch.testing.assert_close(c.grad, e, rtol=1e-4, atol=1e-7)


def test_lgtms_look_ahead_steps_with_the_fixed_weight_pull():
    m = build("lgtm", opdf_cores=3, dropout=0.0, l2sp_weight=0.5)
    m.setup(total_steps=10)
    moved(m.student_layers())
    grads = m.gradients_of(m.student_opt)
    m.student(**{k: v for k, v in make_batch().items() if k in ("input_ids", "attention_mask")})   # step weights
    raw = [torch.zeros_like(t) for t in grads.targets()]
    m.add_l2sp_to(grads, raw)
    pulled = {id(mat): g for mat, g in zip(m.start.matrices, m.start.gradient())}
    layer_entries = raw[len(grads.others):len(grads.others) + len(grads.layers)]
    assert len(grads.layers) == len(pulled) == 12
    for layer, entry in zip(grads.layers, layer_entries):
        torch.testing.assert_close(entry, 0.5 * pulled[id(layer)])
    assert all(not r.any() for r in raw[:len(grads.others)])      # biases, LayerNorm, embeddings: not pulled


def test_drift_is_the_mean_relative_distance_of_the_deployed_matrices_and_of_the_cores():
    for cores in (0, 3):
        layers = student_layers(cores)
        start = StartingPoint(layers)
        assert start.drift()["drift_deployed"] == 0.0
        assert ("drift_cores" in start.drift()) == bool(cores)
        moved(layers, scale=0.05)
        now = [m.weight.detach() if cores == 0 else m.weight().detach() for m in encoder_matrices(layers).values()]
        expected = sum(float((w - s).norm() / s.norm()) for w, s in zip(now, start.w0)) / len(now)
        assert start.drift()["drift_deployed"] == pytest.approx(expected, rel=1e-5)
        if cores:
            c_now = [c.detach() for m in encoder_matrices(layers).values() for c in m.cores]
            c_expected = sum(float((c - s).norm() / s.norm()) for c, s in zip(c_now, start.c0)) / len(c_now)
            assert start.drift()["drift_cores"] == pytest.approx(c_expected, rel=1e-5)


def run_tiny(tmp_path, **settings):
    spec = RunSpec(task="rte", preset="tiny", max_train_samples=64, max_length=32, batch_size=16, epochs=1,
                   eval_steps=2, save_model=False, progress=False, cache_dir=str(tmp_path / "cache"), **settings)
    return engine.run(spec)


def test_a_run_with_l2sp_trains_with_the_pull_and_records_the_selected_steps_drift(tmp_path):
    off = run_tiny(tmp_path, opdf_cores=3)
    ratio = run_tiny(tmp_path, opdf_cores=3, l2sp_ratio=0.1)
    fixed = run_tiny(tmp_path, l2sp_weight=50.0)
    assert all(h["l2sp_grad_ratio"] == pytest.approx(0.1, rel=1e-3) for h in ratio["history"])   # W ≠ W0 by then
    assert "l2sp" not in off["history"][-1] and fixed["history"][-1]["l2sp"] > 0
    at_best = next(h for h in ratio["history"] if h["step"] == ratio["best_step"])
    assert ratio["drift_deployed"] == at_best["drift_deployed"] > 0 and ratio["drift_cores"] > 0
    assert ratio["drift_deployed"] < off["history"][-1]["drift_deployed"] or ratio["best_step"] < off["steps"]
    assert "drift_cores" not in fixed and fixed["drift_deployed"] > 0


@pytest.mark.parametrize("settings, message", [
    ({"l2sp_ratio": 0.1, "l2sp_weight": 1.0}, "both set"),
    ({"l2sp_ratio": -1.0}, "l2sp_ratio=-1.0 is invalid; allowed: a finite number ≥ 0"),
    ({"l2sp_weight": float("inf")}, "l2sp_weight=inf is invalid; allowed: a finite number ≥ 0"),
    ({"l2sp_ratio": 0.1, "opdf_cores": 3, "mpo_weight": "per-forward", "opdf_core_lr": "1.0"}, "use --mpo-weight"),
])
def test_bad_l2sp_settings_are_refused_by_name(settings, message):
    with pytest.raises(ValueError, match=message):
        RunSpec(**settings)
