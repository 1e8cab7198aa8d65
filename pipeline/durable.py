"""Durable files: written whole or not at all.

A file is written to a temporary name beside its target, flushed and
fsync'ed, renamed over the target (atomic on POSIX), and the directory is
fsync'ed so the rename itself survives a crash.  Readers see the old file or
the new one, never half of one.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO


def fsync_path(path: str | Path) -> None:
    """fsync a file or a directory by path."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def publish(tmp: str | Path, target: str | Path) -> Path:
    """Make the finished file ``tmp`` durable and move it to ``target`` atomically."""
    target = Path(target)
    fsync_path(tmp)
    os.replace(tmp, target)
    fsync_path(target.parent)
    return target


@contextmanager
def atomic_file(target: str | Path) -> Iterator[BinaryIO]:
    """Open ``target`` for writing in binary; it appears, complete, only on success.

    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp()) / "state.bin"
    >>> with atomic_file(path) as f:
    ...     _ = f.write(b"all or nothing")
    >>> path.read_bytes()
    b'all or nothing'
    """
    target = Path(target)
    tmp = target.with_name(f".{target.name}.tmp")
    try:
        with open(tmp, "wb") as f:
            yield f
        publish(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
