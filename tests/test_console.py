"""The search's console: quiet by default (our lines, one per trial event), Ray's and Tune's detail with -v."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from opdf_ray import trial_metrics as tm
from opdf_ray.hpo.console import finished_line, progress_line, ray_init_options, trial_label, tune_output

REPO = Path(__file__).resolve().parent.parent


def test_a_trial_is_named_by_what_it_trains():
    assert trial_label({"method": "kd", "opdf_cores": 3, "lr": 5e-5}) == "KD + OPDF (3 cores), lr 5.0e-05"
    assert trial_label({"method": "theseus", "opdf_cores": 0, "lr": 4e-4}) == "BERT-of-Theseus, lr 4.0e-04"


def test_an_evaluation_line_gives_the_step_of_the_total_and_the_time_left_at_the_trials_pace():
    result = {tm.STEP: 25, tm.EPOCH: 1.0, tm.SCORE: 70.8, tm.BEST_SCORE: 71.0, tm.TOTAL_STEPS: 100,
              tm.TRAINING_STARTED_AT: 1000.0}
    line = progress_line("abc", result, "accuracy", started=990.0, now=1030.0)
    assert line == "  abc step 25/100: selection accuracy 70.8 (best 71.0); 30 s so far, ~1 min 30 s left"
    assert progress_line("abc", {tm.STEP: 5, tm.BEST_SCORE: 1.0}, "accuracy", 0, 1) is None       # a log result
    assert progress_line("abc", result | {tm.FINISHED: 1.0}, "accuracy", 0, 1) is None   # the end has its own line


def test_a_finished_line_says_status_score_and_wall():
    result = {tm.BEST_SCORE: 77.2, tm.EPOCH: 1.0, "dev/validation/accuracy": 74.66}
    assert finished_line("abc", "completed", result, "accuracy", 65.0) == \
        "trial abc completed: selection accuracy 77.2, dev accuracy 74.7 in 1 min 05 s"
    assert finished_line("abc", "pruned", result, "accuracy", 9.0) == \
        "trial abc stopped by ASHA after epoch 1: selection accuracy 77.2 in 9 s"
    assert finished_line("abc", "failed", {}, "accuracy", None, "Traceback …\n  File x\nValueError: bad\n") == \
        "trial abc failed: ValueError: bad"


def test_quiet_keeps_trial_processes_off_the_console_and_restores_tunes_switch(monkeypatch):
    assert ray_init_options(0)["log_to_driver"] is False and ray_init_options(1)["log_to_driver"] is True
    monkeypatch.delenv("RAY_AIR_NEW_OUTPUT", raising=False)
    with tune_output(0):
        assert os.environ["RAY_AIR_NEW_OUTPUT"] == "0"
    assert "RAY_AIR_NEW_OUTPUT" not in os.environ
    with tune_output(1):
        assert "RAY_AIR_NEW_OUTPUT" not in os.environ


@pytest.mark.slow
def test_a_search_prints_one_line_per_trial_event_and_where_everything_is(tmp_path):
    storage = tmp_path / "storage"
    cmd = [sys.executable, str(REPO / "tune_main.py"), "--task", "rte", "--preset", "tiny", "--num-samples", "2",
           "--max-train-samples", "64", "--max-epochs", "1", "--methods", "kd", "--max-length", "32",
           "--storage", str(storage), "--cache-dir", str(tmp_path / "cache")]
    env = os.environ | {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0"}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=400, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout + done.stderr
    lines = [line for line in out.splitlines() if line.strip()]
    for noise in ("Traceback", "(trial pid=", "Trial status", "Checkpoint successfully created", "core_worker",
                  "Loading weights", "/tmp/ray/session"):
        assert noise not in out, noise
    started = [line for line in lines if " started: KD" in line]
    ended = [line for line in lines if "completed: selection accuracy" in line or "stopped by ASHA" in line]
    assert [line.split("opdf_ray: ")[1].split()[:2] for line in started] == [["trial", "1/2"], ["trial", "2/2"]]
    assert len(ended) == 2 and len(set(ended)) == 2
    assert f"tensorboard --logdir {storage}" in out and f"opdf-ray report {storage / 'leaderboard'}" in out
    assert len(lines) <= 40, "\n".join(lines)
