"""``tune_main.py``: parse and validate everything (flags, search space, data) before Ray starts, then search.

    python tune_main.py --task rte --preset minilm --num-samples 4 --max-train-samples 512

``--task`` takes one task, a comma list or ``all``; each task is its own Tune experiment (``<name>-<task>``) and
Optuna study under ``--storage``, so ``--resume`` continues exactly that search.
"""

from __future__ import annotations

import argparse
import logging
import sys

from opdf_ray.commands import CONFIG_HELP, HelpFormatter, parse_with_config, split_list
from opdf_ray.config import PRESETS
from opdf_ray.tasks import PROBLEM_TYPES, TASKS
from opdf_ray.hpo.checks import check_trial_settings
from opdf_ray.hpo.execute import execute
from opdf_ray.text import shell_join

log = logging.getLogger("opdf_ray")


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description="Ray Tune + Optuna + ASHA search of OPDF distillation over "
                                "GLUE tasks; every finished trial lands in a Parquet leaderboard.",
                                formatter_class=HelpFormatter)
    p.set_defaults(config_settings={})      # filled by parse_args: the --config settings that have no flag here
    what = p.add_argument_group("what to search (task, models, space, data)")
    what.add_argument("--task", help=f"one task, a comma list, or 'all' ({', '.join(TASKS)}); or your own data: a "
                      f"CSV/TSV/JSON Lines/Parquet file, a folder of train.<ext> (and validation.<ext>) or a hub "
                      f"dataset id; required here or in --config")
    what.add_argument("--text-columns", help="your own data: its one or two text columns, e.g. sentence or "
                      "question,passage")
    what.add_argument("--label-column", help="your own data: its label column (default: label)")
    what.add_argument("--problem-type", choices=PROBLEM_TYPES, help="your own data: classification or regression "
                      "(default: detected; labels with a fractional number are scores)")
    what.add_argument("--label-names", help="your own classification data: its classes in id order, a JSON list "
                      "(default: its training labels, sorted)")
    what.add_argument("--config", help=CONFIG_HELP + "; settings without a flag here reach every trial, as --set does")
    what.add_argument("--preset", default="minilm", choices=tuple(PRESETS), help="model preset (opdf-ray run --help)")
    what.add_argument("--teacher", help="teacher path or hub id (overrides the preset's)")
    what.add_argument("--space", default=None, help="search space YAML (default: search_spaces/default.yaml)")
    what.add_argument("--methods", "--method", nargs="+", help="methods to keep from the space, e.g. kd,lgtm or "
                      "kd lgtm (--method: the same)")
    what.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                      help="any other run setting for every trial, repeatable (e.g. --set mpo_weight=per-forward "
                      "--set student=PATH; opdf-ray run --help lists them); the space must not set it too")
    what.add_argument("--data-dir", help="GLUE folder (default: $OPDF_GLUE_DIR, the bundled data/glue, then the hub)")
    what.add_argument("--seed", type=int, default=42, help="trial seed (data split, init) and the Optuna sampler seed")
    what.add_argument("--max-train-samples", type=int, help="quick runs: at most this many training examples")
    what.add_argument("--max-epochs", type=int, help="quick runs: cap the space's epochs per task (a run's "
                      "--epochs sets them; a search draws or fixes them in its space)")
    what.add_argument("--max-length", type=int, help="override the space's max_length")
    search = p.add_argument_group("the search (sampler, early stopping, trials)")
    search.add_argument("--num-samples", type=int, default=None, help="trials per task (default: 8; with --sampler "
                        "grid, the grid's size)")
    search.add_argument("--sampler", default="tpe", choices=("tpe", "grid"), help="tpe: Optuna TPE with ASHA early "
                        "stopping; grid: every combination of an all-categorical space once, each trial to its last "
                        "epoch (fixed configurations, e.g. a multi-seed study with --seed)")
    search.add_argument("--no-early-stopping", action="store_true", help="ASHA off: every trial runs all its epochs")
    search.add_argument("--no-cover-cells", action="store_true", help="TPE: do not start with one trial per "
                        "(method, OPDF on/off) cell of the space (the first trials then are TPE's random start)")
    search.add_argument("--tpe-startup-trials", type=int, default=None, help="random trials before TPE models the "
                        "results (default: a third of --num-samples, 2 to 10; Optuna's own 10 keeps small searches "
                        "random)")
    search.add_argument("--grace-epochs", type=int, default=1, help="ASHA: epochs every trial gets before it can stop")
    search.add_argument("--name", default="opdf", help="search name; experiments are <name>-<task> (deterministic)")
    search.add_argument("--resume", action="store_true", help="restore the interrupted search of the same name")
    execution = p.add_argument_group("execution (cluster, workers, retries)")
    execution.add_argument("--address", help="Ray cluster address (default: start Ray locally; 'auto' on a cluster)")
    execution.add_argument("--max-concurrent", type=int, default=None, help="trials at once (default: what the "
                           "cluster fits)")
    execution.add_argument("--workers-per-trial", type=int, default=1, help="data-parallel Ray Train workers per "
                           "trial")
    execution.add_argument("--cpus-per-worker", type=float, default=None, help="default: the CPUs a trial's share "
                           "allows")
    execution.add_argument("--gpus-per-worker", type=float, default=None, help="default: 1 when the cluster has "
                           "GPUs, else 0; a fraction (0.25) packs single-worker trials onto one GPU")
    execution.add_argument("--max-failures", type=int, default=2, help="worker errors a trial recovers from "
                           "(checkpoint)")
    execution.add_argument("--cache-dir", help="tokenised splits and models cache (default: ~/.cache/opdf-ray)")
    out = p.add_argument_group("results, tracking and console")
    out.add_argument("--storage", default="outputs/search", help="local directory or cloud URI for the experiments, "
                     "teachers and leaderboard (a run's --output-dir is where its one student goes)")
    out.add_argument("--leaderboard", default=None, help="Parquet leaderboard directory (default: "
                     "<storage>/leaderboard)")
    out.add_argument("--optuna-storage", help="the Optuna study's storage: a database URL (postgresql://…, "
                     "sqlite:///…) or a journal file (.journal/.log); default: <storage>/optuna.journal "
                     "(`optuna-dashboard` opens it), in memory for a cloud --storage")
    out.add_argument("--mlflow", nargs="?", const="", metavar="TRACKING_URI",
                     help="log every trial to MLflow (default URI: sqlite:///<storage>/mlflow.db)")
    out.add_argument("--mlflow-students", action="store_true", help="with --mlflow: each completed trial's merged "
                     "student becomes its run's 'student' artifact (~20-90 MB a trial)")
    out.add_argument("--wandb", metavar="PROJECT", help="log every trial to this Weights & Biases project "
                     "(offline: WANDB_MODE=offline, then `wandb sync`)")
    out.add_argument("--print-config", action="store_true", help="print the effective search options and run "
                     "settings as YAML that --config reads back, and stop")
    out.add_argument("-v", "--verbose", action="count", default=0, help="more console detail: -v Tune's status "
                     "table and every trial process's log, -vv every result too (default: one line per trial event)")
    return p


