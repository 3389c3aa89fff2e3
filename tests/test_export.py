"""``opdf-ray export``: which row it takes, what it refuses, and the card it writes (the whole flow from a real
search to a stock ``pipeline`` is in tests/test_search.py, on the README's relative defaults)."""

import json

import pytest
from transformers import AutoConfig, AutoModelForSequenceClassification, BertConfig

from opdf_ray.config import RunSpec
from opdf_ray.engine import name_labels
from opdf_ray.export import choose, export, main, retrain_command
from opdf_ray.leaderboard import make_row, read_leaderboard, spec_of, write_row
from tests.rows import completed_result, stopped_result


def tiny_student(path, task="sst2"):
    """A real (random, tiny) BERT classifier saved as a search saves its merged student."""
    model = AutoModelForSequenceClassification.from_config(BertConfig(
        vocab_size=50, hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16))
    name_labels(model.config, task)
    model.save_pretrained(path)
    (path / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 512}))
    return str(path)


def board_of(tmp_path, rows):
    root = str(tmp_path / "board")
    for row in rows:
        write_row(root, row)
    return root


def spec(task="sst2", **kw):
    return RunSpec(**({"task": task, "max_train_samples": 1000, "max_length": 64} | kw)).to_dict()


def test_export_takes_the_best_completed_row_by_selection_not_dev(tmp_path):
    good = tiny_student(tmp_path / "good")
    root = board_of(tmp_path, [
        make_row("r", "a", "completed", spec(seed=1), completed_result("sst2", 80.0, 90.0), student_path=good),
        make_row("r", "b", "completed", spec(seed=2, opdf_cores=5), completed_result("sst2", 85.0, 70.0),
                 student_path=good),
        make_row("r", "c", "pruned", spec(seed=3), stopped_result(99.0))])
    assert main([root, "--out", str(tmp_path / "best")]) == 0
    card = (tmp_path / "best" / "README.md").read_text()
    assert "trial `b`" in card and "| dev accuracy | 70.00 |" in card and "5 MPO cores per matrix" in card
    assert "run --task sst2 --method kd --seed 2 --preset minilm --max-train-samples 1000" in card
    config = AutoConfig.from_pretrained(tmp_path / "best")
    assert config.id2label == {0: "negative", 1: "positive"} and config.label2id["positive"] == 1
    assert json.loads((tmp_path / "best" / "tokenizer_config.json").read_text())["model_max_length"] == 64


def test_the_retrain_command_rebuilds_the_same_configuration():
    row = make_row("r", "a", "completed", spec(seed=3, opdf_cores=5, opdf_core_lr=1.0, lr=3e-5,
                                               init_classifier_to_zero=True), completed_result("sst2", 80.0, 90.0))
    from opdf_ray.run import parse_spec

    rebuilt = parse_spec(retrain_command(row).split()[3:])
    assert rebuilt.to_dict() == RunSpec.from_dict(spec_of(row)).to_dict()


def test_a_leaderboard_row_gives_back_its_settings_with_their_declared_types(tmp_path):
    root = board_of(tmp_path, [make_row("r", "a", "completed", spec(seed=1), completed_result("sst2", 80.0, 90.0)),
                               make_row("r", "b", "completed", spec(seed=1, max_train_samples=None),
                                        completed_result("sst2", 80.0, 90.0))])
    board = read_leaderboard(root)                      # a null in the column: pandas stores floats
    first = spec_of(board.iloc[0])
    assert first["max_train_samples"] == 1000 and isinstance(first["max_train_samples"], int)
    assert spec_of(board.iloc[1])["max_train_samples"] is None
    assert RunSpec.from_dict(first).seed == 1


@pytest.mark.parametrize("kwargs, message", [
    ({}, "several tasks \\(mrpc, sst2\\); pass --task"),
    ({"task": "rte"}, "no completed trial of task 'rte'"),
    ({"trial": "p"}, "cannot export trial 'p': its status is pruned"),
    ({"trial": "zz"}, "no row has that trial_id"),
    ({"task": "mrpc"}, "has no saved student in the leaderboard"),
])
def test_bad_export_requests_are_one_line_errors(tmp_path, kwargs, message):
    root = board_of(tmp_path, [
        make_row("r", "a", "completed", spec(), completed_result("sst2", 80.0, 90.0),
                 student_path=tiny_student(tmp_path / "s")),
        make_row("r", "m", "completed", spec("mrpc"), completed_result("mrpc", 80.0, 90.0)),
        make_row("r", "p", "pruned", spec(), stopped_result(50.0))])
    with pytest.raises(ValueError, match=message):
        export(root, tmp_path / "out", **kwargs)


def test_export_never_writes_into_a_folder_that_holds_something(tmp_path, capsys):
    root = board_of(tmp_path, [make_row("r", "a", "completed", spec(), completed_result("sst2", 80.0, 90.0),
                                        student_path=tiny_student(tmp_path / "s"))])
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "mine.txt").write_text("keep")
    assert main([root, "--out", str(tmp_path / "out")]) == 2
    assert "exists and is not an empty folder" in capsys.readouterr().err
    assert main([root, "--out", str(tmp_path / "out" / "mine.txt" / "best")]) == 2      # under a file: no traceback
    assert "the folder cannot be made (Not a directory)" in capsys.readouterr().err
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["mine.txt"]


def test_choose_without_rows_is_an_error(tmp_path):
    root = board_of(tmp_path, [make_row("r", "p", "pruned", spec(), stopped_result(50.0))])
    with pytest.raises(ValueError, match="no completed trial"):
        choose(read_leaderboard(root))


def test_push_to_hub_refuses_a_bad_repo_before_exporting_and_keeps_the_export_when_the_hub_is_out_of_reach(
        tmp_path, capsys, monkeypatch):
    root = board_of(tmp_path, [make_row("r", "a", "completed", spec(), completed_result("sst2", 80.0, 90.0),
                                        student_path=tiny_student(tmp_path / "s"))])
    assert main([root, "--out", str(tmp_path / "out"), "--push-to-hub", "bad repo!"]) == 2
    assert "--push-to-hub 'bad repo!' is not a hub repo id" in capsys.readouterr().err
    assert main([root, "--out", str(tmp_path / "out"), "--push-to-hub", "student"]) == 2
    assert "give the owner too (user/name" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()                              # refused before anything was written
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")                          # a machine without the hub (this one)
    assert main([root, "--out", str(tmp_path / "out"), "--push-to-hub", "me/sst2-student"]) == 1
    err = capsys.readouterr().err
    assert "--push-to-hub me/sst2-student: not uploaded (OfflineModeIsEnabled" in err and "Traceback" not in err
    assert (tmp_path / "out" / "README.md").is_file()                  # the export itself stands
