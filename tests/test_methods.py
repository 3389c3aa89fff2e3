"""Each method × OPDF off/on on tiny BERTs: which parameters move, the published formulas, export."""

import copy

import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification

from opdf_ray.config import RunSpec
from opdf_ray.layers import MPOLinear
from opdf_ray.methods import METHODS, get_method
from opdf_ray.optim import linear_schedule, make_optimizer
from opdf_ray.methods.lgtm import adamw_lookahead
from opdf_ray.methods.theseus import TheseusBlock, replacing_rate
from opdf_ray.models import keep_layers
from opdf_ray.overparam import mpo_modules


def teacher_model(dropout=0.1, num_labels=2, attention="sdpa"):
    torch.manual_seed(0)
    return BertForSequenceClassification(BertConfig(
        vocab_size=100, hidden_size=32, num_hidden_layers=4, num_attention_heads=4, intermediate_size=64,
        max_position_embeddings=32, num_labels=num_labels, hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout, attn_implementation=attention))


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


@pytest.mark.parametrize("variant", ["paper", "code"])
def test_lgtm_teacher_gradient_is_the_exact_distillation_influence(variant):
    """G_φ = ∇_φ L_t − η·(∂²L/∂φ∂θ)·v, with v the held-out gradient at the look-ahead student θ' and (L, η) the
    student's KD loss and lr (paper) or the teacher's loss and lr (code): the finite difference must match an
    exact autograd Hessian-vector product (float64, no dropout, no clipping)."""
    torch.manual_seed(0)
    spec = RunSpec(task="rte", method="lgtm", preset="tiny", lr=1e-2, teacher_lr=2e-2, max_grad_norm=0.0,
                   init_classifier_to_zero=False, lgtm_variant=variant)
    teacher = teacher_model(dropout=0.0, attention="eager").double()   # SDPA has no double backward on CPU
    m = get_method("lgtm")(spec, keep_layers(teacher, [0, 2]), teacher)
    m.setup(total_steps=10)
    batch, held = make_batch(0), make_batch(1)
    x, y = {k: batch[k] for k in ("input_ids", "token_type_ids", "attention_mask")}, batch["labels"]
    student, teacher = copy.deepcopy(m.student), copy.deepcopy(m.teacher)
    s_named = [(n, p) for n, p in student.named_parameters()]
    s_params, t_params = [p for _, p in s_named], list(teacher.parameters())

    def teacher_loss(t_logits, s_logits):      # L_t with the student's logits *not* detached (θ enters)
        p_s = torch.softmax(s_logits, -1)
        kl = (p_s * (torch.log_softmax(s_logits, -1) - torch.log_softmax(t_logits, -1))).sum(-1).mean()
        return spec.t_alpha_kd * kl + (1 - spec.t_alpha_kd) * torch.nn.functional.cross_entropy(t_logits, y)

    def student_kd(t_logits, s_logits):        # α·KL(p_t‖p_s) with the teacher's logits *not* detached (φ enters)
        p_t = torch.softmax(t_logits, -1)
        return spec.alpha_kd * (p_t * (torch.log_softmax(t_logits, -1) - torch.log_softmax(s_logits, -1))
                                ).sum(-1).mean()

    influence = student_kd if variant == "paper" else teacher_loss

    t_logits, s_logits = teacher(**x).logits, student(**x).logits
    loss_s, _ = m.student_loss(s_logits, t_logits.detach(), y)
    s_grads = torch.autograd.grad(loss_s, s_params, retain_graph=True)
    theta_prime = adamw_lookahead(m.student_opt, list(m.student.parameters()), s_grads)
    theta_prime = {n: t.detach().requires_grad_() for (n, _), t in zip(s_named, theta_prime)}
    held_inputs = {k: held[k] for k in ("input_ids", "token_type_ids", "attention_mask")}
    held_logits = torch.func.functional_call(student, theta_prime, kwargs=held_inputs).logits
    v = torch.autograd.grad(torch.nn.functional.cross_entropy(held_logits, held["labels"]),
                            list(theta_prime.values()))
    g_teacher = torch.autograd.grad(teacher_loss(t_logits, s_logits.detach()), t_params, retain_graph=True)
    g_theta = torch.autograd.grad(influence(t_logits, s_logits), s_params, create_graph=True)
    h_exact = torch.autograd.grad(sum((g * vi).sum() for g, vi in zip(g_theta, v)), t_params)
    eta = (m.student_sched if variant == "paper" else m.teacher_sched).get_last_lr()[0]
    assert eta == (spec.lr if variant == "paper" else spec.teacher_lr)

    logs = m.train_step(batch, held)

    assert logs["influence_norm"] == pytest.approx(torch.sqrt(sum((h * h).sum() for h in h_exact)).item(), rel=1e-3)
    for p, g, h in zip(m.teacher.parameters(), g_teacher, h_exact):
        torch.testing.assert_close((g - p.grad) / eta, h, rtol=1e-3, atol=1e-6)


