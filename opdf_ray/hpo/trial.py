"""A trial's training: ``trial`` is the Tune function trainable every search runs.

A one-worker trial (the default, and every fractional-GPU trial) runs ``worker_loop`` in the trial's own process:
metrics and checkpoints go straight to Tune (``ray.tune.report``), retries are Tune's ``FailureConfig``, and the
process stays warm for the next trial (``reuse_actors``). A multi-worker trial launches a ``TorchTrainer`` of N
data-parallel workers (gloo/NCCL) around the same ``worker_loop``; its reports reach Tune through Ray Train's
``TuneReportCallback``. Either way the loop builds data, models and method (nothing at module level), trains,
reports an evaluation result with a resumable checkpoint at each evaluation, and after the last one restores the
selected student, evaluates selection and dev, and reports ``finished=1`` with the merged student (safetensors).
"""

from __future__ import annotations

import contextlib
import json
import logging
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from opdf_ray import log_to_console
from opdf_ray import trial_metrics as tm
from opdf_ray.checkpoint import META, save_checkpoint
from opdf_ray.config import RunSpec
from opdf_ray.data import selection_split
from opdf_ray.engine import finalize, prepare, save_student, train
from opdf_ray.loop import NonFiniteLossError
from opdf_ray.parallel import Parallel, TorchDistributed

log = logging.getLogger(__name__)
NONFINITE_MARKER = "nonfinite.json"
FINAL_METRICS = "final_metrics.json"      # in a finished trial's checkpoint: what a restored trial reports again
_trials_in_this_process = 0               # a warm trial process (Tune's reuse_actors) has run some before


@dataclass(frozen=True)
class Session:
    """How a worker's loop talks to Ray: Tune's function API (one-worker trials, in the trial's process) or Ray
    Train's (a worker of a ``TorchTrainer``). ``report_logs``: whether per-step loss logs are reported between
    evaluations; Ray Train's controller takes one report per poll of its workers (every 2 s), so a multi-worker
    trial reports at evaluations only, and its curves are the evaluations' (the history)."""

    report: object                 # report(metrics, checkpoint=None)
    checkpoint: object             # the checkpoint to resume from, or None
    checkpoint_type: type
    parallel: Parallel
    report_logs: bool

    @classmethod
    def tune(cls) -> Session:
        import ray.tune

        return cls(ray.tune.report, ray.tune.get_checkpoint(), ray.tune.Checkpoint, Parallel(), True)

    @classmethod
    def train(cls) -> Session:
        import ray.train

        parallel = TorchDistributed() if ray.train.get_context().get_world_size() > 1 else Parallel()
        return cls(ray.train.report, ray.train.get_checkpoint(), ray.train.Checkpoint, parallel, False)


def train_loop_per_worker(config: dict) -> None:
    """Ray Train worker of a multi-worker trial."""
    worker_loop(config, Session.train())


def worker_loop(config: dict, session: Session) -> None:
    """One trial's training on this worker. ``config``: ``spec`` (a RunSpec dict), ``finetuned_teacher`` (a path
    or None) and ``gpu_fraction``. A NaN/inf loss ends the trial with ``nonfinite_loss`` in its last result (the
    search records it as failed): a NaN is deterministic, so a checkpoint marks it and a restored trial does not
    train it again."""
    global _trials_in_this_process
    warm, _trials_in_this_process = _trials_in_this_process > 0, _trials_in_this_process + 1
    spec = RunSpec.from_dict(config["spec"])
    limit_gpu_memory(spec, config.get("gpu_fraction", 1.0))
    parallel = session.parallel
    log_to_console(logging.INFO if parallel.is_main else logging.WARNING)   # banner, evaluations
    with session.checkpoint.as_directory() if session.checkpoint else contextlib.nullcontext() as resume_dir:
        if resume_dir and (Path(resume_dir) / NONFINITE_MARKER).is_file():
            _report(session, tm.NONFINITE_METRICS,
                    marker=json.loads((Path(resume_dir) / NONFINITE_MARKER).read_text()))
            return
        if resume_dir and (Path(resume_dir) / FINAL_METRICS).is_file():   # finished before a driver was stopped
            final = json.loads((Path(resume_dir) / FINAL_METRICS).read_text())
            for key in (tm.TRAINING_STARTED_AT, tm.TRAINING_ENDED_AT):   # that run's clock: no timing now
                final.pop(key, None)
            _report(session, final, final_from=resume_dir)
            return
        job = prepare(spec, parallel, config.get("finetuned_teacher"))
        last_step = job.plan.total_steps
        placement = _placement(job, parallel) | {tm.WARM_START: warm, tm.TOTAL_STEPS: last_step}
        restored = {tm.RESTORED_AT_STEP: 0}
        select_split = selection_split(job.data.task, spec.select_on)

        def evaluation(progress, score):
            return (tm.evaluation_metrics(progress, score, job.data.task.selection_metric, select_split)
                    | placement | restored)

        def on_evaluate(progress, metrics):
            if progress.step < last_step:                # the final report below carries dev and the model
                _report(session, evaluation(progress, metrics[job.data.task.selection_metric]), job=job,
                        progress=progress)

        def on_log(progress, logs):
            session.report(tm.log_metrics(progress.step, logs, progress.best_score))

        restored[tm.TRAINING_STARTED_AT] = time.time()      # data and models ready: the first step follows
        if resume_dir:
            restored[tm.RESTORED_AT_STEP] = json.loads((Path(resume_dir) / META).read_text())["progress"]["step"]
        try:
            progress = train(job, resume_from=resume_dir, on_evaluate=on_evaluate,
                             on_log=on_log if session.report_logs else None)
        except NonFiniteLossError as e:
            log.error("%s", e)
            _report(session, tm.NONFINITE_METRICS, marker={"error": str(e)})
            return
    ended = time.time()
    results, exported = finalize(job, progress)
    metrics = (evaluation(progress, None) | tm.final_metrics(results)
               | {tm.TRAINING_ENDED_AT: ended, tm.FINISHED: 1.0})
    _report(session, metrics, job=job, results=results, exported=exported)


