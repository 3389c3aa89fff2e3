"""Your own data as a task (``opdf_ray.userdata``): formats, detection, the protocol, and one-line errors for the
family of bad datasets. Real files in every format, the repo's example dataset, no Ray."""

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from opdf_ray.config import RunSpec
from opdf_ray.data import load_glue
from opdf_ray.export import retrain_command
from opdf_ray.leaderboard import config_id, make_row, read_leaderboard, tasks_of, write_row
from opdf_ray.run import parse_spec
from opdf_ray.tasks import TASKS, task_of
from opdf_ray.userdata import DEV_SEED, resolve

REPO = Path(__file__).resolve().parent.parent
REVIEWS = REPO / "data" / "examples" / "reviews.csv"
STSB = REPO / "data" / "glue" / "stsb"


def reviews(**extra) -> dict:
    return resolve({"task": str(REVIEWS), "text_columns": "review", "label_column": "sentiment"} | extra)


def test_the_example_dataset_becomes_a_task_with_its_own_labels_and_metrics():
    values = reviews()
    assert values["task"] == "reviews" and values["dataset"] == str(REVIEWS)
    assert values["problem_type"] == "classification" and json.loads(values["label_names"]) == ["negative", "positive"]
    task = task_of(RunSpec.from_dict(values))
    assert task.text_keys == ("review",) and task.label_names == ("negative", "positive")
    assert task.metrics == ("accuracy", "f1", "mcc") and task.selection_metric == "accuracy"
    splits = load_glue(task, seed=1)
    file = pd.read_csv(REVIEWS)
    # the protocol: a seeded dev tenth, the same for every run seed; the selection slice carved from the rest
    assert len(splits.dev["validation"]) == 80 and len(splits.train) + len(splits.selection) == len(file) - 80
    assert load_glue(task, seed=2).dev["validation"].equals(splits.dev["validation"])
    assert not load_glue(task, seed=2).selection.equals(splits.selection)
    ids = dict(zip(file["review"], file["sentiment"].map({"negative": 0, "positive": 1})))
    dev = splits.dev["validation"]
    assert all(ids[text] == label for text, label in zip(dev["review"], dev["label"]))
    assert f"seed {DEV_SEED}" in splits.sources["validation"]


def test_formats_folders_scores_and_classes_are_detected(tmp_path):
    """A folder of JSON Lines with its own validation split and integer ids; Parquet scores; TSV with 3 classes."""
    train, dev = pd.read_parquet(STSB / "train.parquet"), pd.read_parquet(STSB / "validation.parquet")
    folder = tmp_path / "pairs"
    folder.mkdir()
    (train.head(60).assign(same=lambda d: (d.label > 2.5).astype(int))
     .to_json(folder / "train.jsonl", orient="records", lines=True))
    dev.head(20).assign(same=lambda d: (d.label > 2.5).astype(int)).to_json(folder / "dev.jsonl", orient="records",
                                                                          lines=True)
    values = resolve({"task": str(folder), "text_columns": "sentence1,sentence2", "label_column": "same"})
    assert values["task"] == "pairs" and json.loads(values["label_names"]) == ["0", "1"]
    splits = load_glue(task_of(values), selection_fraction=0.2)
    assert len(splits.dev["validation"]) == 20 and len(splits.train) == 48     # dev is the given split, whole
    train.head(60).to_parquet(tmp_path / "scores.parquet")
    scores = resolve({"task": str(tmp_path / "scores.parquet"), "text_columns": "sentence1,sentence2"})
    assert scores["problem_type"] == "regression" and scores["label_names"] is None
    assert task_of(scores).metrics == ("pearson", "spearman") and task_of(scores).num_labels == 1
    assert "temperature" in __import__("opdf_ray.config", fromlist=["x"]).inert_settings(scores | {"method": "kd"})
    three = train.head(60).assign(kind=lambda d: pd.cut(d.label, [-1, 1.5, 3.5, 6], labels=["low", "mid", "high"]))
    three[["sentence1", "kind"]].to_csv(tmp_path / "three.tsv", sep="\t", index=False)
    values = resolve({"task": str(tmp_path / "three.tsv"), "text_columns": "sentence1", "label_column": "kind"})
    assert json.loads(values["label_names"]) == ["high", "low", "mid"]
    assert task_of(values).metrics == ("accuracy", "mcc")       # F1 of "the second class" means nothing here
    fixed = resolve({"task": str(tmp_path / "three.tsv"), "text_columns": "sentence1", "label_column": "kind",
                     "label_names": '["low", "mid", "high"]'})
    assert task_of(fixed).label_names == ("low", "mid", "high")
    # a score given as whole numbers is a class unless said otherwise
    ints = train.head(60).assign(label=lambda d: d.label.round().astype(int))
    ints.to_csv(tmp_path / "ints.csv", index=False)
    assert resolve({"task": str(tmp_path / "ints.csv"), "text_columns": "sentence1"})["problem_type"] == "classification"
    assert resolve({"task": str(tmp_path / "ints.csv"), "text_columns": "sentence1",
                    "problem_type": "regression"})["label_names"] is None