def parse_args(argv: list[str] | None = None, prog: str | None = None) -> argparse.Namespace:
    """The search's arguments, a ``--config`` file's settings included (flags override it). Raises ``ValueError``
    or ``FileNotFoundError`` for a bad config file."""
    parser = build_parser(prog)
    args, unflagged = parse_with_config(parser, argv)
    args.config_settings = unflagged
    if not args.task:
        parser.error("the following arguments are required: --task (or task: in --config)")
    check_trial_settings(args.config_settings, f"--config {args.config}")
    args.methods = split_list(args.methods)
    return args


def effective_config(args: argparse.Namespace, parser: argparse.ArgumentParser) -> dict:
    """The search as one ``--config`` mapping: every option's value, then the run settings every trial gets
    (``--config``'s and ``--set``'s)."""
    from opdf_ray.config import parse_setting

    skip = {"help", "config", "print_config", "set"}
    options = {a.dest: getattr(args, a.dest) for a in parser._actions if a.option_strings and a.dest not in skip}
    return options | args.config_settings | dict(parse_setting(text) for text in args.set)


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    try:
        args = parse_args(argv, prog)
        if args.print_config:
            import yaml

            print(yaml.safe_dump(effective_config(args, build_parser(prog)), sort_keys=False), end="")
            return 0
        outcome = execute(args)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:           # at any phase (the teacher's fine-tune included): one line, resumable
        print("interrupted: every finished trial is in the leaderboard and a fine-tuned teacher is kept only "
              "when complete; run the same command with --resume to go on", file=sys.stderr)
        return 130
    if outcome.rows is not None:
        print(f"leaderboard: {outcome.leaderboard} ({len(outcome.rows)} rows); best per (task, method, OPDF on/off):")
        best = outcome.best
        print(best.to_string(index=False) if len(best) else "  (no completed trial yet)")
        print("next:")
        if (best["status"] == "completed").any():
            command = shell_join(["opdf-ray", "export", outcome.leaderboard, "--out", "best"])
            print(f"  {command}" + (" --task TASK" if best["task"].nunique() > 1 else "")
                  + "   # the best student, a Hugging Face folder")
        print(f"  {shell_join(['opdf-ray', 'report', outcome.leaderboard, '--out', 'outputs/report'])}"
              f"   # tables, verdicts, plots")
        print(f"  {shell_join(['tensorboard', '--logdir', args.storage])}   # every trial's curves")
    if outcome.failed:
        print(f"error: the search of {', '.join(outcome.failed)} stopped early (see above); the other tasks "
              f"finished", file=sys.stderr)
        return 1
    return 0
