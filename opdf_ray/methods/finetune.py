"""Plain fine-tuning of one model on the task loss: the no-teacher baseline, and how KD/Theseus teachers are made."""

from __future__ import annotations

from opdf_ray.methods.base import Method, model_inputs, task_loss


class FineTune(Method):
    name = "finetune"
    uses_teacher = False

    def train_step(self, batch, held_batch=None):
        self.student.train()
        loss = task_loss(self.student(**model_inputs(batch)).logits, batch["labels"])
        self.optimizer_step(loss, self.student_opt, self.student_sched)
        self.steps_done += 1
        return {"loss": loss.item()}
