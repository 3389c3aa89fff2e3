"""Each method × OPDF off/on on tiny BERTs: which parameters move, the published formulas, export."""

import copy

import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification

from opdf_ray.config import RunSpec
from opdf_ray.layers import MPOLinear
from opdf_ray.methods import METHODS, get_method
from opdf_ray.methods.base import linear_schedule, make_optimizer
from opdf_ray.methods.lgtm import adamw_lookahead
from opdf_ray.methods.theseus import TheseusBlock, replacing_rate
from opdf_ray.models import keep_layers
from opdf_ray.overparam import mpo_modules


def teacher_model(dropout=0.1, num_labels=2):
    torch.manual_seed(0)
    return BertForSequenceClassification(BertConfig(
        vocab_size=100, hidden_size=32, num_hidden_layers=4, num_attention_heads=4, intermediate_size=64,
        max_position_embeddings=32, num_labels=num_labels, hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout))


def make_batch(seed=0, n=6, length=9, num_labels=2):
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, num_labels, (n,), generator=g) if num_labels > 1 else torch.rand(n, generator=g) * 5
    return {"input_ids": torch.randint(5, 100, (n, length), generator=g),
            "token_type_ids": torch.zeros(n, length, dtype=torch.long),
            "attention_mask": torch.ones(n, length, dtype=torch.long), "labels": labels, "index": torch.arange(n)}


def build(method, opdf_cores=0, dropout=0.1, **overrides):
    spec = RunSpec(task="rte", method=method, preset="tiny", opdf_cores=opdf_cores, **overrides)
    teacher = teacher_model(dropout)
    student = keep_layers(teacher, [0, 2])
    m = get_method(method)(spec, student, teacher if get_method(method).uses_teacher else None)
    m.apply_opdf()
    m.setup(total_steps=10)
    return m


def snapshot(module):
    return {n: p.detach().clone() for n, p in module.named_parameters()}


def changed(before, module):
    return {n for n, p in module.named_parameters() if not torch.equal(before[n], p)}


@pytest.mark.parametrize("opdf_cores", [0, 3])
@pytest.mark.parametrize("method", ["kd", "prokt", "lgtm", "finetune"])
def test_methods_train_the_student_and_only_the_teachers_they_should(method, opdf_cores):
    m = build(method, opdf_cores)
    student_before = snapshot(m.student)
    teacher_before = snapshot(m.teacher) if m.teacher is not None else None
    for step in range(2):
        logs = m.train_step(make_batch(step), make_batch(10 + step))
    assert changed(student_before, m.student) == set(student_before), "every student parameter should move"
    if m.teacher is not None:
        moved = changed(teacher_before, m.teacher)
        if method in ("prokt", "lgtm"):
            assert moved and "classifier.weight" in moved
        else:
            assert not moved, "the frozen KD teacher must not change"
    assert bool(mpo_modules(m.student)) == bool(opdf_cores)
    assert ("align" in logs) == (opdf_cores > 0 and method != "finetune")


@pytest.mark.parametrize("opdf_cores", [0, 3])
def test_theseus_trains_only_successor_parameters(opdf_cores):
    m = build("theseus", opdf_cores, replacing_rate=1.0)
    before = snapshot(m.model)
    for step in range(2):
        m.train_step(make_batch(step))
    moved = changed(before, m.model)
    successor = {n for n in before if ".successor." in n}
    assert moved == successor and successor
    assert all(isinstance(b, TheseusBlock) for b in m.model.bert.encoder.layer)
    assert not any(p.requires_grad for b in m.blocks for p in b.predecessors.parameters())


def test_theseus_uses_predecessors_when_not_replacing_and_successors_at_eval():
    m = build("theseus", replacing_rate=0.3, scheduler_linear_k=0.0)
    block = m.blocks[0]
    calls = {"successor": 0, "predecessor": 0}
    block.successor.register_forward_hook(lambda *a: calls.__setitem__("successor", calls["successor"] + 1))
    block.predecessors[0].register_forward_hook(lambda *a: calls.__setitem__("predecessor", calls["predecessor"] + 1))
    torch.manual_seed(0)
    for step in range(20):
        m.train_step(make_batch(step))
    assert calls["successor"] > 0 and calls["predecessor"] > calls["successor"]   # p = 0.3
    calls.update(successor=0, predecessor=0)
    with torch.no_grad():
        m.eval_model().eval()(**{k: v for k, v in make_batch().items() if k not in ("labels", "index")})
    assert calls == {"successor": 1, "predecessor": 0}


def test_lgtm_teacher_update_differs_from_prokt_on_the_same_batch():
    batch, held = make_batch(0), make_batch(1)
    prokt, lgtm = build("prokt", dropout=0.0), build("lgtm", dropout=0.0)
    assert all(torch.equal(a, b) for a, b in zip(prokt.teacher.parameters(), lgtm.teacher.parameters()))
    prokt.train_step(batch)
    logs = lgtm.train_step(batch, held)
    assert logs["influence_norm"] > 0
    diffs = [(a - b).abs().max().item() for a, b in zip(prokt.teacher.parameters(), lgtm.teacher.parameters())]
    assert max(diffs) > 0


