"""BERT-of-Theseus: successor layers progressively replace predecessor blocks (Xu et al., EMNLP 2020)."""

from __future__ import annotations

import torch
from torch import nn

from opdf_ray.methods.base import Method, model_inputs, task_loss
from opdf_ray.models import encoder_layer_list, set_encoder_layers


def replacing_rate(step: int, base: float, scheduler: str, k: float = 0.0,
                   steps_for_replacing: int | None = None) -> float:
    """Probability that a successor replaces its predecessor block after ``step`` optimiser steps.

    ``linear``: ``min(1, k·step + base)``; once it reaches 1 training continues successor-only (phase 2).
    ``constant``: ``base`` until ``steps_for_replacing`` steps, then 1 (``None``: never; the published default
    0 switched to 1 after the first step, a bug we do not copy).
    """
    if scheduler == "linear":
        return min(1.0, k * step + base)
    if scheduler == "constant":
        return 1.0 if steps_for_replacing is not None and step >= steps_for_replacing else base
    raise ValueError(f"unknown replacing scheduler {scheduler!r}; allowed: linear, constant")


class TheseusBlock(nn.Module):
    """Successor module i standing in for predecessor layers ``[k·i, …, k·i+k−1]``.

    Training: with probability ``replacing_rate`` (one draw per block per forward, shared across the batch)
    the successor runs, otherwise the predecessors run in sequence. Eval: the successor only.
    """

    def __init__(self, successor: nn.Module, predecessors: list[nn.Module]):
        super().__init__()
        self.successor = successor
        self.predecessors = nn.ModuleList(predecessors)
        self.replacing_rate = 1.0

    def forward(self, hidden_states, *args, **kwargs):
        if self.training and torch.rand(()) >= self.replacing_rate:
            out = hidden_states
            for layer in self.predecessors:       # a layer may return a tuple (DeBERTa-v2: states, attentions)
                out = layer(out[0] if isinstance(out, tuple) else out, *args, **kwargs)
            return out
        return self.successor(hidden_states, *args, **kwargs)


class Theseus(Method):
    """Only successor parameters train (task loss, no KD); embeddings, pooler, classifier and predecessors are
    the fine-tuned teacher's, frozen. Successors start as copies of the student's layers (the preset's teacher
    layers; the published code copies the first half of the predecessor layers)."""

    name = "theseus"
    needs_finetuned_teacher = True

    def __init__(self, spec, student, teacher, parallel=None):
        super().__init__(spec, student, teacher, parallel)
        predecessors, successors = encoder_layer_list(teacher), encoder_layer_list(student)
        ratio, rest = divmod(len(predecessors), len(successors))
        if rest or ratio < 1:
            raise ValueError(f"BERT-of-Theseus needs the teacher depth to be a multiple of the student's; got "
                             f"{len(predecessors)} teacher and {len(successors)} student layers")
        self.predecessors, self.successors = predecessors, successors
        self.blocks = [TheseusBlock(scc, [predecessors[ratio * i + j] for j in range(ratio)])
                       for i, scc in enumerate(successors)]
        self.model = student                      # its embeddings and head, now wired through the blocks
        set_encoder_layers(self.model, self.blocks)
        self.model.requires_grad_(False)
        self.successors.requires_grad_(True)

    def student_layers(self):
        return self.successors

    def teacher_layers(self):
        return self.predecessors

    def eval_model(self):
        return self.model

    def train_step(self, batch, held_batch=None):
        s = self.spec
        p = replacing_rate(self.steps_done, s.replacing_rate, s.replacing_scheduler, s.scheduler_linear_k,
                           s.steps_for_replacing)
        for block in self.blocks:
            block.replacing_rate = p
        self.model.train()
        loss = task_loss(self.model(**model_inputs(batch)).logits, batch["labels"])
        logs = {"loss": loss.detach(), "ce": loss.detach(), "replacing_rate": p}
        logs = self.student_step(loss, logs)   # steps only successors some worker used
        self.steps_done += 1
        return self.scalars(logs)

    def export_student(self):
        exported = super().export_student()
        set_encoder_layers(exported, [block.successor for block in encoder_layer_list(exported)])
        return exported
