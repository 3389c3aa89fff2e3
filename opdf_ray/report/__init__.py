"""Reports from a leaderboard: the OPDF paper's Table 1 layout (Markdown + self-contained HTML), plots, run summary.

    python -m opdf_ray.report outputs/search/leaderboard --out outputs/report [--select-by dev] [--protocol all]
    python -m opdf_ray.report main/ ablations/ --tasks mrpc --methods kd --compare opdf_align_weight   # an ablation
    python -m opdf_ray.report seeds/ --pool-cores     # one OPDF row per method: searches that chose their cores

Two reference rows come first: the majority class and the task-fine-tuned teacher. Then the methods (KD, ProKT,
LGTM, Theseus, fine-tuning), each followed by one ``+OPDF (n cores)`` row per core count present (and ``+ MPO
compression (n cores, bond r)`` rows for truncated, i.e. compressed, students; rows distilled from a truncated
teacher — leaderboards written before that was fixed — are left out); columns are
the tasks present with their metrics, the average, and the train/inference parameter counts. A cell is the
mean ± the half-width of its 95% t-interval over seeds of the *best configuration's* dev metric and its seed count;
the best configuration is the one with the highest mean selection score (the honest rule) or, with ``--select-by dev``, the highest mean dev score
(the papers' way). The best value per column is in bold. "Does OPDF help?" then compares each method's OPDF
student with its dense one, paired by seed, with a 95% interval and a verdict.
"""

from __future__ import annotations

import argparse
import base64
import html
import sys
from pathlib import Path

import pandas as pd
import pyarrow.fs as pafs

from opdf_ray.config import METHODS
from opdf_ray.storage import check_folder
from opdf_ray.text import markdown
from opdf_ray.tasks import TASKS, in_task_order
from opdf_ray.leaderboard import duplicate_runs, read_leaderboard, tasks_of
from opdf_ray.report.plots import plot_cores, plot_curves, plot_importance, plot_lr
from opdf_ray.report.summary import config_block, run_summary
from opdf_ray.report.tables import (PROTOCOLS, SELECT_BY, best_configs, build_table, check_compare, majority_metrics,
                                    pool_cores, table_html, table_markdown)
from opdf_ray.report.verdicts import opdf_verdicts, paired_difference, verdicts_html, verdicts_markdown

__all__ = ["best_configs", "build_table", "config_block", "main", "majority_metrics", "opdf_verdicts",
           "paired_difference", "read_boards", "render"]


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
    there = board["task"].astype(str).unique() if len(board) else []
    for column, wanted, allowed in (("task", tasks, in_task_order([*TASKS, *there])), ("method", methods, METHODS)):
        if wanted:
            unknown = sorted(set(wanted) - set(allowed))
            if unknown:
                raise ValueError(f"unknown {column}(s) {unknown}; allowed: {', '.join(allowed)}")
            board = board[board[column].astype(str).isin(wanted)]
    return board


