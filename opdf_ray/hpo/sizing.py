"""A search's ``SearchSettings`` from its flags and the cluster's size (the one place the two are layered)."""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path

from opdf_ray.config import parse_setting
from opdf_ray.hpo.cluster import autoscaler_gpu_node_types
from opdf_ray.hpo.tracking import default_optuna_storage
from opdf_ray.storage import is_uri, join

log = logging.getLogger("opdf_ray")


CPU_QUICK = {"max_epochs": 2, "max_length": 64}   # a search without GPUs and without budget flags


def search_settings(args, cpus: float, concurrent: int, gpus: float, max_epochs: int | None):
    """The validated ``SearchSettings``: explicit flags win over what the cluster's size suggests."""
    from opdf_ray.hpo.tuner import SearchSettings

    def given(value, default):
        return default if value is None else value

    return SearchSettings(
        name=args.name, storage=args.storage, leaderboard=args.leaderboard or join(args.storage, "leaderboard"),
        num_samples=args.num_samples, max_concurrent=given(args.max_concurrent, concurrent),
        workers_per_trial=args.workers_per_trial, cpus_per_worker=given(args.cpus_per_worker, cpus),
        gpus_per_worker=gpus, seed=args.seed, max_epochs=max_epochs, grace_epochs=args.grace_epochs,
        max_failures=args.max_failures, mlflow_uri=mlflow_uri(args), mlflow_students=args.mlflow_students,
        optuna_storage=args.optuna_storage or default_optuna_storage(args.storage),
        wandb_project=args.wandb, sampler=args.sampler, tpe_startup_trials=args.tpe_startup_trials,
        early_stopping=not (args.no_early_stopping or args.sampler == "grid"), cover_cells=not args.no_cover_cells,
        verbose=args.verbose)


def mlflow_uri(args) -> str | None:
    """``--mlflow`` alone: an SQLite store beside the experiments (MLflow 3 refuses its old file store)."""
    if args.mlflow is None:
        return None
    if args.mlflow:
        return args.mlflow
    if is_uri(args.storage):
        raise ValueError(f"--mlflow without a tracking URI keeps the runs under --storage, but {args.storage} is "
                         f"not a local path; pass one: --mlflow http://host:5000 or --mlflow sqlite:////path/mlflow.db")
    Path(join(args.storage)).mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{join(args.storage, 'mlflow.db')}"


def local_resources() -> dict:
    """What a local Ray will find on this machine: the CPUs this process may use and the CUDA GPUs."""
    import torch

    return {"CPU": float(len(os.sched_getaffinity(0))), "GPU": float(torch.cuda.device_count())}


def size_search(args, total: dict, local: bool, quiet: bool = True) -> tuple:
    """``(SearchSettings, overrides for every trial)`` for a cluster of ``total`` resources (``ray.cluster_resources``
    or, before a local Ray starts, ``local_resources``): trials sized to it, explicit flags winning."""
    from opdf_ray.hpo.tuner import default_parallelism

    scalable = [] if local else autoscaler_gpu_node_types()
    gpus = args.gpus_per_worker if args.gpus_per_worker is not None else (
        1.0 if total.get("GPU") or scalable else 0.0)
    if scalable and not total.get("GPU") and gpus:     # GPU nodes come when trials ask: size trials for them
        node = scalable[0]
        cpus = max(1.0, math.floor(node["CPU"] / node["GPU"] * gpus))
        concurrent = max(1, int(node["max_workers"] * node["GPU"] // (args.workers_per_trial * gpus)))
    else:
        cpus, concurrent = default_parallelism(total.get("CPU", 1), total.get("GPU", 0), args.workers_per_trial,
                                               gpus)
    quick = local and not gpus and args.max_epochs is None and args.max_length is None   # never on a cluster
    max_epochs = CPU_QUICK["max_epochs"] if quick else args.max_epochs
    run_overrides = overrides(args) | ({"max_length": CPU_QUICK["max_length"]} if quick else {})
    if quick and not quiet:
        log.warning("no GPU in the Ray cluster: capping epochs at %d and max_length at %d so the search finishes "
                    "in minutes (set --max-epochs/--max-length to choose; the leaderboard records both)",
                    CPU_QUICK["max_epochs"], CPU_QUICK["max_length"])
    return search_settings(args, cpus, concurrent, gpus, max_epochs), run_overrides


def overrides(args) -> dict:
    """RunSpec values set explicitly for every trial (``--config`` settings without a flag of their own, then every
    ``--set KEY=VALUE``, then ``--max-length``): each trial gets them, and its row records them."""
    values = args.config_settings | dict(parse_setting(text) for text in args.set)
    return values | ({} if args.max_length is None else {"max_length": args.max_length})