def limit_gpu_memory(spec: RunSpec, fraction: float) -> bool:
    """A trial given a fraction of a GPU (``--gpus-per-worker 0.25``: four trials share one) may allocate only that
    share of its memory, so one trial's peak cannot take the others down with an out-of-memory error. Ray only
    counts fractions; the cap is PyTorch's caching allocator's. Returns whether a cap was set."""
    import torch

    from opdf_ray.models import run_device

    device = run_device(spec)
    if device.type != "cuda" or not 0 < fraction < 1:
        return False
    torch.cuda.set_per_process_memory_fraction(fraction, device)
    return True


def _placement(job, parallel: Parallel) -> dict:
    """Where the workers run: the number of distinct nodes and a hardware line (device × workers)."""
    import platform

    import ray
    import torch

    device = job.device
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else (platform.processor() or "cpu")
    nodes = parallel.gather(ray.get_runtime_context().get_node_id())
    return {tm.NODES: len(set(nodes)), tm.HARDWARE: f"{parallel.world_size}x {device.type}:{name} "
                                                    f"({torch.get_num_threads()} threads/worker)"}


def _report(session: Session, metrics: dict, job=None, progress=None, results=None, exported=None,
            marker: dict | None = None, final_from: str | None = None) -> None:
    """Every rank reports (Ray Train requires it); rank 0 attaches the checkpoint: the training state at an
    evaluation, the merged student and the final metrics at the end (nothing to resume: no optimiser state, no
    second copy of the weights), or the NaN marker."""
    if not session.parallel.is_main:
        session.report(metrics)
        return
    if final_from is not None:                   # the finished trial's own checkpoint, reported again
        session.report(metrics, checkpoint=session.checkpoint_type.from_directory(final_from))
        return
    with tempfile.TemporaryDirectory(prefix="opdf-ckpt-") as tmp:
        if marker is not None:
            (Path(tmp) / NONFINITE_MARKER).write_text(json.dumps(marker))
        elif results is not None:
            save_student(results, exported, job.data.tokenizer, Path(tmp))
            (Path(tmp) / FINAL_METRICS).write_text(json.dumps(metrics))
        else:
            save_checkpoint(tmp, job.method, progress)
        session.report(metrics, checkpoint=session.checkpoint_type.from_directory(tmp))


def trial(config: dict) -> None:
    """Tune function trainable: ``config["spec"]`` is the trial's RunSpec dict, ``config["run"]`` the search's
    execution settings (workers, resources, storage, names). One worker: the loop runs here; more: a TorchTrainer."""
    run = config["run"]
    loop_config = {"spec": config["spec"], "finetuned_teacher": config.get("finetuned_teacher"),
                   "gpu_fraction": run["gpus_per_worker"] if run["gpus_per_worker"] > 0 else 1.0}
    if run["workers"] == 1:
        worker_loop(loop_config, Session.tune())
    else:
        data_parallel_trial(loop_config, run)


def data_parallel_trial(loop_config: dict, run: dict) -> None:
    """Launch the trial's TorchTrainer; its reports reach Tune through ``TuneReportCallback``. A run named after
    the trial resumes from its latest checkpoint when the trial is retried or the search restored."""
    import ray.train
    import ray.tune
    from ray.train.torch import TorchConfig, TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    use_gpu = run["gpus_per_worker"] > 0
    resources = {"CPU": run["cpus_per_worker"]} | ({"GPU": run["gpus_per_worker"]} if use_gpu else {})
    trainer = TorchTrainer(
        train_loop_per_worker, train_loop_config=loop_config,
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        scaling_config=ray.train.ScalingConfig(num_workers=run["workers"], use_gpu=use_gpu,
                                               resources_per_worker=resources,
                                               placement_strategy=run.get("placement", "PACK")),
        run_config=ray.train.RunConfig(
            name=ray.tune.get_context().get_trial_id(), storage_path=run["train_storage"],
            callbacks=[TuneReportCallback()],
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=run.get("checkpoints_to_keep", 2)),
            failure_config=ray.train.FailureConfig(max_failures=run.get("max_failures", 2))),
    )
    trainer.fit()


def saved_student(train_storage: str, trial_id: str) -> str | None:
    """Where a trial's merged student is: the ``model`` folder of its latest checkpoint (the final report carries
    the student; Ray names checkpoints by time, so the latest sorts last); None when no checkpoint holds one."""
    import pyarrow.fs as pafs

    from opdf_ray.storage import filesystem, join

    root = join(train_storage, trial_id)
    fs, base = filesystem(root)
    if fs.get_file_info(base).type != pafs.FileType.Directory:
        return None
    checkpoints = sorted(e.base_name for e in fs.get_file_info(pafs.FileSelector(base))
                         if e.type == pafs.FileType.Directory and e.base_name.startswith("checkpoint_"))
    for name in reversed(checkpoints):
        if fs.get_file_info(f"{base}/{name}/model/config.json").type == pafs.FileType.File:
            return join(root, name, "model")
    return None


def worker_threads(cpus_per_worker: float) -> int:
    """Torch threads per worker: its CPU share (Ray sets OMP_NUM_THREADS=1 in workers otherwise)."""
    return max(1, round(cpus_per_worker))

