"""GLUE data: every shipped task loads exactly, classic TSVs and MNLI work, the protocol never leaks dev."""

import re

import numpy as np
import pandas as pd
import pytest

from opdf_ray.data import BUNDLED_GLUE, compute_metrics, load_glue, load_split, tokenize

from opdf_ray.tasks import TASKS, get_task

SHARED_SIZES = {  # shared/glue/README.md
    ("cola", "train"): 8551, ("cola", "validation"): 1043, ("sst2", "train"): 67349, ("sst2", "validation"): 872,
    ("mrpc", "train"): 3668, ("mrpc", "validation"): 408, ("stsb", "train"): 5749, ("stsb", "validation"): 1500,
    ("qnli", "validation"): 5463, ("rte", "train"): 2490, ("rte", "validation"): 277, ("wnli", "train"): 635,
    ("wnli", "validation"): 71,
}


@pytest.mark.parametrize("task,split", sorted(SHARED_SIZES))
def test_every_shipped_split_loads_with_the_right_columns_labels_and_size(task, split):
    df, source = load_split(task, split)
    spec = TASKS[task]
    assert source == str(BUNDLED_GLUE / task / f"{split}.parquet")
    assert list(df.columns) == [*spec.text_keys, "label"]
    assert len(df) == SHARED_SIZES[(task, split)]
    if spec.is_regression:
        assert df.label.between(0, 5).all() and df.label.nunique() > 50
    else:
        assert sorted(df.label.unique()) == list(range(spec.num_labels))


def test_the_registry_covers_all_nine_tasks_with_their_selection_metrics():
    assert set(TASKS) == {"cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte", "wnli"}
    assert {t: TASKS[t].selection_metric for t in TASKS} == {
        "cola": "mcc", "sst2": "accuracy", "mrpc": "f1", "stsb": "spearman", "qqp": "f1", "mnli": "accuracy",
        "qnli": "accuracy", "rte": "accuracy", "wnli": "accuracy"}
    assert TASKS["stsb"].num_labels == 1 and TASKS["mnli"].num_labels == 3
    assert TASKS["mnli"].dev_splits == ("validation_matched", "validation_mismatched")


def write_mnli_parquet(root, rows=30):
    rng = np.random.default_rng(0)
    for split in ("train", "validation_matched", "validation_mismatched"):
        (root / "mnli").mkdir(parents=True, exist_ok=True)
        pd.DataFrame({"premise": [f"{split} premise {i}" for i in range(rows)],
                      "hypothesis": [f"hypothesis {i}" for i in range(rows)],
                      "label": rng.integers(0, 3, rows), "idx": range(rows)}
                     ).to_parquet(root / "mnli" / f"{split}.parquet")


def test_mnli_loads_matched_and_mismatched_dev_from_the_hf_layout(tmp_path):
    write_mnli_parquet(tmp_path)
    splits = load_glue("mnli", data_dir=tmp_path, selection_fraction=0.2)
    assert set(splits.dev) == {"validation_matched", "validation_mismatched"}
    assert len(splits.train) == 24 and len(splits.selection) == 6
    assert splits.dev["validation_mismatched"].premise[0] == "validation_mismatched premise 0"