def render(leaderboard: str | list[str], out: str | Path, select_by: str = "selection", protocol: str = "selection",
           by: tuple[str, ...] = (), tasks: list[str] | None = None, methods: list[str] | None = None,
           pooled: bool = False) -> Path:
    """Write ``report.md``, ``report.html`` (self-contained) and the PNG plots to ``out``; returns the HTML path.
    ``by``: one table row per value of these hyperparameters (an ablation); ``tasks``/``methods``: only those;
    ``pooled``: one OPDF row per method, its best configuration per task whatever its core count."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file; pass a folder for report.md, report.html and the plots")
    check_folder("--out", out)                      # a file above it, or nowhere a folder can be made
    check_compare(by)
    leaderboards = [leaderboard] if isinstance(leaderboard, str) else list(leaderboard)
    board = read_boards(leaderboards, tasks, methods)     # a file that is not a good row: a line each, skipped
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
    rows = pool_cores(board) if pooled else board
    table = build_table(rows, select_by, protocol, by)
    chosen = best_configs(rows, select_by, protocol, by)
    true_cores = chosen.assign(opdf_cores=chosen["cores_used"]) if pooled else chosen
    drawn = {"dev_vs_cores": plot_cores(board, true_cores, out / "dev_vs_cores.png"),
             "lr_sensitivity": plot_lr(board, out / "lr_sensitivity.png"),
             "learning_curves": plot_curves(board, out / "learning_curves.png"),
             "param_importance": plot_importance(board, out / "param_importance.png")}
    plots = [p for p in drawn.values() if p]
    skipped = "; ".join(f"{name}: {PLOT_NEEDS[name]}" for name, p in drawn.items() if p is None)
    rule = ("best mean selection score (held-out slice of train)" if select_by == "selection"
            else "best mean dev score (the papers' rule: optimistic)")
    truncated = int(board["teacher_truncated"].fillna(False).astype(bool).sum())
    intro = (f"{len(board)} trials from {board['run_id'].nunique()} run(s); protocol filter: {protocol}; "
             + (f"one row per value of {', '.join(by)}; " if by else "")
             + ("one OPDF row per method, its best configuration per task whatever its core count; " if pooled else "")
             + f"configuration chosen by {rule}. Cells: dev mean ± half-width of its 95% t-interval (seeds; one "
             f"seed: no interval). Reference rows (italic): the majority class (the training split's most frequent "
             f"label; STS-B: its mean score) and the task-fine-tuned teacher the students start from (± 95% "
             f"t-interval over its seeds)."
             + (f" {truncated} trial(s) distilled from a truncated teacher (written before opdf-ray fixed it) are "
                f"left out." if truncated else ""))
    repeats = duplicate_runs(board)
    intro_md = intro
    if len(repeats):
        ids = list(repeats["trial_id"].astype(str).head(8))
        sentence = (f" {len(repeats)} completed row(s) repeat a (configuration, seed) of a later row and are left out "
                    f"(each seed counts once): trials {{}}{' …' if len(repeats) > 8 else ''}.")
        intro += sentence.format(", ".join(ids))                       # HTML: escaped below
        intro_md += sentence.format(", ".join(map(markdown, ids)))     # ids are text, never markup
    summary = run_summary(board)
    verdicts = opdf_verdicts(chosen, by)
    shown = {c.task for c in table.columns}
    tasks = {name: task for name, task in tasks_of(board).items() if name in shown}
    help_md = ["## Does OPDF help?", verdicts_markdown(verdicts, tasks)] if verdicts else []
    help_html = f"<h2>Does OPDF help?</h2>{verdicts_html(verdicts, tasks)}" if verdicts else ""
    md = "\n\n".join(["# opdf-ray GLUE report", intro_md, table_markdown(table), *help_md, "## Plots",
                      "\n".join(f"![{p.stem}]({p.name})" for p in plots) or "(not enough trials for plots)",
                      *([f"Not drawn — {skipped}."] if skipped else []),
                      "## Runs", summary])
    (out / "report.md").write_text(md + "\n")
    images = "".join(f'<img alt="{p.stem}" src="data:image/png;base64,{base64.b64encode(p.read_bytes()).decode()}">'
                     for p in plots)
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>opdf-ray GLUE report</title><style>{CSS}"
            f"</style></head><body><h1>opdf-ray GLUE report</h1><p>{html.escape(intro)}</p>{table_html(table)}"
            f"{help_html}<h2>Plots</h2>{images or '<p>(not enough trials for plots)</p>'}"
            f"{f'<p>Not drawn — {html.escape(skipped)}.</p>' if skipped else ''}<h2>Runs</h2>"
            f"<pre>{html.escape(summary)}</pre></body></html>")
    (out / "report.html").write_text(page)
    return out / "report.html"


# why a plot can be missing from a report (it says so instead of dropping it without a word)
PLOT_NEEDS = {"dev_vs_cores": "needs completed trials of at least two core counts (dense counts as 0)",
              "lr_sensitivity": "needs a completed or pruned trial with a selection score",
              "learning_curves": "needs a trial with a recorded curve",
              "param_importance": "needs at least 4 completed trials of one task with a varied numeric parameter"}


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
    parser.add_argument("--pool-cores", action="store_true",
                        help="one OPDF row per method: its best configuration per task whatever its core count (for "
                             "searches that chose the cores) instead of a row per core count")
    parser.add_argument("--tasks", nargs="+", help="only these tasks (sst2,mrpc or sst2 mrpc)")
    parser.add_argument("--methods", nargs="+", help="only these methods (kd,theseus or kd theseus)")
    args = parser.parse_args(argv)
    args.tasks, args.methods, args.compare = split_list(args.tasks), split_list(args.methods), split_list(args.compare)
    try:
        page = render(args.leaderboard, args.out, args.select_by, args.protocol, tuple(args.compare), args.tasks,
                      args.methods, args.pool_cores)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"report: {page} and {page.with_suffix('.md')}")
    return 0

