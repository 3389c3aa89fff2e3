"""Ray Train: one trial = one ``TorchTrainer`` run of N data-parallel workers around the engine.

``train_loop_per_worker`` builds data, models and method inside the worker (nothing at module level), trains
with gradients averaged across workers (``opdf_ray.parallel``), and at each evaluation reports metrics from
every rank with a resumable checkpoint from rank 0. After the last evaluation it restores the selected
student, evaluates selection and dev, and reports ``finished=1`` with the merged student (safetensors) in the
checkpoint. ``trial_driver`` is the Tune function trainable that launches it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import tempfile
import time
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


def train_loop_per_worker(config: dict) -> None:
    """Ray Train worker. ``config``: ``spec`` (a RunSpec dict) and ``finetuned_teacher`` (a path or None)."""
    import ray.train

    spec = RunSpec.from_dict(config["spec"])
    limit_gpu_memory(spec, config.get("gpu_fraction", 1.0))
    context = ray.train.get_context()
    log_to_console(logging.INFO if context.get_world_rank() == 0 else logging.WARNING)   # banner, evaluations
    parallel = TorchDistributed() if context.get_world_size() > 1 else Parallel()
    checkpoint = ray.train.get_checkpoint()
    with checkpoint.as_directory() if checkpoint else contextlib.nullcontext() as resume_dir:
        if resume_dir and (Path(resume_dir) / NONFINITE_MARKER).is_file():
            _report(tm.NONFINITE_METRICS, parallel,
                    marker=json.loads((Path(resume_dir) / NONFINITE_MARKER).read_text()))
            return                                       # a NaN is deterministic: do not train it again
        job = prepare(spec, parallel, config.get("finetuned_teacher"))
        last_step = job.plan.total_steps
        placement = _placement(job, parallel)
        restored = {tm.RESTORED_AT_STEP: 0}
        select_split = selection_split(job.data.task, spec.select_on)

        def evaluation(progress, score):
            return (tm.evaluation_metrics(progress, score, job.data.task.selection_metric, select_split)
                    | placement | restored)

        pacer = ReportPacer(parallel)

        def on_evaluate(progress, metrics):
            if progress.step < last_step:                # the final report below carries dev and the model
                _report(evaluation(progress, metrics[job.data.task.selection_metric]), parallel, job=job,
                        progress=progress)
                pacer.sent()

        def on_log(progress, logs):
            if pacer.log_due():
                ray.train.report(tm.log_metrics(progress.step, logs, progress.best_score))
                pacer.sent()

        restored[tm.TRAINING_STARTED_AT] = time.time()      # data and models ready: the first step follows
        if resume_dir:
            restored[tm.RESTORED_AT_STEP] = json.loads((Path(resume_dir) / META).read_text())["progress"]["step"]
        try:
            progress = train(job, resume_from=resume_dir, on_evaluate=on_evaluate, on_log=on_log)
        except NonFiniteLossError as e:
            log.error("%s", e)
            _report(tm.NONFINITE_METRICS, parallel, marker={"error": str(e)})
            return
    results, exported = finalize(job, progress)
    metrics = evaluation(progress, None) | tm.final_metrics(results) | {tm.FINISHED: 1.0}
    _report(metrics, parallel, job=job, progress=progress, results=results, exported=exported)


class ReportPacer:
    """Keeps the training loss logs from stalling the step. Ray Train V2's controller takes one report per poll of
    its workers, every ``RAY_TRAIN_HEALTH_CHECK_INTERVAL_S`` (Ray's 2 s; a search's 0.5 s), and a worker holds one
    unconsumed report at most, so a report made sooner blocks ``ray.train.report`` until the next poll: logging
    every 10 steps of 33 ms (a MiniLM step on an H200) ran at 0.2 s a step (benchmarks/bench_report.py). A log
    step reports only when the last report is ``interval_s`` old (1.25 polls); evaluations always report. All
    workers take the same decision (``parallel.any``), as Ray Train needs every worker to report alike."""

    def __init__(self, parallel: Parallel, interval_s: float | None = None, clock=time.monotonic):
        self.parallel, self.clock = parallel, clock
        self.interval_s = 1.25 * ray_train_poll_interval_s() if interval_s is None else interval_s
        self.last = -math.inf

    def sent(self) -> None:
        self.last = self.clock()

    def log_due(self) -> bool:
        return self.parallel.any(self.clock() - self.last >= self.interval_s)


# How often Ray Train V2's controller polls its workers: an environment variable of Ray's internals (no public
# setting; tests/test_tune_units.py pins its name and default). Each report waits for a poll, and so does the end
# of a trial: a search polls every 0.5 s instead of Ray's 2 s, which took the quick start from 174 to 152 s
# (docs/benchmarks.md, "A search trial's overhead"); a value set in the environment is kept.
TRAIN_POLL_ENV, RAY_TRAIN_POLL_S, SEARCH_TRAIN_POLL_S = "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", 2.0, 0.5


def ray_train_poll_interval_s() -> float:
    """How often Ray Train's controller polls the workers of this process's trial."""
    return float(os.environ.get(TRAIN_POLL_ENV, RAY_TRAIN_POLL_S))


def search_train_env() -> dict[str, str]:
    """The environment a search gives its Ray job (``runtime_env``): Ray Train's poll at the search's pace."""
    return {TRAIN_POLL_ENV: os.environ.get(TRAIN_POLL_ENV, str(SEARCH_TRAIN_POLL_S))}


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


def _report(metrics: dict, parallel: Parallel, job=None, progress=None, results=None, exported=None,
            marker: dict | None = None) -> None:
    """Every rank reports (Ray Train requires it); rank 0 attaches the checkpoint."""
    import ray.train

    if not parallel.is_main:
        ray.train.report(metrics)
        return
    with tempfile.TemporaryDirectory(prefix="opdf-ckpt-") as tmp:
        if marker is not None:
            (Path(tmp) / NONFINITE_MARKER).write_text(json.dumps(marker))
        else:
            save_checkpoint(tmp, job.method, progress)
        if results is not None:
            save_student(results, exported, job.data.tokenizer, Path(tmp))
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))


def trial_driver(config: dict) -> None:
    """Tune function trainable: launch the trial's TorchTrainer and relay its reports to Tune.

    ``config["spec"]`` is the trial's RunSpec dict, ``config["run"]`` the search's execution settings
    (workers, resources, storage, names). A run named after the trial resumes from its latest checkpoint when
    the trial is retried or the search restored; a NaN loss ends the trial as failed.
    """
    import ray.train
    import ray.tune
    from ray.train.torch import TorchConfig, TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    run = config["run"]
    spec = RunSpec.from_dict(config["spec"])
    use_gpu = run["gpus_per_worker"] > 0
    resources = {"CPU": run["cpus_per_worker"]} | ({"GPU": run["gpus_per_worker"]} if use_gpu else {})
    trial_id = ray.tune.get_context().get_trial_id()
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"spec": spec.to_dict(), "finetuned_teacher": config.get("finetuned_teacher"),
                           "gpu_fraction": run["gpus_per_worker"] if use_gpu else 1.0},
        # one worker never communicates: gloo then, which also lets trials share a GPU (NCCL ranks cannot)
        torch_config=TorchConfig(backend="nccl" if use_gpu and run["workers"] > 1 else "gloo"),
        scaling_config=ray.train.ScalingConfig(num_workers=run["workers"], use_gpu=use_gpu,
                                               resources_per_worker=resources,
                                               placement_strategy=run.get("placement", "PACK")),
        run_config=ray.train.RunConfig(
            name=trial_id, storage_path=run["train_storage"], callbacks=[TuneReportCallback()],
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=run.get("checkpoints_to_keep", 2)),
            failure_config=ray.train.FailureConfig(max_failures=run.get("max_failures", 2))),
    )
    result = trainer.fit()
    if result.metrics and result.metrics.get(tm.NONFINITE):
        raise NonFiniteLossError(f"trial {trial_id}: training loss became NaN/inf; the trial is failed")


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

