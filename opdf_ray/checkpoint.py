"""Resumable training checkpoints: every tensor in one safetensors file, everything else in JSON.

A checkpoint holds the method's training state (trainable tensors, optimiser and scheduler states), the loop's
``Progress`` (step, best score and the best student's tensors) and the CPU RNG state, so a run restored from it
continues exactly as the uninterrupted run would have (the same batches, the same dropout masks on CPU).

Hand-written rather than ``torch.save``/``Trainer`` checkpoints: restoring must never unpickle (safetensors
holds tensors only, ``weights_only`` by construction), and the methods' several optimisers and the MPO cores
need an explicit, versioned layout.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from opdf_ray.methods import Method

TENSORS, META = "state.safetensors", "state.json"
FORMAT_VERSION = 1


@dataclass
class Progress:
    """The training loop's own resumable state (the method's tensors and optimisers are saved beside it)."""

    step: int = 0
    best_score: float = -math.inf
    best_step: int = 0
    best_state: dict | None = None            # the best student's trainable tensors
    best_metrics: dict | None = None          # its evaluation on the selection split (what ``finalize`` reports)
    history: list = field(default_factory=list)
    train_seconds: float = 0.0
    examples: int = 0

    @property
    def examples_per_second(self) -> float:
        """Training throughput (all workers' examples per second of optimiser steps, evaluation excluded)."""
        return self.examples / max(self.train_seconds, 1e-9)

    def meta(self) -> dict:
        return {k: v for k, v in dataclasses.asdict(self).items() if k != "best_state"}


def save_checkpoint(directory: str | Path, method: Method, progress: Progress) -> None:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors, meta = method.training_state()
    tensors = {f"method.{k}": v for k, v in tensors.items()}
    tensors |= {f"best.{k}": v for k, v in (progress.best_state or {}).items()}
    tensors["rng.cpu"] = torch.get_rng_state()
    save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, directory / TENSORS)
    (directory / META).write_text(json.dumps({"format_version": FORMAT_VERSION, "method": meta,
                                              "progress": progress.meta()}, default=float))


def load_checkpoint(directory: str | Path, method: Method) -> Progress:
    """Restore ``method`` (already set up) from ``directory``; returns the loop's progress to resume with."""
    directory = Path(directory)
    if not (directory / TENSORS).is_file() or not (directory / META).is_file():
        raise FileNotFoundError(f"{directory} is not an opdf-ray checkpoint (expected {TENSORS} and {META})")
    meta = json.loads((directory / META).read_text())
    if meta.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"checkpoint {directory} has format {meta.get('format_version')}; this opdf-ray reads "
                         f"format {FORMAT_VERSION}")
    device = next(method.eval_model().parameters()).device
    tensors = load_file(directory / TENSORS, device=str(device))

    def part(prefix):
        return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}

    method.load_training_state(part("method."), meta["method"])
    torch.set_rng_state(tensors["rng.cpu"].cpu())
    return Progress(**meta["progress"], best_state=part("best.") or None)
