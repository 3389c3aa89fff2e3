"""The search's Ray: a local one bound to 127.0.0.1 with a private token, or a cluster joined at ``--address``."""

from __future__ import annotations

import logging
import os
import socket
from pathlib import Path

log = logging.getLogger("opdf_ray")


def other_local_ray_instances(proc: Path = Path("/proc")) -> list[str]:
    """GCS addresses of the Ray instances already running on this machine: each local Ray has one ``raylet``
    process, started with ``--gcs-address=HOST:PORT``. Read from ``/proc`` (Linux; elsewhere none are found, which
    must never stop a search)."""
    found = set()
    for cmdline in proc.glob("[0-9]*/cmdline"):
        try:
            argv = cmdline.read_bytes().decode(errors="replace").split("\0")
        except OSError:                         # a process that ended meanwhile, or another user's
            continue
        if argv and Path(argv[0]).name == "raylet":
            found.update(a.split("=", 1)[1] for a in argv[1:] if a.startswith("--gcs-address="))
    return sorted(found)


def second_local_instance_warning(others: list[str]) -> str:
    """Two local Ray instances on one machine stall searches: Ray Train's placement-group cleaner asks the State API
    without an address, fails with "Found multiple active Ray instances", and a finished trial's workers stay
    reserved, so every later trial times out waiting for them (seen with Ray 2.60: docs/reliability.md)."""
    return (f"another Ray instance is running on this machine ({', '.join(others)}). With two local instances Ray "
            f"Train cannot free a finished trial's placement group, and later trials can stall waiting for workers. "
            f"Join it with --address {others[0]}, or run one search per machine.")


# Ray has no public setting that keeps a local cluster on loopback (upstream: ray-project/ray#1677, closed without
# one): ``ray.init``'s ``_node_ip_address`` is hidden/experimental, and ``ray start --head --node-ip-address
# 127.0.0.1`` (the documented CLI) advertised the machine's address instead with Ray 2.60 (its localhost is
# "resolved" to the node IP; tried on 2026-12-07). What does it is the variable Ray documents for Windows and macOS
# clusters, whose default there (0: single-node, loopback; ray-project/ray#18730) we ask for on Linux too. This is
# the one place it is set; tests/test_cli.py checks the node and GCS advertise 127.0.0.1.
LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def bind_local_ray_to_loopback() -> None:
    """Before Ray is imported: a local cluster binds and advertises 127.0.0.1 only. Otherwise its ports listen on
    every interface of the machine, guarded by nothing but the token. A value the user set is kept."""
    os.environ.setdefault(LOOPBACK_ENV, "0")


def start_ray(address: str | None, verbose: int = 0) -> None:
    """Join the cluster at ``address``, or start a local Ray (with ray[default]: the State API Ray Train needs to
    free placement groups) whose auth token only this user can read (Ray writes it world-readable); console
    output as ``verbose`` says (``console.ray_init_options``)."""
    import ray

    from opdf_ray.hpo.console import ray_init_options

    ray.init(address=address, **ray_init_options(verbose))
    token = Path.home() / ".ray" / "auth_token"
    if address is None and token.is_file() and token.stat().st_mode & 0o077:
        token.chmod(0o600)


def check_address(address: str | None, timeout: float = 5.0) -> None:
    """A cluster address where nothing answers fails in seconds (``ray.init`` retries it for minutes)."""
    if address in (None, "auto", "local"):
        return
    host, colon, port = address.removeprefix("ray://").rpartition(":")
    if not colon or not host or not port.isdigit():
        raise ValueError(f"--address {address!r} is invalid; allowed: HOST:PORT (the head's GCS port, 6379 unless "
                         f"`ray start --port` chose another), ray://HOST:PORT (Ray Client) or auto")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as e:
        raise ValueError(f"--address {address}: nothing answers at {host}:{port} ({e.strerror or e}); is the "
                         f"cluster up (`ray status` on its head), and is the port open to this machine?") from None


def autoscaler_gpu_node_types(config_path: str | Path = "~/ray_bootstrap_config.yaml") -> list[dict]:
    """The GPU node types an autoscaler may launch (``resources`` + ``max_workers``), read from the config `ray up`
    leaves on the head; empty when there is none (a fixed or local cluster)."""
    import yaml

    path = Path(config_path).expanduser()
    if not path.is_file():
        return []
    types = (yaml.safe_load(path.read_text()) or {}).get("available_node_types", {})
    return [{**t.get("resources", {}), "max_workers": t.get("max_workers", 0)} for t in types.values()
            if t.get("resources", {}).get("GPU", 0) > 0 and t.get("max_workers", 0) > 0]
