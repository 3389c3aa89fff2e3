"""Plain logit KD (Hinton et al.) from a frozen, task-fine-tuned teacher."""

from __future__ import annotations

import torch

from opdf_ray.methods.base import Method, model_inputs


class KD(Method):
    """Student minimises ``α·KL(p_t‖p_s) + (1−α)·CE``; the teacher is frozen in eval mode (no dropout).

    Because the frozen teacher's logits depend only on the example, they can be computed once for the whole
    training set (``cache_teacher_logits``) and looked up by example index: the same numbers, one teacher
    forward per example instead of one per epoch.
    """

    name = "kd"
    needs_finetuned_teacher = True
    caches_teacher_logits = True

    def __init__(self, spec, student, teacher, parallel=None):
        super().__init__(spec, student, teacher, parallel)
        self.cached_logits: torch.Tensor | None = None

    def cache_teacher_logits(self, batches, n_examples: int) -> None:
        """Fill the cache from batches over (this worker's share of) the training set, each with its ``index``;
        shares are summed across workers, so each example's logits are computed once."""
        self.teacher.eval()
        table = None
        with torch.inference_mode():
            for batch in batches:
                logits = self.teacher(**model_inputs(batch)).logits.float()   # bf16 autocast: keep fp32
                if table is None:
                    table = logits.new_zeros(n_examples, logits.shape[-1])
                table[batch["index"].to(logits.device)] = logits
        if table is None:
            raise ValueError("cannot cache teacher logits: this worker's share of the training set is empty")
        self.parallel.sum_(table)
        self.cached_logits = table

    def teacher_logits(self, batch) -> torch.Tensor:
        if self.cached_logits is not None:
            return self.cached_logits[batch["index"].to(self.cached_logits.device)]
        with torch.no_grad():
            return self.teacher(**model_inputs(batch)).logits

    def train_step(self, batch, held_batch=None):
        t_logits = self.teacher_logits(batch)
        self.student.train()
        s_logits = self.student(**model_inputs(batch)).logits
        loss, logs = self.student_loss(s_logits, t_logits, batch["labels"])
        logs = self.student_step(loss, logs)
        self.steps_done += 1
        return self.scalars(logs)
