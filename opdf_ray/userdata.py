"""A user's own labelled data as a task: where it is read from, how its problem and labels are found, its splits.

``--task`` names one of: a CSV/TSV/JSON Lines/Parquet file (its train split; dev is carved from it), a folder with
``train.<ext>`` and optionally ``validation.<ext>`` (or ``dev.<ext>``), or a Hugging Face hub dataset id (its
``train`` and ``validation`` splits). ``resolve`` reads it once, before any work, and turns it into run settings
(``dataset``, ``text_columns``, ``label_column``, ``problem_type``, ``label_names``) that every trial and every
leaderboard row carries, so nothing downstream reads the data to know what the task is (``tasks.task_of``).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd

from opdf_ray.tasks import NAME, PROBLEM_TYPES, TASKS, Task, task_of
from opdf_ray.text import quoted

FORMATS = (".csv", ".tsv", ".jsonl", ".json", ".parquet")
DEV_NAMES = ("validation", "dev")
# No dev split given: a seeded tenth of train (at most DEV_CAP), the same for every run seed, so dev scores compare
DEV_FRACTION, DEV_CAP, DEV_SEED = 0.1, 2000, 0
MAX_CLASSES = 1000
HUB_ID = re.compile(r"[\w.-]+(/[\w.-]+)?")


# ---------------------------------------------------------------------------------------------------- settings


def resolve(values: dict) -> dict:
    """Run settings whose ``task`` is a dataset (a path or hub id, not a GLUE name) → the same with the dataset's
    settings filled in from its data: ``task`` its name, ``dataset`` where it is (absolute), ``problem_type``
    detected unless given, ``label_names`` its classes. GLUE settings pass through unchanged.

    Raises ``ValueError``/``FileNotFoundError`` with one line: what is wrong with the data, what is allowed."""
    task, given = values.get("task"), values.get("dataset")
    if given is None and (task is None or task in TASKS):
        return values                                   # GLUE (RunSpec refuses dataset settings beside it)
    text_columns = _text_columns(values.get("text_columns"), given if given is not None else task)   # before
    source = locate(given if given is not None else task)                # the hub is asked for a typo
    name = dataset_name(source)
    if given is not None and task != name:
        raise ValueError(f"dataset {quoted(given)} is the task {quoted(name)}, not {quoted(task)}; pass the data as "
                         f"--task {quoted(given)}")
    label_column = values.get("label_column") or "label"
    if label_column in text_columns:
        raise ValueError(f"--label-column {quoted(label_column)} is also a text column; they must differ")
    frames, _ = read_raw(source, (*text_columns, label_column))
    labels = frames["train"][label_column]
    problem = values.get("problem_type") or detect_problem(labels)
    if problem not in PROBLEM_TYPES:
        raise ValueError(f"--problem-type {quoted(problem)} is invalid; allowed: {', '.join(PROBLEM_TYPES)}")
    names = None
    if problem == "classification":
        names = _label_names(values.get("label_names"), labels, source)
    elif values.get("label_names") is not None:
        raise ValueError(f"--label-names is set for {source}, a regression (scores have no classes); leave it out")
    resolved = values | {"task": name, "dataset": source, "text_columns": ",".join(text_columns),
                         "label_column": label_column, "problem_type": problem,
                         "label_names": None if names is None else json.dumps(names)}
    for split in ("train", "validation"):              # every label and text checked now, not in a trial
        load_split(task_of(resolved), split)
    return resolved


def locate(text: str) -> str:
    """The dataset's absolute path, or its hub id; a path-looking name that does not exist is an error."""
    path = Path(text).expanduser()
    if path.is_symlink() and not path.exists():
        raise FileNotFoundError(f"--task {quoted(text)} is a link to {quoted(str(path.readlink()))}, which does not "
                                f"exist; fix the link or pass the data itself")
    if path.exists():
        if path.is_file() and path.suffix.lower() not in FORMATS:
            raise ValueError(f"--task {quoted(text)}: {path.suffix or 'no extension'} is not a data format; allowed: "
                             f"{', '.join(FORMATS)} files, a folder of train.<ext> (and validation.<ext>), a GLUE "
                             f"task ({', '.join(TASKS)}) or a hub dataset id")
        return str(path.resolve())
    if path.suffix.lower() in FORMATS or text.startswith((".", "/", "~")) or not HUB_ID.fullmatch(text):
        raise FileNotFoundError(f"--task {quoted(text)} is not a GLUE task ({', '.join(TASKS)}) and no such file or "
                                f"folder exists; pass a GLUE name, a data file or folder, or a hub dataset id")
    return text


def dataset_name(source: str) -> str:
    """A dataset's task name (its leaderboard folder, experiment and output names): the file's stem, the folder's
    name or the hub id's last part, in letters, digits, '.', '_' and '-'; never a GLUE task's name."""
    path = Path(source)
    raw = path.stem if path.is_file() else path.name if path.is_dir() else source.rsplit("/", 1)[-1]
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", raw).strip("-._")[:64] or "data"
    return f"{name}-data" if name in TASKS or name == "all" or not NAME.fullmatch(name) else name


