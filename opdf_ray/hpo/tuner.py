"""The search: per task, Ray Tune + Optuna (TPE, seeded) + ASHA over a search space; a trial is ``hpo.trial.trial``.

Names are deterministic (``<name>-<task>`` experiments under ``--storage``, trials named by id), so a search
can be restored. Every finished trial becomes a leaderboard row; trials ASHA stopped are told to Optuna as
pruned and their checkpoints are deleted. A teacher that needs task fine-tuning (KD, Theseus) is fine-tuned
before the trials, once per task and distinct teacher setting (a space that draws the seed gets one per seed), as a
Ray task, and stored under the storage's ``teachers/``.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import itertools
import logging
import math
import time
import typing
from dataclasses import dataclass
from pathlib import Path

from opdf_ray import trial_metrics as tm
from opdf_ray.config import RunSpec
from opdf_ray.tasks import task_of
from opdf_ray.leaderboard import make_row, write_row
from opdf_ray.search_space import SearchSpace, spec_values
from opdf_ray.storage import delete_dir, is_uri, join, remove_temporaries
from opdf_ray.text import is_utf8, quoted
from opdf_ray.hpo.console import Console, tune_output, tune_verbosity
from opdf_ray.hpo.tracking import experiment_loggers, optuna_storage, start_fresh_study
from opdf_ray.hpo.trial import trial, worker_threads

log = logging.getLogger(__name__)
METRIC, MODE = tm.BEST_SCORE, "max"
# A teacher's temporary folder exists only while the teacher is saved (seconds): one an hour old is a killed one's.
STALE_TEMPORARY_S = 3600.0
DRIVER_CPU = 0.01                      # a trial driver only waits on its Ray Train workers
DRIVER_RESOURCE = "opdf_driver"        # a custom resource on the head node of cluster/gpu.yaml: drivers stay there


# the integer settings of a search, (least, most): generous bounds, so a typo fails now, not as an overflow later
SEARCH_INT_RANGES = {"num_samples": (1, 10**6), "max_concurrent": (1, 4096), "workers_per_trial": (1, 4096),
                     "grace_epochs": (1, 100_000), "reduction_factor": (2, 1000), "max_failures": (0, 1000),
                     "checkpoints_to_keep": (1, 1000), "tpe_startup_trials": (1, 10**6), "max_epochs": (1, 100_000)}


@dataclass(frozen=True)
class SearchSettings:
    """How a search runs (everything but the hyperparameters); validated on the driver before Ray starts."""

    name: str
    storage: str
    leaderboard: str
    num_samples: int = 8
    max_concurrent: int = 1
    workers_per_trial: int = 1
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0
    seed: int = 0
    max_epochs: int | None = None
    grace_epochs: int = 1
    reduction_factor: int = 3
    max_failures: int = 2
    checkpoints_to_keep: int = 2
    optuna_storage: str | None = None
    placement: str = "PACK"
    sampler: str = "tpe"           # "grid": every combination of an all-categorical space (bench_search.py)
    tpe_startup_trials: int | None = None   # random trials before TPE models the results; None: startup_trials()
    early_stopping: bool = True    # ASHA; off for a grid baseline
    cover_cells: bool = True       # TPE: the first trials are every (method, OPDF on/off) cell of the space
    mlflow_uri: str | None = None  # log every trial to this MLflow tracking URI (Ray's MLflowLoggerCallback)
    mlflow_students: bool = False  # and each completed trial's student as its run's artifact
    wandb_project: str | None = None   # log every trial to this W&B project (WANDB_MODE=offline works offline)
    verbose: int = 0               # the console (hpo/console.py): 0 our lines only, 1 + Tune's table and trial logs

    def __post_init__(self):
        def bad(field, allowed):
            raise ValueError(f"{field}={quoted(getattr(self, field))} is invalid; allowed: {allowed}")

        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):           # the Python API's door: types first, as RunSpec checks them
            value, kinds = getattr(self, f.name), typing.get_args(hints[f.name]) or (hints[f.name],)
            ok = any(value is None if k is type(None) else (isinstance(value, k) and (
                k is bool or not isinstance(value, bool))) or (k is float and type(value) is int) for k in kinds)
            if not ok:
                bad(f.name, " or ".join("None" if k is type(None) else k.__name__ for k in kinds))
            if isinstance(value, str) and not is_utf8(value):
                bad(f.name, "valid UTF-8 text (a path with undecodable bytes?)")
        for name, (least, most) in SEARCH_INT_RANGES.items():
            value = getattr(self, name)
            if value is not None and not least <= value <= most:
                bad(name, f"{'None or ' if name in ('tpe_startup_trials', 'max_epochs') else ''}an int in "
                          f"{least}..{most:,}")
        if not 0 <= self.seed <= 2**32 - 1:
            bad("seed", f"an int in 0..{2**32 - 1}")
        if not (0 < self.cpus_per_worker <= 1e6 and math.isfinite(self.cpus_per_worker)):
            bad("cpus_per_worker", "a finite number > 0")
        if not (0 <= self.gpus_per_worker <= 1e6 and math.isfinite(self.gpus_per_worker)):
            bad("gpus_per_worker", "a finite number ≥ 0")
        if 0 < self.gpus_per_worker < 1 and self.workers_per_trial > 1:
            raise ValueError(f"gpus_per_worker={self.gpus_per_worker} shares a GPU between trials, but the "
                             f"{self.workers_per_trial} workers of a trial are NCCL ranks, and two ranks cannot "
                             f"share one GPU; use workers_per_trial=1 with a fraction, or whole GPUs")
        if self.placement not in ("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"):
            bad("placement", "PACK, SPREAD, STRICT_PACK or STRICT_SPREAD")
        if self.sampler not in ("tpe", "grid"):
            bad("sampler", "tpe or grid")
        if not self.name or "/" in self.name or self.name[0] in "._":
            bad("name", "a non-empty name without '/' that does not start with '.' or '_' (readers skip those)")
        if self.optuna_storage is not None and "://" not in self.optuna_storage and not (
                self.optuna_storage.endswith((".journal", ".log")) and self.optuna_storage.strip()):
            bad("optuna_storage", f"an SQLAlchemy database URL (sqlite:///{self.optuna_storage}) or an Optuna journal "
                                  f"file ending in .journal or .log")
        if self.optuna_storage is not None and self.optuna_storage.startswith("sqlite:///"):
            folder = Path(self.optuna_storage[len("sqlite:///"):]).expanduser().parent
            if not folder.is_dir():                  # SQLite makes the file, never its folder (an error after Ray)
                bad("optuna_storage", f"a database in a folder that exists ({folder} does not)")
        if self.wandb_project is not None and not self.wandb_project.strip():
            bad("wandb_project", "a W&B project name")
        if self.mlflow_students and self.mlflow_uri is None:
            bad("mlflow_students", "false without an MLflow tracking URI (--mlflow-students needs --mlflow)")
        for field, module, extra in (("mlflow_uri", "mlflow", "mlflow"), ("wandb_project", "wandb", "wandb")):
            if getattr(self, field) is not None and importlib.util.find_spec(module) is None:
                raise ValueError(f"{field}={getattr(self, field)!r} needs the {module} package: pip install {extra} "
                                 f"(or pip install 'opdf-ray[tracking]')")


def startup_trials(settings: SearchSettings) -> int:
    """Random trials before TPE starts modelling: Optuna's 10 would leave a search of 10 trials or fewer (the
    default 8) purely random, so a third of the trials, at least 2 and at most 10, unless set."""
    if settings.tpe_startup_trials is not None:
        return settings.tpe_startup_trials
    return min(10, max(2, settings.num_samples // 3))


def experiment_name(settings: SearchSettings, task: str) -> str:
    return f"{settings.name}-{task}"


def trial_epochs(space: SearchSpace, task: str, settings: SearchSettings) -> int:
    """The one place a trial's epoch count is decided: the space's ``epochs`` for the task, capped by
    ``--max-epochs`` (a space cannot set ``epochs`` anywhere else); ASHA's horizon uses the same number."""
    epochs = space.epochs_for(task)
    return min(epochs, settings.max_epochs) if settings.max_epochs else epochs


