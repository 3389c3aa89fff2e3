"""Where a task's splits come from, tokenisation with a cache, metrics, the protocol (held-out selection slice).

Sources, in order: a local directory (``--data-dir`` or ``OPDF_GLUE_DIR``) in the Hugging Face ``glue`` layout
(``<task>/<split>.parquet``) or the classic GLUE TSV folders (``RTE/train.tsv`` …); the copy shipped in the repo
(``data/glue``); the Hugging Face hub (``nyu-mll/glue``). A user's own dataset comes from where its task says
(``opdf_ray.userdata``) and then meets the same checks. Metrics use scikit-learn/scipy, never a hub script.
"""

from __future__ import annotations

import csv
import hashlib
import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from opdf_ray import shipped_path
from opdf_ray.storage import published
from opdf_ray.tasks import LGTM_FEEDBACK, SELECT_ON, Task, get_task

log = logging.getLogger(__name__)
_SAID: set[str] = set()         # the split summaries this process has logged already

BUNDLED_GLUE = shipped_path("data/glue")
HUB_DATASET = "nyu-mll/glue"
_TSV_FILES = {"train": "train.tsv", "validation": "dev.tsv", "validation_matched": "dev_matched.tsv",
              "validation_mismatched": "dev_mismatched.tsv"}



# ---------------------------------------------------------------------------------------------------------- loading


def _read_tsv(path: Path, task: Task) -> pd.DataFrame:
    """Classic GLUE TSV → HF columns and label ids (``csv`` with QUOTE_NONE, as the HF GLUE loader does)."""
    with open(path, encoding="utf-8-sig", newline="") as f:        # GLUE MRPC files start with a BOM
        rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    *text_cols, label_col = task.tsv_columns
    if isinstance(label_col, str):
        header, rows = rows[0], rows[1:]
        missing = [c for c in task.tsv_columns if c not in header]
        if missing:
            raise ValueError(f"{path} has no column(s) {missing}; expected the classic GLUE {task.tsv_folder} "
                             f"header with {list(task.tsv_columns)}")
        index = [header.index(c) for c in task.tsv_columns]
        first_line = 2
    else:
        index, first_line = list(task.tsv_columns), 1
    short = [first_line + k for k, r in enumerate(rows) if len(r) <= max(index)]
    if short:
        raise ValueError(f"{path}: {len(short)} row(s) have fewer than the {max(index) + 1} tab-separated fields "
                         f"GLUE {task.tsv_folder} needs (line {', '.join(map(str, short[:5]))}"
                         f"{' …' if len(short) > 5 else ''}); fix or remove them")
    data = {key: [r[i] for r in rows] for key, i in zip(task.text_keys, index[:-1])}
    raw = [r[index[-1]] for r in rows]
    if task.is_regression:
        data["label"] = pd.to_numeric(pd.Series(raw), errors="coerce").to_numpy(np.float32)   # checked on load
    else:
        ids = {name: i for i, name in enumerate(task.label_names)}
        data["label"] = [ids[v] if v in ids else int(v) if v.lstrip("-").isdigit() else v for v in raw]
    return pd.DataFrame(data)


def _candidate_dirs(data_dir: str | os.PathLike | None) -> list[Path]:
    """Where to look, in order. A folder that was asked for but does not exist is an error (a typo must not
    silently fall back to the bundled copy or the hub)."""
    dirs = []
    for origin, d in (("--data-dir", data_dir), ("OPDF_GLUE_DIR", os.environ.get("OPDF_GLUE_DIR"))):
        if d:
            if not Path(d).is_dir():
                raise FileNotFoundError(f"{origin} {d} is not a directory; pass a GLUE folder (HF parquet layout "
                                        f"<task>/<split>.parquet or classic TSVs), or leave it out to use the "
                                        f"bundled data/glue")
            dirs.append(Path(d))
    return dirs + [BUNDLED_GLUE]


