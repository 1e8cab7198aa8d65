"""Recorded sensor files: long-format CSV (any separator), chunked ``.npz`` and Parquet.

>>> spec = RecordingSpec(sep=";", time_col="datetime", label_col="anomaly",
...                      drop_cols=("changepoint",))
>>> spec.sep
';'
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pipeline.recordings.spec import Chunk, RecordingSpec

if TYPE_CHECKING:
    from pipeline.recordings.csvfile import CsvRecording
    from pipeline.recordings.npzfile import NpzRecording
    from pipeline.recordings.parquetfile import ParquetRecording
    from pipeline.recordings.writer import RecordingWriter

    Recording = CsvRecording | NpzRecording | ParquetRecording

Format = Literal["csv", "npz", "parquet"]
PARQUET_MAGIC = b"PAR1"
_ZIP_MAGIC = b"PK\x03\x04"
# The readers and the writer load pyarrow (about 40 MB resident): imported on first
# use, so that what only needs a RecordingSpec (the configuration, a detector
# service) does not carry it.
_LAZY = {
    "CsvRecording": "pipeline.recordings.csvfile",
    "NpzRecording": "pipeline.recordings.npzfile",
    "ParquetRecording": "pipeline.recordings.parquetfile",
    "RecordingWriter": "pipeline.recordings.writer",
}


def __getattr__(name: str) -> Any:
    if name == "Recording":
        from pipeline.recordings.csvfile import CsvRecording
        from pipeline.recordings.npzfile import NpzRecording
        from pipeline.recordings.parquetfile import ParquetRecording

        return CsvRecording | NpzRecording | ParquetRecording
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "Chunk",
    "CsvRecording",
    "NpzRecording",
    "ParquetRecording",
    "Recording",
    "RecordingSpec",
    "RecordingWriter",
    "open_recording",
    "recording_format",
    "read_recording",
]


def recording_format(path: str | Path) -> Format:
    """The format of a recorded file: by its first bytes, else by its extension.

    Parquet files begin with ``PAR1``, ``.npz`` archives with the zip magic;
    any other content is CSV unless the name ends in ``.parquet`` or ``.npz``
    (whose reader then says what is wrong with the file).
    """
    p = Path(path)
    try:
        with open(p, "rb") as f:
            head = f.read(4)
    except OSError:
        head = b""
    if head == PARQUET_MAGIC:
        return "parquet"
    if head == _ZIP_MAGIC:
        return "npz"
    suffix = p.suffix.lower()
    if suffix == ".parquet":
        return "parquet"
    if suffix == ".npz":
        return "npz"
    return "csv"


def open_recording(path: str | Path, spec: RecordingSpec | None = None) -> Recording:
    """Open a recording for chunked reading, in its format (:func:`recording_format`)."""
    spec = spec or RecordingSpec()
    fmt = recording_format(path)
    if fmt == "npz":
        from pipeline.recordings.npzfile import NpzRecording

        return NpzRecording(path, spec)
    if fmt == "parquet":
        from pipeline.recordings.parquetfile import ParquetRecording

        return ParquetRecording(path, spec)
    from pipeline.recordings.csvfile import CsvRecording

    return CsvRecording(path, spec)


@contextmanager
def read_recording(path: str | Path, spec: RecordingSpec | None = None) -> Iterator[Recording]:
    """``open_recording`` as a context manager that closes the file."""
    rec = open_recording(path, spec)
    try:
        yield rec
    finally:
        rec.close()
