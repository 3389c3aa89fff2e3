"""How far one optimiser step moves the deployed weights, dense vs OPDF, at the study's learning rate.

The study chose each method's lr on dense students (step 1) and trains the OPDF students at the same lr. AdamW
moves every trainable entry by about ``lr`` per step, whatever it is: for OPDF those entries are the MPO cores, so
the change of the contracted matrix ``W`` they produce can differ from the dense student's. This measures it on the
study's setting (MRPC, minilm, KD, lr 1e-4, max length 64, batch 32, the task-fine-tuned teacher of seed 1):

    python benchmarks/study/update_size.py --teacher outputs/study/teachers/mrpc-<key> [--steps 1 5 20 60]

For each student it prints, after ``k`` steps on the same batches, the relative change ``‖W_k − W_0‖ / ‖W_0‖``
of the decomposed matrices (median and max over them), and OPDF / dense.

``--model teacher`` (ProKT, LGTM) measures the teacher those methods train instead: with OPDF it trains as MPO
cores too (the published LGTM+OPDF), at the teacher lr chosen for a dense one. It also prints the teacher's mean
training loss over the first ``k`` steps, the signal the student distils.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent.parent))

from opdf_ray.config import RunSpec  # noqa: E402
from opdf_ray.engine import prepare  # noqa: E402
from opdf_ray.batches import to_device  # noqa: E402
from opdf_ray.loop import feedback_batches  # noqa: E402
from opdf_ray.methods import METHOD_NAMES, get_method  # noqa: E402
from opdf_ray.overparam import merge  # noqa: E402


def deployed_matrices(model: torch.nn.Module, names: list[str]) -> dict[str, torch.Tensor]:
    """The weights a merged copy of ``model`` deploys, for the given ``nn.Linear`` names."""
    merged = merge(copy.deepcopy(model))
    return {n: merged.get_submodule(n).weight.detach().clone() for n in names}


def relative_changes(spec: RunSpec, teacher: str | None, steps: list[int], names: list[str] | None = None,
                     model: str = "student"):
    """``(names, {k: [relative change per matrix]}, {k: mean teacher_loss over steps 1..k or None})`` after ``k``
    steps of ``spec``'s method; ``teacher``: a fine-tuned teacher folder (None: fine-tuned and cached as a run
    would)."""
    job = prepare(spec, finetuned_teacher=teacher)
    method, device = job.method, job.device
    method.setup(job.plan.total_steps)

    def measured() -> torch.nn.Module:
        return method.eval_model() if model == "student" else method.teacher

    if names is None:      # the dense model's encoder linears: what OPDF decomposes, named as merge restores them
        names = [n for n, m in measured().named_modules()
                 if isinstance(m, torch.nn.Linear) and ".encoder." in f".{n}"]
    start = deployed_matrices(measured(), names)
    loader = job.data.loader("train", job.plan.per_worker_batch, shuffle=True, seed=spec.seed,
                             group_by_length=spec.group_by_length)
    held = feedback_batches(method, spec, job.data, job.plan)      # LGTM: as the trainer draws them
    out, losses, teacher_losses = {}, {}, []
    for done, batch in enumerate(loader, start=1):
        logs = method.train_step(to_device(batch, device), None if held is None else to_device(next(held), device))
        teacher_losses.append(logs.get("teacher_loss"))
        if done in steps:
            now = deployed_matrices(measured(), names)
            out[done] = [float((now[n] - start[n]).norm() / start[n].norm()) for n in names]
            losses[done] = None if None in teacher_losses else statistics.fmean(teacher_losses)
        if done >= max(steps):
            break
    return names, out, losses


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--teacher", required=True, help="the task-fine-tuned teacher folder (teacher.json inside)")
    p.add_argument("--task", default="mrpc")
    p.add_argument("--method", default="kd", choices=METHOD_NAMES)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--cores", type=int, default=5)
    p.add_argument("--steps", type=int, nargs="+", default=[1, 5, 20, 60])
    p.add_argument("--model", choices=("student", "teacher"), default="student",
                   help="whose deployed matrices to measure: the student, or the teacher ProKT and LGTM train")
    p.add_argument("--teacher-lr", type=float, default=None, help="ProKT/LGTM teacher lr (default: RunSpec's)")
    p.add_argument("--core-lr", default="matched", help="the OPDF run's --opdf-core-lr: matched (default) or a "
                   "multiplier (1.0: the published one lr for every core)")
    args = p.parse_args(argv)
    if args.model == "teacher" and not get_method(args.method).trains_teacher:
        p.error(f"--model teacher: {args.method} does not train its teacher; use --method prokt or lgtm")
    if not (Path(args.teacher) / "teacher.json").is_file():
        p.error(f"--teacher {args.teacher}: not a fine-tuned teacher folder (no teacher.json); a search writes them "
                f"under <storage>/teachers/")
    common = dict(task=args.task, preset="minilm", method=args.method, lr=args.lr, seed=args.seed, max_length=64,
                  batch_size=32, eval_batch_size=128, epochs=3, progress=False)
    if args.teacher_lr is not None:
        common["teacher_lr"] = args.teacher_lr
    names, dense, dense_loss = relative_changes(RunSpec(opdf_cores=0, **common), args.teacher, args.steps,
                                                model=args.model)
    _, opdf, opdf_loss = relative_changes(RunSpec(opdf_cores=args.cores, opdf_core_lr=args.core_lr, **common),
                                          args.teacher, args.steps, names, model=args.model)
    spec = RunSpec(**common)
    lr = (f"lr {spec.lr:g}" + (f", teacher lr {spec.teacher_lr:g}" if args.model == "teacher" else "")
          + f", OPDF core lr {args.core_lr}")
    print(f"{args.task} {args.method}, {lr}, seed {args.seed}: relative change of the {len(names)} encoder matrices "
          f"the {args.model} deploys, ‖W_k − W_0‖ / ‖W_0‖ (median, max)")
    loss_head = " dense / OPDF teacher loss, mean of steps 1..k |" if args.model == "teacher" else ""
    print(f"| steps | dense | OPDF-{args.cores} | OPDF / dense (median) | OPDF / dense per matrix (min–max) |"
          f"{loss_head}")
    print("|---|---|---|---|---|" + ("---|" if loss_head else ""))
    for k in args.steps:
        d, o = dense[k], opdf[k]
        loss = f" {dense_loss[k]:.3f} / {opdf_loss[k]:.3f} |" if loss_head else ""
        ratio = f"{statistics.median(o) / statistics.median(d):.2f}" if statistics.median(d) else "–"
        each = [b / a for a, b in zip(d, o) if a]
        spread = f"{min(each):.2f}–{max(each):.2f}" if each else "–"
        print(f"| {k} | {statistics.median(d):.2e}, {max(d):.2e} | {statistics.median(o):.2e}, {max(o):.2e} | "
              f"{ratio} | {spread} |{loss}")


if __name__ == "__main__":
    main()
