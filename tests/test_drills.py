"""Fault drills on the leaderboard without a cluster: concurrent writers, a disk that fills mid-write."""

import errno
import multiprocessing
import warnings

import pyarrow.parquet as pq
import pytest
from rows import completed_result

from opdf_ray.config import RunSpec
from opdf_ray.leaderboard import make_row, read_leaderboard, write_row


def _write_rows(root: str, run: str, n: int) -> None:
    spec = RunSpec(task="mrpc").to_dict()
    for i in range(n):
        write_row(root, make_row(run, f"t{i:03d}", "completed", spec, completed_result("mrpc", 60.0 + i % 7, 70.0)))


def test_two_searches_writing_one_leaderboard_at_once_lose_and_corrupt_nothing(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    writers = [ctx.Process(target=_write_rows, args=(str(tmp_path), run, 40)) for run in ("a", "b")]
    for w in writers:
        w.start()
    for w in writers:
        w.join(timeout=120)
    assert [w.exitcode for w in writers] == [0, 0]
    with warnings.catch_warnings():
        warnings.simplefilter("error")                       # a partial or unreadable file would warn
        board = read_leaderboard(str(tmp_path))
    assert len(board) == 80 and not board.duplicated(["run_id", "trial_id"]).any()
    assert not [p for p in tmp_path.rglob("*") if p.name.startswith(".")]      # no temporary left behind


def test_a_disk_that_fills_mid_write_leaves_no_partial_row(tmp_path, monkeypatch):
    spec = RunSpec(task="mrpc").to_dict()
    write_row(str(tmp_path), make_row("run", "kept", "completed", spec, completed_result("mrpc", 60.0, 70.0)))
    real_write = pq.write_table

    def full_disk(table, where, **kwargs):
        where.write(b"PAR1 half a file")                     # some bytes land, then the disk is full
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(pq, "write_table", full_disk)
    with pytest.raises(OSError, match="No space left on device"):
        write_row(str(tmp_path), make_row("run", "lost", "completed", spec, completed_result("mrpc", 61.0, 71.0)))
    monkeypatch.setattr(pq, "write_table", real_write)
    assert [p.name for p in tmp_path.rglob("*") if p.is_file()] == ["run--kept.parquet"]   # nothing partial
    assert list(read_leaderboard(str(tmp_path))["trial_id"]) == ["kept"]


def test_a_checkpoint_cut_short_by_a_full_disk_is_never_loaded(tmp_path, monkeypatch):
    """A worker whose checkpoint write fails raises (Ray Train then restarts it from the previous checkpoint, or
    fails the trial with the error): the half-written folder is not a checkpoint, so nothing resumes from it."""
    import safetensors.torch
    from test_methods import teacher_model

    from opdf_ray import checkpoint
    from opdf_ray.checkpoint import Progress, load_checkpoint, save_checkpoint
    from opdf_ray.methods import get_method
    from opdf_ray.models import keep_layers

    spec = RunSpec(task="rte", method="kd", preset="tiny")
    teacher = teacher_model()
    method = get_method("kd")(spec, keep_layers(teacher, [0, 2]), teacher)
    method.setup(total_steps=4)

    def full_disk(tensors, path, *args, **kwargs):
        open(path, "wb").write(b"half")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint, "save_file", full_disk)
    with pytest.raises(OSError, match="No space left on device"):
        save_checkpoint(tmp_path / "ckpt", method, Progress(step=2))
    monkeypatch.setattr(checkpoint, "save_file", safetensors.torch.save_file)
    with pytest.raises(FileNotFoundError, match="is not an opdf-ray checkpoint"):
        load_checkpoint(tmp_path / "ckpt", method)
