"""The leaderboard: one Parquet row per finished trial (completed, pruned or failed), hive-partitioned by task.

Layout: ``<root>/task=<task>/<run_id>--<trial_id>.parquet``. A row is written under a dot-prefixed temporary
name and renamed, so readers never see half a file (Arrow and pandas skip dot files); the name is a function of
(run, trial), so writing a trial twice (a resumed search, a retried trial) replaces its row instead of adding
one. ``pd.read_parquet(root)`` reads it all; ``read_leaderboard`` does too, skipping foreign or corrupt files
with a warning, and ``best_rows`` / ``seed_summary`` answer the usual questions.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import platform
import uuid
import warnings

import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from opdf_ray import __version__
from opdf_ray.config import RunSpec
from opdf_ray.data import TASKS
from opdf_ray.storage import filesystem

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
STATUSES = ("completed", "pruned", "failed")
METRICS = tuple(dict.fromkeys(m for t in TASKS.values() for m in t.metrics))   # accuracy, f1, mcc, …
_ARROW = {str: pa.string(), int: pa.int64(), float: pa.float64(), bool: pa.bool_()}
# RunSpec fields that say where things live, not what was trained: not part of a configuration's identity
_NOT_CONFIG = ("seed", "data_dir", "cache_dir", "output_dir", "device", "threads", "save_model", "progress")


def _spec_fields() -> list[pa.Field]:
    out = []
    for f in dataclasses.fields(RunSpec):
        kind = f.metadata.get("type") or type(f.default)
        out.append(pa.field(f.name, _ARROW[kind]))
    return out


SCHEMA = pa.schema([
    pa.field("schema_version", pa.int32(), nullable=False),
    pa.field("run_id", pa.string(), nullable=False),
    pa.field("trial_id", pa.string(), nullable=False),
    pa.field("status", pa.string(), nullable=False),
    pa.field("error", pa.string()),
    *_spec_fields(),                                           # every hyperparameter of the trial
    pa.field("opdf", pa.bool_()),
    pa.field("config_id", pa.string()),                        # the hyperparameters minus seed and paths
    pa.field("protocol", pa.string()),
    pa.field("selection_metric", pa.string()),
    pa.field("selection_score", pa.float64()),
    pa.field("dev_score", pa.float64()),                       # the selection metric on the (first) dev split
    *[pa.field(f"selection_{m}", pa.float64()) for m in METRICS],
    *[pa.field(f"dev_{m}", pa.float64()) for m in METRICS],
    pa.field("dev_mismatched_accuracy", pa.float64()),         # MNLI; dev_accuracy is matched
    pa.field("teacher_dev_score", pa.float64()),
    pa.field("best_step", pa.int64()),
    pa.field("steps", pa.int64()),
    pa.field("epochs_done", pa.float64()),
    pa.field("iterations", pa.int64()),
    pa.field("trainable_params", pa.int64()),
    pa.field("inference_params", pa.int64()),
    pa.field("wall_seconds", pa.float64()),
    pa.field("train_seconds", pa.float64()),
    pa.field("examples_per_second", pa.float64()),
    pa.field("workers", pa.int64()),
    pa.field("nodes", pa.int64()),
    pa.field("restored_at_step", pa.int64()),
    pa.field("bytes_all_reduced", pa.int64()),
    pa.field("curve", pa.string()),                            # JSON [[epoch, selection score], …]
    pa.field("opdf_ray_version", pa.string()),
    pa.field("ray_version", pa.string()),
    pa.field("torch_version", pa.string()),
    pa.field("python_version", pa.string()),
    pa.field("hardware", pa.string()),
    pa.field("finished_at", pa.timestamp("s", tz="UTC")),
], metadata={"schema_version": str(SCHEMA_VERSION)})


def config_id(spec: dict) -> str:
    """Identity of a configuration across seeds: a hash of its hyperparameters (seed and paths left out)."""
    values = {k: v for k, v in sorted(spec.items()) if k not in _NOT_CONFIG}
    return hashlib.sha256(json.dumps(values, sort_keys=True, default=str).encode()).hexdigest()[:12]


def make_row(run_id: str, trial_id: str, status: str, spec: dict, result: dict | None, error: str | None = None,
             wall_seconds: float | None = None) -> dict:
    """One leaderboard row from a trial's spec and its last reported result (flat Tune metrics)."""
    import ray
    import torch

    if status not in STATUSES:
        raise ValueError(f"status={status!r}; allowed: {', '.join(STATUSES)}")
    result = result or {}
    task = TASKS[spec["task"]]
    dev_split = task.dev_splits[0]
    row = {name: None for name in SCHEMA.names}
    row |= {k: spec.get(k) for k in (f.name for f in dataclasses.fields(RunSpec))}
    row |= {
        "schema_version": SCHEMA_VERSION, "run_id": run_id, "trial_id": trial_id, "status": status, "error": error,
        "opdf": spec["opdf_cores"] >= 2, "config_id": config_id(spec), "protocol": spec["select_on"],
        "selection_metric": task.selection_metric,
        "selection_score": result.get("best_score"),
        "dev_score": result.get(f"dev/{dev_split}/{task.selection_metric}"),
        "teacher_dev_score": result.get(f"teacher_dev/{dev_split}/{task.selection_metric}"),
        "dev_mismatched_accuracy": result.get("dev/validation_mismatched/accuracy"),
        "best_step": result.get("best_step"), "steps": result.get("step"), "epochs_done": result.get("epoch"),
        "iterations": result.get("training_iteration"),
        "trainable_params": result.get("trainable_params"), "inference_params": result.get("inference_params"),
        "wall_seconds": wall_seconds if wall_seconds is not None else result.get("time_total_s"),
        "train_seconds": result.get("train_seconds"), "examples_per_second": result.get("examples_per_second"),
        "workers": result.get("workers"), "nodes": result.get("nodes"),
        "restored_at_step": result.get("restored_at_step"), "bytes_all_reduced": result.get("bytes_all_reduced"),
        "curve": result.get("curve"), "hardware": result.get("hardware"),
        "opdf_ray_version": __version__, "ray_version": ray.__version__, "torch_version": torch.__version__,
        "python_version": platform.python_version(), "finished_at": pd.Timestamp.now(tz="UTC").floor("s"),
    }
    for m in METRICS:
        row[f"selection_{m}"] = result.get(f"selection/{m}")
        row[f"dev_{m}"] = result.get(f"dev/{dev_split}/{m}")
    if status == "pruned" and row["selection_score"] is None:
        row["selection_score"] = result.get("score")
    for key, value in row.items():                 # a NaN trial reports -inf: store "no score", not a number
        if isinstance(value, float) and not math.isfinite(value):
            row[key] = None
    return row


