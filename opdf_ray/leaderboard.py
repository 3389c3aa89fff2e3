"""The leaderboard: one Parquet row per finished trial (completed, pruned or failed), hive-partitioned by task.

Layout: ``<root>/task=<task>/<run_id>--<trial_id>.parquet``. A row is written under a dot-prefixed temporary
name and renamed, so readers never see half a file (Arrow and pandas skip dot files); the name is a function of
(run, trial), so writing a trial twice (a resumed search, a retried trial) replaces its row instead of adding
one. ``read_leaderboard`` reads it all (``pd.read_parquet(root)`` too, until a stray file lands), skipping
foreign or corrupt files with a warning, and ``best_rows`` / ``seed_summary`` answer the usual questions.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import platform

import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from opdf_ray import __version__
from opdf_ray import trial_metrics as tm
from opdf_ray.config import EXECUTION, SEED, RunSpec, inert_settings
from opdf_ray.tasks import DATASET_SETTINGS, NAME, TASKS, Task, in_task_order, task_of
from opdf_ray.storage import filesystem, join, published

log = logging.getLogger(__name__)

# 2: `evaluations` (ASHA counts epochs; Tune's iterations now include log results), log_steps.
# 3: `teacher_truncated` (before 3, opdf_bond_dim truncated the teacher too), student_init, teacher_init,
#    opdf_align_map (default init layers), lgtm_variant (replaces lgtm_eta), lgtm_feedback; normalised alignment;
#    bf16, merge_max_abs_logit_diff.
# 4: group_by_length (training batches of similar length; before 4 the plain shuffle), cpu_bf16, mpo_weight.
# 5: finetuned_teacher_dev_<metric>: the task-fine-tuned teacher the run started from, every metric (the report's
#    reference row; teacher_dev_score is the run's teacher at the end, which ProKT and LGTM train).
# 6: pad_to_multiple_of, cudnn_attention (execution settings; empty before 6: dynamic padding, and PyTorch's own
#    attention choice, which picked cuDNN's kernels on an H100).
# 7: opdf_core_lr (before 7: the dense lr for every core, "1.0"), opdf_align_ratio (0.0), opdf_train_cores ("all");
#    init_classifier_to_zero may be null (auto); cores decay as their deployed matrix would (wd was 0 in every study)
# 8: student_path (the merged student of a completed trial, for ``opdf-ray export``; empty before 8)
# 9: dense_lr_as_cores (the dense control for OPDF at one lr; 0 before 9)
# 10: l2sp_ratio, l2sp_weight (0 before 10), drift_deployed, drift_cores, drift_curve; a setting that cannot act
#     for the row's task and method (``config.inert_settings``) is stored empty and left out of ``config_id``;
#     trial_task (the row's task, also in the file: a row whose folder says another is skipped)
# 12: dataset, text_columns, label_column, problem_type, label_names (a user's own data; empty for GLUE rows)
SCHEMA_VERSION = 12
STATUSES = ("completed", "pruned", "failed")
ROW_TASK = "trial_task"       # the task a row stores itself ("task" is its folder's, task=<name>; both must agree)
METRICS = tuple(dict.fromkeys(m for t in TASKS.values() for m in t.metrics))   # accuracy, f1, mcc, …
_ARROW = {str: pa.string(), int: pa.int64(), float: pa.float64(), bool: pa.bool_()}
# fields that are not part of a configuration's identity: where things live, and the seed it was repeated with
_NOT_CONFIG = RunSpec.fields_with_role(EXECUTION, SEED)


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
    pa.field("teacher_truncated", pa.bool_()),                 # distilled from a truncated teacher (rows < v3)
    pa.field("config_id", pa.string()),                        # the hyperparameters minus seed and paths
    pa.field("protocol", pa.string()),
    pa.field("selection_metric", pa.string()),
    pa.field("selection_score", pa.float64()),
    pa.field("dev_score", pa.float64()),                       # the selection metric on the (first) dev split
    *[pa.field(f"selection_{m}", pa.float64()) for m in METRICS],
    *[pa.field(f"dev_{m}", pa.float64()) for m in METRICS],
    pa.field("dev_mismatched_accuracy", pa.float64()),         # MNLI; dev_accuracy is matched
    pa.field("teacher_dev_score", pa.float64()),
    *[pa.field(f"finetuned_teacher_dev_{m}", pa.float64()) for m in METRICS],
    pa.field("best_step", pa.int64()),
    pa.field("steps", pa.int64()),
    pa.field("epochs_done", pa.float64()),
    pa.field("iterations", pa.int64()),                        # results Tune received (log results included)
    pa.field("evaluations", pa.int64()),
    pa.field("trainable_params", pa.int64()),
    pa.field("inference_params", pa.int64()),
    pa.field("wall_seconds", pa.float64()),
    pa.field("train_seconds", pa.float64()),
    pa.field("setup_seconds", pa.float64()),                   # trial start (driver) → first step (rows < v11: none)
    pa.field("finish_seconds", pa.float64()),                  # last step → row written
    pa.field("warm_start", pa.bool_()),                        # its process had run a trial before (reuse_actors)
    pa.field("examples_per_second", pa.float64()),
    pa.field("workers", pa.int64()),
    pa.field("nodes", pa.int64()),
    pa.field("restored_at_step", pa.int64()),
    pa.field("bytes_all_reduced", pa.int64()),
    pa.field("merge_max_abs_logit_diff", pa.float64()),
    pa.field("drift_deployed", pa.float64()),                  # mean ‖W − W0‖/‖W0‖, encoder matrices, selected step
    pa.field("drift_cores", pa.float64()),                     # the same over the trained MPO cores (OPDF)
    pa.field("drift_curve", pa.string()),                      # JSON [[epoch, drift_deployed], …]
    pa.field("student_path", pa.string()),                     # the merged student (a Hugging Face folder)
    pa.field("curve", pa.string()),                            # JSON [[epoch, selection score], …]
    pa.field("trial_task", pa.string()),                       # the task, stored in the row too (its folder: task=)
    pa.field("opdf_ray_version", pa.string()),
    pa.field("ray_version", pa.string()),
    pa.field("torch_version", pa.string()),
    pa.field("python_version", pa.string()),
    pa.field("hardware", pa.string()),
    pa.field("finished_at", pa.timestamp("s", tz="UTC")),
], metadata={"schema_version": str(SCHEMA_VERSION)})


def config_id(spec: dict) -> str:
    """Identity of a configuration across seeds: a hash of the hyperparameters that act (seed, paths and the
    settings that cannot act for its task and method, ``inert_settings``, left out; a GLUE row's empty dataset
    settings too, so its id is the one it had before schema 12)."""
    inert = set(inert_settings(spec))
    values = {k: v for k, v in sorted(spec.items()) if k not in _NOT_CONFIG and k not in inert
              and not (k in DATASET_SETTINGS and v is None)}
    return hashlib.sha256(json.dumps(values, sort_keys=True, default=str).encode()).hexdigest()[:12]


def spec_of(row) -> dict:
    """The ``RunSpec`` settings of a leaderboard row, typed as ``RunSpec`` declares them (Parquet and pandas turn an
    int column holding nulls into floats: 1000.0 must come back as 1000)."""
    out = {}
    for f in dataclasses.fields(RunSpec):
        value = row.get(f.name) if hasattr(row, "get") else row[f.name]
        value = value.item() if hasattr(value, "item") else value
        if value is None or isinstance(value, float) and math.isnan(value):
            value = None
        elif (f.metadata.get("type") or type(f.default)) is int and not isinstance(value, bool):
            value = int(value)
        out[f.name] = value
    for name in inert_settings(out):      # stored empty: any value trains the same, so the declared default
        if out[name] is None and getattr(RunSpec, name) is not None:
            out[name] = getattr(RunSpec, name)
    return out


def make_row(run_id: str, trial_id: str, status: str, spec: dict, result: dict | None, error: str | None = None,
             student_path: str | None = None, wall_seconds: float | None = None,
             setup_seconds: float | None = None, finish_seconds: float | None = None) -> dict:
    """One leaderboard row from a trial's spec and its last reported result (``opdf_ray.trial_metrics``).

    Raises:
        ValueError: unknown status, or a completed trial whose result lacks a key of the metrics contract.
    """
    import ray
    import torch

    if status not in STATUSES:
        raise ValueError(f"status={status!r}; allowed: {', '.join(STATUSES)}")
    result = result or {}
    task = task_of(spec)
    if status == "completed":
        missing = tm.missing_keys(result, task.metrics, task.dev_splits)
        if missing:
            raise ValueError(f"trial {trial_id} completed but its result lacks {missing}: the worker's reports and "
                             f"opdf_ray.trial_metrics disagree")
    dev_split = task.dev_splits[0]
    row = {name: None for name in SCHEMA.names}
    row |= {k: spec.get(k) for k in (f.name for f in dataclasses.fields(RunSpec))}
    row |= dict.fromkeys(inert_settings(spec))                     # settings that cannot act: stored empty
    row |= {
        "schema_version": SCHEMA_VERSION, "run_id": run_id, ROW_TASK: spec["task"], "trial_id": trial_id,
        "status": status, "error": error,
        "opdf": spec["opdf_cores"] >= 2, "teacher_truncated": False, "config_id": config_id(spec),
        "protocol": spec["select_on"],
        "selection_metric": task.selection_metric,
        "selection_score": result.get(tm.BEST_SCORE),
        "dev_score": result.get(tm.dev_key(dev_split, task.selection_metric)),
        "teacher_dev_score": result.get(tm.teacher_dev_key(dev_split, task.selection_metric)),
        "dev_mismatched_accuracy": result.get(tm.dev_key("validation_mismatched", "accuracy")),
        "best_step": result.get(tm.BEST_STEP), "steps": result.get(tm.STEP), "epochs_done": result.get(tm.EPOCH),
        "iterations": result.get(tm.TRAINING_ITERATION), "evaluations": result.get(tm.EVALUATIONS),
        "trainable_params": result.get(tm.TRAINABLE_PARAMS), "inference_params": result.get(tm.INFERENCE_PARAMS),
        "wall_seconds": wall_seconds if wall_seconds is not None else result.get(tm.TIME_TOTAL_S),
        "train_seconds": result.get(tm.TRAIN_SECONDS), "setup_seconds": setup_seconds,
        "finish_seconds": finish_seconds, "warm_start": result.get(tm.WARM_START),
        "examples_per_second": result.get(tm.EXAMPLES_PER_SECOND),
        "workers": result.get(tm.WORKERS), "nodes": result.get(tm.NODES),
        "restored_at_step": result.get(tm.RESTORED_AT_STEP), "bytes_all_reduced": result.get(tm.BYTES_ALL_REDUCED),
        "merge_max_abs_logit_diff": result.get(tm.MERGE_DIFF), "student_path": student_path,
        "drift_deployed": result.get(tm.DRIFT_DEPLOYED), "drift_cores": result.get(tm.DRIFT_CORES),
        "drift_curve": result.get(tm.DRIFT_CURVE),
        "curve": result.get(tm.CURVE), "hardware": result.get(tm.HARDWARE),
        "opdf_ray_version": __version__, "ray_version": ray.__version__, "torch_version": torch.__version__,
        "python_version": platform.python_version(), "finished_at": pd.Timestamp.now(tz="UTC").floor("s"),
    }
    for m in METRICS:
        row[f"selection_{m}"] = result.get(tm.selection_key(m))
        row[f"dev_{m}"] = result.get(tm.dev_key(dev_split, m))
        row[f"finetuned_teacher_dev_{m}"] = result.get(tm.finetuned_teacher_dev_key(dev_split, m))
    if status == "pruned" and row["selection_score"] is None:
        row["selection_score"] = result.get(tm.SCORE)
    return {key: tm.finite_or_none(value) for key, value in row.items()}


def write_row(root: str, row: dict) -> str:
    """Write one row atomically to ``<root>/task=<task>/<run_id>--<trial_id>.parquet``; returns its path."""
    target = join(root, f"task={row['task']}", f"{row['run_id']}--{row['trial_id']}.parquet")
    table = pa.Table.from_pylist([row], schema=SCHEMA)
    with published(target) as (fs, tmp), fs.open_output_stream(tmp) as out:
        pq.write_table(table.drop_columns(["task"]), out)   # task lives in the partition directory
    return target


def check_writable(root: str) -> None:
    """Fail now, with the reason, if rows cannot be written under ``root`` (a search must not lose them later)."""
    probe = join(root, ".write-probe")
    try:
        with published(probe) as (fs, tmp), fs.open_output_stream(tmp) as out:
            out.write(b"ok")
        fs.delete_file(filesystem(probe)[1])
    except OSError as e:
        raise ValueError(f"the leaderboard {root} is not writable: {str(e).splitlines()[0]}; pass a writable "
                         f"--leaderboard or --storage") from None


def read_leaderboard(root: str) -> pd.DataFrame:
    """Every row under ``root``, each row file read on its own (rows of older schema versions get the current
    schema, their new columns null). A file that is not a good leaderboard row — unreadable or corrupt, foreign,
    written by a newer opdf-ray, outside a ``task=`` folder, mislabelled (the task it stores is not its folder's)
    or with a column of another type than the schema's — is skipped with a one-line warning naming it (logged:
    on stderr even with Python warnings off), so one bad file never hides the rest."""
    fs, base = filesystem(root)
    kind = fs.get_file_info(base).type
    if kind == pafs.FileType.NotFound:
        raise FileNotFoundError(f"no leaderboard at {root}")
    if kind != pafs.FileType.Directory:
        raise ValueError(f"{root} is a file, not a leaderboard: a leaderboard is the folder a search writes "
                         f"(<storage>/leaderboard, with task=<name>/ folders of Parquet rows)")
    found = [e.path for e in fs.get_file_info(pafs.FileSelector(base, recursive=True))
             if e.type == pafs.FileType.File and not e.base_name.startswith((".", "_"))]
    tables = []
    for path in sorted(found):
        try:
            tables.append(_read_row_file(fs, path, base))
        except (OSError, ValueError, pa.ArrowException) as e:
            log.warning("leaderboard: skipping %s: %s", path, " ".join(str(e).split())[:300])
    if not tables:
        return pd.DataFrame(columns=SCHEMA.names)
    frame = pa.concat_tables(tables, promote_options="permissive").to_pandas()
    frame["teacher_truncated"] = frame["teacher_truncated"].astype("boolean").fillna(_truncated_before_v3(frame))
    _teacher_metrics_before_v5(frame)
    _opdf_settings_before_v7(frame)
    _config_ids_of_today(frame)
    return frame[["task", *[c for c in frame.columns if c != "task"]]].reset_index(drop=True)


def _read_row_file(fs: pafs.FileSystem, path: str, base: str) -> pa.Table:
    """One row file as a table of the current schema (``task`` from its folder, checked against what it stores).

    Raises:
        ValueError: not a ``task=<name>/<run>--<trial>.parquet`` file, a schema version this code does not read,
            a stored task other than its folder's, or a column whose type cannot be the schema's.
    """
    task = _partition_task(path, base)
    if task is None or not path.endswith(".parquet"):
        raise ValueError("not a task=<name>/<run>--<trial>.parquet file")
    with fs.open_input_file(path) as f:
        table = pq.read_table(f)
    version = int((table.schema.metadata or {}).get(b"schema_version", b"-1"))
    if not 1 <= version <= SCHEMA_VERSION or "trial_id" not in table.column_names:
        raise ValueError(f"schema_version {version}, this opdf-ray reads 1..{SCHEMA_VERSION}")
    if ROW_TASK in table.column_names:                         # rows ≥ schema 10 say their task themselves
        stored = set(table[ROW_TASK].to_pylist())
        if stored != {task}:
            raise ValueError(f"it stores task {sorted(map(str, stored))}, its folder says task={task}")
    columns = {}
    for field in SCHEMA:
        if field.name == "task":
            continue
        if field.name not in table.column_names:
            columns[field.name] = pa.nulls(len(table), field.type)
            continue
        column = table[field.name]
        if column.type != field.type:
            try:
                column = column.cast(field.type)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                raise ValueError(f"column {field.name} is {column.type}, the schema's is {field.type}") from None
        columns[field.name] = column
    extra = {n: table[n] for n in table.column_names if n not in SCHEMA.names and n != "task"}   # older columns
    return pa.table({"task": pa.array([task] * len(table), pa.string()), **columns, **extra})


def _config_ids_of_today(frame: pd.DataFrame) -> None:
    """A row written by an older schema hashed fewer settings into its ``config_id`` (schema 7 added the OPDF core
    lr, the alignment ratio and the trained cores). Its id is recomputed from what it ran (``spec_of``), so it is
    the id a run of that configuration gets today: a report's configuration block retrains to it, and new seeds
    of an old configuration count with its old ones."""
    old = frame.index[frame["schema_version"] < SCHEMA_VERSION]
    if len(old):
        frame.loc[old, "config_id"] = [config_id(spec_of(frame.loc[i])) for i in old]


def _teacher_metrics_before_v5(frame: pd.DataFrame) -> None:
    """Rows written before schema 5 kept only ``teacher_dev_score`` (the run's final teacher, selection metric).
    For the methods whose teacher is frozen (KD and Theseus, which always start from the task-fine-tuned one)
    that is the fine-tuned teacher's score in that metric; everything else stays null, never made up."""
    frozen = frame["method"].isin(["kd", "theseus"])
    for m in METRICS:
        column = f"finetuned_teacher_dev_{m}"
        missing = frame[column].isna() & frozen & (frame["selection_metric"] == m)
        frame.loc[missing, column] = frame.loc[missing, "teacher_dev_score"]


def _opdf_settings_before_v7(frame: pd.DataFrame) -> None:
    """Rows written before schema 7 trained every core at the dense lr, with the alignment as a raw weight, all cores
    trained, and (before 9) no dense control: what those settings' values mean (their config_id is recomputed: ``_config_ids_of_today``)."""
    old = frame["schema_version"] < 7
    for column, value in (("opdf_core_lr", "1.0"), ("opdf_align_ratio", 0.0), ("opdf_train_cores", "all")):
        frame.loc[old & frame[column].isna(), column] = value
    frame.loc[(frame["schema_version"] < 9) & frame["dense_lr_as_cores"].isna(), "dense_lr_as_cores"] = 0
    for column in ("l2sp_ratio", "l2sp_weight"):          # before 10: no L2-SP
        frame.loc[(frame["schema_version"] < 10) & frame[column].isna(), column] = 0.0


def _truncated_before_v3(frame: pd.DataFrame) -> pd.Series:
    """Rows written before schema 3 with a bond dimension distilled from a teacher truncated to it (the teacher
    was decomposed with the student's ``opdf_bond_dim`` whenever it was over-parameterised)."""
    return (frame["opdf_bond_dim"].notna() & frame["opdf_teacher"].fillna(True).astype(bool)
            & (frame["method"] != "finetune"))


def tasks_of(frame: pd.DataFrame) -> dict[str, Task]:
    """The tasks a leaderboard's rows are of, by name, in report order (GLUE's, then datasets'); a dataset's
    ``Task`` comes from its rows' settings (``tasks.task_of``), so a report needs no data to name its labels."""
    names = in_task_order(frame["task"].astype(str).unique()) if len(frame) else []
    return {name: task_of(frame[frame["task"].astype(str) == name].iloc[0]) for name in names}


def _partition_task(path: str, base: str) -> str | None:
    parts = path[len(base):].strip("/").split("/")
    if len(parts) == 2 and parts[0].startswith("task=") and NAME.fullmatch(parts[0][5:]):
        return parts[0][5:]
    return None


# what a table row is (mpo_bond 0 = full rank; l2sp: the dense anchor, L2-SP, on, whatever its strength)
VARIANT = ["task", "method", "opdf_cores", "mpo_bond", "l2sp"]


REPEAT = ["task", "config_id", "seed"]    # one run of a configuration: a second row of it is a duplicate


def usable(df: pd.DataFrame) -> pd.DataFrame:
    """Completed rows worth comparing, one per (task, configuration, seed), with ``mpo_bond`` (the student's bond
    dimension, 0 = full rank, i.e. over-parameterised; > 0 = compressed) and ``l2sp`` (pulled to its start): rows
    distilled from a truncated teacher
    are left out, and of a configuration run twice with the same seed only the latest counts (``duplicate_runs``
    lists the others), so no seed is averaged twice."""
    done = _completed(df)
    done = done.sort_values("finished_at", kind="stable").drop_duplicates(REPEAT, keep="last").sort_index()
    done["mpo_bond"] = done["opdf_bond_dim"].fillna(0).astype(int)
    done["l2sp"] = (done["l2sp_ratio"].fillna(0) > 0) | (done["l2sp_weight"].fillna(0) > 0)
    return done


def duplicate_runs(df: pd.DataFrame) -> pd.DataFrame:
    """The completed rows that repeat a (task, configuration, seed) of a later row: what ``usable`` leaves out."""
    done = _completed(df).sort_values("finished_at", kind="stable")
    return done[done.duplicated(REPEAT, keep="last")]


def _completed(df: pd.DataFrame) -> pd.DataFrame:
    return df[(df["status"] == "completed") & ~df["teacher_truncated"].fillna(False).astype(bool)].copy()


def best_rows(df: pd.DataFrame, by: str = "selection_score") -> pd.DataFrame:
    """The best completed row per (task, method, cores, bond), by the selection score (the honest rule) or by
    ``dev_score`` (the papers')."""
    done = usable(df).dropna(subset=[by])
    if done.empty:
        return done
    index = done.groupby(VARIANT)[by].idxmax()
    return done.loc[index].sort_values(VARIANT).reset_index(drop=True)


def best_per_cell(df: pd.DataFrame, pruned_too: bool = False) -> pd.DataFrame:
    """The best completed row by selection score per (task, method, OPDF on/off). ``pruned_too`` (what a search's
    end prints): a cell whose every trial ASHA stopped shows its best stopped row (no dev score), so every cell
    the search tried is there."""
    cols = ["task", "method", "opdf", "opdf_cores", "status", "selection_score", "dev_score", "trial_id"]
    cell = ["task", "method", "opdf"]
    done = usable(df).dropna(subset=["selection_score"])
    if pruned_too:
        stopped = df[df["status"] == "pruned"].dropna(subset=["selection_score"])
        stopped = stopped[~stopped.set_index(cell).index.isin(done.set_index(cell).index)]
        done = pd.concat([done, stopped]) if len(stopped) else done
    if done.empty:
        return done[cols]
    index = done.reset_index(drop=True).groupby(cell, observed=True)["selection_score"].idxmax()
    return done.reset_index(drop=True).loc[index, cols].sort_values(cell).reset_index(drop=True)


def seed_summary(df: pd.DataFrame, metric: str = "dev_score") -> pd.DataFrame:
    """Mean and std of ``metric`` over seeds for every configuration (completed rows), the half-width of the mean's
    95% t-interval (``ci95``; NaN with one seed) and the seed count."""
    from scipy.stats import t

    grouped = usable(df).groupby([*VARIANT, "config_id"])
    out = grouped[metric].agg(["mean", "std", "count"]).rename(columns={"count": "seeds"})
    out["ci95"] = t.ppf(0.975, out["seeds"] - 1) * out["std"] / out["seeds"] ** 0.5
    out["selection_mean"] = grouped["selection_score"].mean()
    return out.reset_index()
