"""The search's pure parts without a Ray cluster: trial specs and epochs, parallelism, grids, the pruned-trial
searcher, the path from a worker's reports to a leaderboard row (the metrics contract), and the pace of its
training-loss reports."""

import logging
from pathlib import Path

import optuna
import pytest
from ray_helpers import settings, tiny_base, tiny_space
from rows import completed_result

from opdf_ray import trial_metrics as tm
from opdf_ray.checkpoint import Progress
from opdf_ray.config import RunSpec
from opdf_ray.leaderboard import make_row, read_leaderboard, write_row
from opdf_ray.search_space import parse_space
from opdf_ray.hpo.tuner import (DRIVER_CPU, METRIC, MODE, default_parallelism, grid_of, prune_aware_optuna_search,
                           trial_epochs, trial_spec)


def test_trial_spec_layers_fixed_drawn_and_command_line_values(tmp_path):
    space = tiny_space()
    drawn = {"method": "prokt", "lr": 3e-4, "opdf": False}
    spec = trial_spec(tiny_base(tmp_path), space, drawn, settings(tmp_path, cpus_per_worker=2.0),
                      overrides={"max_length": 48})
    assert (spec.method, spec.lr, spec.opdf_cores) == ("prokt", 3e-4, 0)          # drawn
    assert spec.batch_size == 16 and spec.teacher_epochs == 1                     # the space's fixed values
    assert spec.max_length == 48                                                  # the command line wins
    assert spec.epochs == 2 and spec.threads == 2                                 # epochs section; CPU share
    assert not spec.progress and not spec.save_model                              # a trial's execution


def test_epochs_come_only_from_the_epochs_section_capped_by_max_epochs(tmp_path):
    space = parse_space({"epochs": {"default": 3, "rte": 10}, "params": {"lr": {"type": "loguniform", "low": 1e-5,
                                                                                "high": 1e-4}}})
    assert trial_epochs(space, "rte", settings(tmp_path)) == 10
    assert trial_epochs(space, "mrpc", settings(tmp_path)) == 3
    assert trial_epochs(space, "rte", settings(tmp_path, max_epochs=2)) == 2
    spec = trial_spec(tiny_base(tmp_path), space, {"lr": 2e-5}, settings(tmp_path, max_epochs=4))
    assert spec.epochs == 4                                  # the trial trains what ASHA's horizon assumes
    with pytest.raises(ValueError, match="epochs cannot be searched"):
        parse_space({"params": {"epochs": {"type": "int", "low": 1, "high": 5}}})
    with pytest.raises(ValueError, match="fixed.epochs: epochs are set per task"):
        parse_space({"fixed": {"epochs": 7}})


@pytest.mark.parametrize("cpus,gpus,workers,gpus_per_worker,expected", [
    (2, 0, 1, 0.0, (round(2 - DRIVER_CPU, 2), 1)),      # a laptop: one trial gets every core
    (2, 0, 2, 0.0, (round((2 - DRIVER_CPU) / 2, 2), 1)),
    (1, 0, 8, 0.0, (0.25, 1)),                          # never below a quarter CPU per worker
    (32, 4, 1, 1.0, (7.0, 4)),                          # GPUs bound concurrency; CPUs shared among trials
    (32, 4, 2, 1.0, (7.0, 2)),                          # 2 trials × 2 workers share the CPUs
    (8, 1, 2, 1.0, (3.0, 1)),                           # too few GPUs: still one trial (an autoscaler may add)
])
def test_default_parallelism_fits_the_cluster(cpus, gpus, workers, gpus_per_worker, expected):
    assert default_parallelism(cpus, gpus, workers, gpus_per_worker) == expected


def test_grid_of_takes_every_categorical_choice_and_rejects_the_rest():
    space = parse_space({"params": {"method": {"type": "categorical", "choices": ["kd", "prokt"]},
                                    "lr": {"type": "categorical", "choices": [1e-5, 1e-4]}}})
    assert grid_of(space) == {"method": ["kd", "prokt"], "lr": [1e-5, 1e-4]}
    with pytest.raises(ValueError, match=r"categorical, unconditional parameters; not so: \['lr'\]"):
        grid_of(parse_space({"params": {"lr": {"type": "loguniform", "low": 1e-5, "high": 1e-4}}}))


