"""Reports from a leaderboard: the OPDF paper's Table 1 layout (Markdown + self-contained HTML), plots, run summary.

    python -m opdf_ray.report outputs/search/leaderboard --out outputs/report [--select-by dev] [--protocol all]
    python -m opdf_ray.report main/ ablations/ --tasks mrpc --methods kd --compare opdf_align_weight   # an ablation

Two reference rows come first: the majority class and the task-fine-tuned teacher. Then the methods (KD, ProKT,
LGTM, Theseus, fine-tuning), each followed by one ``+OPDF (n cores)`` row per core count present (and ``+ MPO
compression (n cores, bond r)`` rows for truncated, i.e. compressed, students; rows distilled from a truncated
teacher — leaderboards written before that was fixed — are left out); columns are
the tasks present with their metrics, the average, and the train/inference parameter counts. A cell is the mean
± std over seeds of the *best configuration's* dev metric and its seed count; the best configuration is the one
with the highest mean selection score (the honest rule) or, with ``--select-by dev``, the highest mean dev score
(the papers' way). The best value per column is in bold. "Does OPDF help?" then compares each method's OPDF
student with its dense one, paired by seed, with a 95% interval and a verdict.
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import html
import json
import math
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow.fs as pafs
import yaml

from opdf_ray.config import METHOD_TITLES, METHODS, RunSpec
from opdf_ray.data import TASKS
from opdf_ray.leaderboard import VARIANT, duplicate_runs, read_leaderboard, spec_of, usable

METRIC_NAMES = {"accuracy": "Acc", "f1": "F1", "mcc": "MCC", "pearson": "Pearson", "spearman": "Spearman"}
SELECT_BY = ("selection", "dev")
PROTOCOLS = ("selection", "dev", "all")


@dataclass(frozen=True)
class Column:
    task: str
    metric: str          # a leaderboard column, e.g. dev_f1 or dev_mismatched_accuracy
    label: str


def columns_for(tasks: list[str]) -> list[Column]:
    """The table's metric columns, in GLUE order: CoLA MCC, STS-B P/S, MRPC/QQP F1/Acc, MNLI m/mm, others Acc."""
    out = []
    for name in [t for t in TASKS if t in tasks]:
        task = TASKS[name]
        if name == "mnli":
            out += [Column(name, "dev_accuracy", "MNLI-m"), Column(name, "dev_mismatched_accuracy", "MNLI-mm")]
            continue
        label = _task_label(name)
        out += [Column(name, f"dev_{m}", f"{label} {METRIC_NAMES[m]}" if len(task.metrics) > 1 else label)
                for m in task.metrics]
    return out


def _completed(board: pd.DataFrame, protocol: str) -> pd.DataFrame:
    done = usable(board)
    return done if protocol == "all" else done[done["protocol"] == protocol]


def best_configs(board: pd.DataFrame, select_by: str = "selection", protocol: str = "selection",
                 by: tuple[str, ...] = ()) -> pd.DataFrame:
    """Per (task, method, cores, bond, *``by``): the rows (one per seed) of the configuration with the best mean
    selection (or dev) score. Returns those rows."""
    if select_by not in SELECT_BY:
        raise ValueError(f"select_by={select_by!r}; allowed: {', '.join(SELECT_BY)}")
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol={protocol!r}; allowed: {', '.join(PROTOCOLS)}")
    done = _completed(board, protocol)
    score = "selection_score" if select_by == "selection" else "dev_score"
    done = done.dropna(subset=[score])
    if done.empty:
        return done
    opdf_only = [b for b in by if b.startswith("opdf_")]
    if opdf_only:                  # an OPDF-only hyperparameter does not apply to a dense student: one dense row
        done = done.astype({b: object for b in opdf_only})
        done.loc[done["opdf_cores"] == 0, opdf_only] = None
    variant = [*VARIANT, *by]
    means = done.groupby([*variant, "config_id"], observed=True, dropna=False)[score].mean().reset_index()
    best = means.loc[means.groupby(variant, observed=True, dropna=False)[score].idxmax()]
    return done.merge(best[["config_id", *VARIANT]], on=["config_id", *VARIANT])