def _text_columns(value: str | None, source: str) -> tuple[str, ...]:
    if value is None:
        raise ValueError(f"--task {quoted(source)} is not a GLUE task ({', '.join(TASKS)}); your own data (a file, a "
                         f"folder or a hub dataset id) needs --text-columns (and --label-column unless it is 'label')")
    columns = tuple(c.strip() for c in value.split(",") if c.strip())
    if not 1 <= len(columns) <= 2 or len(set(columns)) < len(columns):
        raise ValueError(f"--text-columns {quoted(value)} for {source}: expected one or two distinct column names, "
                         f"e.g. --text-columns sentence or --text-columns question,passage")
    return columns


def detect_problem(labels: pd.Series) -> str:
    """Scores (a numeric label with a fractional value) → regression; anything else (ids, names) → classification."""
    if pd.api.types.is_numeric_dtype(labels) and not pd.api.types.is_bool_dtype(labels):
        values = labels.dropna().to_numpy(dtype=float)
        if len(values) and not np.all(np.isfinite(values) & (values == np.round(values))):
            return "regression"
    return "classification"


def label_text(value) -> str | None:
    """A classification label as the class name it is stored under: 1, 1.0 and "1" are "1"; missing is None."""
    if value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NA or value == "":
        return None
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value)).lower()
    if isinstance(value, (int, np.integer)) or (isinstance(value, (float, np.floating)) and float(value).is_integer()):
        return str(int(value))
    return str(value)


def _label_names(given: str | None, labels: pd.Series, source: str) -> list[str]:
    found = sorted({t for t in map(label_text, labels) if t is not None},
                   key=lambda t: (0, int(t), t) if re.fullmatch(r"-?\d+", t) else (1, 0, t))
    if given is None:
        if len(found) < 2:
            raise ValueError(f"{source}: its train split has {len(found)} distinct label(s) {found}; a classifier "
                             f"needs two or more (or pass --problem-type regression for scores)")
        if len(found) > MAX_CLASSES:
            raise ValueError(f"{source}: {len(found):,} distinct labels, more than {MAX_CLASSES} classes; scores? pass "
                             f"--problem-type regression")
        return found
    try:
        names = json.loads(given)
    except ValueError:
        names = None
    if not (isinstance(names, list) and len(names) >= 2 and all(isinstance(n, str) and n for n in names)
            and len(set(names)) == len(names)):
        raise ValueError(f"--label-names {quoted(given)}: expected a JSON list of two or more distinct class names "
                         f"in id order, e.g. '[\"negative\", \"positive\"]'")
    return names


# -------------------------------------------------------------------------------------------------------- reading