def test_stopped_trials_are_told_to_optuna_as_pruned_and_log_results_are_ignored():
    storage = optuna.storages.InMemoryStorage()
    search = prune_aware_optuna_search(space=lambda trial: {"lr": trial.suggest_float("lr", 1e-5, 1e-3, log=True)},
                                       metric=METRIC, mode=MODE, study_name="s", storage=storage, seed=0)
    for trial_id in ("stopped", "done", "failed"):
        search.suggest(trial_id)
        search.on_trial_result(trial_id, tm.log_metrics(3, {"loss": 0.5}, -1.0) | {tm.TRAINING_ITERATION: 1})
        search.on_trial_result(trial_id, {tm.BEST_SCORE: 60.0, tm.EPOCH: 1.0, tm.EVALUATIONS: 1,
                                          tm.TRAINING_ITERATION: 2})
    search.on_trial_complete("stopped", {tm.BEST_SCORE: 60.0, tm.EVALUATIONS: 1})          # no `finished`
    search.on_trial_complete("done", {tm.BEST_SCORE: 70.0, tm.FINISHED: 1.0})
    search.on_trial_complete("failed", None, error=True)
    trials = optuna.load_study(study_name="s", storage=storage).trials
    states = [t.state for t in trials]
    assert states == [optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.COMPLETE,
                      optuna.trial.TrialState.FAIL]
    assert trials[1].value == 70.0
    assert all(t.intermediate_values == {1: 60.0} for t in trials)   # indexed by evaluation; no log results


def test_a_workers_reports_become_a_complete_leaderboard_row(tmp_path):
    progress = Progress(step=20, best_score=71.0, best_step=20, train_seconds=4.0, examples=200,
                        history=[{"step": 10, "epoch": 1.0, "loss": 0.7, "selection_f1": 65.0},
                                 {"step": 20, "epoch": 2.0, "loss": 0.5, "selection_f1": 71.0}])
    evaluation = tm.evaluation_metrics(progress, None, "f1", "selection")
    results = {"selection": {"f1": 71.0, "accuracy": 66.0}, "dev": {"validation": {"f1": 80.0, "accuracy": 70.0}},
               "teacher_dev": {"validation": {"f1": 88.0, "accuracy": 84.0}}, "best_step": 20, "steps": 20,
               "teacher_finetune": {"dev": {"validation": {"f1": 89.0, "accuracy": 85.0}}, "seconds": 9.0},
               "trainable_params": 300, "inference_params": 100, "train_seconds": 4.0, "examples_per_second": 50.0,
               "merge_max_abs_logit_diff": 1e-6, "bytes_all_reduced": 0, "workers": 1}
    final = evaluation | tm.final_metrics(results) | {tm.FINISHED: 1.0, tm.TRAINING_ITERATION: 5}
    spec = RunSpec(task="mrpc", method="prokt", opdf_cores=3).to_dict()
    write_row(str(tmp_path), make_row("run", "t1", "completed", spec, final))
    row = read_leaderboard(str(tmp_path)).iloc[0]
    assert (row["selection_score"], row["dev_score"], row["dev_accuracy"], row["teacher_dev_score"]) == (
        71.0, 80.0, 70.0, 88.0)                                      # ProKT's teacher at the end …
    assert (row["finetuned_teacher_dev_f1"], row["finetuned_teacher_dev_accuracy"]) == (89.0, 85.0)  # … and start
    assert (row["evaluations"], row["epochs_done"], row["steps"], row["examples_per_second"]) == (2, 2.0, 20, 50.0)
    assert (row["trainable_params"], row["inference_params"], row["iterations"]) == (300, 100, 5)
    assert row["curve"] == "[[1.0, 65.0], [2.0, 71.0]]"


def test_a_completed_trial_missing_a_contract_key_is_an_error_not_a_null_column():
    spec = RunSpec(task="mrpc").to_dict()
    result = completed_result("mrpc", 70.0, 80.0)
    del result[tm.dev_key("validation", "accuracy")]
    with pytest.raises(ValueError, match=r"lacks \['dev/validation/accuracy'\]"):
        make_row("run", "t1", "completed", spec, result)
    make_row("run", "t2", "pruned", spec, {tm.SCORE: 60.0})          # a stopped trial has no final metrics