def test_lgtm_without_a_held_batch_is_an_error():
    with pytest.raises(ValueError, match="LGTM needs a held-out batch"):
        build("lgtm").train_step(make_batch())


def test_adamw_lookahead_equals_a_real_adamw_step():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.LayerNorm(3))
    optimizer = make_optimizer(model, lr=0.01, weight_decay=0.1)
    model(torch.randn(5, 4)).sum().backward()
    optimizer.step()                                            # non-empty state
    params = list(model.parameters())
    grads = [torch.randn_like(p) for p in params]
    predicted = adamw_lookahead(optimizer, params, grads)
    for p, g in zip(params, grads):
        p.grad = g
    optimizer.step()
    for p, q in zip(params, predicted):
        torch.testing.assert_close(p.detach(), q, rtol=1e-5, atol=1e-6)


def test_kd_cached_teacher_logits_equal_fresh_ones():
    m = build("kd")
    batches = [make_batch(0), make_batch(1)]
    batches[1]["index"] = torch.arange(6, 12)
    m.precompute_teacher_logits(batches, 12)
    with torch.no_grad():
        fresh = m.teacher.eval()(**{k: v for k, v in batches[1].items() if k not in ("labels", "index")}).logits
    torch.testing.assert_close(m.teacher_logits(batches[1]), fresh)
    assert m.cached_logits.shape == (12, 2)


def test_kd_works_for_regression_tasks():
    spec = RunSpec(task="stsb", method="kd", preset="tiny")
    teacher = teacher_model(num_labels=1)
    m = get_method("kd")(spec, keep_layers(teacher, [0, 2]), teacher)
    m.setup(5)
    assert m.train_step(make_batch(num_labels=1))["kd"] >= 0


@pytest.mark.parametrize("method", ["kd", "theseus", "lgtm"])
def test_export_is_a_stock_student_with_the_same_predictions(method):
    m = build(method, 3, replacing_rate=1.0)
    m.train_step(make_batch(0), make_batch(1))
    exported = m.export_student()
    assert not any(isinstance(x, (MPOLinear, TheseusBlock)) for x in exported.modules())
    assert exported.config.num_hidden_layers == 2 and len(exported.bert.encoder.layer) == 2
    inputs = {k: v for k, v in make_batch(3).items() if k not in ("labels", "index")}
    with torch.no_grad():
        diff = (exported(**inputs).logits - m.eval_model().eval()(**inputs).logits).abs().max()
    assert diff <= 1e-4


def test_opdf_off_leaves_the_published_method_untouched():
    m = build("kd", 0)
    assert not mpo_modules(m.student) and not mpo_modules(m.teacher) and m.alignment_loss() is None


def test_alignment_ablation_keeps_the_over_parameterisation():
    m = build("kd", 3, opdf_align_weight=0.0)
    assert mpo_modules(m.student) and m.alignment_loss() is None


def test_replacement_schedulers_follow_their_formulas():
    assert [replacing_rate(t, 0.3, "linear", 0.1) for t in (0, 1, 5, 7, 100)] == pytest.approx([0.3, 0.4, 0.8, 1.0, 1.0])
    assert [replacing_rate(t, 0.5, "constant", steps_for_replacing=3) for t in (0, 2, 3, 9)] == [0.5, 0.5, 1.0, 1.0]
    assert replacing_rate(10_000, 0.5, "constant") == 0.5          # no phase 2 unless asked
    with pytest.raises(ValueError, match="unknown replacing scheduler"):
        replacing_rate(0, 0.5, "cosine")


def test_linear_learning_rate_schedule():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = linear_schedule(opt, total_steps=10, warmup_ratio=0.2)
    lrs = []
    for _ in range(10):
        lrs.append(sched.get_last_lr()[0])
        opt.step()
        sched.step()
    assert lrs == pytest.approx([1 / 3, 2 / 3, 1.0, 7 / 8, 6 / 8, 5 / 8, 4 / 8, 3 / 8, 2 / 8, 1 / 8])


def test_unknown_method_error_lists_known_methods():
    with pytest.raises(ValueError, match="unknown method 'distill'; known methods: kd, prokt, lgtm, theseus"):
        get_method("distill")
    assert set(METHODS) == {"kd", "prokt", "lgtm", "theseus", "finetune"}


def test_theseus_rejects_depths_that_do_not_divide():
    spec = RunSpec(method="theseus", preset="tiny")
    teacher = teacher_model()
    with pytest.raises(ValueError, match="multiple of the student's; got 4 teacher and 3 student layers"):
        get_method("theseus")(spec, keep_layers(teacher, [0, 1, 2]), copy.deepcopy(teacher))
