"""An OPDF student trains as its dense twin would: the deployed matrices decay and take their first step as far as
dense ones (``opdf_ray.optim``), the alignment's strength can be set as a gradient ratio, central-only training
freezes the auxiliary cores, and ProKT/LGTM keep a fine-tuned head."""

import math

import pytest
import torch
from test_methods import make_batch, teacher_model

from opdf_ray import optim
from opdf_ray.config import RunSpec
from opdf_ray.layers import MPOLinear
from opdf_ray.methods import get_method
from opdf_ray.models import keep_layers
from opdf_ray.overparam import merge, mpo_modules


def build(method="kd", opdf_cores=5, **overrides):
    """A tiny KD-family run; the task loss alone by default (``alpha_kd=0``): a random teacher and the student cut
    from it agree to ~1e-9 in KD loss, so their KD gradients sit below AdamW's ε, where no step size is defined."""
    spec = RunSpec(task="rte", method=method, preset="tiny", student_layers="0,2", opdf_cores=opdf_cores,
                   **{"lr": 1e-4, "alpha_kd": 0.0, **overrides})
    teacher = teacher_model(dropout=0.0)
    m = get_method(method)(spec, keep_layers(teacher, [0, 2]), teacher)
    m.apply_opdf()
    m.setup(total_steps=10)
    return m


def deployed(m) -> dict[str, torch.Tensor]:
    """The encoder matrices the student deploys (merged), by name."""
    import copy

    merged = merge(copy.deepcopy(m.eval_model()))
    return {n: mod.weight.detach().clone() for n, mod in merged.named_modules()
            if isinstance(mod, torch.nn.Linear) and ".encoder." in f".{n}"}


def decay_only_shrink(layer: torch.nn.Module, weight, core_lr, steps=20, lr=0.01, wd=0.5) -> float:
    """1 − ‖W_k‖/‖W_0‖ after ``steps`` AdamW steps whose gradients are zero (only the decoupled decay acts)."""
    opt = optim.make_optimizer(torch.nn.Sequential(layer), lr, wd, core_lr)
    sched = optim.linear_schedule(opt, 10 ** 6, 0.0)
    params = [p for g in opt.param_groups for p in g["params"]]
    if core_lr is None:                              # matched: calibrate on a random gradient first
        torch.manual_seed(1)
        dense = torch.randn(layer.out_features, layer.in_features)
        optim.calibrate(opt, sched, [(layer, dense, [torch.randn_like(c) for c in layer.trainable_cores()])])
        assert not optim.pending_groups(opt)
    start = weight().norm()
    for _ in range(steps):
        for p in params:
            p.grad = torch.zeros_like(p)
        opt.step()
    return float(1 - weight().norm() / start)


@pytest.mark.parametrize("core_lr", [1.0, 0.3, None])
def test_decay_only_steps_shrink_a_deployed_mpo_matrix_as_they_shrink_the_dense_one(core_lr):
    torch.manual_seed(0)
    dense = torch.nn.Linear(48, 96)
    mpo = MPOLinear.from_linear(dense, 5)
    with torch.no_grad():
        expected = decay_only_shrink(dense, lambda: dense.weight, 1.0)
        got = decay_only_shrink(mpo, mpo.weight, core_lr)
    assert expected == pytest.approx(1 - 0.995 ** 20, rel=1e-4)        # (1 − lr·wd)^k
    assert got == pytest.approx(expected, rel=0.05)                      # before: 1 − (1 − lr·wd)^(5k), 4.7× more


def first_step(**overrides) -> tuple[dict[str, float], object]:
    """‖ΔW‖ of every deployed encoder matrix after one step on a fixed batch, and the method."""
    m = build(**overrides)
    before = deployed(m)
    m.train_step(make_batch(3))
    return {n: float((w - before[n]).norm()) for n, w in deployed(m).items()}, m