@dataclass
class Table:
    columns: list[Column]
    rows: list[dict]      # {"label", "method", "cores", "bond", "cells": {label: (mean, std, n) | None}, "params"}
    references: list[dict] = dataclasses.field(default_factory=list)   # majority class, teacher: never bold

    def bold(self) -> dict[str, float]:
        """Best mean per column (ties all bold)."""
        best = {}
        for col in [c.label for c in self.columns] + ["Avg"]:
            values = [r["cells"].get(col) for r in self.rows]
            values = [v[0] for v in values if v is not None]
            if values:
                best[col] = max(values)
        return best


def _stats(values: pd.Series) -> tuple[float, float, int]:
    return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0, int(len(values))


def _with_average(cells: dict, columns: list[Column]) -> dict:
    """``cells`` plus ``Avg`` (the mean over tasks of each task's mean metric) when every column has a value."""
    if all(c.label in cells for c in columns):
        per_task = {}
        for c in columns:
            per_task.setdefault(c.task, []).append(cells[c.label][0])
        cells["Avg"] = (sum(sum(v) / len(v) for v in per_task.values()) / len(per_task), None, None)
    return cells


def majority_metrics(task_name: str, data_dir: str | None = None) -> dict[str, float]:
    """Dev metrics (leaderboard column names) of predicting the training split's most frequent label for every
    dev example; for STS-B its mean score, a constant, whose correlations are 0.

    Raises:
        FileNotFoundError: the task's data is neither under ``data_dir``/bundled nor reachable on the hub.
    """
    import numpy as np

    from opdf_ray.data import compute_metrics, get_task, load_split

    task = get_task(task_name)
    train = load_split(task_name, "train", data_dir)[0]["label"]
    constant = float(train.mean()) if task.is_regression else int(train.value_counts().idxmax())
    out = {}
    for split in task.dev_splits:
        labels = load_split(task_name, split, data_dir)[0]["label"].to_numpy()
        prefix = "dev_mismatched_" if split == "validation_mismatched" else "dev_"
        out |= {prefix + m: v for m, v in compute_metrics(task, np.full(len(labels), constant), labels).items()}
    return out


def _local_data_dir(done: pd.DataFrame, task: str) -> str | None:
    """The data folder the task's trials used, when it exists here (else the bundled copy or the hub)."""
    for d in done.loc[done["task"].astype(str) == task, "data_dir"].dropna().unique():
        if Path(d).is_dir():
            return str(d)
    return None


def reference_rows(board: pd.DataFrame, columns: list[Column]) -> list[dict]:
    """The rows every method is read against: the majority class (from the GLUE data itself) and the task-fine-
    tuned teacher the trials started from (mean ± std over the distinct teachers, i.e. seeds)."""
    done = usable(board)
    rows, cells = [], {}
    for task in dict.fromkeys(c.task for c in columns):
        try:
            scores = majority_metrics(task, _local_data_dir(done, task))
        except FileNotFoundError as e:
            print(f"report: no majority-class row for {task}: {str(e).splitlines()[0]}", file=sys.stderr)
            continue
        cells |= {c.label: (scores[c.metric], None, None) for c in columns if c.task == task}
    if cells:
        rows.append({"label": "Majority class", "cells": _with_average(cells, columns)})
    cells = {}
    for c in columns:
        metric = f"finetuned_teacher_{c.metric}"
        if metric not in done.columns:
            continue
        part = done[done["task"].astype(str) == c.task].dropna(subset=[metric])
        teachers = part.drop_duplicates(subset=["seed", metric])[metric]     # one value per fine-tuned teacher
        if len(teachers):
            cells[c.label] = _stats(teachers)
    if cells:
        rows.append({"label": "Teacher (fine-tuned)", "cells": _with_average(cells, columns)})
    return [r | {"train_params": "–", "inference_params": "–"} for r in rows]


def _variants(rows: pd.DataFrame, by: tuple[str, ...] = ()) -> list[tuple[tuple, pd.DataFrame]]:
    """One method's rows split by table row: (cores, bond, *``by`` values), dense first, compression last."""
    keys = ["opdf_cores", "mpo_bond", *by]
    groups = [(tuple(k), part) for k, part in rows.groupby(keys, observed=True, dropna=False, sort=False)]
    return sorted(groups, key=lambda g: (g[0][1] > 0, g[0][0], g[0][1], tuple(map(str, g[0][2:]))))