def trial_spec(base: RunSpec, space: SearchSpace, drawn: dict, settings: SearchSettings,
               overrides: dict | None = None) -> RunSpec:
    """The RunSpec of one trial: base ← space ``fixed`` ← drawn values ← ``overrides`` (explicit command-line
    settings such as ``--max-length``) ← epochs (``trial_epochs``) and the execution settings of a trial."""
    values = base.to_dict() | space.fixed | spec_values(drawn) | (overrides or {})
    values["epochs"] = trial_epochs(space, base.task, settings)
    values |= {"threads": worker_threads(settings.cpus_per_worker), "progress": False, "save_model": False}
    return RunSpec.from_dict(values)


class TrialSampler:
    """Optuna define-by-run function: draws the space, returns the full trial config (picklable, for restore).

    ``finetuned_teachers``: the search's fine-tuned teachers by ``teacher_settings_key`` (empty when no trial starts
    from one); each trial gets the one fine-tuned under its own seed and settings."""

    def __init__(self, base: RunSpec, space: SearchSpace, settings: SearchSettings, run: dict,
                 finetuned_teachers: dict[str, str], overrides: dict | None = None):
        self.base, self.space, self.settings = base, space, settings
        self.run, self.finetuned_teachers, self.overrides = run, finetuned_teachers, overrides

    def __call__(self, trial) -> dict:
        from opdf_ray.teacher import teacher_settings_key

        context = self.base.to_dict() | (self.overrides or {})
        spec = trial_spec(self.base, self.space, self.space.draw(trial, context), self.settings, self.overrides)
        teacher = None
        if self.finetuned_teachers:
            key = teacher_settings_key(spec)
            if key not in self.finetuned_teachers:      # teacher_variants covers every draw: a bug, never a guess
                raise RuntimeError(f"no fine-tuned teacher was prepared for the teacher settings {key}")
            teacher = self.finetuned_teachers[key]
        return {"spec": spec.to_dict(), "run": self.run, "finetuned_teacher": teacher}


