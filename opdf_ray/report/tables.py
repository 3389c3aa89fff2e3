"""The GLUE table of a report: each cell's best configuration, reference rows, and its Markdown and HTML."""

from __future__ import annotations

import dataclasses
import html
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from opdf_ray.config import METHOD_TITLES, METHODS, RunSpec
from opdf_ray.tasks import TASKS, Task, get_task
from opdf_ray.leaderboard import VARIANT, tasks_of, usable
from opdf_ray.report.stats import mean_interval

METRIC_NAMES = {"accuracy": "Acc", "f1": "F1", "mcc": "MCC", "pearson": "Pearson", "spearman": "Spearman"}
SELECT_BY = ("selection", "dev")
PROTOCOLS = ("selection", "dev", "all")
POOLED = -1       # the table-row cores of a pooled OPDF row (``pool_cores``): its true count is in ``cores_used``


@dataclass(frozen=True)
class Column:
    task: str
    metric: str          # a leaderboard column, e.g. dev_f1 or dev_mismatched_accuracy
    label: str


def columns_for(tasks: dict[str, Task]) -> list[Column]:
    """The table's metric columns, in report order (``leaderboard.tasks_of``): CoLA MCC, STS-B P/S, MRPC/QQP F1/Acc,
    MNLI m/mm, other GLUE tasks Acc, then each dataset's metrics."""
    out = []
    for name, task in tasks.items():
        if name == "mnli" and not task.source:
            out += [Column(name, "dev_accuracy", "MNLI-m"), Column(name, "dev_mismatched_accuracy", "MNLI-mm")]
            continue
        label = task_label(name)
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
    rows: list[dict]      # {"label", "method", "cores", "bond", "cells": {label: (mean, ±95%, n) | None}, "params"}
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
    """``(mean, half-width of its 95% t-interval, seeds)`` (``stats.mean_interval``)."""
    return mean_interval(values.tolist())


def _with_average(cells: dict, columns: list[Column]) -> dict:
    """``cells`` plus ``Avg`` (the mean over tasks of each task's mean metric) when every column has a value."""
    if all(c.label in cells for c in columns):
        per_task = {}
        for c in columns:
            per_task.setdefault(c.task, []).append(cells[c.label][0])
        cells["Avg"] = (sum(sum(v) / len(v) for v in per_task.values()) / len(per_task), None, None)
    return cells


def majority_metrics(task: Task | str, data_dir: str | None = None) -> dict[str, float]:
    """Dev metrics (leaderboard column names) of predicting the training split's most frequent label for every
    dev example; for a regression (STS-B) its mean score, a constant, whose correlations are 0.

    Raises:
        FileNotFoundError: the task's data is neither under ``data_dir``/bundled nor reachable on the hub.
    """
    import numpy as np

    from opdf_ray.data import compute_metrics, load_split

    task = task if isinstance(task, Task) else get_task(task)
    train = load_split(task, "train", data_dir)[0]["label"]
    constant = float(train.mean()) if task.is_regression else int(train.value_counts().idxmax())
    out = {}
    for split in task.dev_splits:
        labels = load_split(task, split, data_dir)[0]["label"].to_numpy()
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
    """The rows every method is read against: the majority class (from the task's data itself) and the task-fine-
    tuned teacher the trials started from (mean ± 95% t-interval over the distinct teachers, i.e. seeds)."""
    done = usable(board)
    rows, cells, known = [], {}, tasks_of(done)
    for task in dict.fromkeys(c.task for c in columns):
        try:
            scores = majority_metrics(known[task], _local_data_dir(done, task))
        except (FileNotFoundError, ValueError) as e:        # a dataset moved or changed since the search
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


def pool_cores(board: pd.DataFrame) -> pd.DataFrame:
    """``board`` with every over-parameterised (full-rank OPDF) row in one table row per method, whatever its core
    count: its best configuration per task competes with the dense one (a search's OPDF arm, which searched the
    cores). The true count moves to ``cores_used``; compression rows (bond > 0) keep theirs."""
    board = board.assign(cores_used=board["opdf_cores"])
    board.loc[(board["opdf_cores"] > 0) & (board["opdf_bond_dim"].fillna(0) == 0), "opdf_cores"] = POOLED
    return board


def variants(rows: pd.DataFrame, by: tuple[str, ...] = ()) -> list[tuple[tuple, pd.DataFrame]]:
    """One method's rows split by table row: (cores, bond, L2-SP on, *``by`` values): dense first (then its L2-SP
    anchor), compression last."""
    keys = ["opdf_cores", "mpo_bond", "l2sp", *by]
    groups = [(tuple(k), part) for k, part in rows.groupby(keys, observed=True, dropna=False, sort=False)]
    return sorted(groups, key=lambda g: (g[0][1] > 0, g[0][0] != 0, g[0][0], g[0][1], bool(g[0][2]),
                                         tuple(map(str, g[0][3:]))))


