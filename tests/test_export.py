"""``opdf-ray export``: which row it takes, what it refuses, and the card it writes (the whole flow from a real
search to a stock ``pipeline`` is in tests/test_search.py, on the README's relative defaults)."""

import json
import re

import pytest
from transformers import AutoConfig, AutoModelForSequenceClassification, BertConfig

from opdf_ray.config import RunSpec
from opdf_ray.engine import name_labels
from opdf_ray.export import choose, export, main, retrain_command
from opdf_ray.leaderboard import make_row, read_leaderboard, spec_of, write_row
from opdf_ray.tasks import get_task
from tests.rows import completed_result, stopped_result


def tiny_student(path, task="sst2"):
    """A real (random, tiny) BERT classifier saved as a search saves its merged student."""
    model = AutoModelForSequenceClassification.from_config(BertConfig(
        vocab_size=50, hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16))
    name_labels(model.config, get_task(task))
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
    assert "trial b of search r" in card and "| dev accuracy | 70.00 |" in card and "5 MPO cores per matrix" in card
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
    assert "mine.txt is a file; allowed: a folder that can be made and written" in capsys.readouterr().err
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


def test_export_copies_only_what_a_student_is_and_never_follows_a_link(tmp_path):
    """A student folder holding a link to a secret and a stray file: the export carries the student's files only
    (and --push-to-hub would upload only those); a link where a student file belongs is refused."""
    secret = tmp_path / "secret.txt"
    secret.write_text("token")
    student = tmp_path / "storage" / "trial" / "student"
    tiny_student(student)
    (student / "notes.txt").symlink_to(secret)                   # a link: never followed
    (student / "id_rsa").write_text("key")                       # a file no student has: never copied
    row = make_row("r", "a", "completed", spec(), completed_result("sst2", 80.0, 90.0), student_path=str(student))
    root = str(tmp_path / "storage" / "leaderboard")
    write_row(root, row)
    export(root, tmp_path / "best")
    assert sorted(p.name for p in (tmp_path / "best").iterdir()) == ["README.md", "config.json", "model.safetensors",
                                                                    "tokenizer_config.json"]
    (student / "tokenizer_config.json").unlink()
    (student / "tokenizer_config.json").symlink_to(secret)
    with pytest.raises(ValueError, match="holds links or folders where its files belong \\(tokenizer_config.json\\)"):
        export(root, tmp_path / "again")
    assert not (tmp_path / "again").exists()


def test_export_refuses_a_student_path_outside_the_leaderboards_storage(tmp_path):
    elsewhere = tiny_student(tmp_path / "home" / "someone")      # any folder with a config.json
    root = str(tmp_path / "storage" / "leaderboard")
    write_row(root, make_row("r", "a", "completed", spec(), completed_result("sst2", 80.0, 90.0),
                             student_path=elsewhere))
    with pytest.raises(ValueError, match="is outside the search storage"):
        export(root, tmp_path / "best")
    link = tmp_path / "storage" / "student-link"
    link.symlink_to(tmp_path / "home" / "someone")               # a link inside the storage that leads out
    write_row(root, make_row("r", "a", "completed", spec(), completed_result("sst2", 80.0, 90.0),
                             student_path=str(link)))
    with pytest.raises(ValueError, match="is outside the search storage"):
        export(root, tmp_path / "best")
    export(root, tmp_path / "best", storage=str(tmp_path))     # named explicitly: the user's choice
    assert not list(tmp_path.glob(".best.*"))                    # published by rename: no temporary left


def test_an_interrupted_export_leaves_no_half_folder_and_the_rerun_succeeds(tmp_path, monkeypatch):
    import opdf_ray.export as export_module

    root = board_of(tmp_path, [make_row("r", "a", "completed", spec(), completed_result("sst2", 80.0, 90.0),
                                        student_path=tiny_student(tmp_path / "s"))])

    def killed(*_):
        raise KeyboardInterrupt
    monkeypatch.setattr(export_module, "model_card", killed)     # killed after the weights, before the card
    with pytest.raises(KeyboardInterrupt):
        export(root, tmp_path / "best")
    assert not (tmp_path / "best").exists() and not list(tmp_path.glob(".best.*"))
    monkeypatch.undo()
    export(root, tmp_path / "best")
    assert (tmp_path / "best" / "README.md").is_file()