def write_row(root: str, row: dict) -> str:
    """Write one row atomically to ``<root>/task=<task>/<run_id>--<trial_id>.parquet``; returns its path."""
    fs, base = filesystem(root)
    folder = f"{base}/task={row['task']}"
    fs.create_dir(folder, recursive=True)
    name = f"{row['run_id']}--{row['trial_id']}.parquet"
    tmp = f"{folder}/.{name}.{uuid.uuid4().hex[:8]}.tmp"
    table = pa.Table.from_pylist([row], schema=SCHEMA)
    with fs.open_output_stream(tmp) as out:
        pq.write_table(table.drop_columns(["task"]), out)   # task lives in the partition directory
    fs.move(tmp, f"{folder}/{name}")
    return f"{folder}/{name}"


def read_leaderboard(root: str) -> pd.DataFrame:
    """Every row under ``root``; a file that is not a leaderboard row (corrupt, foreign schema) is skipped
    with a warning naming it, so one bad file never hides the rest."""
    fs, base = filesystem(root)
    info = fs.get_file_info(base)
    if info.type == pafs.FileType.NotFound:
        raise FileNotFoundError(f"no leaderboard at {root}")
    selector = pafs.FileSelector(base, recursive=True)
    frames = []
    for entry in fs.get_file_info(selector):
        name = entry.base_name
        if entry.type != pafs.FileType.File or name.startswith((".", "_")):
            continue
        task = _partition_task(entry.path, base)
        try:
            if task is None or not name.endswith(".parquet"):
                raise ValueError("not a task=<name>/<run>--<trial>.parquet file")
            with fs.open_input_file(entry.path) as f:
                table = pq.read_table(f)
            version = int((table.schema.metadata or {}).get(b"schema_version", b"-1"))
            if version != SCHEMA_VERSION or "trial_id" not in table.column_names:
                raise ValueError(f"schema_version {version}, expected {SCHEMA_VERSION}")
        except (OSError, ValueError, pa.ArrowException) as e:
            warnings.warn(f"leaderboard: skipping {entry.path}: {e}", stacklevel=2)
            continue
        frame = table.to_pandas()
        frame.insert(0, "task", task)
        frames.append(frame)
    if not frames:
        return pd.DataFrame(columns=SCHEMA.names)
    return pd.concat(frames, ignore_index=True)


def _partition_task(path: str, base: str) -> str | None:
    parts = path[len(base):].strip("/").split("/")
    if len(parts) == 2 and parts[0].startswith("task=") and parts[0][5:] in TASKS:
        return parts[0][5:]
    return None


def best_rows(df: pd.DataFrame, by: str = "selection_score") -> pd.DataFrame:
    """The best completed row per (task, method, OPDF, cores), by the selection score (the honest rule) or by
    ``dev_score`` (the papers')."""
    done = df[df["status"] == "completed"].dropna(subset=[by])
    if done.empty:
        return done
    index = done.groupby(["task", "method", "opdf", "opdf_cores"])[by].idxmax()
    return done.loc[index].sort_values(["task", "method", "opdf_cores"]).reset_index(drop=True)


def seed_summary(df: pd.DataFrame, metric: str = "dev_score") -> pd.DataFrame:
    """Mean ± std of ``metric`` over seeds for every configuration (completed rows), with the seed count."""
    done = df[df["status"] == "completed"]
    grouped = done.groupby(["task", "method", "opdf", "opdf_cores", "config_id"])
    out = grouped[metric].agg(["mean", "std", "count"]).rename(columns={"count": "seeds"})
    out["selection_mean"] = grouped["selection_score"].mean()
    return out.reset_index()
