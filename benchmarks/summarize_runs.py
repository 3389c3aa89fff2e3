"""Tabulate ``results.json`` files of single runs (e.g. from ``benchmarks/glue_check.sh``) as Markdown.

    python benchmarks/summarize_runs.py outputs/glue_check
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from opdf_ray.data import compute_metrics, load_split

from opdf_ray.tasks import get_task


def majority_baseline(task_name: str) -> dict[str, float]:
    """Dev metrics of always predicting the most frequent training label."""
    task = get_task(task_name)
    train, _ = load_split(task_name, "train")
    out = {}
    for split in task.dev_splits:
        dev, _ = load_split(task_name, split)
        guess = train.label.mean() if task.is_regression else train.label.mode()[0]
        out.update(compute_metrics(task, np.full(len(dev), guess), dev.label.to_numpy()))
    return out


def fmt(metrics: dict[str, float]) -> str:
    return " / ".join(f"{v:.1f}" for v in metrics.values())


def main(root: str) -> None:
    runs = [json.loads(p.read_text()) for p in sorted(Path(root).glob("*/results.json"))]
    order = {m: i for i, m in enumerate(["finetune", "kd", "theseus", "prokt", "lgtm"])}
    runs.sort(key=lambda r: (r["task"], order.get(r["method"], 9), r["spec"]["opdf_cores"]))
    for task in sorted({r["task"] for r in runs}):
        rows = [r for r in runs if r["task"] == task]
        metric_names = " / ".join(get_task(task).metrics)
        print(f"\n### {task.upper()} (dev {metric_names}; selection = held-out 10% of train)\n")
        print("| method | OPDF | dev | selection | teacher dev | best step / steps | train params | inference params"
              " | train ex/s | wall (s) |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        teacher = next((r["teacher_finetune"] for r in rows if r["teacher_finetune"]), None)
        if teacher:
            dev = {k: v for split in teacher["dev"].values() for k, v in split.items()}
            print(f"| teacher fine-tune | – | {fmt(dev)} | – | – | {teacher['best_step']} | – | – | "
                  f"{teacher['examples_per_second']:.1f} | {teacher['seconds']:.0f} |")
        print(f"| majority class | – | {fmt(majority_baseline(task))} | – | – | – | – | – | – | – |")
        for r in rows:
            dev = {k: v for split in r["dev"].values() for k, v in split.items()}
            tdev = {k: v for split in r.get("teacher_dev", {}).values() for k, v in split.items()}
            cores = r["spec"]["opdf_cores"]
            print(f"| {r['method']} | {cores or 'off'} | {fmt(dev)} | {fmt(r['selection'])} | "
                  f"{fmt(tdev) if tdev else '–'} | {r['best_step']} / {r['steps']} | {r['trainable_params']:,} | "
                  f"{r['inference_params']:,} | {r['examples_per_second']:.1f} | {r['wall_seconds']:.0f} |")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "outputs/glue_check")