def _variant_label(method: str, key: tuple, by: tuple[str, ...], method_first: bool = False) -> str:
    cores, bond = int(key[0]), int(key[1])
    label = (METHOD_TITLES[method] if cores == 0 else f"+ OPDF ({cores} cores)" if bond == 0
             else f"+ MPO compression ({cores} cores, bond {bond})")      # truncated: not over-parameterised
    if method_first and cores:
        label = f"{METHOD_TITLES[method]} {label}"
    extras = ", ".join(f"{name} {_plain(value)}" for name, value in zip(by, key[2:]) if not pd.isna(value))
    return f"{label} [{extras}]" if extras else label


def check_compare(by: tuple[str, ...]) -> None:
    """``--compare`` takes hyperparameters (leaderboard columns a search varies)."""
    allowed = [k for k in RunSpec.hyperparameters() if k not in ("task", "method", "opdf_cores", "seed")]
    bad = [b for b in by if b not in allowed]
    if bad:
        raise ValueError(f"--compare {' '.join(bad)}: not a hyperparameter; allowed: {', '.join(allowed)}")


def build_table(board: pd.DataFrame, select_by: str = "selection", protocol: str = "selection",
                by: tuple[str, ...] = ()) -> Table:
    """The GLUE table: a row per (method, cores, bond) and, with ``by`` (an ablation), per value of those
    hyperparameters, each with its best configuration's cells."""
    chosen = best_configs(board, select_by, protocol, by)
    if chosen.empty:
        raise ValueError(f"no completed trials with protocol={protocol!r} in the leaderboard: nothing to tabulate "
                         f"(statuses present: {dict(board['status'].value_counts()) if len(board) else {}})")
    tasks = sorted(set(chosen["task"].astype(str)), key=list(TASKS).index)
    columns = columns_for(tasks)
    rows = []
    methods = [m for m in METHODS if m in set(chosen["method"])]
    for method in methods:
        for key, part in _variants(chosen[chosen["method"] == method], by):
            cells = {}
            for col in columns:
                values = part.loc[part["task"].astype(str) == col.task, col.metric].dropna()
                if len(values):
                    cells[col.label] = _stats(values)
            rows.append({"label": _variant_label(method, key, by), "method": method, "cores": int(key[0]),
                         "bond": int(key[1]), "cells": _with_average(cells, columns),
                         "train_params": _params(part, "trainable_params"),
                         "inference_params": _params(part, "inference_params")})
    return Table(columns, rows, reference_rows(board, columns))


@dataclass(frozen=True)
class Difference:
    """OPDF minus dense on the dev score, paired by seed (same data subset, selection slice and teacher)."""

    mean: float
    half_width: float        # of the 95% t-interval of the mean; inf with one seed (no noise estimate)
    seeds: int

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


def paired_difference(opdf: dict, dense: dict) -> Difference | None:
    """``opdf`` and ``dense``: seed → score. None when no seed has both."""
    from scipy.stats import t

    seeds = sorted(set(opdf) & set(dense))
    if not seeds:
        return None
    diffs = pd.Series([opdf[k] - dense[k] for k in seeds], dtype=float)
    if len(diffs) < 2:
        return Difference(float(diffs.mean()), math.inf, 1)
    half = float(t.ppf(0.975, len(diffs) - 1) * diffs.std(ddof=1) / math.sqrt(len(diffs)))
    return Difference(float(diffs.mean()), half, len(diffs))