def prune_aware_optuna_search(**kwargs):
    """Ray's ``OptunaSearch`` (``kwargs`` as it takes them) that tells trials the scheduler stopped early as
    *pruned*: Ray's own would tell them as complete, and TPE would treat a half-trained score as final.

    Public API only (Ray's methods and Optuna's exceptions): ``OptunaSearch.on_trial_complete`` tells Optuna
    PRUNED for a result-less, error-free completion, so a stopped trial (its last result lacks ``finished``) is
    completed without its result. Log results are not told to Optuna; intermediate values are indexed by
    evaluation. Pinned by ``tests/test_tune_units.py`` (Ray is pinned to 2.60 in pyproject.toml).
    """
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    class PruneAwareOptunaSearch(OptunaSearch):
        def on_trial_result(self, trial_id, result):
            if not tm.is_evaluation(result):
                return
            try:
                super().on_trial_result(trial_id, result | {tm.TRAINING_ITERATION: result[tm.EVALUATIONS]})
            except optuna.exceptions.UpdateFinishedTrialError:
                # a resumed search re-runs a trial whose end a persistent study recorded after Tune's last
                # saved state: its intermediate values are already final, nothing to add
                log.info("optuna: trial %s already finished in the study; result not reported again", trial_id)

        def on_trial_complete(self, trial_id, result=None, error=False):
            if result and result.get(tm.NONFINITE):        # a NaN loss: failed, never a score
                super().on_trial_complete(trial_id, None, True)
                return
            stopped_early = bool(result) and not error and not result.get(tm.FINISHED)
            super().on_trial_complete(trial_id, None if stopped_early else result, error)

    return PruneAwareOptunaSearch(**kwargs)


def _optuna_search(sampler_fn: TrialSampler, settings: SearchSettings, study_name: str, resume: bool = False):
    import optuna
    from ray.tune.search import ConcurrencyLimiter

    storage = optuna_storage(settings.optuna_storage)
    if not resume:
        start_fresh_study(study_name, storage)
    if settings.sampler == "grid":
        sampler = optuna.samplers.GridSampler(grid_of(sampler_fn.space), seed=settings.seed)
    else:
        sampler = optuna.samplers.TPESampler(seed=settings.seed, n_startup_trials=startup_trials(settings))
    # enqueued first, their other parameters drawn as usual: a short search still shows every cell
    cells = sampler_fn.space.cells()[:settings.num_samples] if settings.sampler == "tpe" and settings.cover_cells \
        else []
    search = prune_aware_optuna_search(space=sampler_fn, sampler=sampler, study_name=study_name, storage=storage,
                                       metric=METRIC, mode=MODE, points_to_evaluate=cells or None)
    return ConcurrencyLimiter(search, max_concurrent=settings.max_concurrent)


