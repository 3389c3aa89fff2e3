"""The study driver (benchmarks/study/run.py) keeps what a study needs across sessions and nothing more."""

import importlib.util
from pathlib import Path


def test_the_study_deletes_the_checkpoints_of_a_finished_grid_and_nothing_else(tmp_path):
    path = Path(__file__).resolve().parent.parent / "benchmarks/study/run.py"
    spec = importlib.util.spec_from_file_location("study_run", path)
    study = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(study)
    experiment = tmp_path / "study-kd-s1-mrpc"
    for trial in ("a1", "b2"):
        (experiment / "train" / trial / "checkpoint_000001").mkdir(parents=True)
        (experiment / "train" / trial / "checkpoint_000001" / "model.safetensors").write_bytes(b"x" * 1000)
    (experiment / "a1").mkdir()
    (experiment / "a1" / "result.json").write_text("{}")
    assert study.drop_checkpoints(experiment) == 2000
    assert not list(experiment.glob("train/*/checkpoint_*"))
    assert (experiment / "a1" / "result.json").exists() and (experiment / "train" / "a1").is_dir()