def test_csv_text_that_looks_missing_stays_text(tmp_path):
    df = pd.DataFrame({"text": ["NA", "null", "None", "n/a", "12", "ok"] * 4, "label": ["a", "b"] * 12})
    df.to_csv(tmp_path / "words.csv", index=False)
    task = task_of(resolve({"task": str(tmp_path / "words.csv"), "text_columns": "text"}))
    splits = load_glue(task, selection_fraction=0.2)
    texts = set(splits.train["text"]) | set(splits.selection["text"]) | set(splits.dev["validation"]["text"])
    assert texts == {"NA", "null", "None", "n/a", "12", "ok"}


def _bad_files(tmp_path: Path) -> dict:
    pd.DataFrame({"review": ["good film"] * 10, "sentiment": ["positive"] * 10}).to_csv(tmp_path / "one.csv",
                                                                                     index=False)
    gap = pd.read_csv(REVIEWS)
    gap.loc[7, "review"] = None
    gap.to_csv(tmp_path / "gap.csv", index=False)
    (tmp_path / "empty.csv").write_text("review,sentiment\n")
    (tmp_path / "broken.csv").write_text("review,sentiment\ngood,positive\nbad,negative,extra,fields\n" * 3)
    (tmp_path / "binary.parquet").write_bytes(b"\x00\x01 not parquet")
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "nofolder").mkdir()
    (tmp_path / "twice").mkdir()
    for name in ("train.csv", "train.jsonl"):
        shutil.copy(REVIEWS, tmp_path / "twice" / name)
    (tmp_path / "devlabels").mkdir()
    shutil.copy(REVIEWS, tmp_path / "devlabels" / "train.csv")
    pd.DataFrame({"review": ["fine"], "sentiment": ["neutral"]}).to_csv(tmp_path / "devlabels" / "validation.csv",
                                                                       index=False)
    return {"one": tmp_path / "one.csv", "gap": tmp_path / "gap.csv", "empty": tmp_path / "empty.csv",
            "broken": tmp_path / "broken.csv", "binary": tmp_path / "binary.parquet", "txt": tmp_path / "notes.txt",
            "nofolder": tmp_path / "nofolder", "twice": tmp_path / "twice", "devlabels": tmp_path / "devlabels"}


