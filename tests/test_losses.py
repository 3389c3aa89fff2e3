"""KD loss values and the tensor-alignment loss: pairing, values, gradients on live cores, errors."""

import math
import re

import pytest
import torch

from conftest import tiny_bert
from opdf_ray.losses import TensorAlignment, kd_loss, tensor_alignment_loss
from opdf_ray.overparam import default_layer_map, mpo_modules, overparameterize, pair_mpo_layers


def test_kd_loss_matches_a_hand_computed_kl():
    s = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    t = torch.tensor([[0.0, 1.0], [math.log(3.0), 0.0]])
    # row 1: p_t = (1/(1+e), e/(1+e)), p_s = (e/(1+e), 1/(1+e)) → KL = (e−1)/(e+1) · 1 ; row 2: p_t=(3/4,1/4), p_s=½
    e = math.e
    row1 = (e - 1) / (e + 1)
    row2 = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)
    assert kd_loss(s, t).item() == pytest.approx((row1 + row2) / 2, rel=1e-6)


def test_kd_loss_temperature_softens_and_t2_scaling_is_optional():
    torch.manual_seed(0)
    s, t = torch.randn(8, 3), torch.randn(8, 3)
    plain = kd_loss(s, t, temperature=4.0)
    scaled = kd_loss(s, t, temperature=4.0, t2_scaling=True)
    assert scaled.item() == pytest.approx(16 * plain.item(), rel=1e-6)
    assert plain < kd_loss(s, t, temperature=1.0)
    assert kd_loss(t, t).item() == pytest.approx(0.0, abs=1e-7)


def test_kd_loss_gradient_reaches_the_student_only():
    s = torch.randn(4, 3, requires_grad=True)
    t = torch.randn(4, 3, requires_grad=True)
    kd_loss(s, t).backward()
    assert s.grad.abs().sum() > 0 and t.grad is None


def test_kd_loss_for_regression_is_mse():
    s, t = torch.tensor([[1.0], [2.0]]), torch.tensor([[0.0], [4.0]])
    assert kd_loss(s, t).item() == pytest.approx(2.5)


@pytest.mark.parametrize("kwargs,message", [({"temperature": 0.0}, "temperature must be > 0"),
                                            ({"teacher_logits": torch.zeros(4, 2)}, "must have the same shape")])
def test_kd_loss_rejects_bad_input(kwargs, message):
    args = {"student_logits": torch.zeros(4, 3), "teacher_logits": torch.zeros(4, 3), **kwargs}
    with pytest.raises(ValueError, match=message):
        kd_loss(**args)


def student_and_teacher(n_cores=5, student_layers=2, teacher_layers=4):
    teacher = overparameterize(tiny_bert(layers=teacher_layers, seed=1), n_cores)
    student = overparameterize(tiny_bert(layers=student_layers, seed=2), n_cores).train()
    return student, teacher


def test_default_layer_map_pairs_student_i_with_teacher_2i_plus_1():
    assert default_layer_map(6, 12) == {i: 2 * i + 1 for i in range(6)}
    assert default_layer_map(3, 6) == {0: 1, 1: 3, 2: 5}
    assert default_layer_map(4, 4) == {0: 0, 1: 1, 2: 2, 3: 3}
    assert default_layer_map(4, 12) == {0: 2, 1: 5, 2: 8, 3: 11}
    student, teacher = student_and_teacher()
    names = [name for name, _, _ in pair_mpo_layers(student, teacher)]
    assert len(names) == 12
    assert names[0] == "student.0.attention.self.query~teacher.1.attention.self.query"
    assert names[-1] == "student.1.output.dense~teacher.3.output.dense"


def test_alignment_loss_is_the_mean_mse_over_auxiliary_cores():
    student, teacher = student_and_teacher()
    expected = []
    for _, s, t in pair_mpo_layers(student, teacher):
        expected.append(sum(torch.mean((s.cores[k] - t.cores[k]) ** 2) for k in (0, 1, 3, 4)).item() / 4)
    loss = tensor_alignment_loss(student, teacher, weight=0.5)
    assert loss.item() == pytest.approx(0.5 * sum(expected) / len(expected), rel=1e-5)


def test_middle_cores_start_aligned_in_the_canonical_gauge():
    # Both sides decompose to identity middle cores, so only the outer cores differ at initialisation.
    student, teacher = student_and_teacher()
    for _, s, t in pair_mpo_layers(student, teacher):
        assert all(torch.equal(s.cores[k], t.cores[k]) for k in (1, 3))
        assert not torch.equal(s.cores[0], t.cores[0])


def test_alignment_loss_reaches_every_auxiliary_student_core_and_no_teacher_core():
    student, teacher = student_and_teacher()
    with torch.no_grad():                                   # as after some training: middle cores moved too
        for module in mpo_modules(student).values():
            for core in module.cores:
                core.add_(0.01 * torch.randn_like(core))
    tensor_alignment_loss(student, teacher).backward()
    for module in mpo_modules(student).values():
        for k, core in enumerate(module.cores):
            if k == module.central_index:
                assert core.grad is None, "the central core must stay free"
            else:
                assert core.grad is not None and core.grad.abs().sum() > 0
    assert all(c.grad is None for m in mpo_modules(teacher).values() for c in m.cores)


def test_alignment_loss_trains_the_student_cores_toward_the_teacher():
    student, teacher = student_and_teacher(n_cores=3)
    optimizer = torch.optim.Adam(student.parameters(), lr=0.02)
    losses = []
    for _ in range(20):
        optimizer.zero_grad()
        loss = tensor_alignment_loss(student, teacher, cores="all")
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses


