"""A full disk as a clear error: which path, how much was needed, and what to do."""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

from mlcore.errors import DiskFull

MARGIN = 1 << 20  # what file-system metadata and headers may need beyond the payload


def disk_full(exc: BaseException, path: str | os.PathLike | None = None, needed: int | None = None) -> DiskFull | None:
    """A DiskFull naming `path` (and the bytes needed) when `exc` says the disk is full, else None.

    torch.save reports a full disk as a RuntimeError from its zip writer ("unexpected pos"), not as
    ENOSPC: with `path` given, any error while the disk there has less than `needed` free counts.
    """
    full = isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)
    full = full or "No space left" in str(exc)
    where = path if path is not None else getattr(exc, "filename", None)
    if not full and where is not None and needed is not None:
        full = free_bytes(where) < needed
    if not full:
        return None
    return _error(where or "a temporary file", needed)


def ensure_free(path: str | os.PathLike, needed: int) -> None:
    """Raise DiskFull before writing `needed` bytes under `path` when the disk there has less free."""
    if free_bytes(path) < needed + MARGIN:
        raise _error(path, needed)


def free_bytes(path: str | os.PathLike) -> int:
    """Free bytes on the file system holding `path` (or its nearest existing parent)."""
    p = Path(path)
    while not p.exists() and p != p.parent:
        p = p.parent
    return shutil.disk_usage(p).free


def _error(where, needed: int | None) -> DiskFull:
    need = f", {needed / 2**20:.1f} MB needed, {free_bytes(where) / 2**20:.1f} MB free" if needed else ""
    return DiskFull(
        errno.ENOSPC, f"no space left on device writing {where}{need}: free space there or point the job elsewhere"
    )