def test_classic_glue_tsv_folders_are_read_with_hf_label_ids(tmp_path):
    mnli = tmp_path / "MNLI"
    mnli.mkdir()
    header = "index\tpromptID\tpairID\tgenre\tsentence1_binary_parse\tsentence2_binary_parse\tsentence1_parse\t" \
             "sentence2_parse\tsentence1\tsentence2\tlabel1\tgold_label\n"
    for name in ("train.tsv", "dev_matched.tsv", "dev_mismatched.tsv"):
        lines = [f"{i}\tp\tq\tg\tb1\tb2\tp1\tp2\tA \"quoted\" premise {i}\thypothesis {i}\tx\t{lab}\n"
                 for i, lab in enumerate(["entailment", "neutral", "contradiction", "neutral"])]
        (mnli / name).write_text(header + "".join(lines))
    df, source = load_split("mnli", "validation_mismatched", tmp_path)
    assert source.endswith("MNLI/dev_mismatched.tsv")
    assert df.label.tolist() == [0, 1, 2, 1] and df.premise[0] == 'A "quoted" premise 0'
    cola = tmp_path / "CoLA"
    cola.mkdir()
    (cola / "train.tsv").write_text("gj04\t1\t\tThe sailors rode the breeze clear of the rocks.\n"
                                    "gj04\t0\t*\tThe more we study verbs, the crazier they get get.\n")
    df, _ = load_split("cola", "train", tmp_path)
    assert df.label.tolist() == [1, 0] and df.sentence[1].startswith("The more")
    mrpc = tmp_path / "MRPC"
    mrpc.mkdir()
    (mrpc / "dev.tsv").write_text("\ufeffQuality\t#1 ID\t#2 ID\t#1 String\t#2 String\n1\t1\t2\tHe said.\tHe told.\n",
                                  encoding="utf-8")
    df, _ = load_split("mrpc", "validation", tmp_path)
    assert df.to_dict("records") == [{"sentence1": "He said.", "sentence2": "He told.", "label": 1}]


def test_a_data_dir_without_the_task_falls_back_to_the_shipped_copy(tmp_path):
    _, source = load_split("rte", "validation", tmp_path)
    assert source == str(BUNDLED_GLUE / "rte" / "validation.parquet")


def test_missing_data_is_a_clear_error_naming_where_it_looked(tmp_path):
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "qnli" / "train.parquet"))) as err:
        load_split("qnli", "train", tmp_path)
    assert "QNLI/train.tsv" in str(err.value) and "--data-dir" in str(err.value)


def write_rte(root, splits=("train", "validation"), **columns):
    (root / "rte").mkdir(exist_ok=True)
    frame = pd.DataFrame({"sentence1": ["a", "b", "c"], "sentence2": ["d", "e", "f"], "label": [0, 1, 0]} | columns)
    for split in splits:
        frame.to_parquet(root / "rte" / f"{split}.parquet")


def test_a_data_dir_with_the_task_gives_every_split_or_fails_naming_the_missing_one(tmp_path):
    write_rte(tmp_path, splits=("train",))                # before: validation silently came from the bundled copy
    with pytest.raises(FileNotFoundError, match=re.escape(f"{tmp_path} has GLUE rte but not its validation split")):
        load_split("rte", "validation", tmp_path)
    with pytest.raises(FileNotFoundError, match="not its validation split"):
        load_glue("rte", tmp_path)


@pytest.mark.parametrize("columns,message", [
    ({"sentence1": [], "sentence2": [], "label": []}, "has no rows; GLUE rte/train needs at least one example"),
    ({"sentence1": ["a", None, "c"]}, "1 of 3 rte/train rows have no sentence1 text (row 1: "),
    ({"sentence2": [4, 5, 6]}, "3 of 3 rte/train rows have no sentence2 text (row 0: 4)"),
    ({"label": [0, None, 1]}, "1 of 3 rte/train labels are not ids 0..1"),
])
def test_empty_splits_and_rows_without_text_or_label_fail_when_loaded(tmp_path, columns, message):
    write_rte(tmp_path, splits=("train",), **columns)
    with pytest.raises(ValueError, match=re.escape(message)):
        load_split("rte", "train", tmp_path)


def test_a_regression_label_that_is_missing_is_named_not_a_type_error(tmp_path):
    (tmp_path / "stsb").mkdir()
    pd.DataFrame({"sentence1": ["a", "b"], "sentence2": ["c", "d"], "label": [1.5, None]}).to_parquet(
        tmp_path / "stsb" / "train.parquet")
    with pytest.raises(ValueError, match=re.escape("1 of 2 stsb/train labels are not scores in [0, 5]")):
        load_split("stsb", "train", tmp_path)


def test_a_train_split_too_small_to_leave_training_examples_is_refused(tmp_path):
    write_rte(tmp_path)
    with pytest.raises(ValueError, match=r"train split has 3 example\(s\), all held out as the selection slice"):
        load_glue("rte", tmp_path, selection_fraction=0.9)