def test_lgtm_without_a_held_batch_is_an_error():
    with pytest.raises(ValueError, match="LGTM needs a held-out batch"):
        build("lgtm").train_step(make_batch())


def per_tensor_lookahead(optimizer, params, grads):
    """The per-tensor formula ``adamw_lookahead`` batches (its first version), as the bitwise reference."""
    group_of = {id(p): g for g in optimizer.param_groups for p in g["params"]}
    out = []
    for p, g in zip(params, grads):
        group, state = group_of[id(p)], optimizer.state.get(p, {})
        beta1, beta2 = group["betas"]
        step = float(state["step"]) + 1 if "step" in state else 1.0
        m = state["exp_avg"] * beta1 + (1 - beta1) * g if state else (1 - beta1) * g
        v = state["exp_avg_sq"] * beta2 + (1 - beta2) * g * g if state else (1 - beta2) * g * g
        m_hat, v_hat = m / (1 - beta1 ** step), v / (1 - beta2 ** step)
        new = p.detach() * (1 - group["lr"] * group["weight_decay"])
        out.append(new - group["lr"] * m_hat / (v_hat.sqrt() + group["eps"]))
    return out


def test_adamw_lookahead_is_the_per_tensor_formula_bit_for_bit_across_groups_and_step_counts():
    """Batched by (param group, step count), with state and without (a parameter the optimiser never stepped)."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.LayerNorm(3), torch.nn.Linear(3, 2))
    optimizer = make_optimizer(model, lr=0.01, weight_decay=0.1)
    model(torch.randn(5, 4)).sum().backward()
    model[2].weight.grad = None                                  # never stepped: no state
    optimizer.step()
    params = list(model.parameters())
    grads = [torch.randn_like(p) for p in params]
    assert len(optimizer.param_groups) > 1 and model[2].weight not in optimizer.state
    for got, want in zip(adamw_lookahead(optimizer, params, grads), per_tensor_lookahead(optimizer, params, grads)):
        assert torch.equal(got, want)


def test_adamw_lookahead_reads_the_step_counts_back_once():
    """Fused AdamW keeps its step counts on the device, where every read is a sync: LGTM's look-ahead read one per
    parameter (129 a step for a MiniLM student with 5 cores)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class ReadBacks(TorchDispatchMode):
        count = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            ReadBacks.count += func is torch.ops.aten._local_scalar_dense.default
            return func(*args, **(kwargs or {}))

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.LayerNorm(3), torch.nn.Linear(3, 2))
    optimizer = make_optimizer(model, lr=0.01, weight_decay=0.1)
    model(torch.randn(5, 4)).sum().backward()
    optimizer.step()
    params = list(model.parameters())
    with ReadBacks():
        adamw_lookahead(optimizer, params, [torch.randn_like(p) for p in params])
    assert ReadBacks.count <= 1 < len(params)      # one stacked .tolist(): a copy on a GPU, no operator on a CPU


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
    m.cache_teacher_logits(batches, 12)
    with torch.no_grad():
        fresh = m.teacher.eval()(**{k: v for k, v in batches[1].items() if k not in ("labels", "index")}).logits
    torch.testing.assert_close(m.teacher_logits(batches[1]), fresh)
    assert m.cached_logits.shape == (12, 2)


