"""Where results live: a local path or a URI Ray and Arrow support (``s3://…``, ``gs://…``), handled alike."""

from __future__ import annotations

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


def delete_dir(root: str) -> None:
    """Remove ``root`` and everything under it; nothing to do when it does not exist."""
    fs, path = filesystem(root)
    if fs.get_file_info(path).type != pafs.FileType.NotFound:
        fs.delete_dir(path)
