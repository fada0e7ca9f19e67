"""Filesystem writes that a reader never sees half done."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


def atomic_write(path: Path, data: bytes, mode: int = 0o644, *, fsync: bool = True,
                 uid: int | None = None, gid: int | None = None) -> None:
    """Write ``data`` to a temp file beside ``path`` with ``mode``, fsync, rename over.

    A reader sees the old file or the new one, never half of one; ``fsync=False``
    keeps that but gives up durability across a power cut, for bookkeeping files."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, mode)
        if uid is not None or gid is not None:
            os.fchown(fd, -1 if uid is None else uid, -1 if gid is None else gid)  # before the rename: never visible with the wrong owner
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            if fsync:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