def _read_file(path: Path, columns: tuple[str, ...]) -> pd.DataFrame:
    """One file as a frame; text stays text (CSV: only an empty cell is missing, never 'NA' or 'null')."""
    kind = path.suffix.lower()
    try:
        if kind in (".csv", ".tsv"):
            df = pd.read_csv(path, sep="\t" if kind == ".tsv" else ",", keep_default_na=False, na_values=[""],
                             dtype={c: str for c in columns[:-1]}, encoding="utf-8-sig")
        elif kind == ".parquet":
            df = pd.read_parquet(path)
        else:
            with open(path, encoding="utf-8") as f:
                lines = f.read(1).lstrip() != "["
            df = pd.read_json(path, lines=lines or kind == ".jsonl", dtype=False)
    except (ValueError, UnicodeDecodeError, OSError, pd.errors.ParserError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        hint = "; save it as UTF-8" if isinstance(e, UnicodeDecodeError) else ""
        raise ValueError(f"{path} is not a readable {kind[1:]} file: {first}{hint}") from None
    return df


def _files(folder: Path) -> dict[str, Path]:
    found = {}
    for split, names in (("train", ("train",)), ("validation", DEV_NAMES)):
        hits = [folder / f"{n}{ext}" for n in names for ext in FORMATS if (folder / f"{n}{ext}").is_file()]
        if len(hits) > 1:
            raise ValueError(f"{folder} has {len(hits)} files for its {split} split ({', '.join(h.name for h in hits)}); "
                             f"keep one")
        if hits:
            found[split] = hits[0]
    if "train" not in found:
        raise FileNotFoundError(f"{folder} has no train.<ext> ({', '.join(FORMATS)}); a dataset folder holds "
                                f"train.<ext> and optionally validation.<ext> or dev.<ext>")
    return found


def _from_hub(source: str) -> dict[str, pd.DataFrame]:
    try:
        import datasets

        splits = datasets.load_dataset(source)
    except Exception as e:  # offline, no such dataset, auth: all mean "not available from the hub"
        raise FileNotFoundError(f"--task {quoted(source)} is not a GLUE task ({', '.join(TASKS)}), not a file or folder "
                                f"here, and the Hugging Face hub could not load it ({type(e).__name__}: "
                                f"{str(e).splitlines()[0] if str(e) else ''}); pass a local file or folder, or run "
                                f"with internet access") from None
    frames = {}
    for split, names in (("train", ("train",)), ("validation", DEV_NAMES)):
        name = next((n for n in names if n in splits), None)
        if name is not None:
            ds = splits[name]
            frames[split] = ds.to_pandas()
            for column, feature in ds.features.items():     # class ids with names: the names are the labels
                if hasattr(feature, "int2str"):
                    frames[split][column] = [feature.int2str(int(v)) if v >= 0 else None
                                             for v in frames[split][column]]
    if "train" not in frames:
        raise FileNotFoundError(f"hub dataset {source} has no train split (it has {', '.join(splits)})")
    return frames


def read_raw(source: str, columns: tuple[str, ...]) -> tuple[dict[str, pd.DataFrame], dict[str, str]]:
    """``{"train", "validation"}`` frames of ``columns`` (text columns then the label column, as stored) and where
    each came from; a missing validation split is a seeded tenth of train (``DEV_FRACTION``, ``DEV_SEED``)."""
    path = Path(source)
    if path.is_file():
        files = {"train": path}
    elif path.is_dir():
        files = _files(path)
    else:
        files = None
    frames = ({split: _read_file(p, columns) for split, p in files.items()} if files is not None
              else _from_hub(source))
    where = {split: str(files[split]) if files else f"hub:{source}/{split}" for split in frames}
    for split, df in frames.items():
        if df.empty:
            raise ValueError(f"{where[split]} has no rows; a dataset needs examples in its {split} split")
        missing = [c for c in columns if c not in df.columns]
        if missing:
            raise ValueError(f"{where[split]} has no column(s) {missing}; its columns: {list(df.columns)[:20]} (set "
                             f"--text-columns and --label-column)")
        frames[split] = df[list(columns)]
    if "validation" not in frames:
        train = frames["train"]
        n_dev = min(DEV_CAP, max(1, round(DEV_FRACTION * len(train))))
        if len(train) - n_dev < 2:
            raise ValueError(f"{where['train']} has {len(train)} example(s): too few to hold out a dev split and "
                             f"train; give it more, or a validation split")
        order = np.random.default_rng(DEV_SEED).permutation(len(train))
        frames = {"train": train.iloc[order[n_dev:]], "validation": train.iloc[order[:n_dev]]}   # rows keep
        # their place in the file, for the errors below
        where["validation"] = f"{where['train']} (a seeded {n_dev}-example dev split, seed {DEV_SEED})"
    return frames, where


def load_split(task: Task, split: str) -> tuple[pd.DataFrame, str]:
    """One split of a dataset task: its text columns and ``label`` (class ids, or float scores), and its source.
    A bad row is named by its place in its file (0-based, header not counted)."""
    frames, where = read_raw(task.source, (*task.text_keys, task.label_column))
    df = frames[split].rename(columns={task.label_column: "label"})
    for key in task.text_keys:
        bad = df.index[~df[key].map(lambda v: isinstance(v, str))]
        if len(bad):
            raise ValueError(f"{where[split]}: {len(bad)} of {len(df)} {split} rows have no {key} text (row "
                             f"{bad[0]}: {_shown(df.at[bad[0], key])}); every {key} must be a string")
    raw = df["label"]
    gaps = raw.index[raw.map(label_text).isna()] if not task.is_regression else raw.index[raw.isna()]
    if len(gaps):
        raise ValueError(f"{where[split]}: {len(gaps)} of {len(df)} {split} rows have no {task.label_column} label "
                         f"(row {gaps[0]}); give every example one, or leave the row out")
    if task.is_regression:
        scores = (pd.Series(np.nan, index=raw.index) if pd.api.types.is_bool_dtype(raw)
                  else pd.to_numeric(raw, errors="coerce").astype(float))
        bad = raw[~np.isfinite(scores.to_numpy(dtype=float))]
        if len(bad):
            raise ValueError(f"{where[split]}: {len(bad)} of {len(df)} {split} labels of {task.label_column} are not "
                             f"finite numbers (row {bad.index[0]}: {_shown(bad.iloc[0])}); a regression needs a score "
                             f"in every row")
        return df.assign(label=scores.astype(np.float32)).reset_index(drop=True), where[split]
    ids = {name: i for i, name in enumerate(task.label_names)}
    texts = raw.map(label_text)
    bad = texts[~texts.isin(list(ids))]
    if len(bad):
        raise ValueError(f"{where[split]}: {len(bad)} of {len(df)} {split} labels of {task.label_column} are not "
                         f"one of its classes {list(task.label_names)[:10]} (row {bad.index[0]}: "
                         f"{_shown(raw.at[bad.index[0]])}); fix them, or set --label-names")
    return df.assign(label=texts.map(ids).astype("int64")).reset_index(drop=True), where[split]



def _shown(value) -> str:
    """A cell of the user's data in an error: its Python value, on one line, cut to a readable length."""
    value = value.item() if isinstance(value, np.generic) else value
    return quoted(value.tolist() if isinstance(value, np.ndarray) else value)