@pytest.mark.parametrize("normalize", [False, True])
@pytest.mark.parametrize("cores", ["auxiliary", "all", [0, 2]])
def test_alignment_loss_equals_the_per_core_formula_and_its_closed_form_gradient_equals_autograd(normalize, cores):
    student, teacher = student_and_teacher()
    with torch.no_grad():                                   # as after some training: every core moved
        for module in mpo_modules(student).values():
            for core in module.cores:
                core.add_(0.01 * torch.randn_like(core))
    pairs = pair_mpo_layers(student, teacher)
    expected = 0.0
    for _, s, t in pairs:                                   # mean over matrices of the mean over their cores
        idx = cores if isinstance(cores, list) else {"auxiliary": [0, 1, 3, 4], "all": [0, 1, 2, 3, 4]}[cores]
        for k in idx:
            mse = torch.mean((s.cores[k] - t.cores[k]) ** 2)
            expected = expected + (mse / torch.mean(t.cores[k] ** 2) if normalize else mse) / len(idx) / len(pairs)
    loss = tensor_alignment_loss(student, teacher, cores=cores, weight=0.7, normalize=normalize)
    assert loss.item() == pytest.approx(0.7 * expected.item(), rel=1e-5)
    params = [c for m in mpo_modules(student).values() for c in m.cores]
    by_autograd = torch.autograd.grad(loss, params, allow_unused=True)
    for frozen in (False, True):
        alignment = TensorAlignment(student, teacher, cores=cores, normalize=normalize, frozen_targets=frozen)
        value, grads, grad_norm = alignment.pull()
        assert 0.7 * value.item() == pytest.approx(loss.item(), rel=1e-5)
        closed = {id(c): 0.7 * g for c, g in zip(alignment.trained, grads)}
        assert len(closed) == sum(g is not None for g in by_autograd) > 0
        for c, g in zip(params, by_autograd):
            if g is None:
                assert id(c) not in closed
            else:
                torch.testing.assert_close(closed[id(c)], g, rtol=1e-5, atol=1e-9)
        norm = sum(float(g.square().sum()) for g in by_autograd if g is not None) ** 0.5
        assert 0.7 * grad_norm.item() == pytest.approx(norm, rel=1e-5)


def test_closed_form_alignment_leaves_frozen_student_cores_out_of_its_gradient_not_out_of_its_value():
    student, teacher = student_and_teacher()
    with torch.no_grad():
        for module in mpo_modules(student).values():
            for core in module.cores:
                core.add_(0.01 * torch.randn_like(core))
    for module in mpo_modules(student).values():
        for core in module.auxiliary_cores():
            core.requires_grad_(False)
    alignment = TensorAlignment(student, teacher, cores="all")
    assert {id(c) for c in alignment.trained} == {id(m.central_core()) for m in mpo_modules(student).values()}
    value, _, _ = alignment.pull()
    assert value.item() == pytest.approx(tensor_alignment_loss(student, teacher, cores="all", normalize=True).item(),
                                         rel=1e-5)


def test_core_selection_and_explicit_layer_map():
    student, teacher = student_and_teacher()
    tensor_alignment_loss(student, teacher, layer_map=[0, 2], cores=[2]).backward()
    for module in mpo_modules(student).values():
        assert [c.grad is not None for c in module.cores] == [False, False, True, False, False]
    only_first = pair_mpo_layers(student, teacher, layer_map={0: 3})
    assert {name.split("~")[1].split(".")[1] for name, _, _ in only_first} == {"3"}


def test_alignment_accepts_layer_lists_directly():
    student, teacher = student_and_teacher()
    direct = tensor_alignment_loss(student.bert.encoder.layer, teacher.bert.encoder.layer)
    assert direct.item() == pytest.approx(tensor_alignment_loss(student, teacher).item())


@pytest.mark.parametrize("make,kwargs,message", [
    (lambda: (overparameterize(tiny_bert(hidden=48), 5), overparameterize(tiny_bert(layers=4, hidden=64), 5)), {},
     "core 0: student shape (1, 8, 8, 36) ≠ teacher shape (1, 8, 8, 64)"),
    (lambda: (overparameterize(tiny_bert(), 5), overparameterize(tiny_bert(layers=4), 3)), {},
     "student has 5 cores, teacher 3"),
    (lambda: student_and_teacher(), {"cores": "middle"}, "cores must be one of ('auxiliary', 'central', 'all')"),
    (lambda: student_and_teacher(), {"cores": [7]}, "core indices must be a non-empty list of ints in 0..4"),
    (lambda: student_and_teacher(), {"layer_map": [0, 9]}, "layer_map entry 1 → 9 is out of range"),
    (lambda: (overparameterize(tiny_bert(layers=4), 3), overparameterize(tiny_bert(layers=2), 3)), {},
     "teacher 2 < student 4 layers"),
    (lambda: (tiny_bert(), overparameterize(tiny_bert(layers=4), 3)), {}, "over-parameterise it first"),
    (lambda: (overparameterize(tiny_bert(), 3),
              overparameterize(tiny_bert(layers=4), 3, targets=[r".*\.query"])), {},
     "matrix 'attention.self.key' has no MPOLinear twin in teacher layer 1"),
])
def test_alignment_errors_are_clear(make, kwargs, message):
    student, teacher = make()
    with pytest.raises(ValueError, match=re.escape(message)):
        tensor_alignment_loss(student, teacher, **kwargs)
