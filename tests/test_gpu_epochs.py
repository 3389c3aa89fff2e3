"""The per-epoch speed benchmark runs end to end on CPU with the tiny preset: every case gets one timing per epoch."""

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "gpu_epochs.py"


def load():
    spec = importlib.util.spec_from_file_location("gpu_epochs", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_each_case_is_timed_per_epoch_in_run_order(tmp_path, capsys):
    gpu_epochs = load()
    assert gpu_epochs.main(["--preset", "tiny", "--cases", "kd-0", "kd-3", "kd-0", "--samples", "64", "--epochs", "2",
                            "--teacher-epochs", "1", "--max-length", "16", "--batch-size", "16",
                            "--profile-steps", "2", "--out", str(tmp_path)]) == 0
    results = json.loads((tmp_path / "gpu_epochs.json").read_text())
    assert [r["case"] for r in results] == ["kd-0", "kd-3", "kd-0"]
    assert all([e["steps"] for e in r["epochs"]] == [4, 4] and r["batches"] == 4 for r in results)
    assert all(e["ms_per_step"] > 0 for r in results for e in r["epochs"])
    assert "kd-3 / kd-0, last epoch:" in capsys.readouterr().out
    profiled = (tmp_path / "profile-kd-3.txt").read_text()      # the profiled steps' operator table
    assert "aten::" in profiled and int(profiled.split("per step: ")[1].split()[0]) > 100


def test_bad_cases_and_a_random_copy_without_a_folder_are_refused(tmp_path, capsys):
    gpu_epochs = load()
    with pytest.raises(SystemExit):
        gpu_epochs.main(["--cases", "distil-5", "--out", str(tmp_path)])
    assert "expected METHOD-CORES" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        gpu_epochs.main(["--random-weights", "--out", str(tmp_path)])
    assert "--random-weights needs --teacher" in capsys.readouterr().err
