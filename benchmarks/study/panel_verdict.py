"""Issue 37's verdict: what KD + OPDF-4's STS-B gain is made of, from the panel's leaderboard (``run.py panel``).

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
METRIC = "dev_score"                                             # STS-B: dev Spearman


def arm_of(run_id: str) -> str | None:
    """``panel-<arm>-s<seed>-stsb`` → arm (None: the λ grid or another run)."""
    if not run_id.startswith("panel-") or run_id.startswith("panel-l2sp-grid"):
        return None
    return run_id[len("panel-"):].rsplit("-", 1)[0].rsplit("-s", 1)[0]      # drop "-<task>", then "-s<seed>"


def scores(rows: pd.DataFrame) -> dict[str, dict[int, float]]:
    """arm → seed → dev score of the panel's completed rows."""
    done = rows[rows["status"] == "completed"].assign(arm=rows["run_id"].map(arm_of)).dropna(subset=["arm"])
    return {arm: dict(zip(part["seed"].astype(int), part[METRIC])) for arm, part in done.groupby("arm")}


def teachers_agree(rows: pd.DataFrame) -> list[int]:
    """Seeds whose arms did not all start from one teacher (distinct ``teacher_dev_score``): must be empty."""
    done = rows[(rows["status"] == "completed") & rows["run_id"].map(arm_of).notna()]
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


def render(by_arm: dict[str, dict[int, float]], rows: list[dict], disagree: list[int]) -> str:
    lines = ["# Issue 37's panel: what KD + OPDF-4's STS-B gain is made of", "",
             "Dev Spearman of each arm (mean ± half-width of its 95% t-interval over seeds; seeds):", "",
             "| arm | dev Spearman | seeds |", "|---|---|---|"]
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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--csv", default=str(HERE / "results" / "panel.csv"))
    p.add_argument("--out", default=str(REPO / "docs" / "study" / "panel"))
    a = p.parse_args()
    rows = pd.read_csv(a.csv)
    by_arm = scores(rows)
    text = render(by_arm, verdict(by_arm), teachers_agree(rows))
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "verdict.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