def test_rows_of_an_older_schema_version_are_read_with_the_new_columns_empty(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    spec = RunSpec(task="rte").to_dict()
    write_row(str(tmp_path), make_row("run", "new", "completed", spec, completed_result("rte", 60.0, 61.0)))
    old = pq.read_table(tmp_path / "task=rte" / "run--new.parquet").drop_columns(["evaluations", "log_steps"])
    old = old.set_column(old.schema.get_field_index("trial_id"), "trial_id", pa.array(["old"]))
    old = old.replace_schema_metadata({"schema_version": "1"})
    pq.write_table(old, tmp_path / "task=rte" / "run--old.parquet")
    board = read_leaderboard(str(tmp_path)).set_index("trial_id")
    assert board.loc["new", "evaluations"] == 3 and board.loc["old", "dev_score"] == 61.0
    assert board.loc["old", ["evaluations", "log_steps"]].isna().all()


def test_orphan_optuna_trials_are_closed_when_a_search_ends(tmp_path):
    from opdf_ray.hpo.tuner import close_orphan_trials

    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = optuna.create_study(study_name="s", storage=storage)
    study.tell(study.ask(), 1.0)
    study.ask()                                               # asked by a driver that was then SIGKILLed
    assert close_orphan_trials("s", storage) == 1
    states = [t.state for t in optuna.load_study(study_name="s", storage=storage).trials]
    assert states == [optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL]


def test_a_resumed_trial_that_optuna_already_finished_does_not_stop_the_search(tmp_path):
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'optuna.db'}")
    search = prune_aware_optuna_search(space=lambda trial: {"lr": trial.suggest_float("lr", 1e-5, 1e-3, log=True)},
                                       metric=METRIC, mode=MODE, study_name="s", storage=storage, seed=0)
    search.suggest("t1")
    evaluation = {tm.BEST_SCORE: 60.0, tm.EPOCH: 1.0, tm.EVALUATIONS: 1, tm.TRAINING_ITERATION: 2}
    search.on_trial_result("t1", evaluation)
    study = optuna.load_study(study_name="s", storage=storage)
    study.tell(study.trials[0].number, 61.0)          # its end reached the study, not Tune's saved state
    search.on_trial_result("t1", evaluation)          # the resumed trial reports again: ignored, not raised


def test_a_grid_search_runs_each_combination_once_to_its_last_epoch():
    import argparse

    from opdf_ray.cli import build_parser
    from opdf_ray.hpo.checks import resolve_num_samples
    from opdf_ray.hpo.sizing import search_settings
    from opdf_ray.search_space import load_space

    space = load_space(Path(__file__).resolve().parent.parent / "benchmarks/study/spaces/lr.yaml")
    args = build_parser().parse_args(["--task", "sst2", "--sampler", "grid"])
    resolve_num_samples(args, space)
    settings = search_settings(args, cpus=1.0, concurrent=1, gpus=0.0, max_epochs=None)
    assert args.num_samples == 12 and settings.sampler == "grid" and not settings.early_stopping
    tpe = build_parser().parse_args(["--task", "sst2"])
    resolve_num_samples(tpe, space)
    assert tpe.num_samples == 8 and search_settings(tpe, 1.0, 1, 0.0, None).early_stopping
    assert not search_settings(argparse.Namespace(**vars(tpe) | {"no_early_stopping": True}), 1.0, 1, 0.0,
                               None).early_stopping


def test_tpe_models_the_results_after_a_third_of_the_trials_not_after_optunas_ten(tmp_path):
    """With Optuna's default 10 start-up trials the default 8-trial search never used TPE: it was random search."""
    from opdf_ray.hpo.tuner import TrialSampler, _optuna_search, startup_trials

    assert [startup_trials(settings(tmp_path, num_samples=n)) for n in (4, 7, 8, 15, 30, 100)] == [2, 2, 2, 5, 10, 10]
    assert startup_trials(settings(tmp_path, num_samples=7, tpe_startup_trials=7)) == 7
    with pytest.raises(ValueError, match="tpe_startup_trials=0 is invalid"):
        settings(tmp_path, tpe_startup_trials=0)
    conf = settings(tmp_path, num_samples=8)
    search = _optuna_search(TrialSampler(tiny_base(tmp_path), tiny_space(), conf, {}, {}), conf, "s")
    assert search.searcher._sampler._n_startup_trials == 2       # what the search hands Optuna (private attrs)


