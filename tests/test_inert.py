"""Knobs that cannot act for a task or method: not drawn, stored empty, out of the configuration's identity."""

import logging

import optuna
import pytest
import yaml
from rows import completed_result
from test_bad_inputs import validate

from opdf_ray.config import KD_LOSS_METHODS, METHODS, TEACHER_TRAINING_METHODS, RunSpec, inert_settings
from opdf_ray.leaderboard import config_id, make_row, read_leaderboard, spec_of, write_row
from opdf_ray.methods import get_method
from opdf_ray.search_space import default_space_path, load_space, parse_space


def test_the_inert_table_agrees_with_the_methods():
    for name in METHODS:
        assert get_method(name).trains_teacher == (name in TEACHER_TRAINING_METHODS), name
        assert (get_method(name).student_loss is not None) and name in KD_LOSS_METHODS or name in ("theseus",
                                                                                                  "finetune")
    assert "temperature" in inert_settings(RunSpec(task="stsb").to_dict())            # an MSE on one output
    assert "temperature" not in inert_settings(RunSpec(task="sst2").to_dict())
    assert {"teacher_lr", "t_alpha_kd"} <= set(inert_settings(RunSpec(method="kd").to_dict()))
    assert "teacher_lr" not in inert_settings(RunSpec(method="prokt").to_dict())
    assert "opdf_align_map" in inert_settings(RunSpec(opdf_cores=0).to_dict())
    assert "opdf_align_map" not in inert_settings(RunSpec(opdf_cores=3).to_dict())
    assert "opdf_align_weight" in inert_settings(RunSpec(opdf_cores=3, opdf_align_ratio=0.1).to_dict())
    assert inert_settings({"task": "sst2"}) == ()                  # nothing known about the method: nothing inert


def test_a_kd_loss_on_one_output_does_not_read_the_temperature():
    import torch

    from opdf_ray.losses import kd_loss

    s, t = torch.randn(5, 1), torch.randn(5, 1)
    assert torch.equal(kd_loss(s, t, 1.0), kd_loss(s, t, 4.0, t2_scaling=True))


def draws(space, task, n=40):
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    out = []
    for _ in range(n):
        trial = study.ask()
        out.append(space.draw(trial, RunSpec(task=task).to_dict()))
        study.tell(trial, 0.0)
    return out


def test_a_regression_task_draws_no_temperature_and_a_classification_task_does():
    space = load_space(default_space_path())
    stsb, sst2 = draws(space, "stsb"), draws(space, "sst2")
    assert not any("temperature" in d for d in stsb)
    assert any("temperature" in d for d in sst2) and all("temperature" not in d for d in sst2
                                                          if d["method"] == "theseus")
    assert {d["method"] for d in stsb} == {"kd", "prokt", "lgtm", "theseus"}


def test_rows_store_inert_settings_empty_and_share_one_config_id(tmp_path):
    a = RunSpec(task="stsb", method="kd", temperature=2.0, t2_scaling=True, teacher_lr=1e-4).to_dict()
    b = RunSpec(task="stsb", method="kd", temperature=3.0).to_dict()
    assert config_id(a) == config_id(b)                            # they train the same student
    assert config_id(a) != config_id(RunSpec(task="stsb", method="kd", lr=1e-4).to_dict())
    write_row(str(tmp_path), make_row("r", "t1", "completed", a, completed_result("stsb", 60.0, 61.0)))
    (row,) = read_leaderboard(str(tmp_path)).to_dict("records")
    assert row["temperature"] is None or row["temperature"] != row["temperature"]     # empty (null / NaN)
    assert row["config_id"] == config_id(a) and spec_of(row)["temperature"] == RunSpec.temperature
    RunSpec.from_dict(spec_of(row))                                # what a report block or export rebuilds


def space_file(tmp_path, fixed):
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump({"fixed": fixed, "params": {"lr": {"type": "loguniform", "low": 1e-5,
                                                                      "high": 1e-4}}}))
    return str(path)


def test_a_space_fixing_a_knob_that_cannot_act_is_an_error_alone_and_a_warning_among_tasks(tmp_path, caplog):
    space = space_file(tmp_path, {"method": "kd", "temperature": 2.0, "t2_scaling": True})
    with pytest.raises(ValueError, match=r"temperature, t2_scaling set by the search space .* cannot act on "
                                         r"stsb for its method\(s\) kd"):
        validate(tmp_path, "--space", space, "--task", "stsb")
    with caplog.at_level(logging.WARNING):
        validate(tmp_path, "--space", space, "--task", "rte,stsb")
    assert "cannot act on stsb" in caplog.text and "stored empty" in caplog.text
    validate(tmp_path, "--space", space, "--task", "rte")          # acts there: no word
    with pytest.raises(ValueError, match="teacher_lr set by the search space .* cannot act on rte"):
        validate(tmp_path, "--space", space_file(tmp_path, {"method": "kd", "teacher_lr": 1e-4}))


def test_the_shipped_spaces_run_on_a_regression_task_alone(tmp_path):
    for name in ("default.yaml", "quickstart.yaml"):
        validate(tmp_path, "--space", str(default_space_path().parent / name), "--task", "stsb")
    # T² qualifies a searched temperature: fixed beside it, it is part of that parameter, never reported
    parse_space({"fixed": {"t2_scaling": True}, "params": {"method": {"type": "categorical", "choices": ["kd"]},
                                                           "temperature": {"type": "uniform", "low": 1, "high": 4}}})
