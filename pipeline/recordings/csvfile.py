"""Reading long-format CSV recordings in bounded chunks, with located errors.

Chunks come from pyarrow's CSV reader (:mod:`pipeline.recordings.arrowcsv`);
the NumPy reader below is its fallback and its oracle, and reads alone with
``fast=False`` and in :meth:`CsvRecording.iter_text`.

Each chunk of lines is parsed by NumPy's C parser (``np.loadtxt``), a few
columns at a time.  Empty cells are missing readings (NaN): a chunk that has
some is parsed again with them written as ``nan``.  When the parser still
rejects a chunk, a slow scan of that chunk only finds the first bad cell, so
the error names the file, the line and the column.  The id column holds
integer ids or turbine names (``R80711``): names become fixed int64 ids
(:mod:`pipeline.names`) and ``CsvRecording.names`` keeps the way back.  ISO
8601 times honour their UTC offsets (:mod:`pipeline.recordings.isotime`).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import numpy as np
from numpy.typing import NDArray

from pipeline.errors import InputError, SchemaError
from pipeline.names import TurbineNames
from pipeline.recordings.isotime import TimeFormatError, parse_times
from pipeline.recordings.spec import LABEL_COL, Chunk, RecordingSpec


def _cells(line: str, sep: str) -> list[str]:
    return [c.strip() for c in line.split(sep)]


def _cell(line: str, sep: str, col: int) -> str:
    """Cell ``col`` of a line, stripped (the line split only as far as that cell)."""
    return line.split(sep, col + 1)[col].strip()


def _is_integer(cell: str) -> bool:
    value = float(cell)
    return math.isfinite(value) and value == round(value) and abs(value) < 2**53


def _is_number(cell: str) -> bool:
    if cell == "":
        return True
    try:
        float(cell)
    except ValueError:
        return False
    return True


class CsvRecording:
    """A CSV recording opened for chunked reading.

    Parameters
    ----------
    path : str or Path
    spec : RecordingSpec
    """

    def __init__(self, path: str | Path, spec: RecordingSpec, fast: bool = True) -> None:
        self.path = Path(path)
        self.spec = spec
        self.fast = fast
        try:
            self._file: BinaryIO = open(self.path, "rb")  # noqa: SIM115 (closed by close())
        except OSError as exc:
            raise InputError(f"cannot open: {exc.strerror}", path=str(self.path)) from None
        self._line = 0
        self.names = TurbineNames()
        try:
            self._read_header()
        except BaseException:
            self._file.close()
            raise

    # ------------------------------------------------------------------ header
    def _error(
        self, message: str, line: int | None = None, column: str | None = None
    ) -> InputError:
        return InputError(message, path=str(self.path), line=line, column=column)

    def _next_line(self) -> str | None:
        """The next line, decoded, without its line ending; None at the end."""
        limit = self.spec.max_line_bytes
        raw = self._file.readline(limit + 1)
        if not raw:
            return None
        self._line += 1
        if len(raw) > limit and not raw.endswith(b"\n"):
            raise self._error(f"line longer than {limit} bytes (not a CSV recording?)", self._line)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise self._error(
                f"not UTF-8 text (byte {exc.start + 1} of the line is {raw[exc.start]:#04x})",
                self._line,
            ) from None
        return text.rstrip("\r\n")

    def _read_header(self) -> None:
        spec = self.spec
        header = self._next_line()
        while header is not None and header.strip() == "":
            header = self._next_line()
        if header is None:
            raise self._error("empty file: no header line", 1)
        names = [c.strip().strip('"').strip("'") for c in header.lstrip("\ufeff").split(spec.sep)]
        self.columns = names
        if len(set(names)) != len(names):
            dup = next(n for n in names if names.count(n) > 1)
            raise self._error(f"column {dup!r} appears twice in the header", self._line)
        if len(names) < 2:
            raise self._error(
                f"the header has one column with separator {spec.sep!r} (wrong --sep?)",
                self._line,
            )
        if spec.time_col not in names:
            raise self._error(
                f"no time column {spec.time_col!r} (columns: {', '.join(names)}); set --time-col",
                self._line,
            )
        self._header_line = self._line
        # Where the data lines begin: the fast path reads from here.
        self.data_offset = self._file.tell()
        self.data_line = self._line + 1
        self.time_index = names.index(spec.time_col)
        self.id_index = names.index(spec.id_col) if spec.id_col in names else None
        label = spec.label_col if spec.label_col is not None else LABEL_COL
        if spec.label_col is not None and label not in names:
            raise self._error(f"no label column {label!r}", self._line)
        self.label_index = names.index(label) if label in names else None
        self.kind_index = names.index(spec.kind_col) if spec.kind_col in names else None
        for col in spec.drop_cols:
            if col not in names:
                raise self._error(f"--drop-col {col!r} is not a column", self._line)
        roles = {self.time_index, self.id_index, self.label_index, self.kind_index}
        roles |= {names.index(c) for c in spec.drop_cols}
        candidates = [i for i in range(len(names)) if i not in roles]
        # The first data line decides which of the other columns are numeric.
        self._pending: list[tuple[int, str]] = []
        first = self._next_line()
        while first is not None and first.strip() == "":
            first = self._next_line()
        if first is None:
            raise self._error("no readings after the header", self._line + 1)
        self._pending.append((self._line, first))
        cells = _cells(first, spec.sep)
        if len(cells) != len(names):
            raise self._error(
                f"expected {len(names)} columns (as the header), found {len(cells)}", self._line
            )
        if spec.sensors is not None:
            self.sensor_index = []
            for col, _ in spec.sensors:
                if col not in names:
                    raise self._error(
                        f"--sensors: no column {col!r} (columns: {', '.join(names)})",
                        self._header_line,
                    )
                if names.index(col) not in candidates:
                    raise self._error(
                        f"--sensors: column {col!r} is the time, id, label or a dropped column",
                        self._header_line,
                    )
                self.sensor_index.append(names.index(col))
            self.sensors = tuple(name for _, name in spec.sensors)
        else:
            self.sensor_index = [i for i in candidates if _is_number(cells[i])]
            if not self.sensor_index:
                raise self._error("no numeric sensor columns", self._line)
            self.sensors = tuple(names[i] for i in self.sensor_index)
        self.ignored = [names[i] for i in candidates if i not in self.sensor_index]
        self.time_is_number = _is_number(cells[self.time_index])
        self.has_labels = self.label_index is not None
        self.has_kinds = self.kind_index is not None
        if len(self.sensors) > spec.max_sensors:
            raise self._error(
                f"{len(self.sensors)} sensor columns, more than max_sensors "
                f"({spec.max_sensors}); raise --max-sensors to read it",
                self._header_line,
            )

    # ------------------------------------------------------------------ chunks
    def __iter__(self) -> Iterator[Chunk]:
        if self.fast:
            from pipeline.recordings.arrowcsv import arrow_chunks

            stopped = yield from arrow_chunks(self)
            if stopped is None:
                return
            self._resume(stopped)
        for chunk, _ in self.iter_text():
            yield chunk

    def _resume(self, rows: int) -> None:
        """Go on after the first ``rows`` data lines (the fast path read them, no blank line)."""
        self._file.seek(self.data_offset)
        self._line = self.data_line - 1
        self._pending = []
        for _ in range(rows):
            self._next_line()

    def iter_text(self) -> Iterator[tuple[Chunk, list[str]]]:
        """Chunks with the text of their lines (line endings removed), for rewriting."""
        while True:
            batch = self._pending
            self._pending = []
            while len(batch) < self.spec.chunk_rows:
                text = self._next_line()
                if text is None:
                    break
                if text.strip():
                    batch.append((self._line, text))
            if not batch:
                return
            yield self._parse(batch), [b[1] for b in batch]

    def _parse(self, batch: list[tuple[int, str]]) -> Chunk:
        line_no = np.fromiter((b[0] for b in batch), dtype=np.int64, count=len(batch))
        text = [b[1] for b in batch]
        sep = self.spec.sep
        ncols = len(self.columns)
        # str.count per line: a NumPy string array would be as wide as the longest line.
        seps = np.fromiter((t.count(sep) for t in text), dtype=np.int64, count=len(text))
        bad = np.flatnonzero(seps != ncols - 1)
        if bad.size:
            i = int(bad[0])
            raise self._error(
                f"expected {ncols} columns (as the header), found {int(seps[i]) + 1}",
                int(line_no[i]),
            )
        values = self._numbers(text, line_no, self.sensor_index)
        if self.time_is_number:
            ts = self._numbers(text, line_no, [self.time_index])[:, 0]
        else:
            ts = self._datetimes(text, line_no)
        bad_ts = np.flatnonzero(~np.isfinite(ts))
        if bad_ts.size:
            i = int(bad_ts[0])
            raise self._error("missing or infinite timestamp", int(line_no[i]), self.spec.time_col)
        if self.id_index is None:
            ids = np.zeros(len(text), dtype=np.int64)
        else:
            ids = self._turbine_ids(text, line_no)
        labels = None
        if self.label_index is not None:
            raw = self._numbers(text, line_no, [self.label_index])[:, 0]
            labels = (np.nan_to_num(raw, nan=0.0) != 0).astype(np.int8)
        kinds = None
        if self.kind_index is not None:
            kinds = np.array([_cell(t, sep, self.kind_index) for t in text], dtype=np.str_)
        return Chunk(ts, ids, values, labels, kinds, line_no)

    def _turbine_ids(self, text: list[str], line_no: NDArray[np.int64]) -> NDArray[np.int64]:
        """Integer ids as they are; names (any cell that is not a number) hashed to ids."""
        col = self.id_index
        assert col is not None  # noqa: S101 (only called with an id column)
        try:
            raw_ids = self._loadtxt(text, [col])[:, 0]
        except ValueError:
            return self._named_ids(text, line_no, col)
        whole = np.isfinite(raw_ids) & (raw_ids == np.round(raw_ids)) & (np.abs(raw_ids) < 2**53)
        if not whole.all():
            i = int(np.flatnonzero(~whole)[0])
            raise self._error(
                f"turbine id {_cells(text[i], self.spec.sep)[col]!r} is not an integer",
                int(line_no[i]),
                self.spec.id_col,
            )
        return raw_ids.astype(np.int64)

    def _named_ids(
        self, text: list[str], line_no: NDArray[np.int64], col: int
    ) -> NDArray[np.int64]:
        sep = self.spec.sep
        cells = np.array([_cell(t, sep, col).strip('"') for t in text], dtype=np.str_)
        uniq, first, inverse = np.unique(cells, return_index=True, return_inverse=True)
        canonical = []
        for name, i in zip(uniq.tolist(), first.tolist(), strict=True):  # distinct names only
            problem = None
            if name == "":
                problem = "empty turbine id"
            elif _is_number(name) and not _is_integer(name):
                problem = f"turbine id {name!r} is not an integer"
            if problem is not None:
                raise self._error(problem, int(line_no[i]), self.spec.id_col)
            # A number is an integer id however it is written ("7.0", "007"), as in a
            # column of numbers only.
            canonical.append(str(int(float(name))) if _is_number(name) else name)
        try:
            return self.names.ids_of(canonical)[inverse.ravel()]
        except SchemaError as exc:
            raise self._error(str(exc), column=self.spec.id_col) from None

    def _loadtxt(self, text: list[str], cols: list[int]) -> NDArray[np.float64]:
        return np.loadtxt(
            text,
            delimiter=self.spec.sep,
            usecols=cols,
            dtype=np.float64,
            ndmin=2,
            comments=None,
            quotechar=None,
        )

    def _numbers(
        self, text: list[str], line_no: NDArray[np.int64], cols: list[int]
    ) -> NDArray[np.float64]:
        try:
            return self._loadtxt(text, cols)
        except ValueError:
            pass
        # Empty cells (missing readings) written as nan, still in the C parser.
        sep = self.spec.sep
        twice, nan_cell = sep + sep, sep + "nan" + sep
        filled = [
            (sep + t + sep).replace(twice, nan_cell).replace(twice, nan_cell)[1:-1] for t in text
        ]
        try:
            return self._loadtxt(filled, cols)
        except ValueError:
            pass
        # Slow path, this chunk only: find the first bad cell, or accept empty cells as NaN.
        out = np.empty((len(text), len(cols)))
        for r, t in enumerate(text):
            cells = _cells(t, self.spec.sep)
            for k, c in enumerate(cols):
                cell = cells[c]
                if cell == "":
                    out[r, k] = math.nan
                    continue
                try:
                    out[r, k] = float(cell)
                except ValueError:
                    raise self._error(
                        f"not a number: {cell[:40]!r}", int(line_no[r]), self.columns[c]
                    ) from None
        return out

    def _datetimes(self, text: list[str], line_no: NDArray[np.int64]) -> NDArray[np.float64]:
        sep, col = self.spec.sep, self.time_index
        cells = [_cell(t, sep, col).strip('"') for t in text]
        empty = next((r for r, c in enumerate(cells) if c == ""), None)
        if empty is not None:
            raise self._error("missing timestamp", int(line_no[empty]), self.spec.time_col)
        try:
            return parse_times(cells)
        except TimeFormatError as exc:
            raise self._error(
                f"unreadable timestamp {exc.cell[:40]!r} (expected ISO 8601 or epoch seconds)",
                int(line_no[exc.index]),
                self.spec.time_col,
            ) from None

    def close(self) -> None:
        self._file.close()
