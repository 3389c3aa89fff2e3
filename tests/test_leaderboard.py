"""Leaderboard: explicit schema, atomic one-file-per-trial rows, idempotent rewrites, tolerant reads."""

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from opdf_ray.config import RunSpec
from rows import completed_result

from opdf_ray.leaderboard import (SCHEMA, SCHEMA_VERSION, best_rows, config_id, make_row, read_leaderboard,
                                  seed_summary, write_row)


def row(trial, status="completed", task="mrpc", method="kd", cores=0, seed=42, lr=1e-5, score=80.0, dev=82.0):
    spec = RunSpec(task=task, method=method, opdf_cores=cores, seed=seed, lr=lr).to_dict()
    result = completed_result(task, score, dev) if status == "completed" else {"score": score,
                                                                                "training_iteration": 1}
    return make_row("run1", trial, status, spec, result, error="boom" if status == "failed" else None)


def test_rows_have_the_explicit_schema_and_pandas_reads_the_partitioned_directory(tmp_path):
    path = write_row(str(tmp_path), row("t1"))
    assert path.endswith("task=mrpc/run1--t1.parquet")
    write_row(str(tmp_path), row("t2", status="pruned"))
    write_row(str(tmp_path), row("t3", status="failed", task="rte"))
    table = pq.read_table(path)
    assert table.schema.metadata[b"schema_version"] == str(SCHEMA_VERSION).encode()
    assert table.schema.names == [n for n in SCHEMA.names if n != "task"]
    df = pd.read_parquet(tmp_path)
    assert len(df) == 3 and set(df["task"].astype(str)) == {"mrpc", "rte"}
    ours = read_leaderboard(str(tmp_path)).set_index("trial_id")
    assert ours.loc["t1", "dev_f1"] == 82.0 and ours.loc["t1", "dev_accuracy"] == 77.0
    assert ours.loc["t1", "dev_score"] == 82.0 and ours.loc["t1", "selection_metric"] == "f1"
    assert ours.loc["t2", "status"] == "pruned" and ours.loc["t2", "selection_score"] == 80.0
    assert pd.isna(ours.loc["t2", "dev_score"])
    assert ours.loc["t3", "error"] == "boom" and ours.loc["t3", "lr"] == 1e-5
    assert ours.loc["t1", "ray_version"] and ours.loc["t1", "torch_version"]


def test_every_metric_of_the_finetuned_teacher_is_kept_and_older_rows_keep_what_they_had(tmp_path):
    result = completed_result("mrpc", 80.0, 82.0, teacher={"f1": 88.0, "accuracy": 84.0})
    for method in ("kd", "prokt"):
        spec = RunSpec(task="mrpc", method=method).to_dict()
        write_row(str(tmp_path), make_row("run", method, "completed", spec, result))
        old = pq.read_table(tmp_path / "task=mrpc" / f"run--{method}.parquet")
        old = old.drop_columns([f"finetuned_teacher_dev_{m}" for m in ("f1", "accuracy", "mcc", "pearson", "spearman")])
        old = old.set_column(old.schema.get_field_index("trial_id"), "trial_id", pa.array([f"old-{method}"]))
        pq.write_table(old.replace_schema_metadata({"schema_version": "4"}),
                       tmp_path / "task=mrpc" / f"run--old-{method}.parquet")
    board = read_leaderboard(str(tmp_path)).set_index("trial_id")
    assert board.loc["kd", ["finetuned_teacher_dev_f1", "finetuned_teacher_dev_accuracy"]].tolist() == [88, 84]
    assert board.loc["old-kd", "finetuned_teacher_dev_f1"] == 88.0     # a frozen teacher's teacher_dev_score
    assert pd.isna(board.loc["old-kd", "finetuned_teacher_dev_accuracy"])          # never recorded: not made up
    assert pd.isna(board.loc["old-prokt", "finetuned_teacher_dev_f1"])  # ProKT's final teacher is not the reference


def test_rewriting_a_trial_replaces_its_row(tmp_path):
    write_row(str(tmp_path), row("t1", status="failed"))
    write_row(str(tmp_path), row("t1", status="completed"))      # the errored trial resumed and finished
    df = read_leaderboard(str(tmp_path))
    assert list(df["status"]) == ["completed"]
    assert not [p for p in tmp_path.rglob("*") if p.name.startswith(".")]   # no temporary files left


