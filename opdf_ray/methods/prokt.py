"""ProKT: teacher and student take turns; the teacher learns toward the student (Shi et al.; LGTM's code)."""

from __future__ import annotations

import torch

from opdf_ray.losses import kd_loss
from opdf_ray.methods.base import Method, model_inputs, task_loss
from opdf_ray.models import zero_classifier
from opdf_ray.optim import linear_schedule, make_optimizer


class ProKT(Method):
    """Per batch: (1) student logits (eval, no grad); (2) teacher step on ``α_t·KL(p_s‖p_t) + (1−α_t)·CE``;
    (3) logits of the updated teacher (eval, no grad); (4) student step on ``α·KL(p_t‖p_s) + (1−α)·CE``.
    The teacher trains inside the run, from its pre-trained weights (the published default, both heads zeroed)
    or the task-fine-tuned ones (``teacher_init``; both heads kept unless ``init_classifier_to_zero``).
    """

    name = "prokt"
    trains_teacher = True

    def __init__(self, spec, student, teacher, parallel=None):
        super().__init__(spec, student, teacher, parallel)
        if spec.zeroes_classifiers():
            zero_classifier(student)
            zero_classifier(teacher)

    def setup(self, total_steps):
        super().setup(total_steps)
        self.teacher_opt = make_optimizer(self.teacher, self.spec.teacher_lr, self.spec.weight_decay,
                                          self.spec.core_lr_multiplier)
        self.teacher_sched = linear_schedule(self.teacher_opt, total_steps, self.spec.warmup_ratio)

    def optimizers(self):
        return super().optimizers() | {"teacher": (self.teacher_opt, self.teacher_sched)}

    def teacher_loss(self, t_logits, s_logits, labels) -> torch.Tensor:
        s = self.spec
        return (s.t_alpha_kd * kd_loss(t_logits, s_logits, s.temperature, s.t2_scaling)
                + (1 - s.t_alpha_kd) * task_loss(t_logits, labels))

    def teacher_step(self, inputs, labels, s_logits, held_batch) -> dict[str, float]:
        self.teacher.train()
        loss = self.teacher_loss(self.teacher(**inputs).logits, s_logits, labels)
        self.optimizer_step(loss, self.teacher_opt, self.teacher_sched)
        return {"teacher_loss": loss.detach()}

    def train_step(self, batch, held_batch=None):
        inputs, labels = model_inputs(batch), batch["labels"]
        self.student.eval()
        with torch.no_grad():
            s_logits = self.student(**inputs).logits
        teacher_logs = self.teacher_step(inputs, labels, s_logits, held_batch)
        self.teacher.eval()
        with torch.no_grad():
            t_logits = self.teacher(**inputs).logits
        self.student.train()
        loss, logs = self.student_loss(self.student(**inputs).logits, t_logits, labels)
        logs = self.student_step(loss, logs)
        self.steps_done += 1
        return self.scalars(logs | teacher_logs)