BAD = [
    ("missing", {"task": "data/nowhere/my.csv"}, FileNotFoundError, "no such file or folder"),
    ("txt", {}, ValueError, r"\.txt is not a data format; allowed: \.csv"),
    ("reviews", {"text_columns": None}, ValueError, "needs --text-columns"),
    ("reviews", {"text_columns": "review,review"}, ValueError, "one or two distinct column names"),
    ("reviews", {"text_columns": "a,b,c"}, ValueError, "one or two distinct column names"),
    ("reviews", {"text_columns": "text"}, ValueError, r"no column\(s\) \['text'\]; its columns: \['review', "),
    ("reviews", {"label_column": "review"}, ValueError, "is also a text column"),
    ("reviews", {"problem_type": "regression"}, ValueError, "not finite numbers .*row \\d+: 'negative'"),
    ("reviews", {"problem_type": "ranking"}, ValueError, "allowed: classification, regression"),
    ("reviews", {"label_names": "negative,positive"}, ValueError, "expected a JSON list"),
    ("reviews", {"label_names": '["negative"]'}, ValueError, "two or more distinct class names"),
    ("reviews", {"label_names": '["bad", "good"]'}, ValueError, r"not one of its classes \['bad', 'good'\]"),
    ("one", {}, ValueError, r"1 distinct label\(s\) \['positive'\]; a classifier needs two or more"),
    ("gap", {}, ValueError, "rows have no review text \\(row 7: nan\\)"),
    ("empty", {}, ValueError, "has no rows"),
    ("broken", {}, ValueError, "is not a readable csv file"),
    ("binary", {}, ValueError, "is not a readable parquet file"),
    ("nofolder", {}, FileNotFoundError, r"has no train\.<ext>"),
    ("twice", {}, ValueError, r"2 files for its train split \(train\.csv, train\.jsonl\); keep one"),
    ("devlabels", {}, ValueError, r"validation labels of sentiment are not one of its classes.*'neutral'"),
]


@pytest.mark.parametrize("name,extra,error,match", BAD, ids=[f"{b[0]}-{k}" for k, b in enumerate(BAD)])
def test_a_bad_dataset_is_one_line_saying_what_to_fix(tmp_path, name, extra, error, match):
    files = _bad_files(tmp_path) | {"reviews": REVIEWS}
    values = {"task": str(files.get(name, name)), "text_columns": "review", "label_column": "sentiment"} | extra
    with pytest.raises(error, match=match) as caught:
        RunSpec.from_dict(resolve({k: v for k, v in values.items() if v is not None}))
    assert "\n" not in str(caught.value)


def test_dataset_settings_beside_a_glue_task_and_unresolved_datasets_are_refused():
    with pytest.raises(ValueError, match="describe your own data, but task='sst2' is GLUE's"):
        RunSpec(task="sst2", text_columns="sentence")
    with pytest.raises(ValueError, match="task='reviews' is invalid; allowed: cola, .* or your own data"):
        RunSpec(task="reviews")
    with pytest.raises(ValueError, match="is not resolved"):
        RunSpec(task="reviews", dataset=str(REVIEWS), text_columns="review")
    with pytest.raises(ValueError, match="is the task 'reviews', not 'films'"):
        resolve(reviews() | {"task": "films"})
    with pytest.raises(FileNotFoundError, match="not a GLUE task .* the Hugging Face hub could not load it"):
        resolve({"task": "sst-2", "text_columns": "sentence"})      # a typo of a GLUE name, offline: one line


def test_a_dataset_named_like_a_glue_task_keeps_apart(tmp_path):
    shutil.copy(REVIEWS, tmp_path / "sst2.csv")
    values = resolve({"task": str(tmp_path / "sst2.csv"), "text_columns": "review", "label_column": "sentiment"})
    assert values["task"] == "sst2-data" and values["task"] not in TASKS


def test_rows_of_a_dataset_carry_its_task_and_retrain_from_their_command(tmp_path):
    spec = RunSpec.from_dict(reviews() | {"method": "kd", "seed": 3, "lr": 1e-4}).to_dict()
    result = {"best_score": 70.0}
    write_row(str(tmp_path / "board"), make_row("run", "t1", "pruned", spec, result))
    board = read_leaderboard(str(tmp_path / "board"))
    assert list(board["task"].astype(str)) == ["reviews"] and board["dataset"].iloc[0] == str(REVIEWS)
    assert tasks_of(board)["reviews"].label_names == ("negative", "positive")
    command = retrain_command(board.iloc[0])
    assert f"--task {REVIEWS}" in command and "--label-names" in command
    import shlex

    assert parse_spec(shlex.split(command)[3:]).to_dict() == RunSpec.from_dict(spec).to_dict()