def test_foreign_corrupt_mislabelled_and_mistyped_files_are_skipped_with_a_line_each(tmp_path, caplog):
    import shutil

    import pyarrow as pa
    import pyarrow.parquet as pq

    write_row(str(tmp_path), row("t1"))
    good = next((tmp_path / "task=mrpc").glob("*.parquet"))
    (tmp_path / "task=mrpc" / "broken.parquet").write_bytes(b"PAR1 not really")
    pd.DataFrame({"x": [1]}).to_parquet(tmp_path / "task=mrpc" / "foreign.parquet")
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "task=rte").mkdir()
    shutil.copy(good, tmp_path / "task=rte" / "r--moved.parquet")     # an MRPC row in RTE's folder
    table = pq.read_table(good)
    mistyped = table.set_column(table.schema.get_field_index("lr"), "lr", pa.array(["fast"]))
    pq.write_table(mistyped.replace_schema_metadata(table.schema.metadata), tmp_path / "task=mrpc" / "r--typed.parquet")
    data = bytearray(good.read_bytes())
    data[len(data) // 2:len(data) // 2 + 64] = b"\0" * 64                # one corrupt data page
    (tmp_path / "task=mrpc" / "r--page.parquet").write_bytes(bytes(data))
    with caplog.at_level("WARNING"):
        df = read_leaderboard(str(tmp_path))
    assert list(df["trial_id"]) == ["t1"]
    skipped = [r.getMessage() for r in caplog.records if "skipping" in r.getMessage()]
    for name in ("broken.parquet", "foreign.parquet", "notes.txt", "r--moved.parquet", "r--typed.parquet",
                 "r--page.parquet"):
        assert sum(name in line for line in skipped) == 1, (name, skipped)
    assert all("\n" not in line for line in skipped)
    assert any("its folder says task=rte" in line for line in skipped)
    assert any("column lr is string, the schema's is double" in line for line in skipped)


def test_missing_leaderboard_is_a_clear_error_and_empty_one_is_empty(tmp_path):
    with pytest.raises(FileNotFoundError, match="no leaderboard at"):
        read_leaderboard(str(tmp_path / "none"))
    assert read_leaderboard(str(tmp_path)).empty


def test_best_rows_and_seed_summary(tmp_path):
    rows = [row("a1", seed=1, score=80, dev=81), row("a2", seed=2, score=82, dev=83),      # config A: 2 seeds
            row("b1", seed=1, lr=3e-5, score=85, dev=79),                                  # config B: 1 seed
            row("c1", cores=5, score=70, dev=90), row("p1", status="pruned", score=99)]
    for r in rows:
        write_row(str(tmp_path), r)
    df = read_leaderboard(str(tmp_path))
    best = best_rows(df)
    assert list(zip(best["opdf_cores"], best["trial_id"])) == [(0, "b1"), (5, "c1")]   # pruned rows never win
    assert list(best_rows(df, by="dev_score")["trial_id"]) == ["a2", "c1"]
    summary = seed_summary(df).set_index("config_id")
    a = summary.loc[config_id(RunSpec(task="mrpc", method="kd", lr=1e-5).to_dict())]
    assert a["seeds"] == 2 and a["mean"] == 82.0 and a["std"] == pytest.approx(2 ** 0.5)
    assert config_id(RunSpec(seed=1).to_dict()) == config_id(RunSpec(seed=2).to_dict())


def test_unknown_status_is_rejected():
    with pytest.raises(ValueError, match="status='done'; allowed: completed, pruned, failed"):
        make_row("r", "t", "done", RunSpec().to_dict(), {})


def test_a_configuration_run_twice_with_one_seed_counts_once_and_is_flagged(tmp_path):
    from opdf_ray.leaderboard import duplicate_runs

    write_row(str(tmp_path), row("a", seed=1, dev=80.0))
    write_row(str(tmp_path), row("b", seed=2, dev=84.0))
    repeat = row("c", seed=1, dev=90.0)                   # the same configuration and seed, run again later
    repeat["finished_at"] = repeat["finished_at"] + pd.Timedelta(seconds=5)
    write_row(str(tmp_path), repeat)
    board = read_leaderboard(str(tmp_path))
    summary = seed_summary(board)
    assert list(summary["seeds"]) == [2]                  # distinct seeds, not rows
    assert summary["mean"].item() == pytest.approx(87.0)  # the latest run of seed 1 (90) with seed 2 (84)
    assert list(duplicate_runs(board)["trial_id"]) == ["a"]


def test_the_best_per_cell_prefers_completed_rows_and_can_show_a_cell_asha_stopped_entirely(tmp_path):
    from opdf_ray.leaderboard import best_per_cell

    for r in (row("a", lr=1e-5, score=80.0), row("b", lr=2e-5, score=81.0), row("c", "pruned", lr=3e-5, score=90.0),
              row("d", "pruned", method="theseus", score=70.0), row("e", "pruned", method="theseus", lr=2e-5,
                                                                      score=75.0)):
        write_row(str(tmp_path), r)
    board = read_leaderboard(str(tmp_path))
    assert best_per_cell(board)[["method", "trial_id"]].values.tolist() == [["kd", "b"]]
    shown = best_per_cell(board, pruned_too=True)
    assert shown[["method", "status", "trial_id"]].values.tolist() == [["kd", "completed", "b"],
                                                                       ["theseus", "pruned", "e"]]