def load_split(task: Task | str, split: str, data_dir: str | os.PathLike | None = None) -> tuple[pd.DataFrame, str]:
    """Load one split as a DataFrame with the task's text columns and ``label``; also return where it came from.
    ``task``: a ``Task`` (a GLUE one, or a dataset's from ``tasks.task_of``) or a GLUE name; ``data_dir``: GLUE's.

    Raises:
        ValueError: unknown task or split, or labels outside the task's label space.
        FileNotFoundError: no source has it (the message lists every place looked in and how to fix it).
    """
    task = task if isinstance(task, Task) else get_task(task)
    allowed = ("train", *task.dev_splits)
    if split not in allowed:
        raise ValueError(f"task {task.name} has no split {split!r}; allowed: {', '.join(allowed)}")
    if task.source:
        from opdf_ray.userdata import load_split as load_dataset_split

        return load_dataset_split(task, split)          # checked there, each bad row named by its place in the file
    looked = []
    for root in _candidate_dirs(data_dir):
        parquet, tsv = root / task.name / f"{split}.parquet", root / task.tsv_folder / _TSV_FILES[split]
        if parquet.is_file():
            df, source = pd.read_parquet(parquet), str(parquet)
            break
        if tsv.is_file():
            df, source = _read_tsv(tsv, task), str(tsv)
            break
        for entry in (parquet.parent, tsv.parent, parquet, tsv):
            if entry.is_symlink() and not entry.exists():   # a broken link: the user's data, not a fallback
                raise FileNotFoundError(f"{entry} is a link to {os.readlink(entry)}, which does not exist; fix the "
                                        f"link or remove it to use the bundled copy or the hub")
        if root != BUNDLED_GLUE and (parquet.parent.is_dir() or tsv.parent.is_dir()):
            raise FileNotFoundError(        # never one split from the user's folder and another from elsewhere
                f"{root} has GLUE {task.name} but not its {split} split (looked for {parquet} and {tsv}); a task's "
                f"splits come from one folder: add it, or leave --data-dir out to use the bundled copy or the hub")
        looked += [str(parquet), str(tsv)]
    else:
        df, source = _load_from_hub(task, split, looked)
    missing = [c for c in (*task.text_keys, "label") if c not in df.columns]
    if missing:
        raise ValueError(f"{source} lacks column(s) {missing}; GLUE {task.name} needs {[*task.text_keys, 'label']}")
    if df.empty:
        raise ValueError(f"{source} has no rows; GLUE {task.name}/{split} needs at least one example")
    df = df[[*task.text_keys, "label"]].reset_index(drop=True)
    _check_texts(df, task, split, source)
    _check_labels(df, task, split, source)
    if not task.is_regression:              # ids stored as floats or text (1.0, "1") become the ints they are
        df["label"] = pd.to_numeric(df["label"]).astype("int64")
    return df, source


def _load_from_hub(task: Task, split: str, looked: list[str]) -> tuple[pd.DataFrame, str]:
    try:
        import datasets

        ds = datasets.load_dataset(HUB_DATASET, task.name, split=split)
    except Exception as e:  # offline, hub down, auth: all mean "not available from the hub"
        raise FileNotFoundError(
            f"GLUE {task.name}/{split} not found. Looked in: {', '.join(looked)}; then the Hugging Face hub "
            f"({HUB_DATASET}): {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}. Pass --data-dir "
            f"(or set OPDF_GLUE_DIR) to a folder with {task.name}/{split}.parquet or classic "
            f"{task.tsv_folder}/{_TSV_FILES[split]}, or run with internet access.") from None
    return ds.to_pandas(), f"hub:{HUB_DATASET}/{task.name}/{split}"


def _check_texts(df: pd.DataFrame, task: Task, split: str, source: str) -> None:
    """Every text cell a string: a missing one (None/NaN) or a number would fail in the tokenizer, mid-trial."""
    for key in task.text_keys:
        bad = df.index[~df[key].map(lambda v: isinstance(v, str))]
        if len(bad):
            value = df[key].iloc[bad[0]]
            value = value.item() if isinstance(value, np.generic) else value
            raise ValueError(f"{source}: {len(bad)} of {len(df)} {task.name}/{split} rows have no {key} text (row "
                             f"{bad[0]}: {value!r}); every {key} must be a string")


