"""Where a search can be watched: TensorBoard (always; on the optimiser step, with an HParams summary of what was
searched), MLflow and W&B (opt-in, through Ray's logger callbacks), and the Optuna study (persisted in a journal
file under ``--storage`` by default, so optuna-dashboard opens any running or finished search)."""

from __future__ import annotations

import logging
import math
from pathlib import Path

from opdf_ray import trial_metrics as tm
from opdf_ray.storage import is_uri, join

log = logging.getLogger(__name__)

# the HParams dashboard's two metrics (scalars of these tags, written at each trial's end)
SELECTION_TAG, DEV_TAG = "hparams/selection_score", "hparams/dev_score"
JOURNAL = "optuna.journal"          # the default study storage, under --storage
TUNE_TAG_PREFIX = "ray/tune/"       # Tune's TensorBoard logger files each result key under it


def default_optuna_storage(storage: str) -> str | None:
    """The Optuna study's default home: a journal file under a local ``storage`` (Optuna's storage for a shared
    filesystem, with its own file lock; SQLite on NFS is not safe). None for a cloud URI (a journal needs a
    filesystem): pass ``--optuna-storage`` with a database URL there."""
    return None if is_uri(storage) else join(storage, JOURNAL)


def optuna_storage(spec: str | None):
    """An Optuna storage from its setting: a database URL (``sqlite:///…``, ``postgresql://…``) or a journal file
    path; None keeps the study in memory."""
    if spec is None:
        return None
    import optuna

    if "://" in spec:
        return optuna.storages.RDBStorage(spec)
    from optuna.storages.journal import JournalFileBackend

    Path(spec).parent.mkdir(parents=True, exist_ok=True)
    return optuna.storages.JournalStorage(JournalFileBackend(spec))


def start_fresh_study(study_name: str, storage) -> bool:
    """A new (not resumed) search starts a new study: an old study of the same name in a persistent storage is
    deleted first (Ray's OptunaSearch would load it, and TPE would then model the old search's trials). Returns
    whether one was deleted."""
    import optuna

    if storage is None or study_name not in {s.study_name for s in optuna.get_all_study_summaries(storage)}:
        return False
    optuna.delete_study(study_name=study_name, storage=storage)
    log.info("optuna: a study named %s from an earlier search was replaced (use --resume to continue it)",
             study_name)
    return True


def experiment_loggers(settings, experiment: str, hyperparameters: list[str], student_of) -> list:
    """Tune's logger callbacks for a search: TensorBoard always (``StepTensorBoard``), MLflow and W&B when asked.
    ``hyperparameters``: what the space searches (HParams, in that order); ``student_of(trial)``: a completed trial's
    student folder (MLflow's artifact)."""
    loggers = [step_tensorboard(hyperparameters)]
    if settings.mlflow_uri:
        loggers.append(trial_mlflow(settings.mlflow_uri, experiment, settings.mlflow_students, student_of))
    if settings.wandb_project:
        from ray.air.integrations.wandb import WandbLoggerCallback

        # upload_timeout bounds the wait for a trial's uploads at the end (Ray's default, 30 min, also applies when
        # the search ends on an error, with actors that never got their end signal)
        loggers.append(WandbLoggerCallback(project=settings.wandb_project, group=experiment, upload_timeout=120))
    return loggers


def hparams_of(spec: dict, result: dict, hyperparameters: list[str]) -> tuple[dict, dict]:
    """(searched settings → value, HParams metrics) of a finished trial: its best selection score and, once it
    completed, its first dev score. Empty settings (a knob inert for the trial) and missing scores are left out."""
    params = {k: spec[k] for k in hyperparameters if isinstance(spec.get(k), (str, bool, int, float))}
    metrics = {}
    best = result.get(tm.BEST_SCORE)
    if isinstance(best, (int, float)) and math.isfinite(best):
        metrics[SELECTION_TAG] = float(best)
    dev = [v for k, v in sorted(result.items()) if k.startswith(tm.DEV_PREFIX) and isinstance(v, (int, float))]
    if dev:
        metrics[DEV_TAG] = float(dev[0])
    return params, metrics


def step_tensorboard(hyperparameters: list[str]):
    """Tune's TensorBoard logger (it then adds no default one): scalars on the optimiser step (results carry it as
    ``timesteps_total``, which Tune's logger plots on) and, per trial, an HParams summary of the searched settings
    against its selection and dev score, in place of Tune's (every one of the ~90 settings of the run against every
    result key, so neither list can be read). Overrides Tune's hook for that summary, ``_try_log_hparams``, and
    uses its per-trial writer: pinned by tests/test_search.py's tracker checks (Ray is pinned to 2.60)."""
    from ray.tune.logger import TBXLoggerCallback

    class StepTensorBoard(TBXLoggerCallback):
        def _try_log_hparams(self, trial, result):
            from tensorboardX.summary import hparams

            result = {k.removeprefix(TUNE_TAG_PREFIX): v for k, v in result.items()}
            params, metrics = hparams_of(trial.config.get("spec", {}), result, hyperparameters)
            if not params or not metrics:
                return
            writer = self._trial_writer[trial]
            for tag, value in metrics.items():
                writer.add_scalar(tag, value, global_step=int(result.get(tm.STEP, 0)))
            for summary in hparams(hparam_dict=params, metric_dict=metrics):
                writer.file_writer.add_summary(summary)

    return StepTensorBoard()


def trial_mlflow(uri: str, experiment: str, log_students: bool, student_of):
    """Ray's MLflow logger with each trial's settings as params once (at its start) and its results as metrics on
    the optimiser step, without Tune's copy of the config in every result (it became ~40 ``config/*`` metrics);
    with ``log_students``, a completed trial's merged student as the run's ``student`` artifact (from a local
    ``--storage``; a cloud one keeps its students there)."""
    from ray.air.integrations.mlflow import MLflowLoggerCallback

    class TrialMLflow(MLflowLoggerCallback):
        def log_trial_result(self, iteration, trial, result):
            super().log_trial_result(iteration, trial, {k: v for k, v in result.items() if k != "config"})

        def log_trial_end(self, trial, failed=False):
            student = student_of(trial) if log_students and not failed else None
            if student and not is_uri(student) and trial in self._trial_runs:   # Ray's run of it (pinned by a test)
                from mlflow.tracking import MlflowClient

                MlflowClient(tracking_uri=uri).log_artifacts(self._trial_runs[trial], student, artifact_path="student")
            super().log_trial_end(trial, failed)

    create_beside_database(uri, experiment)
    return TrialMLflow(tracking_uri=uri, experiment_name=experiment)


def create_beside_database(uri: str, experiment: str) -> None:
    """An SQLite tracking store has no server to keep artifacts: MLflow would put them in ``./mlruns`` of whatever
    folder the search ran from. The experiment is created with its artifacts beside the database instead
    (``<folder of mlflow.db>/mlartifacts``), unless it exists already."""
    if not uri.startswith("sqlite:///"):
        return
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    if client.get_experiment_by_name(experiment) is None:
        root = Path(uri[len("sqlite:///"):]).expanduser().resolve().parent / "mlartifacts"
        client.create_experiment(experiment, artifact_location=root.as_uri())