def test_matched_core_lr_moves_every_deployed_matrix_as_far_as_the_dense_students_first_step():
    dense, _ = first_step(opdf_cores=0)
    matched, m = first_step()
    published, _ = first_step(opdf_core_lr=1.0)
    assert set(matched) == set(dense) and len(dense) == 12
    for name in dense:
        assert matched[name] == pytest.approx(dense[name], rel=0.15), name
    # the published recipe (one lr for all) steps 0.5–0.8× as far on this random tiny model, 3–6× on MiniLM
    assert max(abs(math.log(published[n] / dense[n])) for n in dense) > math.log(1.3)
    assert set(m.core_step_ratios) == {n for n in mpo_modules(m.eval_model())}
    assert "query" in optim.describe(m.core_step_ratios)


def test_the_dense_control_steps_each_matrix_as_far_as_opdf_at_one_lr():
    """Issue 23 §2's control: a dense student whose matrices take OPDF's (one-lr) step sizes, κ_m × lr."""
    published, _ = first_step(opdf_cores=5, opdf_core_lr=1.0)
    control, m = first_step(opdf_cores=0, dense_lr_as_cores=5)
    dense, _ = first_step(opdf_cores=0)
    assert set(control) == set(published) == set(dense) and len(dense) == 12
    for name in dense:
        assert control[name] == pytest.approx(published[name], rel=0.15), name
    assert max(abs(math.log(control[n] / dense[n])) for n in dense) > math.log(1.3)       # not the dense student
    assert len(m.core_step_ratios) == 12 and "value" in optim.describe(m.core_step_ratios)
    _, decayed = first_step(opdf_cores=0, dense_lr_as_cores=5, weight_decay=0.01, warmup_ratio=0.5)
    dense_lr = decayed.student_opt.param_groups[0]["lr"]                  # the schedule's lr now (in its warm-up)
    for group in (g for g in decayed.student_opt.param_groups if "dense_matrix" in g):
        assert group["lr"] == pytest.approx(group["kappa"] * dense_lr)    # κ × lr, following the schedule
        assert group["weight_decay"] * group["lr"] == pytest.approx(0.01 * dense_lr)    # decays as a dense matrix
    with pytest.raises(ValueError, match="dense_lr_as_cores=5 is invalid; allowed: 0 \\(off\\) or an int in 2..16"):
        RunSpec(opdf_cores=3, dense_lr_as_cores=5)


def test_matched_core_lr_follows_the_schedule_and_survives_a_checkpoint():
    m = build(warmup_ratio=0.5)
    m.train_step(make_batch(0))
    m.train_step(make_batch(1))
    groups = [g for g in m.student_opt.param_groups if "mpo_matrix" in g]
    assert groups and all(g["core_lr_scale"] == pytest.approx(1 / g["kappa"]) for g in groups)
    dense_lr = m.student_opt.param_groups[0]["lr"]
    assert dense_lr > 0
    for g in groups:                                  # lr/κ at every point of the warm-up
        assert g["lr"] == pytest.approx(dense_lr / g["kappa"], rel=1e-6)
    tensors, meta = m.training_state()
    restored = build(warmup_ratio=0.5)
    restored.load_training_state(tensors, meta)
    assert [g["lr"] for g in restored.student_opt.param_groups] == [g["lr"] for g in m.student_opt.param_groups]
    assert not optim.pending_groups(restored.student_opt)
    assert restored.student_sched.base_lrs == m.student_sched.base_lrs


def test_a_number_keeps_the_published_core_lr_and_is_stored_as_text():
    m = build(opdf_core_lr=1)
    assert m.spec.opdf_core_lr == "1.0"
    m.train_step(make_batch())
    assert m.core_step_ratios == {}
    assert len({g["lr"] for g in m.student_opt.param_groups}) == 1
    assert build(opdf_core_lr="0.5").student_opt.param_groups[-1]["lr"] == pytest.approx(0.5e-4)
    with pytest.raises(ValueError, match="opdf_core_lr='fast' is invalid; allowed: 'matched' or a finite multiplier"):
        RunSpec(opdf_core_lr="fast")