def grid_of(space: SearchSpace) -> dict[str, list]:
    """The grid of an all-categorical, unconditional space (``SearchSettings(sampler="grid")``)."""
    bad = [p.name for p in space.params if p.type != "categorical" or p.when or p.include_zero]
    if bad:
        raise ValueError(f"a grid search needs categorical, unconditional parameters; not so: {bad}")
    return {p.name: list(p.choices) for p in space.params}


def _callbacks(run_id: str, settings: SearchSettings, train_storage: str, console: Console,
               hyperparameters: list[str]):
    from ray.tune import Callback

    class RecordTrials(Callback):
        """On the driver: every finished trial → one leaderboard row (with where its time went); stopped and failed
        trials' checkpoints go. Each trial's start, evaluations and end are told to the ``console``."""

        def __init__(self):
            self.started: dict[str, float] = {}

        def on_trial_start(self, iteration, trials, trial, **info):
            self.started[trial.trial_id] = time.time()
            console.trial_started(trial.trial_id, trial.config["spec"])

        def on_trial_result(self, iteration, trials, trial, result, **info):
            console.trial_result(trial.trial_id, result)

        def on_trial_complete(self, iteration, trials, trial, **info):
            result = trial.last_result or {}
            if result.get(tm.NONFINITE):
                self._record(trial, "failed", result, "training loss became NaN/inf; the trial is failed")
            else:
                self._record(trial, "completed" if result.get(tm.FINISHED) else "pruned", result, None)
            if not result.get(tm.FINISHED):
                delete_checkpoints(trial, train_storage)

        def on_trial_error(self, iteration, trials, trial, **info):
            self._record(trial, "failed", trial.last_result, _error_text(trial))
            delete_checkpoints(trial, train_storage)    # disk stays bounded; a --resume retries it afresh

        def _record(self, trial, status, result, error):
            timing = trial_timing(result or {}, self.started.get(trial.trial_id))
            try:
                student = saved_student(trial, result) if status == "completed" else None
            except OSError as e:                 # the row still lands; only export needs the path
                log.warning("trial %s: could not locate its saved student: %s", trial.trial_id, e)
                student = None
            try:
                path = write_row(settings.leaderboard, make_row(run_id, trial.trial_id, status, trial.config["spec"],
                                                                result, error, student_path=student, **timing))
            except (OSError, ValueError) as e:   # stop the search: every later row would be lost the same way
                raise LeaderboardWriteError(f"could not write the leaderboard row of trial {trial.trial_id} to "
                                            f"{settings.leaderboard}: {e}") from e
            log.debug("leaderboard: %s %s → %s", trial.trial_id, status, path)
            console.trial_finished(trial.trial_id, status, result, error)

    return [RecordTrials(), *experiment_loggers(settings, run_id, hyperparameters,
                                                lambda trial: saved_student(trial, trial.last_result))]


def trial_timing(result: dict, started: float | None, now: float | None = None) -> dict:
    """Where a trial's time went besides training: ``setup_seconds`` from the trial's start on the driver to its
    first step (process, imports, data, models), ``finish_seconds`` from its last step to its row (final
    evaluations, merge, checkpoint, Tune). None where unknown (a trial restored after it had finished)."""
    now = time.time() if now is None else now
    first, last = result.get(tm.TRAINING_STARTED_AT), result.get(tm.TRAINING_ENDED_AT)
    setup = first - started if first is not None and started is not None and first >= started else None
    return {"setup_seconds": setup, "finish_seconds": now - last if last is not None and now >= last else None}


def saved_student(trial, result: dict | None) -> str | None:
    """The ``model`` folder of the checkpoint the trial's final result came with: Tune's own checkpoint (one-worker
    trials) or the Ray Train checkpoint ``TuneReportCallback`` reports (multi-worker). None when it holds no
    student."""
    import pyarrow.fs as pafs

    from opdf_ray.storage import filesystem

    path = (result or {}).get("checkpoint_path") or (trial.checkpoint.path if trial.checkpoint else None)
    if not path:
        return None
    student = join(path, "model")
    fs, base = filesystem(student)
    return student if fs.get_file_info(f"{base}/config.json").type == pafs.FileType.File else None