def opdf_verdicts(chosen: pd.DataFrame, by: tuple[str, ...] = ()) -> list[dict]:
    """Per method and over-parameterised (or compressed) row of the table: the paired difference to the method's
    dense student per task and over all tasks (per seed, the mean over tasks of its differences; seeds present in
    every task)."""
    tasks = sorted(set(chosen["task"].astype(str)), key=list(TASKS).index)
    out = []
    for method in [m for m in METHODS if m in set(chosen["method"])]:
        variants = _variants(chosen[chosen["method"] == method], by)
        dense = [part for key, part in variants if key[0] == 0]
        if not dense:
            continue
        dense = max(dense, key=len)        # with --compare, the dense row most trials share

        def scores(part: pd.DataFrame, task: str) -> dict:
            part = part[part["task"].astype(str) == task]
            return dict(zip(part["seed"].astype(int), part["dev_score"]))

        for key, part in variants:
            if key[0] == 0:
                continue
            diffs = {}                     # task → seed → OPDF − dense, computed once per task
            for task in tasks:
                mine, base = scores(part, task), scores(dense, task)
                if set(mine) & set(base):
                    diffs[task] = {seed: mine[seed] - base[seed] for seed in set(mine) & set(base)}
            if not diffs:
                continue
            per_task = {task: paired_difference(d, dict.fromkeys(d, 0.0)) for task, d in diffs.items()}
            overall = None
            if len(diffs) == len(tasks) > 1:
                common = set.intersection(*(set(d) for d in diffs.values()))
                overall = paired_difference({k: sum(d[k] for d in diffs.values()) / len(tasks) for k in common},
                                            dict.fromkeys(common, 0.0))
            elif len(tasks) == 1:
                overall = per_task[tasks[0]]
            out.append({"label": _variant_label(method, key, by, method_first=True), "tasks": per_task,
                        "overall": overall})
    return out


VERDICT_NOTE = ("Δ = OPDF − dense student, on the dev score each task selects by ({metrics}), paired by seed "
                "(the same training subset, selection slice and teacher); mean ± half-width of its 95% t-interval "
                "(seeds). Verdict: *gain* when the interval lies above 0, *loss* when below, otherwise *no gain or "
                "loss*: the difference is within the seed noise. All tasks: per seed, the mean of its task "
                "differences.")


def _verdict_grid(verdicts: list[dict], tasks: list[str]) -> tuple[str, list[str], list[list[str]]]:
    """The note, the header and the cells of the verdict table (one place for Markdown and HTML)."""
    note = VERDICT_NOTE.format(metrics=", ".join(f"{_task_label(t)} {METRIC_NAMES[TASKS[t].selection_metric]}"
                                                 for t in tasks))
    head = ["Method", *[_task_label(t) for t in tasks], *(["All tasks"] if len(tasks) > 1 else []), "Verdict"]
    rows = []
    for v in verdicts:
        overall = v["overall"]
        rows.append([v["label"], *[f"{d.text()} {d.verdict}" if (d := v["tasks"].get(t)) else "–" for t in tasks],
                     *([overall.text() if overall else "–"] if len(tasks) > 1 else []),
                     overall.verdict if overall else "–"])
    return note, head, rows


def verdicts_markdown(verdicts: list[dict], tasks: list[str]) -> str:
    note, head, rows = _verdict_grid(verdicts, tasks)
    lines = [note, "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join([*r[:-1], f"**{r[-1]}**" if r[-1] != "–" else "–"]) + " |" for r in rows]
    return "\n".join(lines)


def verdicts_html(verdicts: list[dict], tasks: list[str]) -> str:
    note, head, rows = _verdict_grid(verdicts, tasks)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows)
    return (f"<p>{html.escape(note).replace('*', '')}</p><table id=\"verdicts\"><thead><tr>"
            + "".join(f"<th>{html.escape(h)}</th>" for h in head) + f"</tr></thead><tbody>{body}</tbody></table>")


def _task_label(task: str) -> str:
    return task.upper().replace("SST2", "SST-2").replace("STSB", "STS-B")


def _params(part: pd.DataFrame, column: str) -> str:
    values = sorted(set(part[column].dropna().astype(int)))
    if not values:
        return "–"
    text = list(dict.fromkeys(f"{v / 1e6:.1f}M" for v in values))   # heads differ by a few hundred: one value
    return text[0] if len(text) == 1 else f"{text[0]}–{text[-1]}"


def _cell(value, best: float | None, markdown: bool) -> str:
    if value is None:
        return "–"
    mean, std, n = value
    text = f"{mean:.1f}" if std is None else f"{mean:.1f} ± {std:.1f} ({n})"
    if best is not None and math.isclose(mean, best, abs_tol=1e-9):
        return f"**{text}**" if markdown else f"<b>{html.escape(text)}</b>"
    return text if markdown else html.escape(text)


