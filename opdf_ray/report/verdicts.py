"""“Does OPDF help?”: each OPDF student minus its dense one, paired by seed, with a 95% interval and a verdict."""

from __future__ import annotations

import dataclasses
import html
import math
from dataclasses import dataclass

import pandas as pd

from opdf_ray.config import METHODS
from opdf_ray.tasks import Task, in_task_order
from opdf_ray.report.stats import holm, mean_interval, t_test_p
from opdf_ray.report.tables import METRIC_NAMES, task_label, variant_label, variants


@dataclass(frozen=True)
class Difference:
    """OPDF minus dense on the dev score, paired by seed (same data subset, selection slice and teacher)."""

    mean: float
    half_width: float        # of the 95% t-interval of the mean; inf with one seed (no noise estimate)
    seeds: int
    p: float = math.nan      # two-sided paired t-test of mean 0 (nan with one seed)
    p_holm: float = math.nan     # ``p`` Holm-adjusted over every cell of its verdict table

    @property
    def verdict(self) -> str:
        if self.mean - self.half_width > 0:
            return "gain"
        if self.mean + self.half_width < 0:
            return "loss"
        return "no gain or loss"

    def text(self) -> str:
        if self.seeds == 1:
            return f"{self.mean:+.1f} (1 seed: no interval)"
        return f"{self.mean:+.1f} ± {self.half_width:.1f} ({self.seeds})"

    def p_text(self) -> str:
        """``(p …, Holm …)``: the paired t-test's p, Holm-adjusted beside it in a table of several cells."""
        if math.isnan(self.p):
            return ""
        return f" (p {_p(self.p)}" + (f", Holm {_p(self.p_holm)})" if not math.isnan(self.p_holm) else ")")


def _p(p: float) -> str:
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def paired_difference(opdf: dict, dense: dict) -> Difference | None:
    """``opdf`` and ``dense``: seed → score. None when no seed has both."""
    seeds = sorted(set(opdf) & set(dense))
    if not seeds:
        return None
    diffs = [opdf[k] - dense[k] for k in seeds]
    return Difference(*mean_interval(diffs), p=t_test_p(diffs))


def adjust_holm(verdicts: list[dict]) -> list[dict]:
    """Every difference of a verdict table (each task cell and each "all tasks" cell) with its Holm-adjusted p,
    the family being the table: with several cells, some interval excludes 0 by chance alone."""
    cells = [(v, "tasks", t) for v in verdicts for t in v["tasks"] if v["tasks"][t] is not None]
    cells += [(v, "overall", None) for v in verdicts if v["overall"] is not None and len(v["tasks"]) > 1]
    if len(cells) < 2:
        return verdicts
    found = [v[kind][t] if t is not None else v[kind] for v, kind, t in cells]
    for (v, kind, t), d, adjusted in zip(cells, found, holm([d.p for d in found])):
        if t is None:
            v[kind] = dataclasses.replace(d, p_holm=adjusted)
        else:
            v[kind] = v[kind] | {t: dataclasses.replace(d, p_holm=adjusted)}
    return verdicts


def opdf_verdicts(chosen: pd.DataFrame, by: tuple[str, ...] = ()) -> list[dict]:
    """Per method and over-parameterised (or compressed, or L2-SP-anchored) row of the table: the paired difference
    to the method's dense student per task and over all tasks (per seed, the mean over tasks of its differences;
    seeds present in every task); an OPDF row is also read against the method's dense L2-SP student, the cheaper
    regulariser its ``init`` alignment resembles, when the table has one."""
    tasks = in_task_order(chosen["task"].astype(str).unique())
    out = []
    for method in [m for m in METHODS if m in set(chosen["method"])]:
        method_variants = variants(chosen[chosen["method"] == method], by)
        dense = [part for key, part in method_variants if key[0] == 0 and not key[2]]
        if not dense:
            continue
        dense = max(dense, key=len)        # with --compare, the dense row most trials share
        anchors = [part for key, part in method_variants if key[0] == 0 and key[2]]
        anchor = max(anchors, key=len) if anchors else None
        for key, part in method_variants:
            if key[0] == 0 and not key[2]:     # dense rows (an ablation's other values) are what rows are read against
                continue
            label = variant_label(method, key, by, method_first=True, part=part)
            for base, against in ((dense, ""), (anchor if key[0] != 0 else None, " − L2-SP")):
                found = None if base is None else _difference_row(part, base, tasks)
                if found is not None:
                    out.append({"label": label + against, **found})
    return adjust_holm(out)


