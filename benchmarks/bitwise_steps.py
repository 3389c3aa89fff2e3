"""Trained weights of every method after a few steps, saved to compare two versions of the code bit for bit.

    python benchmarks/bitwise_steps.py save before.pt          # on the old code (e.g. a git worktree)
    python benchmarks/bitwise_steps.py save after.pt           # on the new code
    python benchmarks/bitwise_steps.py compare before.pt after.pt

Each of KD, ProKT, LGTM and BERT-of-Theseus, dense and with 3 and 5 cores, on a model of MiniLM's shape at width 32
(``bench_ops.tiny_minilm_teacher``), trains 3 steps of batch 4 × 16 tokens; the student's and the teacher's state
are saved. A host-side change (fewer operators, fewer syncs) must leave every tensor bit for bit the same.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_ops import tiny_minilm_teacher  # noqa: E402
from bench_steps import batch_of, make_method  # noqa: E402


def trained_states(steps: int = 3) -> dict[str, dict[str, torch.Tensor]]:
    teacher = tiny_minilm_teacher()
    out = {}
    for name in ("kd", "prokt", "lgtm", "theseus"):
        for cores in (0, 3, 5):                  # 0: the dense student
            torch.manual_seed(0)
            method = make_method(name, cores, "per-step", teacher, 4)
            for step in range(steps):
                method.train_step(batch_of(16, 4, step), batch_of(16, 4, 10 + step))
            out[f"{name}-{cores}"] = {k: v.detach().clone() for k, v in method.eval_model().state_dict().items()}
            out[f"{name}-{cores} teacher"] = {k: v.detach().clone() for k, v in method.teacher.state_dict().items()}
    return out


def compare(a: dict, b: dict) -> bool:
    same = True
    for case in a:
        differ = [n for n in a[case] if not torch.equal(a[case][n], b[case][n])]
        print(f"{case}: {'bit for bit' if not differ else f'{len(differ)} tensors differ, e.g. {differ[0]}'}")
        same &= not differ
    return same


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) == 2 and args[0] == "save":
        torch.save(trained_states(), args[1])
        return 0
    if len(args) == 3 and args[0] == "compare":
        return 0 if compare(torch.load(args[1]), torch.load(args[2])) else 1
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
