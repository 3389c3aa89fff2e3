"""Where results live: a local path or a URI Ray and Arrow support (``s3://…``, ``gs://…``), handled alike;
and the one way anything here is published: written under a temporary name, then renamed."""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pyarrow.fs as pafs


def is_uri(root: str) -> bool:
    return "://" in root


def join(root: str, *parts: str) -> str:
    """``root/parts…``; a local root is made absolute (Ray wants absolute storage paths)."""
    if is_uri(root):
        return "/".join([root.rstrip("/"), *parts])
    return str(Path(root).expanduser().resolve().joinpath(*parts))


def filesystem(root: str) -> tuple[pafs.FileSystem, str]:
    """The Arrow filesystem of ``root`` and the path inside it."""
    if is_uri(root):
        return pafs.FileSystem.from_uri(root)
    return pafs.LocalFileSystem(), join(root)


# file systems every node of a cluster can see (a path on any other kind is on one node's own disk)
SHARED_FS_TYPES = ("nfs", "nfs4", "efs", "lustre", "cifs", "smb3", "ceph", "glusterfs", "beegfs", "gpfs", "fuse")


def filesystem_type(path: str | os.PathLike, mounts: str | None = None) -> str:
    """The type of the file system ``path`` lives on (the longest mount point above it in ``/proc/mounts``)."""
    mounts = Path("/proc/mounts").read_text() if mounts is None else mounts
    target = Path(path).expanduser().resolve()
    best, kind = "", "unknown"
    for line in mounts.splitlines():
        fields = line.split()
        if len(fields) >= 3:
            point = fields[1].replace("\\040", " ")
            if (target == Path(point) or Path(point) in target.parents) and len(point) >= len(best):
                best, kind = point, fields[2]
    return kind


def is_shared(root: str, mounts: str | None = None) -> bool:
    """Whether every node of a cluster sees ``root``: a URI, or a path on a network/cluster file system."""
    return is_uri(root) or filesystem_type(root, mounts).split(".")[0] in SHARED_FS_TYPES


def delete_dir(root: str) -> None:
    """Remove ``root`` and everything under it; nothing to do when it does not exist."""
    fs, path = filesystem(root)
    if fs.get_file_info(path).type != pafs.FileType.NotFound:
        fs.delete_dir(path)


def check_folder(setting: str, folder: str | Path) -> None:
    """Fail now if files could not be written under ``folder`` later (a file there or above it, or a place where
    no folder can be made), without making it: a run that fails later leaves nothing behind."""
    folder = Path(folder).expanduser()
    existing = next(p for p in (folder, *folder.parents) if p.exists())
    if not existing.is_dir():
        raise ValueError(f"{setting}={str(folder)!r} is invalid: {existing} is a file; allowed: a folder that can "
                         f"be made and written")
    try:
        tempfile.TemporaryDirectory(dir=existing).cleanup()        # what writing there does first: make a folder
    except OSError as e:
        raise ValueError(f"{setting}={str(folder)!r} is invalid: no folder can be made in {existing} "
                         f"({e.strerror}); allowed: a folder that can be made and written") from None


@contextlib.contextmanager
def published(target: str | os.PathLike) -> Iterator[tuple[pafs.FileSystem, str]]:
    """Write ``target`` (a file or a folder, local or a URI) so that no reader ever sees it half written.

    Yields ``(filesystem, temporary path)``: a dot-prefixed sibling of ``target`` (readers skip dot names), which a
    local caller may use as a plain path. On success the temporary is renamed onto ``target``; a file replaces
    the old one, a folder that another process published first wins (both are the same artefact) and ours is
    dropped. On an error the temporary is removed and the error propagates: nothing partial is left behind.
    """
    fs, path = filesystem(str(target))
    parent, name = path.rsplit("/", 1)
    fs.create_dir(parent, recursive=True)
    tmp = f"{parent}/.{name}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        yield fs, tmp
        try:
            fs.move(tmp, path)
        except OSError:
            if fs.get_file_info(path).type != pafs.FileType.Directory:
                raise                                   # not "a concurrent writer finished first"
    finally:
        _remove(fs, tmp)


def remove_temporaries(folder: Path, min_age_s: float = 0.0) -> list[str]:
    """Delete what ``published`` left in ``folder`` when its process was killed (``.<name>.<id>.tmp``). Where other
    processes may be publishing, ``min_age_s`` spares the temporaries modified more recently than that (theirs).
    Returns the names removed."""
    now = time.time()
    found = folder.glob(".*.tmp") if folder.is_dir() else []
    stale = sorted(p for p in found if now - p.stat().st_mtime >= min_age_s)
    fs = pafs.LocalFileSystem()
    for path in stale:
        _remove(fs, str(path))
    return [p.name for p in stale]


def _remove(fs: pafs.FileSystem, path: str) -> None:
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.Directory:
        fs.delete_dir(path)
    elif info.type == pafs.FileType.File:
        fs.delete_file(path)