def _check_labels(df: pd.DataFrame, task: Task, split: str, source: str) -> None:
    labels = df["label"]
    if pd.api.types.is_bool_dtype(labels):
        raise ValueError(f"{source}: {task.name}/{split} labels are true/false; GLUE {task.name} labels are "
                         f"{'scores in [0, 5]' if task.is_regression else 'ids 0..' + str(task.num_labels - 1)}")
    if task.is_regression:
        numeric = pd.to_numeric(labels, errors="coerce")
        bad = labels[numeric.isna() | (numeric < 0) | (numeric > 5)]
        allowed = "scores in [0, 5]"
    else:
        numeric = pd.to_numeric(labels, errors="coerce")
        bad = labels[numeric.isna() | ~numeric.isin(range(task.num_labels))]
        allowed = f"ids 0..{task.num_labels - 1} ({', '.join(task.label_names)})"
    if len(bad):
        raise ValueError(f"{source}: {len(bad)} of {len(df)} {task.name}/{split} labels are not {allowed}, e.g. "
                         f"{sorted(map(str, bad.unique()))[:5]} (a test split, or a file for another task?)")


# --------------------------------------------------------------------------------------------------------- protocol


@dataclass
class GlueSplits:
    """Raw splits under the evaluation protocol: ``train`` (minus the held-out slice), ``selection`` (picks
    checkpoints), ``feedback`` (LGTM's held-out batches: the same frame as ``selection``, or the other half of
    the held-out slice) and ``dev``."""

    task: Task
    train: pd.DataFrame
    selection: pd.DataFrame
    feedback: pd.DataFrame
    dev: dict[str, pd.DataFrame]
    sources: dict[str, str]


def load_glue(task: Task | str, data_dir=None, selection_fraction: float = 0.1, selection_cap: int = 2000,
              seed: int = 42, max_train_samples: int | None = None, feedback: str = "shared") -> GlueSplits:
    """Load a task and carve the seeded held-out slice out of its training split.

    The held-out slice (``round(fraction·n)``, at most ``selection_cap``) serves checkpoint selection, the metric
    Tune optimises and LGTM's feedback batches; dev is only ever evaluated. ``feedback="split"`` gives LGTM's
    feedback its own half of the slice, so the data that teaches the teacher never judges the student (the
    other half selects); ``"shared"`` uses the whole slice for both. ``max_train_samples`` trims what is left
    for training (a budget knob for quick runs).
    """
    if feedback not in LGTM_FEEDBACK:
        raise ValueError(f"feedback={feedback!r}; allowed: {', '.join(LGTM_FEEDBACK)}")
    task = task if isinstance(task, Task) else get_task(task)
    if not 0 < selection_fraction < 1:
        raise ValueError(f"selection_fraction must be in (0, 1), got {selection_fraction}")
    train, train_source = load_split(task, "train", data_dir)
    n_sel = min(selection_cap, max(1, round(selection_fraction * len(train))))
    order = np.random.default_rng(seed).permutation(len(train))
    selection = train.iloc[order[:n_sel]].reset_index(drop=True)
    rest = train.iloc[order[n_sel:]].reset_index(drop=True)
    feedback_frame = selection
    if feedback == "split":
        if n_sel < 2:
            raise ValueError(f"the held-out slice has {n_sel} example(s): too few to split into feedback and "
                             f"selection halves; raise selection_fraction or use lgtm_feedback=shared")
        half = n_sel // 2
        selection, feedback_frame = selection.iloc[:half].reset_index(drop=True), \
            selection.iloc[half:].reset_index(drop=True)
    if rest.empty:
        raise ValueError(f"{task.name}: its train split has {len(train)} example(s), all held out as the selection "
                         f"slice ({n_sel}); training needs more examples")
    if max_train_samples is not None:
        rest = rest.iloc[:max_train_samples].reset_index(drop=True)
    dev, sources = {}, {"train": train_source}
    for split in task.dev_splits:
        dev[split], sources[split] = load_split(task, split, data_dir)
    summary = (f"{task.name}: {len(rest)} train, {len(selection)} selection"
               f"{f' + {len(feedback_frame)} feedback' if feedback == 'split' else ''} (held out of train, seed "
               f"{seed}), dev { {k: len(v) for k, v in dev.items()} }; from {sources}")
    log.log(logging.DEBUG if summary in _SAID else logging.INFO, "%s", summary)   # once a process (the driver
    _SAID.add(summary)                                                            # loads a task to check it too)
    return GlueSplits(task, rest, selection, feedback_frame, dev, sources)