def delete_checkpoints(trial, train_storage: str) -> None:
    """A stopped or failed trial's checkpoints (Tune's ``checkpoint_*`` folders in its directory, and a
    multi-worker trial's Ray Train run); its results and TensorBoard events stay."""
    import pyarrow.fs as pafs

    from opdf_ray.storage import filesystem

    delete_dir(join(train_storage, trial.trial_id))
    if trial.path:
        fs, base = filesystem(trial.path)
        if fs.get_file_info(base).type == pafs.FileType.Directory:
            for entry in fs.get_file_info(pafs.FileSelector(base)):
                if entry.type == pafs.FileType.Directory and entry.base_name.startswith("checkpoint_"):
                    fs.delete_dir(entry.path)


class LeaderboardWriteError(RuntimeError):
    """A finished trial's row could not be written: the search stops instead of losing rows."""


def _error_text(trial) -> str | None:
    path = getattr(trial, "error_file", None)
    try:
        return Path(path).read_text()[-2000:] if path else None
    except OSError:
        return None


def trial_resources(settings: SearchSettings) -> dict:
    """A one-worker trial is its worker: one worker's CPUs and GPU share."""
    return {"cpu": settings.cpus_per_worker} | ({"gpu": settings.gpus_per_worker} if settings.gpus_per_worker else {})


def driver_resources(settings: SearchSettings) -> dict:
    """The trial driver only waits on its workers: a sliver of CPU, and the head-node resource when the cluster
    defines it (``cluster/gpu.yaml``), so drivers never take a GPU node's slot."""
    import ray

    resources = {"cpu": DRIVER_CPU}
    if ray.cluster_resources().get(DRIVER_RESOURCE):
        resources[DRIVER_RESOURCE] = 0.001
    return resources


def starts_from_finetuned_teacher(spec: RunSpec, space: SearchSpace) -> bool:
    """Whether any trial of the search may start from the task-fine-tuned teacher (``spec``: the search's base with
    the space's ``fixed`` values; a space that searches ``student_init``/``teacher_init`` may)."""
    from opdf_ray.methods import get_method
    from opdf_ray.teacher import starts_from_finetuned_teacher as starts_from

    return (any(p.name in ("student_init", "teacher_init") for p in space.params)
            or any(starts_from(spec, get_method(m)) for m in space.methods()))


def check_teacher_storage(spec: RunSpec, space: SearchSpace, storage: str) -> None:
    """The fine-tuned teacher is a folder every trial loads: refuse cloud storage for a search that needs it."""
    if is_uri(storage) and starts_from_finetuned_teacher(spec, space):
        raise ValueError(f"--storage {storage}: this search starts from the task-fine-tuned teacher, which needs a "
                         f"filesystem every node shares (EFS/NFS); copying it to cloud storage is not implemented "
                         f"yet. Use a shared path")


def teacher_variants(space: SearchSpace) -> list[dict]:
    """The values of the space's parameters that change the fine-tuned teacher (its cache key, ``FINETUNE_SETTINGS``:
    the seed, the data budget, …), one dict per combination; ``[{}]`` when the space searches none of them.

    Raises:
        ValueError: such a parameter is not categorical: a search fine-tunes one teacher per distinct value before
            its trials, so the values must be a list.
    """
    from opdf_ray.teacher import FINETUNE_SETTINGS

    keyed = [p for p in space.params if p.name in FINETUNE_SETTINGS]
    bad = [p.name for p in keyed if p.type != "categorical" or p.include_zero]
    if bad:
        raise ValueError(f"search space params {bad} change the task-fine-tuned teacher, and a search fine-tunes one "
                         f"teacher per distinct value before its trials: make them categorical, e.g. seed: {{type: "
                         f"categorical, choices: [1, 2, 3]}} (teacher settings: {', '.join(FINETUNE_SETTINGS)})")
    return [dict(zip((p.name for p in keyed), values)) for values in itertools.product(*(p.choices for p in keyed))]


