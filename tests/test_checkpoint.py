"""Checkpoints: a run restored mid-epoch continues exactly as the uninterrupted run (CPU, tiny preset)."""

import pytest
import torch

from opdf_ray.checkpoint import load_checkpoint, save_checkpoint
from opdf_ray.config import RunSpec
from opdf_ray.engine import prepare, train


class Interrupted(Exception):
    pass


@pytest.mark.parametrize("method,opdf_cores", [("kd", 3), ("prokt", 0)])
def test_resumed_run_matches_the_uninterrupted_one(method, opdf_cores, tmp_path):
    spec = RunSpec(task="rte", method=method, preset="tiny", opdf_cores=opdf_cores, max_train_samples=80,
                   batch_size=16, epochs=2, eval_steps=3, teacher_epochs=1, progress=False,
                   cache_dir=str(tmp_path / "cache"))
    full = train(prepare(spec))

    def crash_after_first_eval(progress, metrics):
        save_checkpoint(tmp_path / "ckpt", job.method, progress)
        raise Interrupted

    job = prepare(spec)
    with pytest.raises(Interrupted):
        train(job, on_evaluate=crash_after_first_eval)
    resumed = train(prepare(spec), resume_from=tmp_path / "ckpt")

    assert resumed.step == full.step == 10 and resumed.best_step == full.best_step
    assert [h["step"] for h in resumed.history] == [h["step"] for h in full.history] == [3, 6, 9, 10]
    for a, b in zip(resumed.history, full.history):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5, abs=1e-7)
    for name, value in full.best_state.items():
        torch.testing.assert_close(resumed.best_state[name], value, rtol=1e-5, atol=1e-6)


def test_checkpoint_of_another_configuration_is_a_clear_error(tmp_path):
    common = dict(task="rte", method="prokt", preset="tiny", max_train_samples=32, batch_size=16, max_steps=2,
                  progress=False, cache_dir=str(tmp_path / "cache"))
    dense = prepare(RunSpec(**common))
    progress = train(dense)
    save_checkpoint(tmp_path / "ckpt", dense.method, progress)
    mpo = prepare(RunSpec(**common, opdf_cores=3))
    mpo.method.setup(2)
    with pytest.raises(ValueError, match="checkpoint lacks trainable parameters"):
        load_checkpoint(tmp_path / "ckpt", mpo.method)
    with pytest.raises(FileNotFoundError, match="not an opdf-ray checkpoint"):
        load_checkpoint(tmp_path, mpo.method)
