"""Parquet recordings: the CSV long format's columns and options, read by row groups.

The columns are those of a CSV recording and are chosen by the same options
(``time_col``, ``id_col``, ``label_col``, ``kind_col``, ``drop_cols``,
``sensors`` with their renames); sentinels are applied where they are for
every format (:mod:`pipeline.quirks`).  The time column holds ISO 8601
strings (offsets honoured, as in CSV), epoch seconds, or a timestamp type
(a naive timestamp is UTC); the id column integers or turbine names.  Sensor
columns are the numeric ones, unless ``sensors`` names them.  Nulls are
missing readings (NaN), a null label is 0 and a null fault kind "".

``pyarrow.parquet.ParquetFile.iter_batches`` reads one row group at a time,
``chunk_rows`` rows per chunk, so memory is bounded by the row group size.
Errors name the file, the row (0-based, as in ``.npz`` files) and the
column, on one line.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from numpy.typing import NDArray

from pipeline.errors import InputError, SchemaError
from pipeline.names import TurbineNames
from pipeline.recordings.csvfile import _is_integer, _is_number
from pipeline.recordings.isotime import TimeFormatError, parse_times
from pipeline.recordings.spec import LABEL_COL, Chunk, RecordingSpec


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _is_numeric(t: pa.DataType) -> bool:
    return bool(
        pa.types.is_integer(t)
        or pa.types.is_floating(t)
        or pa.types.is_decimal(t)
        or pa.types.is_boolean(t)
    )


def _is_text(t: pa.DataType) -> bool:
    if pa.types.is_dictionary(t):
        return _is_text(t.value_type)
    return bool(pa.types.is_string(t) or pa.types.is_large_string(t))


class ParquetRecording:
    """A Parquet recording opened for chunked reading.

    Parameters
    ----------
    path : str or Path
    spec : RecordingSpec
    """

    def __init__(self, path: str | Path, spec: RecordingSpec) -> None:
        self.path = Path(path)
        self.spec = spec
        try:
            self._file = pq.ParquetFile(self.path)
        except FileNotFoundError:
            raise self._error("cannot open: No such file or directory") from None
        except (pa.ArrowException, OSError, ValueError) as exc:
            raise self._error(f"not a readable Parquet file ({_first_line(exc)})") from None
        self.names = TurbineNames()
        try:
            self._inspect()
        except BaseException:
            self._file.close()
            raise

    def _error(self, message: str, row: int | None = None, column: str | None = None) -> InputError:
        return InputError(message, path=str(self.path), line=row, column=column)

    def _inspect(self) -> None:
        spec = self.spec
        schema = self._file.schema_arrow
        names = list(schema.names)
        self.columns = names
        types = {n: schema.field(n).type for n in names}
        if len(set(names)) != len(names):
            dup = next(n for n in names if names.count(n) > 1)
            raise self._error(f"column {dup!r} appears twice")
        if spec.time_col not in names:
            raise self._error(
                f"no time column {spec.time_col!r} (columns: {', '.join(names)}); set --time-col"
            )
        t = types[spec.time_col]
        if not (_is_numeric(t) or _is_text(t) or pa.types.is_timestamp(t) or pa.types.is_date(t)):
            raise self._error(f"time column of type {t}", column=spec.time_col)
        self.id_col = spec.id_col if spec.id_col in names else None
        if self.id_col is not None:
            t = types[self.id_col]
            if not (_is_numeric(t) or _is_text(t)):
                raise self._error(f"turbine id column of type {t}", column=self.id_col)
        label = spec.label_col if spec.label_col is not None else LABEL_COL
        if spec.label_col is not None and label not in names:
            raise self._error(f"no label column {label!r}")
        self.label_col = label if label in names else None
        self.kind_col = spec.kind_col if spec.kind_col in names else None
        for col in spec.drop_cols:
            if col not in names:
                raise self._error(f"--drop-col {col!r} is not a column")
        roles = {spec.time_col, self.id_col, self.label_col, self.kind_col, *spec.drop_cols}
        candidates = [n for n in names if n not in roles]
        if spec.sensors is not None:
            self.sensor_cols = []
            for col, _ in spec.sensors:
                if col not in names:
                    raise self._error(f"--sensors: no column {col!r} (columns: {', '.join(names)})")
                if col not in candidates:
                    raise self._error(
                        f"--sensors: column {col!r} is the time, id, label or a dropped column"
                    )
                if not _is_numeric(types[col]):
                    raise self._error(f"--sensors: column of type {types[col]}", column=col)
                self.sensor_cols.append(col)
            self.sensors = tuple(name for _, name in spec.sensors)
        else:
            self.sensor_cols = [n for n in candidates if _is_numeric(types[n])]
            if not self.sensor_cols:
                raise self._error("no numeric sensor columns")
            self.sensors = tuple(self.sensor_cols)
        self.ignored = [n for n in candidates if n not in self.sensor_cols]
        if len(self.sensors) > spec.max_sensors:
            raise self._error(
                f"{len(self.sensors)} sensor columns, more than max_sensors "
                f"({spec.max_sensors}); raise --max-sensors to read it"
            )
        self.has_labels = self.label_col is not None
        self.has_kinds = self.kind_col is not None
        self.n_rows = int(self._file.metadata.num_rows)
        if self.n_rows == 0:
            raise self._error("no readings")
        self._types = types

    # ------------------------------------------------------------------ chunks
    def __iter__(self) -> Iterator[Chunk]:
        used = [self.spec.time_col, *self.sensor_cols]
        used += [c for c in (self.id_col, self.label_col, self.kind_col) if c is not None]
        used = list(dict.fromkeys(used))
        start = 0
        batches = self._file.iter_batches(batch_size=self.spec.chunk_rows, columns=used)
        while True:
            try:
                batch = next(batches)
            except StopIteration:
                return
            except (pa.ArrowException, OSError, ValueError) as exc:
                raise self._error(f"corrupt data ({_first_line(exc)})", start) from None
            if batch.num_rows:
                yield self._chunk(batch, start)
            start += batch.num_rows

    def _chunk(self, batch: pa.RecordBatch, start: int) -> Chunk:
        n = batch.num_rows
        rows = np.arange(start, start + n, dtype=np.int64)
        ts = self._times(batch.column(self.spec.time_col), rows)
        bad = np.flatnonzero(~np.isfinite(ts))
        if bad.size:
            raise self._error(
                "missing or infinite timestamp", int(rows[bad[0]]), self.spec.time_col
            )
        if self.id_col is None:
            ids = np.zeros(n, dtype=np.int64)
        else:
            ids = self._turbine_ids(batch.column(self.id_col), rows)
        if self.sensor_cols:
            values = np.column_stack([self._floats(batch.column(c), c) for c in self.sensor_cols])
        else:
            values = np.zeros((n, 0))
        labels = None
        if self.label_col is not None:
            raw = np.nan_to_num(self._floats(batch.column(self.label_col), self.label_col))
            labels = (raw != 0).astype(np.int8)
        kinds = None
        if self.kind_col is not None:
            cells, index = _distinct(batch.column(self.kind_col))
            kinds = np.array(cells, dtype=np.str_)[index]
        return Chunk(ts, ids, values, labels, kinds, rows)

    def _floats(self, column: pa.Array, name: str) -> NDArray[np.float64]:
        try:
            as_float = pc.cast(column, pa.float64())
        except pa.ArrowException as exc:
            raise self._error(f"not numbers ({_first_line(exc)})", column=name) from None
        return np.asarray(pc.fill_null(as_float, np.nan).to_numpy(), dtype=np.float64)

    def _times(self, column: pa.Array, rows: NDArray[np.int64]) -> NDArray[np.float64]:
        name = self.spec.time_col
        t = column.type
        if pa.types.is_date(t):
            column = pc.cast(column, pa.timestamp("s"))
            t = column.type
        if pa.types.is_timestamp(t):
            per_second = {"s": 1, "ms": 10**3, "us": 10**6, "ns": 10**9}[t.unit]
            ticks = pc.cast(column, pa.int64())
            seconds = pc.divide(pc.cast(ticks, pa.float64()), float(per_second))
            return np.asarray(pc.fill_null(seconds, np.nan).to_numpy(), dtype=np.float64)
        if not _is_text(t):
            return self._floats(column, name)
        cells, index = _distinct(column, null="")
        cells = [c.strip('"') for c in cells]
        empty = np.array([c == "" for c in cells], dtype=bool)
        if empty.any():
            k = int(np.flatnonzero(empty[index])[0])
            raise self._error("missing timestamp", int(rows[k]), name)
        try:
            return parse_times(cells)[index]
        except TimeFormatError as exc:
            k = int(np.flatnonzero(index == exc.index)[0])
            raise self._error(
                f"unreadable timestamp {exc.cell[:40]!r} (expected ISO 8601 or epoch seconds)",
                int(rows[k]),
                name,
            ) from None

    def _turbine_ids(self, column: pa.Array, rows: NDArray[np.int64]) -> NDArray[np.int64]:
        name = self.id_col
        if column.null_count:
            k = int(np.flatnonzero(column.is_null().to_numpy(zero_copy_only=False))[0])
            raise self._error("empty turbine id", int(rows[k]), name)
        if pa.types.is_integer(column.type):
            return np.asarray(pc.cast(column, pa.int64()).to_numpy(), dtype=np.int64)
        if not _is_text(column.type):
            raw = self._floats(column, str(name))
            whole = np.isfinite(raw) & (raw == np.round(raw)) & (np.abs(raw) < 2**53)
            if not whole.all():
                k = int(np.flatnonzero(~whole)[0])
                raise self._error(f"turbine id {raw[k]!r} is not an integer", int(rows[k]), name)
            return raw.astype(np.int64)
        cells, index = _distinct(column)
        canonical = []
        for i, cell in enumerate(cells):  # distinct names only
            text = cell.strip('"')
            problem = None
            if text == "":
                problem = "empty turbine id"
            elif _is_number(text) and not _is_integer(text):
                problem = f"turbine id {text!r} is not an integer"
            if problem is not None:
                raise self._error(problem, int(rows[np.flatnonzero(index == i)[0]]), name)
            canonical.append(str(int(float(text))) if _is_number(text) else text)
        try:
            return self.names.ids_of(canonical)[index]
        except SchemaError as exc:
            raise self._error(str(exc), column=name) from None

    def close(self) -> None:
        self._file.close()


def _distinct(column: pa.Array, null: str = "") -> tuple[list[str], NDArray[np.intp]]:
    """The distinct cells of a string column (nulls as ``null``), stripped; each row's index."""
    if not pa.types.is_dictionary(column.type):
        column = column.dictionary_encode()
    cells = [null if c is None else str(c).strip() for c in column.dictionary.to_pylist()]
    index = pc.fill_null(column.indices, len(cells))
    if column.null_count:
        cells.append(null)
    return cells, np.asarray(index.to_numpy(), dtype=np.intp)
