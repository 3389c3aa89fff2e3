"""Where a short GPU run's time goes: training speed per epoch, in one process (no Ray), for cases run back to back.

The first GPU check (docs/benchmarks.md) saw KD steps at about 0.2 s through a one-epoch student, and a teacher
whose first epoch took 4-5x longer than its later ones. This runs each case for several epochs in one process and
prints seconds per step per epoch, so a first-pass cost shows as epoch 1 against the others, and a cost paid once
per process (CUDA start-up, first use of each batch shape) shows as a repeated case whose first epoch is fast.

    python benchmarks/gpu_epochs.py [--teacher DIR [--random-weights]] [--cases kd-0 kd-5 kd-0] [--epochs 3]

The teacher is the minilm preset's unless ``--teacher`` names a model folder. ``--random-weights``: that folder's
architecture and tokenizer with freshly initialised weights (timing only; accuracies are then meaningless), for a
machine without the pretrained weights. Record what it prints in
docs/benchmarks.md ("GPU check").
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from opdf_ray import engine  # noqa: E402
from opdf_ray.config import METHODS, PRESETS, RunSpec  # noqa: E402


def parse_case(text: str) -> tuple[str, int]:
    """``kd-5`` → ("kd", 5): a method and its OPDF core count (0 = dense)."""
    method, _, cores = text.rpartition("-")
    if method not in METHODS or not cores.isdigit():
        raise argparse.ArgumentTypeError(f"case {text!r}: expected METHOD-CORES with METHOD in {METHODS}, e.g. kd-5")
    return method, int(cores)


def random_copy(source: Path, out: Path) -> Path:
    """``source``'s architecture and tokenizer with freshly initialised weights, saved under ``out``."""
    from transformers import AutoConfig, AutoModel, AutoTokenizer, set_seed

    if not (out / "config.json").exists():
        set_seed(0)
        AutoModel.from_config(AutoConfig.from_pretrained(source)).save_pretrained(out)
        AutoTokenizer.from_pretrained(source).save_pretrained(out)
    return out


def train_loader(job):
    """The run's training batches, as its training loop draws them (the first epoch's order)."""
    return job.data.loader("train", job.plan.per_worker_batch, shuffle=True, seed=job.spec.seed,
                           group_by_length=job.spec.group_by_length)


def batch_lengths(job) -> list[int]:
    """The padded length of every training batch of one epoch (dynamic padding: one shape per distinct length)."""
    return [batch["input_ids"].shape[1] for batch in train_loader(job)]


