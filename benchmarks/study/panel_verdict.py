"""The panel's verdict: what KD + OPDF-4's STS-B gain is made of, from its leaderboard (``run.py panel``,
``panel-convergence``, ``panel-cola``): a section per task, then the convergence runs.

    python benchmarks/study/panel_verdict.py [--csv benchmarks/study/results/panel.csv] [--out docs/study/panel]

Every arm ran the winner's settings on the same seeds and, per seed, the same fine-tuned teacher (checked below).
For each other arm: ``opdf − arm`` on the dev Spearman, paired by seed, mean ± half-width of its 95% t-interval,
the paired t-test's p and its Holm adjustment over the family of comparisons. OPDF is credited only where
``opdf − max(l2sp, l2sp-fixed, central, lr1.5, lr2)`` (per seed, against the best of the cheaper controls on that
seed) lies above 0 beyond its interval; ``block-last − opdf`` says whether aligning to the teacher adds anything.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import pandas as pd

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(REPO))
from opdf_ray.report.stats import holm, mean_interval, t_test_p  # noqa: E402

ARMS = ("dense", "opdf", "l2sp", "l2sp-fixed", "central", "block-last", "lr1.5", "lr2", "align-off")
CONTROLS = ("l2sp", "l2sp-fixed", "central", "lr1.5", "lr2")     # what a cheaper run could give instead
METRIC = "dev_score"                                             # the task's selection metric on dev
TASK_TITLES = {"stsb": ("STS-B", "dev Spearman"), "cola": ("CoLA", "dev MCC")}
CONVERGENCE = {"": "3 epochs, 2,000 examples (the panel)", "e10": "10 epochs, 2,000 examples",
               "full": "3 epochs, all of train"}


def arm_of(run_id: str) -> str | None:
    """``panel-<arm>-s<seed>-stsb`` → arm (None: the λ grid or another run)."""
    if not run_id.startswith("panel-") or run_id.startswith("panel-l2sp-grid"):
        return None
    return run_id[len("panel-"):].rsplit("-", 1)[0].rsplit("-s", 1)[0]      # drop "-<task>", then "-s<seed>"


def scores(rows: pd.DataFrame) -> dict[str, dict[int, float]]:
    """arm → seed → dev score of the panel's completed rows (of one task; the convergence runs are not arms)."""
    done = rows[rows["status"] == "completed"].assign(arm=rows["run_id"].map(arm_of))
    done = done[done["arm"].isin(ARMS)]
    return {arm: dict(zip(part["seed"].astype(int), part[METRIC])) for arm, part in done.groupby("arm")}


def teachers_agree(rows: pd.DataFrame) -> list[int]:
    """Seeds whose arms did not all start from one teacher (distinct ``teacher_dev_score``): must be empty."""
    done = rows[(rows["status"] == "completed") & rows["run_id"].map(arm_of).isin(ARMS)]
    return sorted(int(s) for s, part in done.groupby("seed") if part["teacher_dev_score"].round(6).nunique() > 1)


def compare(a: dict[int, float], b: dict[int, float]) -> dict | None:
    seeds = sorted(set(a) & set(b))
    if not seeds:
        return None
    diffs = [a[s] - b[s] for s in seeds]
    mean, half, n = mean_interval(diffs)
    return {"mean": mean, "half": half, "n": n, "p": t_test_p(diffs), "seeds": seeds}


def verdict(by_arm: dict[str, dict[int, float]]) -> list[dict]:
    """The comparisons, Holm-adjusted together: opdf − each arm, opdf − max(controls), block-last − opdf."""
    opdf = by_arm.get("opdf", {})
    rows = [{"label": f"opdf − {arm}", **c} for arm in ARMS if arm != "opdf" and arm in by_arm
            and (c := compare(opdf, by_arm[arm]))]
    shared = set(opdf).intersection(*(by_arm.get(c, {}) for c in CONTROLS))
    if shared and all(c in by_arm for c in CONTROLS):
        best = {s: max(by_arm[c][s] for c in CONTROLS) for s in shared}
        rows.append({"label": "opdf − max(" + ", ".join(CONTROLS) + ")", **compare(opdf, best)})
    if "block-last" in by_arm and (c := compare(by_arm["block-last"], opdf)):
        rows.append({"label": "block-last − opdf", **c})
    for row, adjusted in zip(rows, holm([r["p"] for r in rows])):
        row["p_holm"] = adjusted
    return rows


def _p(p: float) -> str:
    return "–" if math.isnan(p) else "<0.001" if p < 0.001 else f"{p:.3f}"


