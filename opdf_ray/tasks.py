"""The tasks opdf-ray distils: GLUE's nine, and a user's own dataset described by a run's settings (``task_of``).
Light on purpose (no pandas, no torch): the command line's help and checks read it before anything heavy is
imported; ``opdf_ray.userdata`` reads a dataset to fill those settings in."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

SELECT_ON = ("selection", "dev")             # what picks checkpoints: the honest held-out slice, or dev (papers)
LGTM_FEEDBACK = ("split", "shared")          # LGTM's feedback: its own half of the held-out slice, or all of it


@dataclass(frozen=True)
class Task:
    """One task: its text columns, label space, metrics and splits (GLUE: HF ``glue`` names and label ids; a user's
    dataset: its own columns, ``source`` where it lives)."""

    name: str
    text_keys: tuple[str, ...]
    label_names: tuple[str, ...]            # empty for regression (STS-B)
    metrics: tuple[str, ...]
    selection_metric: str                   # what picks checkpoints and what Tune optimises
    dev_splits: tuple[str, ...] = ("validation",)
    tsv_folder: str = ""
    tsv_columns: tuple[str | int, ...] = () # text columns then label column (names, or indices if no header)
    source: str = ""                        # a user's dataset: its absolute path or hub id ("" for GLUE)
    label_column: str = "label"

    @property
    def num_labels(self) -> int:
        return len(self.label_names) or 1

    @property
    def is_regression(self) -> bool:
        return not self.label_names


TASKS: dict[str, Task] = {t.name: t for t in [
    Task("cola", ("sentence",), ("unacceptable", "acceptable"), ("mcc",), "mcc",
             tsv_folder="CoLA", tsv_columns=(3, 1)),
    Task("sst2", ("sentence",), ("negative", "positive"), ("accuracy",), "accuracy",
             tsv_folder="SST-2", tsv_columns=("sentence", "label")),
    Task("mrpc", ("sentence1", "sentence2"), ("not_equivalent", "equivalent"), ("f1", "accuracy"), "f1",
             tsv_folder="MRPC", tsv_columns=("#1 String", "#2 String", "Quality")),
    Task("stsb", ("sentence1", "sentence2"), (), ("pearson", "spearman"), "spearman",
             tsv_folder="STS-B", tsv_columns=("sentence1", "sentence2", "score")),
    Task("qqp", ("question1", "question2"), ("not_duplicate", "duplicate"), ("f1", "accuracy"), "f1",
             tsv_folder="QQP", tsv_columns=("question1", "question2", "is_duplicate")),
    Task("mnli", ("premise", "hypothesis"), ("entailment", "neutral", "contradiction"), ("accuracy",),
             "accuracy", dev_splits=("validation_matched", "validation_mismatched"),
             tsv_folder="MNLI", tsv_columns=("sentence1", "sentence2", "gold_label")),
    Task("qnli", ("question", "sentence"), ("entailment", "not_entailment"), ("accuracy",), "accuracy",
             tsv_folder="QNLI", tsv_columns=("question", "sentence", "label")),
    Task("rte", ("sentence1", "sentence2"), ("entailment", "not_entailment"), ("accuracy",), "accuracy",
             tsv_folder="RTE", tsv_columns=("sentence1", "sentence2", "label")),
    Task("wnli", ("sentence1", "sentence2"), ("not_entailment", "entailment"), ("accuracy",), "accuracy",
             tsv_folder="WNLI", tsv_columns=("sentence1", "sentence2", "label")),
]}

def get_task(name: str) -> Task:
    if name not in TASKS:
        raise ValueError(f"unknown GLUE task {name!r}; known tasks: {', '.join(TASKS)}")
    return TASKS[name]


# ------------------------------------------------------------------------------------------------ a user's dataset

PROBLEM_TYPES = ("classification", "regression")
DATASET_SETTINGS = ("dataset", "text_columns", "label_column", "problem_type", "label_names")   # RunSpec fields
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")     # a dataset task's name: a leaderboard folder, a file name


def dataset_metrics(problem_type: str, classes: int) -> tuple[tuple[str, ...], str]:
    """A dataset's metrics and the one that selects: Pearson/Spearman (Spearman selects) for a score; accuracy
    (selects), F1 of the second class and MCC for two classes; accuracy and MCC for more (both defined there)."""
    if problem_type == "regression":
        return ("pearson", "spearman"), "spearman"
    return (("accuracy", "f1", "mcc") if classes == 2 else ("accuracy", "mcc")), "accuracy"


def task_of(values) -> Task:
    """The task a run's settings describe (``values``: a ``RunSpec``, its dict or a leaderboard row), reading
    nothing: a GLUE name, or a dataset's name with its settings, as ``opdf_ray.userdata.resolve`` filled them in."""
    get = values.get if hasattr(values, "get") else lambda key: getattr(values, key, None)
    dataset = get("dataset")
    if dataset is None or dataset != dataset:           # None, or NaN in a row read back
        return get_task(str(get("task")))
    labels = tuple(json.loads(get("label_names"))) if get("problem_type") == "classification" else ()
    metrics, selection = dataset_metrics(get("problem_type"), len(labels))
    return Task(str(get("task")), tuple(get("text_columns").split(",")), labels, metrics, selection,
                source=dataset, label_column=get("label_column"))


def names_dataset(values: dict) -> bool:
    """Whether run settings describe a user's dataset (``opdf_ray.userdata.resolve`` reads it), not a GLUE task."""
    return values.get("dataset") is not None or values.get("task") not in TASKS


def is_regression(values: dict) -> bool:
    """Whether ``values`` (run settings, some possibly missing) describe a regression task."""
    task = values.get("task")
    return (task in TASKS and TASKS[task].is_regression) or values.get("problem_type") == "regression"


def in_task_order(names) -> list[str]:
    """Task names in report order: GLUE's, then datasets' by name."""
    names = set(map(str, names))
    return [t for t in TASKS if t in names] + sorted(names - set(TASKS))
