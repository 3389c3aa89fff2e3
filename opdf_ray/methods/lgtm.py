"""LGTM: the teacher learns from the student's feedback on held-out data ("distillation influence").

Ren et al., ACL 2023; the published ``LGTMTeacher`` (ALGORITHMS.md §4.3), re-derived. Per batch, before the
ProKT-style student step, the teacher gradient is ``G_φ = ∇_φ L_t(x; φ, θ) − η·h`` where

  1. ``θ' = θ − η_s·AdamW(∇_θ L_s)``: one simulated AdamW step of the student (on a copy of its optimiser state);
  2. ``v = ∇_{θ'} CE(student_{θ'}(x_h), y_h)`` on a held-out feedback batch (from the selection slice, never dev;
     by default from the half of it that does not select checkpoints, ``lgtm_feedback``);
  3. ``h = [∇_φ L(x; φ, θ+εv) − ∇_φ L(x; φ, θ−εv)] / 2ε`` with ``ε = 0.01/‖v‖`` (finite-difference
     Hessian-vector product ``∂²L/∂φ∂θ · v``; teacher and student in eval mode).

``lgtm_variant`` picks ``L`` and ``η`` consistently. ``paper`` (default): ``L`` is the student's KD loss
``α·KL(p_t‖p_s)`` — the loss through which the teacher influences the student — and ``η = η_s``, the student's
current lr, as the paper derives. ``code``: ``L = L_t``, the teacher's own loss, and ``η`` the teacher's lr, as the
published code does.
"""

from __future__ import annotations

import torch
from torch.func import functional_call

from opdf_ray.losses import kd_loss
from opdf_ray.methods.base import model_inputs, task_loss
from opdf_ray.methods.prokt import ProKT


def _grads(loss, params) -> list[torch.Tensor]:
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    return [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads)]


def adamw_lookahead(optimizer: torch.optim.AdamW, params, grads) -> list[torch.Tensor]:
    """Parameters after one AdamW step with ``grads``, without touching the parameters or the optimiser state.

    Multi-tensor: the parameters of one (param group, step count) are stepped together with ``torch._foreach_*``
    ops (the same arithmetic, in the same order, as the per-tensor formula), so the look-ahead of a student's
    hundred-odd tensors costs a few dozen kernel launches, not a dozen per tensor."""
    group_of = {id(p): g for g in optimizer.param_groups for p in g["params"]}
    batches: dict[tuple, list[int]] = {}
    # the step counts read back at once: fused AdamW keeps them on the device, where each read is a sync
    stepped = [optimizer.state[p]["step"] for p in params if "step" in optimizer.state.get(p, {})]
    counts = iter(torch.stack(stepped).tolist() if stepped else [])
    for i, p in enumerate(params):
        state = optimizer.state.get(p, {})
        step = next(counts) + 1 if "step" in state else 1.0
        batches.setdefault((id(group_of[id(p)]), step, bool(state)), []).append(i)
    out: list[torch.Tensor | None] = [None] * len(params)
    for (_, step, has_state), members in batches.items():
        group = group_of[id(params[members[0]])]
        beta1, beta2 = group["betas"]
        ps, gs = [params[i].detach() for i in members], [grads[i] for i in members]
        states = [optimizer.state[params[i]] for i in members] if has_state else []
        g_scaled = torch._foreach_mul(gs, 1 - beta1)
        gg_scaled = torch._foreach_mul(torch._foreach_mul(gs, 1 - beta2), gs)     # ((1 − β2)·g)·g
        if has_state:
            m = torch._foreach_add(torch._foreach_mul([s["exp_avg"] for s in states], beta1), g_scaled)
            v = torch._foreach_add(torch._foreach_mul([s["exp_avg_sq"] for s in states], beta2), gg_scaled)
        else:
            m, v = g_scaled, gg_scaled
        m_hat = torch._foreach_div(m, 1 - beta1 ** step)
        v_hat = torch._foreach_div(v, 1 - beta2 ** step)
        denom = torch._foreach_add(torch._foreach_sqrt(v_hat), group["eps"])
        update = torch._foreach_div(torch._foreach_mul(m_hat, group["lr"]), denom)
        stepped = torch._foreach_sub(torch._foreach_mul(ps, 1 - group["lr"] * group["weight_decay"]), update)
        for i, t in zip(members, stepped):
            out[i] = t
    return out


