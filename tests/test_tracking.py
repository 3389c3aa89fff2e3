"""Where a search is watched: the Optuna study's default journal, a fresh search's fresh study, HParams values.
(The trackers' files after a real search: tests/test_search.py::check_trackers.)"""

import optuna
import pytest

from opdf_ray.hpo.tracking import DEV_TAG, SELECTION_TAG, default_optuna_storage, hparams_of, optuna_storage, \
    start_fresh_study
from ray_helpers import settings


def test_the_study_lives_in_a_journal_under_a_local_storage_and_in_memory_for_a_cloud_one(tmp_path):
    assert default_optuna_storage(str(tmp_path)) == str(tmp_path / "optuna.journal")
    assert default_optuna_storage("s3://bucket/search") is None
    assert isinstance(optuna_storage(str(tmp_path / "a" / "b.journal")), optuna.storages.JournalStorage)
    assert (tmp_path / "a").is_dir() and optuna_storage(None) is None


def test_a_new_search_of_an_old_name_starts_a_new_study_and_a_resumed_one_keeps_it(tmp_path):
    storage = optuna_storage(str(tmp_path / "optuna.journal"))
    old = optuna.create_study(study_name="opdf-rte", storage=storage)
    old.optimize(lambda trial: trial.suggest_float("x", 0, 1), n_trials=3)
    assert not start_fresh_study("other-rte", storage)
    assert start_fresh_study("opdf-rte", storage)
    assert "opdf-rte" not in {s.study_name for s in optuna.get_all_study_summaries(storage)}


def test_hparams_name_the_searched_settings_and_the_two_scores():
    spec = {"method": "kd", "opdf_cores": 3, "lr": 1e-4, "temperature": None}
    result = {"best_score": 71.5, "dev/validation/accuracy": 70.1, "step": 50}
    assert hparams_of(spec, result, ["method", "opdf_cores", "lr", "temperature"]) == (
        {"method": "kd", "opdf_cores": 3, "lr": 1e-4}, {SELECTION_TAG: 71.5, DEV_TAG: 70.1})
    assert hparams_of(spec, {"best_score": float("-inf")}, ["lr"]) == ({"lr": 1e-4}, {})   # nothing to show


@pytest.mark.parametrize("value, ok", [("sqlite:///x.db", True), ("runs/optuna.journal", True),
                                       ("runs/study.log", True), ("optuna.db", False), ("", False)])
def test_the_study_storage_is_a_database_url_or_a_journal_file(tmp_path, value, ok):
    if ok:
        settings(tmp_path, optuna_storage=value if "://" not in value else f"sqlite:///{tmp_path / 'x.db'}")
    else:
        with pytest.raises(ValueError, match="journal file ending in .journal or .log"):
            settings(tmp_path, optuna_storage=value)


def test_students_go_to_mlflow_only_with_mlflow(tmp_path):
    with pytest.raises(ValueError, match="--mlflow-students needs --mlflow"):
        settings(tmp_path, mlflow_students=True)