class EarlyTeachers:
    """A search's first teachers fine-tuned in the driver's own process while a local Ray starts (the fine-tune
    would otherwise wait for Ray, then for a Ray task's process and imports): a background thread runs exactly what
    ``prepare_teachers``' Ray tasks run (``finetune_teacher_into``, into the same storage). Only for a local Ray
    without GPUs, where the task would run on this machine's CPUs anyway and no trial runs before it ends.
    ``planned``: the ``(settings, overrides)`` it was started for; a search sized otherwise does not use it."""

    def __init__(self, base: RunSpec, space: SearchSpace, settings: SearchSettings, overrides: dict):
        import threading

        self.planned = (settings, overrides)
        self._result, self._error = None, None

        def fine_tune():
            try:
                self._result = prepare_teachers(base, space, settings, overrides, in_process=True)
            except Exception as e:  # noqa: BLE001 - the search's own preparation reports it, in one line
                self._error = e

        # a daemon: Ctrl-C ends the search at once (a teacher is published by rename, never half written)
        self._thread = threading.Thread(target=fine_tune, name="teacher-fine-tune", daemon=True)
        self._thread.start()

    def result(self) -> dict[str, str] | None:
        """The fine-tuned teachers by ``teacher_settings_key`` once the thread ends; None if it failed (the search
        then prepares them itself and reports the error)."""
        self._thread.join()
        if self._error is not None:
            log.warning("fine-tuning the teacher beside Ray's start failed (%s); the search tries again", self._error)
        return self._result


def prepare_teachers(base: RunSpec, space: SearchSpace, settings: SearchSettings,
                     overrides: dict | None = None, in_process: bool = False) -> dict[str, str]:
    """Fine-tune the task teacher once per distinct teacher setting the space draws (``teacher_variants``: one, unless
    it searches the seed or the data budget), each as a Ray task with one worker's resources, when any trial may
    start from it. Each is stored under ``<storage>/teachers/<task>-<key>``, keyed by every setting it depends on:
    every search of that storage with the same settings reuses it (a study's dense and OPDF searches share one
    teacher, and none pays for the fine-tune again), a search with other settings never does. Returns the paths
    by ``teacher_settings_key``; each trial loads its own. ``in_process``: fine-tune here, not as Ray tasks."""
    import ray

    spec = trial_spec(base, space, {}, settings, overrides)
    if not starts_from_finetuned_teacher(spec, space):
        return {}
    check_teacher_storage(spec, space, settings.storage)
    from opdf_ray.teacher import finetune_teacher_into, teacher_settings_key

    specs = {}
    for drawn in teacher_variants(space):
        variant = trial_spec(base, space, drawn, settings, overrides)
        specs.setdefault(teacher_settings_key(variant), variant)
    root = join(settings.storage)      # absolute here: trials load the teacher from their own working directories
    if in_process:                     # EarlyTeachers
        return {key: finetune_teacher_into(variant.to_dict(), root) for key, variant in specs.items()}
    resources = {"num_cpus": settings.cpus_per_worker, "num_gpus": settings.gpus_per_worker}
    task = ray.remote(**resources)(finetune_teacher_into)
    pending = {key: task.remote(variant.to_dict(), root) for key, variant in specs.items()}
    return {key: ray.get(ref) for key, ref in pending.items()}


def make_scheduler(settings: SearchSettings, max_epochs: int):
    """ASHA counting epochs (the ``epoch`` of evaluation results), whatever the evaluation or log frequency
    (``eval_steps``); ``max_t`` one past the last epoch: ASHA stops trials only at its rungs, a full trial ends on
    its own. ``None`` when early stopping is off (a grid baseline)."""
    from ray.tune.schedulers import ASHAScheduler

    if not settings.early_stopping:
        return None
    return ASHAScheduler(time_attr=tm.EPOCH, max_t=max_epochs + 1, grace_period=min(settings.grace_epochs, max_epochs),
                         reduction_factor=settings.reduction_factor, metric=METRIC, mode=MODE)