def test_a_glue_configuration_keeps_its_id():
    """The dataset settings are empty for GLUE and left out of the hash: ids of rows written before them hold."""
    spec = RunSpec(task="sst2", method="kd", lr=1e-4).to_dict()
    before = {k: v for k, v in spec.items() if k not in ("dataset", "text_columns", "label_column", "problem_type",
                                                           "label_names")}
    assert config_id(spec) == config_id(before)


def test_a_run_trains_on_a_dataset_of_scores_and_one_of_classes(tmp_path):
    """``opdf-ray run`` on your own data, both problem types, the tiny preset: the metrics fit, the saved student's
    config names the classes (a regression head keeps its one unnamed output)."""
    from transformers import AutoConfig

    from opdf_ray.api import distill

    pd.read_parquet(STSB / "train.parquet").head(80).to_parquet(tmp_path / "scores.parquet")
    common = {"preset": "tiny", "max_steps": 2, "teacher_epochs": 1, "max_length": 32, "progress": False,
              "cache_dir": str(tmp_path / "cache")}
    scores = distill(str(tmp_path / "scores.parquet"), text_columns="sentence1,sentence2",
                     output_dir=str(tmp_path / "s"), **common)
    assert scores["task"] == "scores" and set(scores["dev"]["validation"]) == {"pearson", "spearman"}
    assert AutoConfig.from_pretrained(tmp_path / "s" / "model").num_labels == 1
    classes = distill(str(REVIEWS), text_columns="review", label_column="sentiment", output_dir=str(tmp_path / "c"),
                      **common)
    assert set(classes["dev"]["validation"]) == {"accuracy", "f1", "mcc"}
    assert AutoConfig.from_pretrained(tmp_path / "c" / "model").id2label == {0: "negative", 1: "positive"}


def test_more_bad_datasets_name_the_row_and_the_fix(tmp_path):
    """Missing labels, text that is not text, an infinite score, a broken link, an empty file, a Latin-1 CSV."""
    import numpy as np

    file = pd.read_csv(REVIEWS)
    file.assign(sentiment=lambda d: d.sentiment.where(d.index != 3)).to_csv(tmp_path / "nolabel.csv", index=False)
    file.assign(review=lambda d: [[w] for w in d.review]).to_parquet(tmp_path / "nested.parquet")
    file.assign(sentiment=np.linspace(0, 1, len(file))).assign(
        sentiment=lambda d: d.sentiment.where(d.index != 5, np.inf)).to_csv(tmp_path / "inf.csv", index=False)
    (tmp_path / "link.csv").symlink_to(tmp_path / "gone.csv")
    (tmp_path / "empty.jsonl").write_text("")
    (tmp_path / "latin.csv").write_bytes("review,sentiment\ncafé au lait,positive\n".encode("latin-1") * 30)
    cases = [("nolabel.csv", "rows have no sentiment label \\(row 3\\); give every example one"),
             ("nested.parquet", r"rows have no review text \(row \d+: \['.*'\]\); every review must be a string"),
             ("inf.csv", r"not finite numbers \(row 5: inf\)"),
             ("link.csv", "is a link to .*gone.csv', which does not exist"),
             ("empty.jsonl", "has no rows"),
             ("latin.csv", "is not a readable csv file: 'utf-8' codec can't decode .*; save it as UTF-8")]
    for name, match in cases:
        with pytest.raises((ValueError, FileNotFoundError), match=match) as caught:
            resolve({"task": str(tmp_path / name), "text_columns": "review", "label_column": "sentiment"})
        assert "\n" not in str(caught.value), name
