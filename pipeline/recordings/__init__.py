"""Recorded sensor files: long-format CSV (any separator) and chunked ``.npz``.

>>> spec = RecordingSpec(sep=";", time_col="datetime", label_col="anomaly",
...                      drop_cols=("changepoint",))
>>> spec.sep
';'
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pipeline.recordings.csvfile import CsvRecording
from pipeline.recordings.npzfile import NpzRecording
from pipeline.recordings.spec import Chunk, RecordingSpec
from pipeline.recordings.writer import RecordingWriter

Recording = CsvRecording | NpzRecording

__all__ = [
    "Chunk",
    "CsvRecording",
    "NpzRecording",
    "Recording",
    "RecordingSpec",
    "RecordingWriter",
    "open_recording",
    "read_recording",
]


def open_recording(path: str | Path, spec: RecordingSpec | None = None) -> Recording:
    """Open a recording for chunked reading, by extension (``.npz`` binary, else CSV)."""
    spec = spec or RecordingSpec()
    if Path(path).suffix.lower() == ".npz":
        return NpzRecording(path, spec)
    return CsvRecording(path, spec)


@contextmanager
def read_recording(path: str | Path, spec: RecordingSpec | None = None) -> Iterator[Recording]:
    """``open_recording`` as a context manager that closes the file."""
    rec = open_recording(path, spec)
    try:
        yield rec
    finally:
        rec.close()