def run_search(base: RunSpec, space: SearchSpace, settings: SearchSettings, resume: bool = False,
               overrides: dict | None = None, teachers: dict[str, str] | None = None):
    """Run (or resume) the search for ``base.task``; returns Ray's ``ResultGrid``. ``overrides``: RunSpec
    values that win over the space (explicit command-line settings); ``teachers``: its fine-tuned teachers when
    they are ready already (``EarlyTeachers``)."""
    from ray import tune

    name = experiment_name(settings, base.task)
    exp_dir = join(settings.storage, name)
    train_storage = join(exp_dir, "train")
    started = time.time()
    if not is_uri(settings.storage):           # a fine-tune killed while saving leaves its temporary folder behind
        remove_temporaries(Path(settings.storage) / "teachers", min_age_s=STALE_TEMPORARY_S)
    teachers = prepare_teachers(base, space, settings, overrides) if teachers is None else teachers
    log.info("%d fine-tuned teacher(s) ready in %.0f s: %s", len(teachers), time.time() - started,
             ", ".join(teachers.values()) or "none needed")
    run = {"workers": settings.workers_per_trial, "cpus_per_worker": settings.cpus_per_worker,
           "gpus_per_worker": settings.gpus_per_worker, "train_storage": train_storage,
           "max_failures": settings.max_failures, "checkpoints_to_keep": settings.checkpoints_to_keep,
           "placement": settings.placement}
    in_process = settings.workers_per_trial == 1     # the loop runs in the trial's process (train.trial)
    trainable = tune.with_resources(trial, trial_resources(settings) if in_process else driver_resources(settings))
    scheduler = make_scheduler(settings, trial_epochs(space, base.task, settings))
    restoring = resume and tune.Tuner.can_restore(exp_dir)
    search = _optuna_search(TrialSampler(base, space, settings, run, teachers, overrides), settings, name,
                            resume=restoring)
    console = Console(settings.num_samples, task_of(base).selection_metric)
    run_config = tune.RunConfig(name=name, storage_path=join(settings.storage),
                                verbose=tune_verbosity(settings.verbose),
                                callbacks=_callbacks(name, settings, train_storage, console,
                                                     ["method", "opdf_cores", *(p.name for p in space.params)]),
                                checkpoint_config=tune.CheckpointConfig(num_to_keep=settings.checkpoints_to_keep),
                                # one-worker trials retry through Tune; a TorchTrainer retries its own workers
                                failure_config=tune.FailureConfig(max_failures=settings.max_failures if in_process
                                                                  else 0))
    # warm trial processes for in-process trials (imports, data, teacher stay loaded; docs/search.md); a nested
    # TorchTrainer may still run when ASHA stops its trial, and a reset would fail the next one
    tune_config = tune.TuneConfig(search_alg=search, scheduler=scheduler, reuse_actors=in_process,
                                  num_samples=settings.num_samples,      # concurrency: _optuna_search's limiter
                                  trial_dirname_creator=lambda trial: trial.trial_id)
    if restoring:
        log.info("restoring %s", exp_dir)
        tuner = tune.Tuner.restore(exp_dir, trainable=trainable, resume_errored=True)
    else:
        if resume:
            log.info("nothing to resume at %s: starting a new search", exp_dir)
        tuner = tune.Tuner(trainable, tune_config=tune_config, run_config=run_config)
    with tune_output(settings.verbose):
        grid = tuner.fit()
    if settings.optuna_storage:
        closed = close_orphan_trials(name, settings.optuna_storage)
        if closed:
            log.warning("optuna: %d trial(s) left RUNNING by a driver that was killed are now FAIL", closed)
    return grid


def close_orphan_trials(study_name: str, storage: str) -> int:
    """Tell FAIL to the Optuna trials still RUNNING once a search is over: a driver killed with SIGKILL leaves the
    trial it had asked for RUNNING in a persistent study (its saved searcher state predates it), and no later
    search can finish it. TPE ignores failed trials. Returns how many were closed."""
    import optuna

    study = optuna.load_study(study_name=study_name, storage=optuna_storage(storage))
    orphans = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
    for orphan in orphans:
        study.tell(orphan.number, state=optuna.trial.TrialState.FAIL)
    return len(orphans)


def default_parallelism(total_cpus: float, total_gpus: float, workers: int, gpus_per_worker: float
                        ) -> tuple[float, int]:
    """(cpus per worker, concurrent trials) that fit the cluster: GPUs bound concurrency when used; on CPUs one
    trial at a time gets every core (minus its driver's sliver) — on a laptop, trials in parallel only thrash."""
    if gpus_per_worker > 0:
        concurrent = max(1, int(total_gpus // (workers * gpus_per_worker)))
        return max(1.0, math.floor((total_cpus - DRIVER_CPU * concurrent) / (concurrent * workers))), concurrent
    share = math.floor((total_cpus - DRIVER_CPU) / workers * 100) / 100     # rounded down: the trial must fit
    return max(share, 0.25), 1