def test_kd_works_for_regression_tasks():
    spec = RunSpec(task="stsb", method="kd", preset="tiny")
    teacher = teacher_model(num_labels=1)
    m = get_method("kd")(spec, keep_layers(teacher, [0, 2]), teacher)
    m.setup(5)
    batch = make_batch(num_labels=1)
    inputs = {k: batch[k] for k in ("input_ids", "token_type_ids", "attention_mask")}
    torch.manual_seed(1)
    with torch.no_grad():    # the regression KD term is the MSE between the two predictions
        expected = torch.nn.functional.mse_loss(m.student.train()(**inputs).logits, m.teacher(**inputs).logits)
    torch.manual_seed(1)     # the same dropout masks in the step
    logs = m.train_step(batch)
    assert logs["kd"] == pytest.approx(expected.item(), rel=1e-5) and logs["loss"] == pytest.approx(logs["kd"])


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
    linear = [replacing_rate(t, 0.3, "linear", 0.1) for t in (0, 1, 5, 7, 100)]
    assert linear == pytest.approx([0.3, 0.4, 0.8, 1.0, 1.0])
    assert [replacing_rate(t, 0.5, "constant", steps_for_replacing=3) for t in (0, 2, 3, 9)] == [0.5, 0.5, 1.0, 1.0]
    assert replacing_rate(10_000, 0.5, "constant") == 0.5          # no phase 2 unless asked
    with pytest.raises(ValueError, match="unknown replacing scheduler"):
        replacing_rate(0, 0.5, "cosine")


def test_linear_learning_rate_schedule_is_transformers_warmup_then_decay():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = linear_schedule(opt, total_steps=10, warmup_ratio=0.2)
    lrs = []
    for _ in range(10):
        lrs.append(sched.get_last_lr()[0])
        opt.step()
        sched.step()
    assert lrs == pytest.approx([0.0, 0.5, 1.0, 7 / 8, 6 / 8, 5 / 8, 4 / 8, 3 / 8, 2 / 8, 1 / 8])


def test_unknown_method_error_lists_known_methods():
    with pytest.raises(ValueError, match="unknown method 'distill'; known methods: kd, prokt, lgtm, theseus"):
        get_method("distill")
    assert set(METHODS) == {"kd", "prokt", "lgtm", "theseus", "finetune"}


def test_theseus_rejects_depths_that_do_not_divide():
    spec = RunSpec(method="theseus", preset="tiny")
    teacher = teacher_model()
    with pytest.raises(ValueError, match="multiple of the student's; got 4 teacher and 3 student layers"):
        get_method("theseus")(spec, keep_layers(teacher, [0, 1, 2]), copy.deepcopy(teacher))


def _theseus_rank(rank: int, store: str, out: str) -> None:
    """One of two gloo workers: a step where successors run, then one where no worker runs any successor."""
    import dataclasses

    import torch.distributed as dist

    from opdf_ray.parallel import TorchDistributed

    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    try:
        spec = RunSpec(task="rte", method="theseus", preset="tiny", replacing_rate=1.0,
                       replacing_scheduler="constant")
        teacher = teacher_model(dropout=0.0)
        m = get_method("theseus")(spec, keep_layers(teacher, [0, 2]), teacher, TorchDistributed())
        m.setup(total_steps=10)
        m.train_step(make_batch(rank))                                   # p = 1: successors train
        before = snapshot(m.successors)
        m.spec = dataclasses.replace(spec, replacing_rate=1e-12)        # p ≈ 0: predecessors only, everywhere
        m.train_step(make_batch(2 + rank))
        if rank == 0:
            torch.save(sorted(changed(before, m.successors)), out)
    finally:
        dist.destroy_process_group()


def test_theseus_step_without_any_successor_leaves_successors_alone_on_two_workers(tmp_path):
    """With one worker such a step is a no-op; with two, AdamW must not be stepped on zero gradients (its momentum
    would move the weights), or results would depend on the worker count."""
    torch.multiprocessing.spawn(_theseus_rank, args=(str(tmp_path / "store"), str(tmp_path / "moved.pt")),
                                nprocs=2)
    assert torch.load(tmp_path / "moved.pt") == []