class LGTM(ProKT):
    name = "lgtm"
    uses_held_batch = True

    def influence_loss(self, t_logits, s_logits, labels) -> torch.Tensor:
        """The loss whose mixed derivative ``∂²/∂φ∂θ`` is the distillation influence (``lgtm_variant``)."""
        s = self.spec
        if s.lgtm_variant == "paper":      # only the KD term of L_s depends on the teacher
            return s.alpha_kd * kd_loss(s_logits, t_logits, s.temperature, s.t2_scaling, target_grad=True)
        return self.teacher_loss(t_logits, s_logits, labels)

    def teacher_step(self, inputs, labels, s_logits_eval, held_batch):
        if held_batch is None:
            raise ValueError("LGTM needs a held-out batch from the selection slice at every step")
        student, teacher = self.student, self.teacher
        s_grads, t_grads = self.gradients_of(self.student_opt), self.gradients_of(self.teacher_opt)
        name_of = {id(p): n for n, p in student.named_parameters()}
        s_names = [name_of[id(p)] for p in s_grads.params]

        # 1. look-ahead student θ' and the teacher's own gradient, from one forward of each (train mode)
        teacher.train()
        student.train()
        t_logits = teacher(**inputs).logits
        s_logits = student(**inputs).logits
        loss_s, _ = self.student_loss(s_logits, t_logits.detach(), labels)
        raw = s_grads.raw_grad(loss_s)
        s_grads.average_dense_(raw, self.parallel)   # the look-ahead the real (all-reduced) student step would take
        self.add_alignment_to(s_grads, raw)
        self.add_l2sp_to(s_grads, raw)
        layer_grads = s_grads.layer_gradients(raw)
        self.calibrate_core_lr(self.student_opt, layer_grads)   # the look-ahead steps as the real step will
        theta_prime = adamw_lookahead(self.student_opt, s_grads.params, s_grads.to_params(raw, layer_grads))
        loss_t = self.teacher_loss(t_logits, s_logits.detach(), labels)
        g_teacher = t_grads.raw_grad(loss_t)

        # 2. held-out gradient at θ'
        theta_prime = {n: t.detach().requires_grad_() for n, t in zip(s_names, theta_prime)}
        held_logits = functional_call(student, theta_prime, kwargs=model_inputs(held_batch)).logits
        v = _grads(task_loss(held_logits, held_batch["labels"]), list(theta_prime.values()))
        v_norm = torch.sqrt(sum((x * x).sum() for x in v))

        # 3. finite-difference Hessian-vector product ∂²L/∂φ∂θ · v (the student shifted out of place, so its
        #    per-step weights stay those of θ; the teacher's gradients stay on its dense weights until step 4)
        influence = None
        if v_norm > 0:
            eps = 0.01 / v_norm
            teacher.eval()
            student.eval()
            sides = []
            for sign in (1.0, -1.0):
                with torch.no_grad():          # θ ± ε·v, multi-tensor (the same products as p + sign·ε·v_i)
                    moved = torch._foreach_add([p.detach() for p in s_grads.params], torch._foreach_mul(v, sign * eps))
                    s_shifted = functional_call(student, dict(zip(s_names, moved)), kwargs=inputs).logits
                sides.append(t_grads.raw_grad(self.influence_loss(teacher(**inputs).logits, s_shifted, labels)))
            influence = torch._foreach_div(torch._foreach_sub(*sides), 2 * eps)

        # 4. teacher update with G_φ = g_φ − η·h (linear, so combined before the one push into the cores)
        sched = self.student_sched if self.spec.lgtm_variant == "paper" else self.teacher_sched
        eta = sched.get_last_lr()[0]
        t_grads.zero_grad()
        t_grads.set_grad(g_teacher if influence is None else torch._foreach_sub(g_teacher,
                                                                               torch._foreach_mul(influence, eta)))
        self.reduce_gradients(self.teacher_opt)
        self.clip_and_step(self.teacher_opt, self.teacher_sched)
        # ‖h‖ over what the teacher's gradient lives on: its parameters, its MPO layers' dense weights per step
        return {"teacher_loss": loss_t.detach(), "influence_norm": 0.0 if influence is None else
                torch.stack(torch._foreach_norm(influence)).square().sum().sqrt()}
