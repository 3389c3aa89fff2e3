"""The search on a real local Ray: Train workers, Optuna + ASHA, leaderboard rows, failures, resume."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest

from ray_helpers import TINY_SPACE, settings, tiny_base, tiny_space  # noqa: I001 — sets Ray's env first

import ray  # noqa: E402

from opdf_ray.hpo.execute import failed_trials, summarise_search  # noqa: E402
from opdf_ray.leaderboard import SCHEMA, read_leaderboard  # noqa: E402
from opdf_ray.search_space import parse_space  # noqa: E402
from fault_drill import FAIL_ONCE_ENV  # noqa: E402
from opdf_ray.hpo.tracking import optuna_storage  # noqa: E402
from opdf_ray.hpo.tuner import run_search  # noqa: E402

pytestmark = pytest.mark.slow   # real Ray searches: minutes

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def local_ray(tmp_path_factory):
    marker = tmp_path_factory.mktemp("fault") / "failed-once"
    marker.write_text("armed later")               # exists: no injected failure until a test removes it
    os.environ[FAIL_ONCE_ENV] = f"5:{marker}"      # workers inherit the environment of the Ray they join
    os.environ |= {"WANDB_MODE": "offline", "WANDB_DIR": str(tmp_path_factory.mktemp("wandb")),
                   "WANDB_SILENT": "true"}           # W&B's logger actor writes offline runs there
    python_path = os.environ.get("PYTHONPATH")     # workers import the drill from here
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path(__file__).parent), python_path]))
    ray.init(num_cpus=4, num_gpus=1,               # a logical GPU: Ray only counts it (fractional trials)
             runtime_env={"worker_process_setup_hook": "fault_drill.arm"})     # the drill stays in the tests
    yield marker
    ray.shutdown()
    for var in (FAIL_ONCE_ENV, "WANDB_MODE", "WANDB_DIR", "WANDB_SILENT", "PYTHONPATH"):
        os.environ.pop(var, None)
    if python_path:
        os.environ["PYTHONPATH"] = python_path


def test_search_with_two_workers_per_trial_fills_the_leaderboard_and_the_trackers(local_ray, tmp_path):
    conf = settings(tmp_path, workers_per_trial=2, optuna_storage=f"sqlite:///{tmp_path / 'optuna.db'}",
                    mlflow_uri=f"sqlite:///{tmp_path / 'mlflow.db'}", wandb_project="opdf-test", num_samples=1)
    grid = run_search(tiny_base(tmp_path), tiny_space(), conf)
    assert len(grid) == 1 and grid.num_errors == 0
    board = read_leaderboard(conf.leaderboard)
    assert len(board) == 1 and board["trial_id"].is_unique
    assert set(board.columns) == set(SCHEMA.names)
    assert set(board["status"]) <= {"completed", "pruned"} and "completed" in set(board["status"])
    done = board[board["status"] == "completed"]
    assert (done["workers"] == 2).all() and (done["bytes_all_reduced"] > 0).all()
    assert done["dev_accuracy"].between(0, 100).all() and (done["evaluations"] == 2).all()
    assert (done["inference_params"] < done["trainable_params"]).eq(done["opdf"]).all()
    assert done["student_path"].map(lambda p: (Path(p) / "config.json").is_file()).all()   # for opdf-ray export
    assert (done["drift_deployed"] > 0).all() and done["drift_cores"].notna().eq(done["opdf"]).all()
    assert done["drift_curve"].map(lambda c: len(json.loads(c)) == 2).all()          # one point per evaluation
    study = optuna.load_study(study_name="t-rte", storage=conf.optuna_storage)
    states = sorted(t.state.name for t in study.trials)
    expected = sorted({"completed": "COMPLETE", "pruned": "PRUNED"}[s] for s in board["status"])
    assert states == expected                      # ASHA-stopped trials are pruned in Optuna, not complete
    kept = {p.name for p in (Path(conf.storage) / "t-rte" / "train").iterdir()}
    assert kept == set(done["trial_id"])           # checkpoints of pruned trials are deleted
    teachers = list((Path(conf.storage) / "teachers").glob("rte-*/teacher.json"))
    assert len(teachers) == 1                      # fine-tuned once for the search, before the trials
    # the training loss at every evaluation (a multi-worker trial reports there only: Ray Train takes one report
    # per poll): TensorBoard (Tune's own files), MLflow and W&B (offline)
    for trial_id, row in board.set_index("trial_id").iterrows():
        events = b"".join(p.read_bytes() for p in (Path(conf.storage) / "t-rte" / trial_id).glob("events.out*"))
        assert events.count(b"train/loss") >= row["evaluations"]
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=conf.mlflow_uri)
    runs = client.search_runs([client.get_experiment_by_name("t-rte").experiment_id])
    assert len(runs) == len(board)
    logged = [len(client.get_metric_history(r.info.run_id, "train/loss")) for r in runs]
    assert all(n >= evaluations for n, evaluations in zip(logged, board["evaluations"]))
    assert len(list(Path(os.environ["WANDB_DIR"]).glob("wandb/offline-run-*"))) == len(board)


def test_searches_in_one_storage_share_the_fine_tuned_teacher_of_the_same_settings(local_ray, tmp_path):
    """A study runs one search per method and OPDF setting: the teacher is fine-tuned by the first search and
    reused by the next one with the same settings, so they distil from the same teacher and pay for it once."""
    one = {"method": {"type": "categorical", "choices": ["kd"]}, "opdf": {"type": "categorical", "choices": [True]}}
    run_search(tiny_base(tmp_path), tiny_space(**one), settings(tmp_path, name="first", num_samples=1))
    (info_file,) = (tmp_path / "storage" / "teachers").glob("rte-*/teacher.json")
    info = json.loads(info_file.read_text())
    info["dev"]["validation"]["accuracy"] = 12.5           # a mark: a search that reuses this teacher reports it
    info_file.write_text(json.dumps(info))
    assert read_leaderboard(str(tmp_path / "board")).iloc[0]["finetuned_teacher_dev_accuracy"] != 12.5
    # a later search that draws the seed: each trial distils from the teacher fine-tuned under its own seed (the
    # first seed's is the one above, reused: the same settings pay for a teacher once), never from the search's
    grid = {name: {"type": "categorical", "choices": choices} for name, choices in
            (("method", ["kd"]), ("opdf", [True]), ("opdf_cores", [3]), ("lr", [1e-4]), ("seed", [42, 7]))}
    run_search(tiny_base(tmp_path), tiny_space(**grid), settings(tmp_path, name="seeds", num_samples=2,
                                                                 sampler="grid", early_stopping=False))
    assert len(list((tmp_path / "storage" / "teachers").iterdir())) == 2
    rows = read_leaderboard(str(tmp_path / "board")).query("run_id == 'seeds-rte'").set_index("seed")
    assert rows.loc[42, "finetuned_teacher_dev_accuracy"] == 12.5
    assert rows.loc[7, "finetuned_teacher_dev_accuracy"] != 12.5


def test_a_relative_storage_still_hands_trials_a_teacher_they_can_load(local_ray, tmp_path, monkeypatch):
    """The README's main job uses the default ``--storage outputs/search``, a relative path: the fine-tuned
    teacher's path must still resolve from each trial's own working directory. Run through the Python API
    (``opdf_ray.search``: the command line's own pipeline) with the command line's defaults."""
    import yaml

    import opdf_ray
    from ray_helpers import TINY_SPACE

    monkeypatch.chdir(tmp_path)
    Path("space.yaml").write_text(yaml.safe_dump(
        {**TINY_SPACE, "params": {**TINY_SPACE["params"], "method": {"type": "categorical", "choices": ["kd"]}}}))
    outcome = opdf_ray.search("rte", preset="tiny", space="space.yaml", num_samples=1, max_train_samples=64,
                              max_length=32, max_epochs=2, cache_dir="cache", max_concurrent=1, gpus_per_worker=0,
                              cpus_per_worker=1.0, seed=0)
    assert outcome.leaderboard == str(tmp_path / "outputs/search/leaderboard") and outcome.failed == []
    assert any((tmp_path / "cache" / "tokens").iterdir())      # the relative cache is the user's, not Ray's cwd's
    board = read_leaderboard(outcome.leaderboard)
    assert list(board["status"]) == ["completed"], board.get("error")
    assert list(outcome.best["trial_id"]) == list(board["trial_id"])
    # take the student home from the relative leaderboard: a stock pipeline names RTE's labels and scores the row
    from transformers import pipeline

    from opdf_ray.data import load_glue
    from opdf_ray.export import main as export_main

    assert export_main(["outputs/search/leaderboard", "--out", "best"]) == 0
    assert "python -m opdf_ray.run --task rte --method kd" in (tmp_path / "best" / "README.md").read_text()
    classify = pipeline("text-classification", model=str(tmp_path / "best"), truncation=True, device="cpu")
    dev = load_glue("rte").dev["validation"]
    predicted = classify([{"text": a, "text_pair": b} for a, b in zip(dev["sentence1"], dev["sentence2"])],
                         batch_size=64)
    assert {p["label"] for p in predicted} <= {"entailment", "not_entailment"}
    accuracy = 100 * sum(p["label"] == ("entailment", "not_entailment")[y]
                         for p, y in zip(predicted, dev["label"])) / len(dev)
    assert accuracy == pytest.approx(board["dev_score"].iloc[0], abs=100 / len(dev))   # within one example


def test_trials_given_half_a_gpu_share_it(local_ray, tmp_path):
    """``--gpus-per-worker 0.5``: two single-worker trials run at once on one GPU (a logical one here; their workers
    find no CUDA and train on the CPU, over gloo, as a trial of one worker always does)."""
    space = tiny_space(method={"type": "categorical", "choices": ["kd"]})
    conf = settings(tmp_path, name="half", num_samples=2, max_concurrent=2, gpus_per_worker=0.5,
                    cpus_per_worker=1.0, early_stopping=False)
    grid = run_search(tiny_base(tmp_path), space, conf)
    assert grid.num_errors == 0
    board = read_leaderboard(conf.leaderboard)
    assert list(board["status"]) == ["completed"] * 2
    assert set(board["opdf"]) == {True, False}     # the first trials: one per (method, OPDF) cell of the space
    ends = board["finished_at"].astype("int64") // 10 ** 9
    (s1, e1), (s2, e2) = zip(ends - board["wall_seconds"], ends)
    assert max(s1, s2) < min(e1, e2)               # their runs overlap: on one GPU's worth, not one after another


def test_consecutive_trials_in_one_warm_process_equal_trials_in_fresh_ones(local_ray, tmp_path):
    """Tune reuses a one-worker trial's process for the next trial (imports, data and teacher stay loaded): what a
    trial mutates is reset, so each trial scores exactly what the same settings score in a run of their own. Each
    trial also reports the training loss between evaluations (log_steps 1), not only at them."""
    from opdf_ray.config import RunSpec
    from opdf_ray.engine import run
    from opdf_ray.leaderboard import spec_of

    space = parse_space({**TINY_SPACE, "params": {name: {"type": "categorical", "choices": choices} for name, choices
                                                  in (("method", ["kd"]), ("opdf", [True, False]),
                                                      ("opdf_cores", [3]), ("lr", [3e-4]))}}, "warm")
    conf = settings(tmp_path, name="warm", num_samples=2, sampler="grid", early_stopping=False,
                    optuna_storage=str(tmp_path / "storage" / "optuna.journal"),
                    mlflow_uri=f"sqlite:///{tmp_path / 'mlflow.db'}", mlflow_students=True)
    run_search(tiny_base(tmp_path), space, conf)
    board = read_leaderboard(conf.leaderboard).sort_values("finished_at", kind="stable")
    assert list(board["status"]) == ["completed"] * 2 and list(board["warm_start"]) == [False, True]
    assert (board["setup_seconds"] > 0).all() and (board["finish_seconds"] > 0).all()
    for _, row in board.iterrows():
        alone = run(RunSpec.from_dict(spec_of(row) | {"save_model": False}))
        assert alone["selection_score"] == row["selection_score"]
        assert alone["dev"]["validation"]["accuracy"] == row["dev_accuracy"]
        events = b"".join(p.read_bytes() for p in (Path(conf.storage) / "warm-rte" / row["trial_id"]).glob("events*"))
        assert events.count(b"train/loss") > row["evaluations"]
    check_trackers(conf, board, searched={"method", "opdf_cores", "lr"})     # opdf: a switch, not a setting


def tmp_path_of(conf) -> Path:
    """The folder of the tracker test's MLflow database."""
    return Path(conf.mlflow_uri[len("sqlite:///"):]).parent


def check_trackers(conf, board, searched: set[str]) -> None:
    """What a user opens after a search: TensorBoard's curves on the optimiser step and an HParams summary of the
    searched settings → selection and dev score; MLflow runs with params once, metrics on the step, no config
    copies, the student as an artifact; the Optuna study in its journal (what optuna-dashboard reads)."""
    from mlflow.tracking import MlflowClient

    from tb_events import hparams_summary, scalars

    for _, row in board.iterrows():
        folder = Path(conf.storage) / "warm-rte" / row["trial_id"]
        loss = scalars(folder, "ray/tune/train/loss")
        assert [step for step, _ in loss] == list(range(1, int(row["steps"]) + 1))      # every optimiser step
        params, metrics = hparams_summary(folder)
        assert set(params) == searched and params["lr"] == 3e-4
        assert metrics == {"hparams/selection_score", "hparams/dev_score"}
        assert scalars(folder, "hparams/dev_score")[0][1] == pytest.approx(row["dev_accuracy"])
    client = MlflowClient(tracking_uri=conf.mlflow_uri)
    runs = client.search_runs([client.get_experiment_by_name("warm-rte").experiment_id])
    assert len(runs) == len(board)
    for mlflow_run in runs:
        steps = [m.step for m in client.get_metric_history(mlflow_run.info.run_id, "train/loss")]
        assert steps == sorted(steps) and steps[0] == 1 and len(steps) == len(set(steps))
        assert not [k for k in mlflow_run.data.metrics if k.startswith("config")]
        assert mlflow_run.data.params["spec/lr"] == "0.0003"
        assert "student/config.json" in {a.path for a in client.list_artifacts(mlflow_run.info.run_id, "student")}
        assert mlflow_run.info.artifact_uri.startswith((tmp_path_of(conf) / "mlartifacts").as_uri())
    study = optuna.load_study(study_name="warm-rte", storage=optuna_storage(conf.optuna_storage))
    assert sorted(t.state.name for t in study.trials) == ["COMPLETE", "COMPLETE"]


def nan_space(lrs: list[float]):
    """KD, dense, a grid over ``lrs``: lr 1e30 makes the loss NaN within a few steps."""
    return parse_space({**TINY_SPACE, "params": {name: {"type": "categorical", "choices": choices} for name, choices
                                                 in (("method", ["kd"]), ("opdf", [False]), ("lr", lrs))}}, "nan")


def test_a_nan_trial_is_failed_and_the_others_finish(local_ray, tmp_path):
    grid = run_search(tiny_base(tmp_path), nan_space([1e-4, 1e30]), settings(tmp_path, name="nan", num_samples=2,
                                                                             sampler="grid"))
    board = read_leaderboard(str(tmp_path / "board")).set_index("trial_id")
    assert set(board["lr"]) == {1e-4, 1e30}
    assert (board.loc[board["lr"] == 1e30, "status"] == "failed").all()
    assert board.loc[board["lr"] == 1e30, "error"].str.contains("NaN/inf").all()
    assert (board.loc[board["lr"] == 1e-4, "status"] != "failed").all()
    assert grid.num_errors == 0 and failed_trials(grid) == (board["lr"] == 1e30).sum()   # failed, not retried
    experiment = tmp_path / "storage" / "nan-rte"
    for trial_id, row in board.iterrows():             # failed trials' checkpoints deleted, the others' kept
        assert any((experiment / trial_id).glob("checkpoint_*")) == (row["status"] != "failed")
    summarise_search("rte", grid, "nan-rte")           # some failed: the search still succeeded


def test_a_worker_failure_resumes_the_trial_from_its_checkpoint(local_ray, tmp_path):
    local_ray.unlink()                              # arm the fault drill: fail once at the eval at step ≥ 5
    space = tiny_space(method={"type": "categorical", "choices": ["prokt"]})
    grid = run_search(tiny_base(tmp_path), space, settings(tmp_path, name="fault", num_samples=1))
    assert local_ray.read_text() == "8"            # it did fail, at the final evaluation (step 8)
    row = read_leaderboard(str(tmp_path / "board")).iloc[0]
    assert grid.num_errors == 0 and row["status"] == "completed"
    assert row["restored_at_step"] == 4 and row["steps"] == 8     # restarted from the step-4 checkpoint


@pytest.mark.parametrize("signal_", [signal.SIGINT, signal.SIGKILL], ids=["sigint", "sigkill"])
def test_resume_after_the_driver_is_stopped_neither_loses_nor_duplicates_rows(tmp_path, signal_):
    board = tmp_path / "board"
    optuna_db = f"sqlite:///{tmp_path / 'optuna.db'}"
    cmd = [sys.executable, str(REPO / "tune_main.py"), "--task", "rte", "--preset", "tiny", "--num-samples", "3",
           "--max-train-samples", "256", "--max-epochs", "2", "--methods", "kd", "--max-length", "32",
           "--storage", str(tmp_path / "storage"), "--leaderboard", str(board), "--name", "resume",
           "--cache-dir", str(tmp_path / "cache"), "--optuna-storage", optuna_db]
    env = os.environ | {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop(FAIL_ONCE_ENV, None)
    first = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while time.time() < deadline and not list(board.glob("task=rte/*.parquet")):
        time.sleep(0.2)
    first.send_signal(signal_)                    # Ctrl-C (Tune saves its state), or a hard kill mid-trial
    first.wait(timeout=120)
    interrupted = read_leaderboard(str(board))
    assert 1 <= len(interrupted) < 3              # stopped with trials left
    done = subprocess.run(cmd + ["--resume"], env=env, capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stderr[-3000:]
    final = read_leaderboard(str(board))
    assert len(final) == 3 and final["trial_id"].is_unique        # every trial exactly once
    assert set(interrupted["trial_id"]) <= set(final["trial_id"])
    assert "best trial" in done.stdout and str(board) in done.stdout
    states = [t.state.name for t in optuna.load_study(study_name="resume-rte", storage=optuna_db).trials]
    assert "RUNNING" not in states                                 # no orphan trial in the Optuna study


@pytest.mark.parametrize("family", ["roberta", "electra", "deberta-v2", "distilbert"])
def test_a_search_distils_every_family_with_every_method_and_exports_stock_students(local_ray, tmp_path, family):
    """Each encoder family through the whole search: a tiny random teacher (tests/test_families.py builds it), the
    four methods each ± OPDF; every student completes and loads in stock transformers as that family."""
    import dataclasses

    from transformers import AutoModelForSequenceClassification

    from test_families import tiny_teacher

    teacher = tiny_teacher(family, tmp_path)
    methods = ["kd", "prokt", "lgtm", "theseus"]
    space = parse_space({**TINY_SPACE, "epochs": {"default": 1},
                         "params": {name: {"type": "categorical", "choices": choices} for name, choices
                                    in (("method", methods), ("opdf", [True, False]), ("opdf_cores", [3]))}}, family)
    conf = settings(tmp_path, name=family, num_samples=8, sampler="grid", early_stopping=False)
    run_search(dataclasses.replace(tiny_base(tmp_path), teacher=str(teacher), max_train_samples=32), space, conf)
    board = read_leaderboard(conf.leaderboard)
    assert sorted(zip(board["method"], board["opdf"])) == sorted((m, o) for m in methods for o in (False, True))
    assert set(board["status"]) == {"completed"}
    for path in board["student_path"]:
        assert AutoModelForSequenceClassification.from_pretrained(path).config.model_type == family
    if family == "distilbert":         # no token_type_ids: the ONNX export takes only what the model's forward takes
        from opdf_ray.export import main as export_main

        assert export_main([conf.leaderboard, "--out", str(tmp_path / "best"), "--onnx", "--int8"]) == 0
        assert (tmp_path / "best" / "model.onnx").is_file() and (tmp_path / "best" / "model.int8.onnx").is_file()
        best = board.loc[board["selection_score"].idxmax()]
        card = (tmp_path / "best" / "README.md").read_text()          # fp32 ONNX scores what the row says
        assert f"the fp32 ONNX model {best['dev_score']:.2f}" in card and "`model.int8.onnx`" in card


def test_a_search_on_your_own_csv_reports_and_exports_its_labels(local_ray, tmp_path, monkeypatch):
    """``opdf-ray search --task data/reviews.csv --text-columns review --label-column sentiment`` on the README's
    relative defaults: the rows are the dataset's, the report has its column and majority row, and the exported
    student names its labels in a stock pipeline."""
    import shutil

    import yaml
    from transformers import pipeline

    from opdf_ray.cli import main as search_main
    from opdf_ray.export import main as export_main
    from opdf_ray.report import main as report_main

    monkeypatch.chdir(tmp_path)
    Path("data").mkdir()
    shutil.copy(REPO / "data" / "examples" / "reviews.csv", "data/reviews.csv")
    Path("space.yaml").write_text(yaml.safe_dump(
        {**TINY_SPACE, "epochs": {"default": 1, "reviews": 2},
         "params": {**TINY_SPACE["params"], "method": {"type": "categorical", "choices": ["kd"]}}}))
    assert search_main(["--task", "data/reviews.csv", "--text-columns", "review", "--label-column", "sentiment",
                        "--preset", "tiny", "--space", "space.yaml", "--num-samples", "1", "--cache-dir", "cache",
                        "--max-concurrent", "1", "--gpus-per-worker", "0", "--cpus-per-worker", "1"]) == 0
    board = read_leaderboard("outputs/search/leaderboard")
    assert list(board["task"].astype(str)) == ["reviews"] and list(board["status"]) == ["completed"], board["error"]
    assert board["dataset"].iloc[0] == str(tmp_path / "data" / "reviews.csv") and board["epochs"].iloc[0] == 2
    assert board["selection_metric"].iloc[0] == "accuracy" and board["dev_mcc"].notna().all()
    assert report_main(["outputs/search/leaderboard", "--out", "report"]) == 0
    report = (tmp_path / "report" / "report.md").read_text()
    header = next(line for line in report.splitlines() if line.startswith("| Method"))
    assert "| reviews Acc | reviews F1 | reviews MCC |" in header and "| *Majority class* |" in report
    assert export_main(["outputs/search/leaderboard", "--out", "best"]) == 0
    card = (tmp_path / "best" / "README.md").read_text()
    assert "# reviews student distilled with KD" in card and "| task | reviews \\(reviews\\.csv\\) (negative, positive) |" in card
    assert f"--task {tmp_path / 'data' / 'reviews.csv'} --method kd" in card      # the command trains it again
    assert "--text-columns review --label-column sentiment --problem-type classification" in card
    classify = pipeline("text-classification", model=str(tmp_path / "best"), truncation=True, device="cpu")
    assert {p["label"] for p in classify(["a delight", "a bore"])} <= {"negative", "positive"}