@pytest.mark.parametrize("method", ["prokt", "lgtm", "theseus"])
def test_every_method_calibrates_the_cores_it_trains(method):
    m = build(method)
    held = make_batch(9) if method == "lgtm" else None
    for step in range(3):
        m.train_step(make_batch(step), held)
    trained = [m.student_opt] + ([m.teacher_opt] if m.trains_teacher else [])
    assert m.core_step_ratios
    for opt in trained:
        calibrated = [g for g in opt.param_groups if "mpo_matrix" in g and g["kappa"] is not None]
        dense_lr = opt.param_groups[0]["lr"]
        assert calibrated and all(g["lr"] == pytest.approx(dense_lr / g["kappa"]) for g in calibrated)


def test_alignment_by_ratio_sets_its_gradient_to_that_ratio_of_the_rest():
    m = build(opdf_align_map="block-last", opdf_align_ratio=0.5, opdf_align_weight=1e-6)
    assert m.alignment_loss() is None                       # no fixed weight: rescaled on the gradient each step
    logs = m.train_step(make_batch())
    assert logs["align_grad_ratio"] == pytest.approx(0.5, rel=1e-4)
    assert logs["align"] > 0 and logs["align_weight"] > 0
    raw = build(opdf_align_map="block-last", opdf_align_weight=1e-6).train_step(make_batch())
    assert raw["align_grad_ratio"] < 1e-3                   # the raw weight: inert


def test_alignment_by_ratio_waits_while_the_cores_sit_on_their_targets():
    m = build(opdf_align_ratio=2.0)                          # init map: the student starts on its targets
    first = m.train_step(make_batch(0))
    assert first["align"] == 0 and first["align_weight"] == 0
    second = m.train_step(make_batch(1))
    assert second["align"] > 0 and second["align_grad_ratio"] == pytest.approx(2.0, rel=1e-4)


@pytest.mark.parametrize("mpo_weight", ["per-step", "per-forward"])
def test_central_training_freezes_the_auxiliary_cores_and_turns_their_alignment_off(mpo_weight):
    core_lr = "matched" if mpo_weight == "per-step" else 1.0
    m = build(opdf_train_cores="central", mpo_weight=mpo_weight, opdf_core_lr=core_lr)
    full = build(mpo_weight=mpo_weight, opdf_core_lr=core_lr)
    assert not m.aligns and full.aligns
    layers = mpo_modules(m.student_layers()).values()
    before = {id(c): c.detach().clone() for layer in layers for c in layer.cores}
    for step in range(2):
        m.train_step(make_batch(step))
    for layer in layers:
        assert all(torch.equal(c, before[id(c)]) for c in layer.auxiliary_cores())
        assert not torch.equal(layer.central_core(), before[id(layer.central_core())])
    assert m.trainable_parameter_count() < full.trainable_parameter_count()
    assert central_aligned_still_aligns()


def central_aligned_still_aligns() -> bool:
    return build(opdf_train_cores="central", opdf_align_cores="central", opdf_align_map="block-last").aligns


@pytest.mark.parametrize("method", ["prokt", "lgtm"])
def test_prokt_and_lgtm_keep_a_fine_tuned_teachers_head_unless_asked(method):
    def head_is_zero(**overrides) -> bool:
        m = build(method, opdf_cores=0, **overrides)
        return all(float(model.classifier.weight.abs().sum()) == 0 for model in (m.student, m.teacher))

    assert not head_is_zero()                                   # auto, teacher_init=finetuned: kept
    assert head_is_zero(teacher_init="pretrained")              # auto, the published setting: zeroed
    assert head_is_zero(init_classifier_to_zero=True)           # the published flag, reachable
    assert not head_is_zero(teacher_init="pretrained", init_classifier_to_zero=False)