def profile_steps(job, steps: int, path: Path) -> list[str]:
    """``steps`` more training steps under ``torch.profiler``: aten operator calls per step and the operators by
    self time on the device (CPU time on CPU), written to ``path``; returns the first lines."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    from opdf_ray.batches import to_device
    from opdf_ray.loop import autocast

    cuda = job.device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    batches = [to_device(b, job.device) for b, _ in zip(train_loader(job), range(steps))]
    with profile(activities=activities) as prof:
        for batch in batches:
            with autocast(job.device, job.spec.bf16_on(job.device)):
                job.method.train_step(batch, None)
        if cuda:
            torch.cuda.synchronize()
    averages = prof.key_averages()
    ops = sum(e.count for e in averages if e.key.startswith("aten::")) / steps    # dispatches, kernels or not
    table = averages.table(sort_by="self_cuda_time_total" if cuda else "self_cpu_time_total", row_limit=25)
    path.write_text(f"aten operator calls per step: {ops:.0f}\n{table}")
    return [f"aten operator calls per step: {ops:.0f}", *table.splitlines()[:14]]


def run_case(args, method: str, cores: int) -> dict:
    teacher = str(args.teacher_dir) if args.teacher_dir else None
    spec = RunSpec(task=args.task, method=method, opdf_cores=cores, preset=args.preset, teacher=teacher,
                   max_train_samples=args.samples, epochs=args.epochs, max_length=args.max_length,
                   batch_size=args.batch_size, seed=args.seed, cache_dir=str(args.out / "cache"),
                   data_dir=args.data_dir, teacher_epochs=args.teacher_epochs, progress=False, save_model=False,
                   pad_to_multiple_of=args.pad_to_multiple_of, cudnn_attention=args.cudnn_attention)
    started = time.perf_counter()
    job = engine.prepare(spec)
    prepared = time.perf_counter() - started
    marks = []          # (step, cumulative train seconds) at each evaluation = each epoch's end

    def on_evaluate(progress, metrics):
        marks.append((progress.step, progress.train_seconds))

    fitted = engine.train(job, on_evaluate=on_evaluate)
    epochs, last = [], (0, 0.0)
    for step, seconds in marks:
        steps, spent = step - last[0], seconds - last[1]
        epochs.append({"steps": steps, "seconds": spent, "ms_per_step": 1000 * spent / steps,
                       "examples_per_second": steps * job.plan.per_worker_batch / spent})
        last = (step, seconds)
    lengths = batch_lengths(job)
    if args.profile_steps and not job.method.uses_held_batch:     # LGTM's step needs its held-out batch too
        name = f"profile-{method}-{cores}.txt"
        print(f"{method}-{cores}, {args.profile_steps} steps:", *profile_steps(job, args.profile_steps,
                                                                              args.out / name), sep="\n")
    return {"case": f"{method}-{cores}", "device": str(job.device), "bf16": spec.bf16_on(job.device),
            "pad_to_multiple_of": job.data.pad_to_multiple_of,
            "prepare_seconds": prepared, "best_score": fitted.best_score, "epochs": epochs,
            "distinct_batch_lengths": len(set(lengths)), "batches": len(lengths)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="minilm", choices=sorted(PRESETS))
    p.add_argument("--teacher", type=Path, help="teacher folder (config, tokenizer, weights); default: the preset's")
    p.add_argument("--random-weights", action="store_true", help="the teacher's architecture, random weights")
    p.add_argument("--cases", nargs="+", type=parse_case, default=[("kd", 0), ("kd", 5), ("kd", 0)],
                   help="METHOD-CORES, run in this order in one process (default: kd-0 kd-5 kd-0)")
    p.add_argument("--task", default="mrpc")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--samples", type=int, default=2048)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--teacher-epochs", type=int, default=3)
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--pad-to-multiple-of", type=int, default=None, help="default: the device's (8 on CUDA)")
    p.add_argument("--cudnn-attention", action=argparse.BooleanOptionalAction, default=False)
    p.add_argument("--profile-steps", type=int, default=0,
                   help="after training, profile this many steps per case (not LGTM): profile-<case>.txt")
    p.add_argument("--capture", choices=["default", "reduce-overhead", "max-autotune-no-cudagraphs"],
                   help="compile the batched MPO contraction and its backward with torch.compile(mode=...) "
                        "(reduce-overhead: CUDA graphs); default: eager")
    p.add_argument("--out", type=Path, default=Path("outputs/gpu_epochs"))
    args = p.parse_args(argv)
    if args.teacher and not (args.teacher / "config.json").is_file():
        p.error(f"--teacher {args.teacher}: no config.json there; expected a model folder (config, tokenizer)")
    if args.random_weights and not args.teacher:
        p.error("--random-weights needs --teacher DIR (the architecture and tokenizer to copy)")
    args.out.mkdir(parents=True, exist_ok=True)
    args.teacher_dir = random_copy(args.teacher, args.out / "random-teacher") if args.random_weights else args.teacher

    import torch

    from opdf_ray import mpo

    mpo.capture_contraction(args.capture)
    results = [run_case(args, method, cores) for method, cores in args.cases]
    (args.out / "gpu_epochs.json").write_text(json.dumps(results, indent=2))
    print(f"{args.task}, {args.samples} examples, length {args.max_length}, batch {args.batch_size}, "
          f"device {results[0]['device']}, bf16 {results[0]['bf16']}, padded to a multiple of "
          f"{results[0]['pad_to_multiple_of'] or 1}, torch {torch.__version__}"
          + (f", cuDNN attention {'on' if torch.backends.cuda.cudnn_sdp_enabled() else 'off'}"
             if results[0]["device"].startswith("cuda") else "")
          + f", contraction {'compiled, mode ' + args.capture if args.capture else 'eager'}")
    print("| case (in run order) | set-up s | " + " | ".join(f"epoch {i + 1} ms/step" for i in range(args.epochs))
          + " | distinct batch lengths |")
    print("|---" * (args.epochs + 3) + "|")
    for r in results:
        per_epoch = " | ".join(f"{e['ms_per_step']:.1f}" for e in r["epochs"])
        print(f"| {r['case']} | {r['prepare_seconds']:.1f} | {per_epoch} | {r['distinct_batch_lengths']} "
              f"of {r['batches']} |")
    steady = {r["case"]: r["epochs"][-1]["ms_per_step"] for r in results}     # a repeated case: its last run
    for method in dict.fromkeys(m for m, _ in args.cases):
        dense = steady.get(f"{method}-0")
        for case, ms in steady.items():
            if dense and case.startswith(f"{method}-") and case != f"{method}-0":
                print(f"{case} / {method}-0, last epoch: {ms / dense:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