def test_the_minus_inf_best_score_before_the_first_evaluation_does_not_warn_on_every_log_report(caplog):
    """Log results carry ``best_score = -inf`` until the first evaluation; Tune's TensorBoard logger must not turn
    each of them into a "NaN or Inf found" warning (it did: 90 such lines in one study log)."""
    import math

    import numpy as np
    from tensorboardX import x2num

    from opdf_ray import log_to_console

    log_to_console()
    report = tm.log_metrics(10, {"loss": 0.5}, Progress().best_score)
    assert report[tm.BEST_SCORE] == -math.inf
    with caplog.at_level(logging.INFO):
        x2num.make_np(np.array(report[tm.BEST_SCORE]))
    assert not [r for r in caplog.records if "NaN or Inf" in r.getMessage()]


def test_a_space_that_draws_the_seed_gets_a_teacher_per_seed_and_each_trial_its_own(tmp_path):
    from opdf_ray.teacher import teacher_settings_key
    from opdf_ray.hpo.tuner import TrialSampler, teacher_variants, trial_spec

    space = tiny_space(seed={"type": "categorical", "choices": [1, 2]})
    assert teacher_variants(space) == [{"seed": 1}, {"seed": 2}]
    assert teacher_variants(tiny_space()) == [{}]
    conf, base = settings(tmp_path), tiny_base(tmp_path)
    teachers = {teacher_settings_key(trial_spec(base, space, v, conf)): f"/teachers/seed{v['seed']}"
                for v in teacher_variants(space)}
    sampler = TrialSampler(base, space, conf, {}, teachers)
    for seed in (1, 2, 1):
        trial = optuna.trial.FixedTrial({"method": "kd", "lr": 1e-4, "opdf": False, "seed": seed})
        config = sampler(trial)
        assert config["spec"]["seed"] == seed and config["finetuned_teacher"] == f"/teachers/seed{seed}"
    with pytest.raises(ValueError, match=r"search space params \['seed'\] change the task-fine-tuned teacher.*"
                                         r"make them categorical"):
        teacher_variants(tiny_space(seed={"type": "int", "low": 1, "high": 3}))


def test_rows_written_before_the_matched_core_lr_read_as_the_settings_they_trained_with(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    spec = RunSpec(task="rte", opdf_cores=5).to_dict()
    write_row(str(tmp_path), make_row("run", "new", "completed", spec, completed_result("rte", 60.0, 61.0)))
    new_columns = ["opdf_core_lr", "opdf_align_ratio", "opdf_train_cores"]
    old = pq.read_table(tmp_path / "task=rte" / "run--new.parquet").drop_columns(new_columns)
    old = old.set_column(old.schema.get_field_index("trial_id"), "trial_id", pa.array(["old"]))
    old = old.set_column(old.schema.get_field_index("schema_version"), "schema_version", pa.array([6], pa.int32()))
    pq.write_table(old.replace_schema_metadata({"schema_version": "6"}), tmp_path / "task=rte" / "run--old.parquet")
    board = read_leaderboard(str(tmp_path)).set_index("trial_id")
    assert list(board.loc["old", new_columns]) == ["1.0", 0.0, "all"]          # the published recipe they ran
    assert list(board.loc["new", new_columns]) == ["matched", 0.0, "all"]


def test_a_gpu_fraction_is_refused_for_a_trial_of_several_workers(tmp_path):
    settings(tmp_path, gpus_per_worker=0.25)                    # one worker: trials share the GPU
    with pytest.raises(ValueError, match=r"gpus_per_worker=0.25 shares a GPU between trials, but the 2 workers of "
                                         r"a trial are NCCL ranks.*use workers_per_trial=1 with a fraction"):
        settings(tmp_path, gpus_per_worker=0.25, workers_per_trial=2)
    settings(tmp_path, gpus_per_worker=1.0, workers_per_trial=2)


def test_a_trial_row_says_where_its_time_went_besides_training():
    from opdf_ray.hpo.tuner import trial_timing

    result = {tm.TRAINING_STARTED_AT: 105.0, tm.TRAINING_ENDED_AT: 160.0}
    assert trial_timing(result, started=100.0, now=162.5) == {"setup_seconds": 5.0, "finish_seconds": 2.5}
    # restored after it had finished (its times are another run's), or a result without them: unknown, not wrong
    assert trial_timing(result, started=200.0, now=150.0) == {"setup_seconds": None, "finish_seconds": None}
    assert trial_timing({}, started=None) == {"setup_seconds": None, "finish_seconds": None}