def test_unexpected_label_values_are_rejected(tmp_path):
    (tmp_path / "rte").mkdir()
    pd.DataFrame({"sentence1": ["a", "b", "c"], "sentence2": ["d", "e", "f"], "label": [0, 1, 7]}).to_parquet(
        tmp_path / "rte" / "train.parquet")
    with pytest.raises(ValueError, match=r"1 of 3 rte/train labels are not ids 0\.\.1"):
        load_split("rte", "train", tmp_path)


@pytest.mark.parametrize("call,error,message", [
    (lambda: get_task("glue"), ValueError, "unknown GLUE task 'glue'; known tasks: cola, sst2"),
    (lambda: load_split("rte", "test"), ValueError, "task rte has no split 'test'; allowed: train, validation"),
    (lambda: load_glue("rte", selection_fraction=1.5), ValueError, "selection_fraction must be in (0, 1)"),
])
def test_bad_requests_raise_clear_errors(call, error, message):
    with pytest.raises(error, match=re.escape(message)):
        call()


def test_selection_slice_is_seeded_held_out_of_train_and_capped():
    splits = load_glue("rte", seed=1)
    assert len(splits.selection) == 249 and len(splits.train) == 2490 - 249
    train_pairs = set(zip(splits.train.sentence1, splits.train.sentence2))
    assert not train_pairs & set(zip(splits.selection.sentence1, splits.selection.sentence2))
    dev_pairs = set(zip(splits.dev["validation"].sentence1, splits.dev["validation"].sentence2))
    assert not dev_pairs & train_pairs
    again, other = load_glue("rte", seed=1), load_glue("rte", seed=2)
    assert again.selection.equals(splits.selection) and not other.selection.equals(splits.selection)
    assert len(load_glue("sst2", selection_cap=500).selection) == 500
    assert len(load_glue("rte", max_train_samples=100).train) == 100


def test_metrics_match_hand_computed_values():
    labels = np.array([1, 1, 0, 0, 1])
    preds = np.array([1, 0, 0, 1, 1])
    # tp=2 fp=1 fn=1 tn=1: acc 3/5, f1 2/3, mcc (2·1 − 1·1)/sqrt(3·3·2·2) = 1/6
    assert compute_metrics(get_task("mrpc"), preds, labels) == pytest.approx({"f1": 200 / 3, "accuracy": 60.0})
    assert compute_metrics(get_task("cola"), preds, labels)["mcc"] == pytest.approx(100 / 6)
    scores = compute_metrics(get_task("stsb"), np.array([1.0, 2.0, 3.0, 5.0]), np.array([1.0, 3.0, 2.0, 4.0]))
    assert scores["spearman"] == pytest.approx(80.0)
    assert scores["pearson"] == pytest.approx(100 * np.corrcoef([1, 2, 3, 5], [1, 3, 2, 4])[0, 1])
    assert compute_metrics(get_task("stsb"), np.ones(4), np.array([1.0, 3.0, 2.0, 4.0]))["pearson"] == 0.0


def test_tokenised_splits_are_cached_and_max_length_is_validated(tmp_path):
    from transformers import AutoTokenizer

    from opdf_ray.models import packaged_minilm_path

    tokenizer = AutoTokenizer.from_pretrained(packaged_minilm_path())
    df, _ = load_split("rte", "validation")
    first = tokenize(df, get_task("rte"), tokenizer, 32, tmp_path)
    cached = list((tmp_path / "tokens").glob("rte-*.parquet"))
    assert len(cached) == 1
    assert max(len(x) for x in first["input_ids"]) == 32 and first["labels"] == df.label.tolist()
    assert tokenize(df, get_task("rte"), tokenizer, 32, tmp_path) == first
    tokenize(df, get_task("rte"), tokenizer, 48, tmp_path)
    assert len(list((tmp_path / "tokens").glob("rte-*.parquet"))) == 2
    with pytest.raises(ValueError, match="max_length must be a positive int, got 0"):
        tokenize(df, get_task("rte"), tokenizer, 0, tmp_path)