def table_markdown(table: Table) -> str:
    best = table.bold()
    head = ["Method"] + [c.label for c in table.columns] + ["Avg", "# train params", "# inference params"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in table.references:
        cells = [_cell(r["cells"].get(c), None, True) for c in head[1:-2]]
        lines.append("| " + " | ".join([f"*{r['label']}*", *cells, r["train_params"], r["inference_params"]]) + " |")
    for r in table.rows:
        cells = [_cell(r["cells"].get(c), best.get(c), True) for c in head[1:-2]]
        lines.append("| " + " | ".join([r["label"], *cells, r["train_params"], r["inference_params"]]) + " |")
    return "\n".join(lines)


def table_html(table: Table) -> str:
    best = table.bold()
    head = ["Method"] + [c.label for c in table.columns] + ["Avg", "# train params", "# inference params"]
    out = ['<table id="glue-table"><thead><tr>' + "".join(f"<th>{html.escape(h)}</th>" for h in head)
           + "</tr></thead><tbody>"]
    for r in table.references:
        cells = [_cell(r["cells"].get(c), None, False) for c in head[1:-2]]
        out.append(f'<tr class="reference"><td>{html.escape(r["label"])}</td>' + "".join(f"<td>{c}</td>" for c in cells)
                   + f"<td>{r['train_params']}</td><td>{r['inference_params']}</td></tr>")
    for r in table.rows:
        cls = ' class="opdf"' if r["cores"] else ""
        cells = [_cell(r["cells"].get(c), best.get(c), False) for c in head[1:-2]]
        out.append(f"<tr{cls}><td>{html.escape(r['label'])}</td>" + "".join(f"<td>{c}</td>" for c in cells)
                   + f"<td>{r['train_params']}</td><td>{r['inference_params']}</td></tr>")
    return "\n".join(out + ["</tbody></table>"])


# -- plots -------------------------------------------------------------------------------------------------------
def _figure():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_cores(board: pd.DataFrame, chosen: pd.DataFrame, path: Path) -> Path | None:
    """Dev score of the best configuration vs MPO core count (0 = OPDF off), one line per (task, method)."""
    chosen = chosen[chosen["mpo_bond"] == 0]          # over-parameterised only (compression is another question)
    if chosen.empty or chosen["opdf_cores"].nunique() < 2:
        return None
    plt = _figure()
    fig, ax = plt.subplots(figsize=(6, 4))
    means = chosen.groupby(["task", "method", "opdf_cores"], observed=True)["dev_score"].mean().reset_index()
    for (task, method), part in means.groupby(["task", "method"], observed=True):
        ax.plot(part["opdf_cores"], part["dev_score"], marker="o",
                label=f"{task} {METHOD_TITLES.get(method, method)}")
    ax.set(xlabel="MPO cores (0 = OPDF off)", ylabel="dev score (selection metric)", title="Dev score vs cores")
    ax.legend(fontsize=7)
    return _save(fig, path)


def plot_lr(board: pd.DataFrame, path: Path) -> Path | None:
    """Selection score of every completed or pruned trial against its student learning rate (log axis)."""
    rows = board[board["status"].isin(["completed", "pruned"])].dropna(subset=["selection_score"])
    if rows.empty:
        return None
    plt = _figure()
    fig, ax = plt.subplots(figsize=(6, 4))
    for (method, opdf), part in rows.groupby(["method", "opdf"], observed=True):
        ax.scatter(part["lr"], part["selection_score"], label=f"{METHOD_TITLES[method]}{' +OPDF' if opdf else ''}",
                   alpha=0.7)
    ax.set_xscale("log")
    ax.set(xlabel="student learning rate", ylabel="selection score", title="Sensitivity to the student lr")
    ax.legend(fontsize=7)
    return _save(fig, path)


def plot_curves(board: pd.DataFrame, path: Path, top: int = 5) -> Path | None:
    """Selection score per epoch of the ``top`` trials by selection score."""
    rows = board.dropna(subset=["curve", "selection_score"]).nlargest(top, "selection_score")
    if rows.empty:
        return None
    plt = _figure()
    fig, ax = plt.subplots(figsize=(6, 4))
    for _, r in rows.iterrows():
        try:
            points = json.loads(r["curve"])
        except ValueError:                 # a hand-edited or foreign row: its curve is left out, not the report
            warnings.warn(f"report: trial {r['trial_id']} has no readable curve ({r['curve'][:40]!r})", stacklevel=2)
            continue
        if points:
            ax.plot([p[0] for p in points], [p[1] for p in points], marker=".",
                    label=f"{r['task']} {METHOD_TITLES.get(r['method'], r['method'])} c={r['opdf_cores']} "
                          f"({r['trial_id']})")
    ax.set(xlabel="epoch", ylabel="selection score", title=f"Learning curves of the top {len(rows)} trials")
    ax.legend(fontsize=7)
    return _save(fig, path)


SEARCHED = tuple(f.name for f in dataclasses.fields(RunSpec) if f.name in RunSpec.hyperparameters()
                 and (f.metadata["type"] or type(f.default)) in (int, float))   # numeric hyperparameters


def param_importance(board: pd.DataFrame) -> dict[str, float]:
    """Optuna's parameter importances (its default evaluator) of the searched numeric parameters for the selection
    score, from the completed trials of the largest task; empty when fewer than 4 trials or nothing varied."""
    import optuna

    done = board[board["status"] == "completed"].dropna(subset=["selection_score"])
    if done.empty:
        return {}
    task = done["task"].astype(str).value_counts().index[0]
    done = done[done["task"].astype(str) == task]
    params = [p for p in SEARCHED if done[p].notna().all() and done[p].nunique() > 1]
    if len(done) < 4 or not params:
        return {}
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize")
    dists = {}
    for p in params:
        low, high = float(done[p].min()), float(done[p].max())
        dists[p] = optuna.distributions.FloatDistribution(low, high, log=low > 0 and high / low > 20)
    for _, r in done.iterrows():
        study.add_trial(optuna.trial.create_trial(params={p: float(r[p]) for p in params}, distributions=dists,
                                                  value=float(r["selection_score"])))
    with warnings.catch_warnings():          # "importances will be equal" on flat scores: the plot shows it
        warnings.simplefilter("ignore")
        return optuna.importance.get_param_importances(study)


def plot_importance(importance: dict[str, float], path: Path) -> Path | None:
    if not importance:
        return None
    plt = _figure()
    fig, ax = plt.subplots(figsize=(6, 3))
    names = list(importance)[::-1]
    ax.barh(names, [importance[n] for n in names])
    ax.set(xlabel="importance (Optuna)", title="Which hyperparameters mattered")
    return _save(fig, path)


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path


# -- run summary -------------------------------------------------------------------------------------------------
def run_summary(board: pd.DataFrame) -> str:
    """Per run: trials by status, compute, and the best configuration as YAML for ``search_spaces/``."""
    parts = []
    for run_id, part in board.groupby("run_id", observed=True):
        counts = part["status"].value_counts().to_dict()
        hours = part["wall_seconds"].fillna(0).sum() / 3600
        epochs = part["epochs_done"].fillna(0).sum()
        lines = [f"### {run_id}", "", f"- trials: {len(part)} ({', '.join(f'{k} {v}' for k, v in counts.items())})",
                 f"- compute: {hours:.2f} trial-hours, {epochs:.0f} trial-epochs"]
        done = part[part["status"] == "completed"].dropna(subset=["selection_score"])
        if len(done):
            best = done.loc[done["selection_score"].idxmax()]
            lines += [f"- best trial {best['trial_id']}: selection {best['selection_score']:.2f}, dev "
                      f"{best['dev_score']:.2f}", "", "Best configuration (a search space; more seeds: add them "
                      "to `seed`):", "", "```yaml", config_block(best), "```"]
        parts.append("\n".join(lines))
    return "\n\n".join(parts)


def config_block(row) -> str:
    """A row's configuration as a complete, typed search space: a grid over its seed (one trial) that trains the
    same configuration (the same ``config_id``) on the task and preset the first line names."""
    spec, defaults = spec_of(row), RunSpec().to_dict()
    fixed = {k: spec[k] for k in RunSpec.hyperparameters()
             if k != "epochs" and (k == "method" or spec[k] != defaults[k])}
    space = {"fixed": fixed, "epochs": {spec["task"]: spec["epochs"]},
             "params": {"seed": {"type": "categorical", "choices": [spec["seed"]]}}}
    target = " ".join(f"--{k} {spec[k]}" for k in ("task", "preset", "teacher", "student") if spec[k] is not None)
    return (f"# config_id {row['config_id']}: opdf-ray search {target} --sampler grid --space THIS_FILE\n"
            + yaml.safe_dump(space, sort_keys=False).rstrip())


def _plain(value):
    if hasattr(value, "item"):
        value = value.item()
    return None if isinstance(value, float) and math.isnan(value) else value


# -- the whole report --------------------------------------------------------------------------------------------
CSS = """body{font-family:system-ui,sans-serif;margin:2em;color:#222}table{border-collapse:collapse;margin:1em 0}
th,td{border:1px solid #bbb;padding:4px 8px;text-align:right}td:first-child,th:first-child{text-align:left}
tr.opdf td:first-child{padding-left:1.5em;color:#555}
tr.reference td{font-style:italic;color:#555}th{background:#eee}img{max-width:640px;display:block;margin:1em 0}
pre{background:#f6f6f6;padding:1em}"""


def _check_is_leaderboard(root: str) -> None:
    """A search's storage root is a common mistake for its leaderboard: say where the leaderboard is."""
    from opdf_ray.storage import filesystem, join

    fs, base = filesystem(root)
    if fs.get_file_info(f"{base}/leaderboard").type == pafs.FileType.Directory and not [
            e for e in fs.get_file_info(pafs.FileSelector(base)) if e.base_name.startswith("task=")]:
        raise ValueError(f"{root} is a search's storage folder; its leaderboard is {join(root, 'leaderboard')}")


def read_boards(leaderboards: list[str], tasks: list[str] | None = None,
                methods: list[str] | None = None) -> pd.DataFrame:
    """The rows of one or more leaderboards (a study's main runs and its ablations, say), optionally only some
    tasks and methods."""
    frames = []
    for root in leaderboards:
        _check_is_leaderboard(root)
        frames.append(read_leaderboard(root))
    board = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    for column, wanted, allowed in (("task", tasks, TASKS), ("method", methods, METHODS)):
        if wanted:
            unknown = sorted(set(wanted) - set(allowed))
            if unknown:
                raise ValueError(f"unknown {column}(s) {unknown}; allowed: {', '.join(allowed)}")
            board = board[board[column].astype(str).isin(wanted)]
    return board


def render(leaderboard: str | list[str], out: str | Path, select_by: str = "selection", protocol: str = "selection",
           by: tuple[str, ...] = (), tasks: list[str] | None = None, methods: list[str] | None = None) -> Path:
    """Write ``report.md``, ``report.html`` (self-contained) and the PNG plots to ``out``; returns the HTML path.
    ``by``: one table row per value of these hyperparameters (an ablation); ``tasks``/``methods``: only those."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file; pass a folder for report.md, report.html and the plots")
    check_compare(by)
    leaderboards = [leaderboard] if isinstance(leaderboard, str) else list(leaderboard)
    with warnings.catch_warnings(record=True) as skipped:        # stray files: one line, not a flood
        warnings.simplefilter("always")
        board = read_boards(leaderboards, tasks, methods)
    if skipped:
        print(f"report: skipped {len(skipped)} file(s) that are not leaderboard rows, e.g. {skipped[0].message}",
              file=sys.stderr)
    unknown = sorted(set(board["method"].dropna()) - set(METHODS)) if len(board) else []
    if unknown:
        print(f"report: left out {int(board['method'].isin(unknown).sum())} row(s) of unknown method(s) {unknown}",
              file=sys.stderr)
        board = board[~board["method"].isin(unknown)]
    if board.empty:
        raise ValueError(f"the leaderboard at {' '.join(leaderboards)} has no rows"
                         f"{' of the tasks/methods asked for' if tasks or methods else ' yet'}; run a search first "
                         f"(python tune_main.py --task rte)")
    out.mkdir(parents=True, exist_ok=True)
    table = build_table(board, select_by, protocol, by)
    chosen = best_configs(board, select_by, protocol, by)
    plots = [p for p in (plot_cores(board, chosen, out / "dev_vs_cores.png"),
                         plot_lr(board, out / "lr_sensitivity.png"), plot_curves(board, out / "learning_curves.png"),
                         plot_importance(param_importance(board), out / "param_importance.png")) if p]
    rule = ("best mean selection score (held-out slice of train)" if select_by == "selection"
            else "best mean dev score (the papers' rule: optimistic)")
    truncated = int(board["teacher_truncated"].fillna(False).astype(bool).sum())
    intro = (f"{len(board)} trials from {board['run_id'].nunique()} run(s); protocol filter: {protocol}; "
             + (f"one row per value of {', '.join(by)}; " if by else "")
             + f"configuration chosen by {rule}. Cells: dev mean ± std (seeds). Reference rows (italic): the "
             f"majority class (the training split's most frequent label; STS-B: its mean score) and the task-fine-"
             f"tuned teacher the students start from (± std over its seeds)."
             + (f" {truncated} trial(s) distilled from a truncated teacher (written before opdf-ray fixed it) are "
                f"left out." if truncated else ""))
    repeats = duplicate_runs(board)
    if len(repeats):
        intro += (f" {len(repeats)} completed row(s) repeat a (configuration, seed) of a later row and are left out "
                  f"(each seed counts once): trials {', '.join(repeats['trial_id'].astype(str).head(8))}"
                  f"{' …' if len(repeats) > 8 else ''}.")
    summary = run_summary(board)
    verdicts = opdf_verdicts(chosen, by)
    tasks = list(dict.fromkeys(c.task for c in table.columns))
    help_md = ["## Does OPDF help?", verdicts_markdown(verdicts, tasks)] if verdicts else []
    help_html = f"<h2>Does OPDF help?</h2>{verdicts_html(verdicts, tasks)}" if verdicts else ""
    md = "\n\n".join(["# opdf-ray GLUE report", intro, table_markdown(table), *help_md, "## Plots",
                      "\n".join(f"![{p.stem}]({p.name})" for p in plots) or "(not enough trials for plots)",
                      "## Runs", summary])
    (out / "report.md").write_text(md + "\n")
    images = "".join(f'<img alt="{p.stem}" src="data:image/png;base64,{base64.b64encode(p.read_bytes()).decode()}">'
                     for p in plots)
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>opdf-ray GLUE report</title><style>{CSS}"
            f"</style></head><body><h1>opdf-ray GLUE report</h1><p>{html.escape(intro)}</p>{table_html(table)}"
            f"{help_html}<h2>Plots</h2>{images or '<p>(not enough trials for plots)</p>'}<h2>Runs</h2>"
            f"<pre>{html.escape(summary)}</pre></body></html>")
    (out / "report.html").write_text(page)
    return out / "report.html"


def main(argv: list[str] | None = None, prog: str = "python -m opdf_ray.report") -> int:
    from opdf_ray.commands import HelpFormatter, split_list

    parser = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0], formatter_class=HelpFormatter)
    parser.add_argument("leaderboard", nargs="+",
                        help="leaderboard directory (or URI), e.g. outputs/search/leaderboard; several are read as one")
    parser.add_argument("--out", default="outputs/report", help="output directory")
    parser.add_argument("--select-by", default="selection", choices=SELECT_BY,
                        help="what picks each cell's configuration: selection score (honest) or dev (papers')")
    parser.add_argument("--protocol", default="selection", choices=PROTOCOLS,
                        help="which runs to include, by the protocol they selected checkpoints with")
    parser.add_argument("--compare", nargs="+", default=[], metavar="HYPERPARAMETER",
                        help="an ablation: one row per value of these hyperparameters (e.g. opdf_align_weight) "
                             "instead of each variant's best configuration")
    parser.add_argument("--tasks", nargs="+", help="only these tasks (sst2,mrpc or sst2 mrpc)")
    parser.add_argument("--methods", nargs="+", help="only these methods (kd,theseus or kd theseus)")
    args = parser.parse_args(argv)
    args.tasks, args.methods, args.compare = split_list(args.tasks), split_list(args.methods), split_list(args.compare)
    try:
        page = render(args.leaderboard, args.out, args.select_by, args.protocol, tuple(args.compare), args.tasks,
                      args.methods)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"report: {page} and {page.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

