"""The GLUE tasks opdf-ray knows: columns, labels, metrics, splits. Light on purpose (no pandas, no torch): the
command line's help and checks read it before anything heavy is imported."""

from __future__ import annotations

from dataclasses import dataclass

SELECT_ON = ("selection", "dev")             # what picks checkpoints: the honest held-out slice, or dev (papers)
LGTM_FEEDBACK = ("split", "shared")          # LGTM's feedback: its own half of the held-out slice, or all of it


@dataclass(frozen=True)
class GlueTask:
    """One GLUE task: its text columns, label space, metrics and splits (HF ``glue`` names and label ids)."""

    name: str
    text_keys: tuple[str, ...]
    label_names: tuple[str, ...]            # empty for regression (STS-B)
    metrics: tuple[str, ...]
    selection_metric: str                   # what picks checkpoints and what Tune optimises
    dev_splits: tuple[str, ...] = ("validation",)
    tsv_folder: str = ""
    tsv_columns: tuple[str | int, ...] = () # text columns then label column (names, or indices if no header)

    @property
    def num_labels(self) -> int:
        return len(self.label_names) or 1

    @property
    def is_regression(self) -> bool:
        return not self.label_names


TASKS: dict[str, GlueTask] = {t.name: t for t in [
    GlueTask("cola", ("sentence",), ("unacceptable", "acceptable"), ("mcc",), "mcc",
             tsv_folder="CoLA", tsv_columns=(3, 1)),
    GlueTask("sst2", ("sentence",), ("negative", "positive"), ("accuracy",), "accuracy",
             tsv_folder="SST-2", tsv_columns=("sentence", "label")),
    GlueTask("mrpc", ("sentence1", "sentence2"), ("not_equivalent", "equivalent"), ("f1", "accuracy"), "f1",
             tsv_folder="MRPC", tsv_columns=("#1 String", "#2 String", "Quality")),
    GlueTask("stsb", ("sentence1", "sentence2"), (), ("pearson", "spearman"), "spearman",
             tsv_folder="STS-B", tsv_columns=("sentence1", "sentence2", "score")),
    GlueTask("qqp", ("question1", "question2"), ("not_duplicate", "duplicate"), ("f1", "accuracy"), "f1",
             tsv_folder="QQP", tsv_columns=("question1", "question2", "is_duplicate")),
    GlueTask("mnli", ("premise", "hypothesis"), ("entailment", "neutral", "contradiction"), ("accuracy",),
             "accuracy", dev_splits=("validation_matched", "validation_mismatched"),
             tsv_folder="MNLI", tsv_columns=("sentence1", "sentence2", "gold_label")),
    GlueTask("qnli", ("question", "sentence"), ("entailment", "not_entailment"), ("accuracy",), "accuracy",
             tsv_folder="QNLI", tsv_columns=("question", "sentence", "label")),
    GlueTask("rte", ("sentence1", "sentence2"), ("entailment", "not_entailment"), ("accuracy",), "accuracy",
             tsv_folder="RTE", tsv_columns=("sentence1", "sentence2", "label")),
    GlueTask("wnli", ("sentence1", "sentence2"), ("not_entailment", "entailment"), ("accuracy",), "accuracy",
             tsv_folder="WNLI", tsv_columns=("sentence1", "sentence2", "label")),
]}

def get_task(name: str) -> GlueTask:
    if name not in TASKS:
        raise ValueError(f"unknown GLUE task {name!r}; known tasks: {', '.join(TASKS)}")
    return TASKS[name]