def render(by_arm: dict[str, dict[int, float]], rows: list[dict], disagree: list[int], task: str = "stsb") -> str:
    title, metric = TASK_TITLES.get(task, (task, "dev score"))
    lines = [f"## {title}", "",
             f"{metric[0].upper() + metric[1:]} of each arm (mean ± half-width of its 95% t-interval over seeds; "
             f"seeds):", "", f"| arm | {metric} | seeds |", "|---|---|---|"]
    for arm in ARMS:
        if arm in by_arm:
            mean, half, n = mean_interval(list(by_arm[arm].values()))
            lines.append(f"| {arm} | {mean:.1f}" + (f" ± {half:.1f}" if n > 1 else "") + f" | "
                         f"{', '.join(map(str, sorted(by_arm[arm])))} |")
    lines += ["", "Paired by seed (the same data subset, selection slice and teacher), 95% t-intervals, the paired "
              "t-test's p and Holm's adjustment over the comparisons below:", "",
              "| comparison | Δ | seeds | p | Holm p | |", "|---|---|---|---|---|---|"]
    for r in rows:
        above = r["mean"] - r["half"] > 0
        below = r["mean"] + r["half"] < 0
        word = "above 0" if above else "below 0" if below else "0 within the interval"
        delta = f"{r['mean']:+.1f} ± {r['half']:.1f}" if r["n"] > 1 else f"{r['mean']:+.1f} (1 seed: no interval)"
        lines.append(f"| {r['label']} | {delta} | {r['n']} | {_p(r['p'])} | {_p(r['p_holm'])} | {word} |")
    lines += ["", "Teachers: " + ("every arm of a seed started from the same fine-tuned teacher (equal "
                                  "`teacher_dev_score` per seed)." if not disagree else
                                  f"seeds {disagree} have arms with different teachers: their rows do not pair.")]
    return "\n".join(lines) + "\n"


def convergence(rows: pd.DataFrame) -> str:
    """Is OPDF faster, better, or both? Per arm and budget (the panel's, 10 epochs, all of train): the dev score
    and where the selected checkpoint lies (best_step / steps: 1.00 = the last evaluation, still improving)."""
    done = rows[(rows["status"] == "completed") & (rows["task"] == "stsb")]
    lines = ["## Convergence (STS-B)", "", "Dev Spearman and the selected step as a fraction of the run (mean ± "
             "half-width of the 95% t-interval over seeds; last = runs whose best checkpoint was their last "
             "evaluation):", "", "| arm | budget | dev Spearman | selected step / steps | last | seeds |",
             "|---|---|---|---|---|---|"]
    found = False
    for arm in ("dense", "opdf", "l2sp"):
        for variant, label in CONVERGENCE.items():
            run = f"panel-{arm}-{variant}-s" if variant else f"panel-{arm}-s"
            part = done[done["run_id"].str.startswith(run) & done["run_id"].str.endswith("-stsb")]
            if variant == "" and len(done[done["run_id"].str.contains("-e10-|-full-")]) == 0:
                continue                                   # no convergence run yet: the panel table says it all
            if part.empty:
                continue
            found = True
            dev, dev_half, n = mean_interval(list(part[METRIC]))
            where = list(part["best_step"] / part["steps"])
            at, at_half, _ = mean_interval(where)
            last = int((part["best_step"] == part["steps"]).sum())
            fmt = (lambda m, h, d: f"{m:.{d}f} ± {h:.{d}f}" if n > 1 else f"{m:.{d}f}")
            lines.append(f"| {arm} | {label} | {fmt(dev, dev_half, 1)} | {fmt(at, at_half, 2)} | {last} of {n} | "
                         f"{', '.join(map(str, sorted(part['seed'].astype(int))))} |")
    return "\n".join(lines) + "\n" if found else ""


def report(rows: pd.DataFrame) -> str:
    """The whole verdict page: a section per task (its own Holm family), then the convergence runs."""
    parts = ["# The panel: what KD + OPDF-4's STS-B gain is made of\n"]
    for task in [t for t in TASK_TITLES if t in set(rows["task"])]:
        part = rows[rows["task"] == task]
        by_arm = scores(part)
        if by_arm:
            parts.append(render(by_arm, verdict(by_arm), teachers_agree(part), task))
    parts.append(convergence(rows))
    return "\n".join(p for p in parts if p)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--csv", default=str(HERE / "results" / "panel.csv"))
    p.add_argument("--out", default=str(REPO / "docs" / "study" / "panel"))
    a = p.parse_args()
    rows = pd.read_csv(a.csv)
    text = report(rows)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "verdict.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