def _difference_row(part: pd.DataFrame, base: pd.DataFrame, tasks: list[str]) -> dict | None:
    """``{"tasks": task → Difference, "overall": Difference | None}`` of ``part`` − ``base``, paired by seed."""
    def scores(rows: pd.DataFrame, task: str) -> dict:
        rows = rows[rows["task"].astype(str) == task]
        return dict(zip(rows["seed"].astype(int), rows["dev_score"]))

    diffs = {}                     # task → seed → row − base, computed once per task
    for task in tasks:
        mine, theirs = scores(part, task), scores(base, task)
        if set(mine) & set(theirs):
            diffs[task] = {seed: mine[seed] - theirs[seed] for seed in set(mine) & set(theirs)}
    if not diffs:
        return None
    per_task = {task: paired_difference(d, dict.fromkeys(d, 0.0)) for task, d in diffs.items()}
    overall = None
    if len(diffs) == len(tasks) > 1:
        common = set.intersection(*(set(d) for d in diffs.values()))
        overall = paired_difference({k: sum(d[k] for d in diffs.values()) / len(tasks) for k in common},
                                    dict.fromkeys(common, 0.0))
    elif len(tasks) == 1:
        overall = per_task[tasks[0]]
    return {"tasks": per_task, "overall": overall}


VERDICT_NOTE = ("Δ = the row − the method's dense student (a row ending “− L2-SP”: − its dense L2-SP student), on "
                "the dev score each task selects by ({metrics}), paired by seed (the same training subset, selection "
                "slice and teacher); mean ± half-width of its 95% t-interval (seeds), the two-sided paired "
                "t-test's p and, with several cells, that p Holm-adjusted over every cell of the table (Holm). "
                "Verdict: *gain* when the interval lies above 0, *loss* when below, otherwise *no gain or loss*: the difference is within the seed noise; a verdict whose Holm p is "
                "0.05 or more may be chance among the table's comparisons. All tasks: per seed, the mean of its "
                "task differences.")


def _verdict_grid(verdicts: list[dict], tasks: dict[str, Task]) -> tuple[str, list[str], list[list[str]]]:
    """The note, the header and the cells of the verdict table (one place for Markdown and HTML)."""
    note = VERDICT_NOTE.format(metrics=", ".join(f"{task_label(t)} {METRIC_NAMES[task.selection_metric]}"
                                                 for t, task in tasks.items()))
    head = ["Method", *[task_label(t) for t in tasks], *(["All tasks"] if len(tasks) > 1 else []), "Verdict"]
    rows = []
    for v in verdicts:
        overall = v["overall"]
        rows.append([v["label"], *[f"{d.text()} {d.verdict}{d.p_text()}" if (d := v["tasks"].get(t)) else "–"
                                   for t in tasks],
                     *([overall.text() + overall.p_text() if overall else "–"] if len(tasks) > 1 else []),
                     overall.verdict if overall else "–"])
    return note, head, rows


def verdicts_markdown(verdicts: list[dict], tasks: dict[str, Task]) -> str:
    note, head, rows = _verdict_grid(verdicts, tasks)
    lines = [note, "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join([*r[:-1], f"**{r[-1]}**" if r[-1] != "–" else "–"]) + " |" for r in rows]
    return "\n".join(lines)


def verdicts_html(verdicts: list[dict], tasks: dict[str, Task]) -> str:
    note, head, rows = _verdict_grid(verdicts, tasks)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows)
    return (f"<p>{html.escape(note).replace('*', '')}</p><table id=\"verdicts\"><thead><tr>"
            + "".join(f"<th>{html.escape(h)}</th>" for h in head) + f"</tr></thead><tbody>{body}</tbody></table>")