def selection_split(task: Task, select_on: str) -> str:
    """The split that picks checkpoints and gives the searched score: the held-out ``selection`` slice, or under
    the papers' protocol (``select_on="dev"``) the first dev split."""
    if select_on not in SELECT_ON:
        raise ValueError(f"select_on={select_on!r}; allowed: {', '.join(SELECT_ON)}")
    return "selection" if select_on == "selection" else task.dev_splits[0]


# ---------------------------------------------------------------------------------------------------- tokenising


def default_cache_dir() -> Path:
    return Path(os.environ.get("OPDF_CACHE_DIR", Path.home() / ".cache" / "opdf-ray"))


def frame_digest(df: pd.DataFrame) -> str:
    """Hash of a split's rows (values and order, not where they were read from): a cache key that survives a moved
    data folder and changes when a file is replaced in place."""
    return hashlib.sha256(pd.util.hash_pandas_object(df, index=False).values.tobytes()).hexdigest()


def _tokenizer_fingerprint(tokenizer) -> str:
    vocab = sorted(tokenizer.get_vocab().items())
    return hashlib.sha256(repr((type(tokenizer).__name__, vocab, tokenizer.model_max_length)).encode()).hexdigest()


def tokenize(df: pd.DataFrame, task: Task, tokenizer, max_length: int,
             cache_dir: str | os.PathLike | None = None) -> dict[str, list]:
    """Tokenise a split (no padding: batches are padded dynamically); cached on disk by content + tokenizer.

    Returns ``{"input_ids": [...], "token_type_ids": [...], "labels": [...]}`` (ragged lists).
    """
    if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length <= 0:
        raise ValueError(f"max_length must be a positive int, got {max_length!r}")
    key = hashlib.sha256(frame_digest(df).encode() + repr((task.name, max_length)).encode()
                         + _tokenizer_fingerprint(tokenizer).encode()).hexdigest()[:24]
    path = Path(cache_dir or default_cache_dir()) / "tokens" / f"{task.name}-{key}.parquet"
    if path.is_file():
        table = pq.read_table(path)
        return {c: table.column(c).to_pylist() for c in table.column_names}
    texts = [df[k].tolist() for k in task.text_keys]
    enc = tokenizer(*texts, truncation=True, max_length=max_length, return_token_type_ids=True)
    out = {"input_ids": enc["input_ids"], "token_type_ids": enc["token_type_ids"], "labels": df["label"].tolist()}
    with published(path) as (_, tmp):                       # concurrent trials never read half a file
        pq.write_table(pa.table(out), tmp)
    return out


# ----------------------------------------------------------------------------------------------------------- metrics


def compute_metrics(task: Task, predictions: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Task metrics in percent. ``predictions``: class ids, or scores for regression."""
    from scipy.stats import pearsonr, spearmanr
    from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

    fns = {"accuracy": lambda: accuracy_score(labels, predictions), "f1": lambda: f1_score(labels, predictions),
           "mcc": lambda: matthews_corrcoef(labels, predictions),
           "pearson": lambda: pearsonr(predictions, labels)[0], "spearman": lambda: spearmanr(predictions, labels)[0]}
    out = {}
    for name in task.metrics:
        with warnings.catch_warnings():            # constant predictions: correlation undefined, reported as 0
            warnings.simplefilter("ignore")
            value = float(fns[name]())
        out[name] = 100.0 * (0.0 if np.isnan(value) else value)
    return out
