"""The report's plots (PNG, matplotlib's Agg backend): dev score vs cores, lr sensitivity, learning curves and
parameter importance."""

from __future__ import annotations

import dataclasses
import json
import warnings
from pathlib import Path

import pandas as pd

from opdf_ray.config import METHOD_TITLES, RunSpec
from opdf_ray.report.tables import task_label


def _figure():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_cores(board: pd.DataFrame, chosen: pd.DataFrame, path: Path) -> Path | None:
    """Dev score of the best configuration vs MPO core count (0 = OPDF off), one line per (task, method). The axis
    has one evenly spaced tick per core count that ran, so a line never suggests counts in between."""
    chosen = chosen[chosen["mpo_bond"] == 0]          # over-parameterised only (compression is another question)
    if chosen.empty or chosen["opdf_cores"].nunique() < 2:
        return None
    plt = _figure()
    fig, ax = plt.subplots(figsize=(6, 4))
    means = chosen.groupby(["task", "method", "opdf_cores"], observed=True)["dev_score"].mean().reset_index()
    counts = sorted(int(c) for c in means["opdf_cores"].unique())
    at = {count: i for i, count in enumerate(counts)}
    for (task, method), part in means.groupby(["task", "method"], observed=True):
        ax.plot([at[int(c)] for c in part["opdf_cores"]], part["dev_score"], marker="o",
                label=f"{task} {METHOD_TITLES.get(method, method)}")
    ax.set_xticks(range(len(counts)), [str(c) for c in counts])
    ax.set(xlabel="MPO cores (0 = OPDF off; only the counts that ran)", ylabel="dev score (selection metric)",
           title="Dev score vs cores")
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
    """Selection score per epoch of the ``top`` trials by selection score and, below, for the trials that measured
    it (schema ≥ 10), their drift from the start (``drift_deployed``): whether a gain came with a smaller move."""
    rows = board.dropna(subset=["curve", "selection_score"]).nlargest(top, "selection_score")
    if rows.empty:
        return None
    drifts = {i: _points(r, "drift_curve") for i, r in rows.iterrows()} if "drift_curve" in rows else {}
    drifts = {i: p for i, p in drifts.items() if p}
    plt = _figure()
    fig, axes = plt.subplots(2 if drifts else 1, 1, figsize=(6, 6.5 if drifts else 4), sharex=True, squeeze=False)
    ax = axes[0][0]
    for i, r in rows.iterrows():
        points = _points(r, "curve")
        if points:
            line, = ax.plot([p[0] for p in points], [p[1] for p in points], marker=".",
                            label=f"{r['task']} {METHOD_TITLES.get(r['method'], r['method'])} c={r['opdf_cores']} "
                                  f"({r['trial_id']})")
            if i in drifts:
                axes[1][0].plot([p[0] for p in drifts[i]], [p[1] for p in drifts[i]], marker=".",
                                color=line.get_color())
    ax.set(ylabel="selection score", title=f"Learning curves of the top {len(rows)} trials")
    ax.legend(fontsize=7)
    if drifts:
        axes[1][0].set(ylabel="drift ‖W − W0‖ / ‖W0‖ (mean)")
    axes[-1][0].set(xlabel="epoch")
    return _save(fig, path)


def _points(row, column: str) -> list:
    """A row's JSON curve (``[[epoch, value], …]``); an empty or unreadable one (a hand-edited or foreign row) is
    left out with a warning, not the report."""
    text = row.get(column)
    if not isinstance(text, str):
        return []
    try:
        return json.loads(text)
    except ValueError:
        warnings.warn(f"report: trial {row['trial_id']} has no readable {column} ({text[:40]!r})", stacklevel=3)
        return []


SEARCHED = tuple(f.name for f in dataclasses.fields(RunSpec) if f.name in RunSpec.hyperparameters()
                 and (f.metadata["type"] or type(f.default)) in (int, float))   # numeric hyperparameters


def importance_trials(board: pd.DataFrame) -> pd.DataFrame:
    """The completed trials the importance plot describes: those of the largest task (the first by name of equals,
    not by row order, so every render describes the same task)."""
    done = board[board["status"] == "completed"].dropna(subset=["selection_score"])
    if done.empty:
        return done
    counts = done["task"].astype(str).value_counts()
    return done[done["task"].astype(str) == min(counts[counts == counts.max()].index)]


def param_importance(board: pd.DataFrame) -> dict[str, float]:
    """Optuna's PED-ANOVA importances of the searched numeric parameters for the selection score, over
    ``importance_trials``; empty when fewer than 4 trials or nothing varied.

    PED-ANOVA (Optuna 5's default) is named, not left to the default: it has no random forest, so a
    committed report re-renders to the same plot in any process and row order; fANOVA would need a seed and
    still depend on the order of the rows. Sorted by importance, then name."""
    return _importances(importance_trials(board))


def _importances(done: pd.DataFrame) -> dict[str, float]:
    import optuna

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
        found = optuna.importance.get_param_importances(
            study, evaluator=optuna.importance.PedAnovaImportanceEvaluator(), params=params)
    # params named: without them Optuna builds the space from a set, whose order (string hashes) differs per process
    # and reorders equal bars. Rounded and tied by name, the order cannot hang on the last bits of a float sum.
    return dict(sorted(((p, round(v, 12)) for p, v in found.items()), key=lambda item: (-item[1], item[0])))


def plot_importance(board: pd.DataFrame, path: Path) -> Path | None:
    """The importances as bars, titled with the task and the trials they come from (a board may hold several)."""
    done = importance_trials(board)
    importance = _importances(done)
    if not importance:
        return None
    plt = _figure()
    fig, ax = plt.subplots(figsize=(6, 3))
    names = list(importance)[::-1]
    ax.barh(names, [importance[n] for n in names])
    ax.set(xlabel="importance for the selection score (Optuna PED-ANOVA)",
           title=f"Which hyperparameters mattered: {task_label(str(done['task'].iloc[0]))}, {len(done)} trials")
    return _save(fig, path)


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path