def variant_label(method: str, key: tuple, by: tuple[str, ...], method_first: bool = False,
                  part: pd.DataFrame | None = None) -> str:
    """The row's name; a pooled OPDF row (``pool_cores``) names the core counts its tasks chose, from ``part``."""
    cores, bond = int(key[0]), int(key[1])
    if cores == POOLED:
        used = sorted(set(part["cores_used"].astype(int)))
        label = f"+ OPDF (searched: {', '.join(map(str, used))} cores)"
    else:
        label = (METHOD_TITLES[method] if cores == 0 else f"+ OPDF ({cores} cores)" if bond == 0
                 else f"+ MPO compression ({cores} cores, bond {bond})")      # truncated: not over-parameterised
    if key[2]:                                          # the dense anchor (L2-SP) on this row
        label = f"{label} + L2-SP" if cores else "+ L2-SP"
    if method_first and (cores or key[2]):
        label = f"{METHOD_TITLES[method]} {label}"
    inert = _alignment_inert(part)
    by_ratio = _aligned_by_ratio(part)
    extras = ", ".join(f"{name} {_short(_plain(value))}" for name, value in zip(by, key[3:])
                       if not pd.isna(value) and not (inert and name.startswith("opdf_align"))
                       and not (by_ratio and name == "opdf_align_weight"))
    return f"{label} [{extras}]" if extras else label


def _alignment_inert(part: pd.DataFrame | None) -> bool:
    """Whether the row's alignment settings name nothing: central-only training freezes the auxiliary cores the
    alignment would act on (``methods.base.Method.aligns``), so a label listing its weight would mislead."""
    if part is None or not {"opdf_train_cores", "opdf_align_cores"} <= set(part.columns):
        return False
    return bool(((part["opdf_train_cores"] == "central") & (part["opdf_align_cores"] == "auxiliary")).all())


def _aligned_by_ratio(part: pd.DataFrame | None) -> bool:
    """Whether the row's alignment strength is a gradient ratio (``opdf_align_ratio`` > 0): its raw
    ``opdf_align_weight`` is then never read (``methods.base.Method.add_alignment``), so a label leaves it out."""
    if part is None or "opdf_align_ratio" not in part.columns:
        return False
    return bool((part["opdf_align_ratio"].fillna(0) > 0).all())


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
    columns = columns_for(tasks_of(chosen))
    rows = []
    methods = [m for m in METHODS if m in set(chosen["method"])]
    for method in methods:
        method_variants = variants(chosen[chosen["method"] == method], by)
        if not any(key[0] == 0 and not key[2] for key, _ in method_variants):
            rows.append(_missing_dense_row(board, method))     # its OPDF rows stay under the method's name
        for key, part in method_variants:
            cells = {}
            for col in columns:
                values = part.loc[part["task"].astype(str) == col.task, col.metric].dropna()
                if len(values):
                    cells[col.label] = _stats(values)
            rows.append({"label": variant_label(method, key, by, part=part), "method": method, "cores": int(key[0]),
                         "bond": int(key[1]), "cells": _with_average(cells, columns),
                         "train_params": _params(part, "trainable_params"),
                         "inference_params": _params(part, "inference_params")})
    return Table(columns, rows, reference_rows(board, columns))


def _missing_dense_row(board: pd.DataFrame, method: str) -> dict:
    """The method's header row when no dense student of it completed: "–" cells and what became of its trials."""
    dense = board[(board["method"] == method) & (board["opdf_cores"] == 0)]
    counts = dense["status"].value_counts().to_dict()
    why = ", ".join(f"{n} {status}" for status, n in sorted(counts.items())) or "not run"
    return {"label": f"{METHOD_TITLES[method]} (dense: {why})", "method": method, "cores": 0, "bond": 0, "cells": {},
            "train_params": "–", "inference_params": "–"}


def _plain(value):
    if hasattr(value, "item"):
        value = value.item()
    return None if isinstance(value, float) and math.isnan(value) else value


def _short(value):
    """A searched float in three significant digits (0.0856, not 0.08562913278818232); set values stay as given."""
    return f"{value:.3g}" if isinstance(value, float) and len(repr(value)) > 8 else value


def task_label(task: str) -> str:
    """GLUE's spelling of its task names (SST-2, STS-B); a dataset's name as it is."""
    return task.upper().replace("SST2", "SST-2").replace("STSB", "STS-B") if task in TASKS else task


def _params(part: pd.DataFrame, column: str) -> str:
    values = sorted(set(part[column].dropna().astype(int)))
    if not values:
        return "–"
    text = list(dict.fromkeys(f"{v / 1e6:.1f}M" for v in values))   # heads differ by a few hundred: one value
    return text[0] if len(text) == 1 else f"{text[0]}–{text[-1]}"


def _cell(value, best: float | None, markdown: bool) -> str:
    if value is None:
        return "–"
    mean, half, n = value
    text = f"{mean:.1f}" if half is None else f"{mean:.1f} ({n})" if n == 1 else f"{mean:.1f} ± {half:.1f} ({n})"
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