HOSTILE = "/tmp/my models/$(touch PWNED)/it's `id`\n# <script>x</script> | *b*"


def test_cards_and_commands_carry_hostile_names_as_text(tmp_path):
    """A teacher path and ids with spaces, quotes, $(…), backticks, a newline, Markdown and HTML: the card shows
    them as text and its command, pasted into bash, passes them as one argument and runs nothing."""
    import subprocess

    from opdf_ray.export import model_card

    row = make_row("run|<b>x", "trial`$(id)`", "completed", spec(teacher=HOSTILE, seed=2),
                   completed_result("sst2", 80.0, 90.0))
    row = read_leaderboard(board_of(tmp_path, [row])).iloc[0]
    card = model_card(row)
    prose = re.sub(r"```.*?```", "", card, flags=re.S)             # outside code blocks, where Markdown renders
    assert "<script>" not in prose and "<b>" not in prose and "\n# <" not in prose and "\\$\\(id\\)" in prose
    command = retrain_command(row)
    assert "\n" not in command
    echoed = subprocess.run(["bash", "-c", command.replace("python -m opdf_ray.run", "printf '%s\\0'", 1)],
                            capture_output=True, text=True, cwd=tmp_path).stdout.split("\0")
    assert echoed[echoed.index("--teacher") + 1] == HOSTILE
    assert not (tmp_path / "PWNED").exists()


def test_the_card_is_hub_ready_and_its_metadata_round_trips(tmp_path):
    from huggingface_hub import ModelCard

    root = board_of(tmp_path, [make_row("r", "a", "completed", spec(), completed_result("sst2", 80.0, 90.0),
                                        student_path=tiny_student(tmp_path / "s"))])
    export(root, tmp_path / "best")
    data = ModelCard.load(tmp_path / "best" / "README.md").data
    assert (data.license, data.base_model, data.language) == ("apache-2.0", "sentence-transformers/all-MiniLM-L6-v2",
                                                               "en")
    assert data.datasets == ["nyu-mll/glue"] and data.metrics == ["accuracy"]
    (result,) = data.eval_results
    assert (result.dataset_config, result.dataset_split, result.metric_type, result.metric_value) == (
        "sst2", "validation", "accuracy", 90.0)
    assert "## Limitations" in (tmp_path / "best" / "README.md").read_text()


@pytest.mark.slow
def test_an_onnx_export_gives_pytorchs_logits_on_the_dev_examples_and_says_how_to_serve_it(tmp_path):
    import numpy as np
    import onnxruntime
    import torch
    from transformers import AutoTokenizer

    from opdf_ray.models import build_tiny_model, keep_layers, load_classifier

    student = keep_layers(load_classifier(str(build_tiny_model(tmp_path / "cache")), 2), [0, 2])  # the tiny preset's
    student.save_pretrained(tmp_path / "s")
    AutoTokenizer.from_pretrained(build_tiny_model(tmp_path / "cache")).save_pretrained(tmp_path / "s")
    root = board_of(tmp_path, [make_row("r", "a", "completed", spec("rte", max_length=48),
                                        completed_result("rte", 60.0, 61.0), student_path=str(tmp_path / "s"))])
    assert main([root, "--out", str(tmp_path / "best"), "--onnx"]) == 0
    card = (tmp_path / "best" / "README.md").read_text()
    assert "## Serve it with ONNX Runtime" in card and "model.onnx" in card
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "best")
    batch = tokenizer(["A man plays.", "Short"], ["Someone is playing music today.", "x"], padding=True,
                      return_tensors="np")                                  # other examples, other lengths
    session = onnxruntime.InferenceSession(str(tmp_path / "best" / "model.onnx"))
    got = session.run(["logits"], {i.name: batch[i.name] for i in session.get_inputs()})[0]
    reference = AutoModelForSequenceClassification.from_pretrained(tmp_path / "best").eval()
    with torch.no_grad():
        expected = reference(**{k: torch.tensor(v) for k, v in batch.items()}).logits.numpy()
    assert np.abs(got - expected).max() <= 1e-4


def test_int8_without_onnx_is_one_line(tmp_path, capsys):
    from opdf_ray.export import main as export_main

    assert export_main([str(tmp_path), "--out", str(tmp_path / "best"), "--int8"]) == 2
    assert "--int8 quantises the ONNX export: pass --onnx too" in capsys.readouterr().err
