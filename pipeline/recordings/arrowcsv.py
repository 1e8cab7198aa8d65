"""The fast path of :class:`~pipeline.recordings.csvfile.CsvRecording`: pyarrow's CSV reader.

pyarrow's CSV parser reads the data lines block by block (``BLOCK_BYTES`` of
whole lines, parsed ``PARSE_BYTES`` at a time in C++ threads), and each run of
``chunk_rows`` rows becomes the :class:`Chunk` the NumPy reader would give.
The blocks are read here, in the calling thread, and handed over at most
``AHEAD`` at a time: ``pyarrow.csv.open_csv`` on a Python stream reads ahead as fast as it
can (36 of La Haute Borne's 40 MiB before its first batch), so memory would
not be bounded, and a reader abandoned mid-file left its thread inside
Python's file object at interpreter exit (a fatal error).  Each block is
parsed in a worker thread while the chunks of the ones before are scored (at
most ``AHEAD`` blocks ahead, so memory stays bounded; the worker sees bytes in
memory, never the file).  The NumPy reader
stays the oracle: the fast path never raises on bad input.  Whatever it does not
accept exactly as the NumPy reader would (a blank line, a line too long, a
lone CR, bytes that are not UTF-8, a cell pyarrow cannot convert, a turbine
id or a time that is empty or not understood) stops it at the last chunk it
yielded, and the NumPy reader reads the rest of the file from there, so the
chunks, the line numbers and the located one-line errors are the NumPy
reader's own.

The bytes reach pyarrow through :class:`_CompleteLines`, which checks them
and hands over whole lines only: when it stops early, every row pyarrow
parsed is a complete line of the file, and line numbers are the
row numbers (no blank line was met).  Turbine ids, times and fault kinds
are dictionary-encoded, so each distinct cell is looked at once.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Generator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
from numpy.typing import NDArray

from pipeline.recordings.isotime import TimeFormatError, parse_fixed, parse_times
from pipeline.recordings.spec import Chunk

if TYPE_CHECKING:
    from pipeline.recordings.csvfile import CsvRecording

BLOCK_BYTES = 4 << 20  # whole lines handed to pyarrow at a time: memory is bounded by AHEAD of them
PARSE_BYTES = 1 << 20  # pyarrow parses a block in pieces of this size, in parallel
AHEAD = 3  # blocks read and handed to the parsing thread ahead of the one being converted

# A line the NumPy reader skips (``str.strip()`` leaves nothing): ASCII whitespace only.
_BLANK_ASCII = re.compile(rb"^[ \t\r\x0b\x0c\x1c-\x1f]*\n", re.MULTILINE)
_BLANK_TEXT = re.compile(r"^\s*\n", re.MULTILINE)


class _Unusual(Exception):  # noqa: N818 (a signal, not an error)
    """The fast path stops here; the NumPy reader takes over."""


class _CompleteLines:
    """The data lines of a CSV file, read in blocks, checked, whole lines only.

    A block that holds a blank line, a lone CR, a line longer than
    ``max_line_bytes`` or bytes that are not UTF-8 is not passed on: reading
    ends there (``unusual`` is set).  Blocks are whole lines of at most
    ``BLOCK_BYTES`` plus one line.
    """

    def __init__(self, file: BinaryIO, max_line_bytes: int, sep: str) -> None:
        self._file = file
        self._limit = max_line_bytes
        self._blank_cells = sep.isspace()
        self._carry = b""
        self._eof = False
        self.unusual = False

    def read(self, size: int = -1) -> bytes:
        """The next block of whole lines; b"" at the end or where reading stopped."""
        if self.unusual or self._eof:
            return b""
        want = BLOCK_BYTES if size < 0 else max(size, 1)
        while True:
            block = self._file.read(want)
            if not block:
                self._eof = True
                last = self._carry
                self._carry = b""
                if not last:
                    return b""
                # The last line, without its line ending: checked like the others.
                return self._checked(last + b"\n")
            buf = self._carry + block
            end = buf.rfind(b"\n") + 1
            if end == 0:
                if len(buf) > self._limit:
                    self.unusual = True
                    return b""
                self._carry = buf
                continue
            self._carry = buf[end:]
            if len(self._carry) > self._limit:
                self.unusual = True
                return b""
            return self._checked(buf[:end])

    def _checked(self, lines: bytes) -> bytes:
        """``lines`` (whole lines) if the NumPy reader would read them as pyarrow does."""
        try:
            self._check(lines)
        except _Unusual:
            self.unusual = True
            return b""
        return lines

    def _check(self, lines: bytes) -> None:
        # Byte searches over the block (memchr speed): no per-line arrays.
        if b"\r" in lines and lines.count(b"\r") != lines.count(b"\r\n"):
            raise _Unusual  # a lone CR: a line break to pyarrow, not to the NumPy reader
        if not self._short_lines(lines):
            raise _Unusual
        if lines.startswith((b"\n", b"\r\n")) or _two_newlines(lines):
            raise _Unusual  # a blank line: skipped by the NumPy reader, which counts it
        if self._blank_cells and _BLANK_ASCII.search(lines):
            # A line of separators only is blank to the NumPy reader, a row to pyarrow.
            # (With any other separator such a line has one cell: pyarrow refuses it.)
            raise _Unusual
        if not lines.isascii():
            try:
                text = lines.decode("utf-8")
            except UnicodeDecodeError:
                raise _Unusual from None
            if _BLANK_TEXT.search(text):
                raise _Unusual

    def _short_lines(self, lines: bytes) -> bool:
        """Whether no line of ``lines`` (whole lines) is longer than ``max_line_bytes``.

        A line as long as the limit holds a whole aligned window of half the
        limit: when every such window holds a newline, no line is that long,
        and the few windows are searched without looking at each line.
        """
        half = (self._limit + 1) // 2
        if len(lines) <= 64 * half:
            find = lines.find
            if all(find(b"\n", k, k + half) >= 0 for k in range(0, len(lines) - half + 1, half)):
                return True
        data = np.frombuffer(lines, dtype=np.uint8)
        ends = np.flatnonzero(data == 10)  # every line's newline; ``lines`` ends with one
        length = np.diff(ends, prepend=-1) - 1  # with the CR of a CRLF
        return int(length.max()) <= self._limit


def _two_newlines(lines: bytes) -> bool:
    """Whether ``lines`` holds ``\\n\\n`` or ``\\n\\r\\n`` (a blank line after the first).

    ``\\n\\n`` is looked for as a 16-bit word at even and at odd offsets: a
    byte search for it stops at every newline.
    """
    size = len(lines)
    if size < 2:
        return False
    even = np.frombuffer(lines, dtype=np.uint16, count=size // 2)
    odd = np.frombuffer(lines, dtype=np.uint16, count=(size - 1) // 2, offset=1)
    if bool((even == 0x0A0A).any()) or bool((odd == 0x0A0A).any()):
        return True
    return b"\r" in lines and b"\n\r\n" in lines


def arrow_chunks(rec: CsvRecording) -> Generator[Chunk, None, int | None]:
    """Chunks of ``rec``'s data lines; returns None at the end of the file.

    Returns the number of rows yielded instead when the fast path stops
    early (a multiple of ``chunk_rows``): the NumPy reader goes on from the
    data line after them.
    """
    spec = rec.spec
    roles = [rec.time_index, *rec.sensor_index]
    roles += [i for i in (rec.id_index, rec.label_index, rec.kind_index) if i is not None]
    names = [f"c{i}" for i in range(len(rec.columns))]
    types: dict[str, object] = {names[i]: pa.float64() for i in rec.sensor_index}
    types[names[rec.time_index]] = pa.float64() if rec.time_is_number else pa.string()
    for i in (rec.id_index, rec.kind_index):
        if i is not None:
            types[names[i]] = pa.string()
    if rec.label_index is not None:
        types[names[rec.label_index]] = pa.float64()
    if len(spec.sep.encode("utf-8")) != 1:
        return 0  # pyarrow splits on one byte: a separator such as '§' is the NumPy reader's
    read_options = pacsv.ReadOptions(column_names=names, block_size=PARSE_BYTES)
    parse_options = pacsv.ParseOptions(delimiter=spec.sep, quote_char=False, escape_char=False)
    convert_options = pacsv.ConvertOptions(
        column_types=types,
        include_columns=[names[i] for i in sorted(set(roles))],
        null_values=[""],
        strings_can_be_null=False,
        quoted_strings_can_be_null=False,
        true_values=[],
        false_values=[],
    )
    rows = spec.chunk_rows
    done = 0

    def parse(block: bytes) -> pa.Table:
        return pacsv.read_csv(
            pa.py_buffer(block),
            read_options=read_options,
            parse_options=parse_options,
            convert_options=convert_options,
        )

    # Up to AHEAD blocks are parsed ahead, in a worker thread (pyarrow releases the
    # GIL), while the chunks of the ones before are scored: the worker keeps busy
    # while a chunk is scored, so the reader seldom waits for it.  The worker only
    # ever sees bytes in memory, never the file, and is joined when reading ends.
    ahead = ThreadPoolExecutor(max_workers=1, thread_name_prefix="arrowcsv")
    try:
        with open(rec.path, "rb") as raw:
            raw.seek(rec.data_offset)
            source = _CompleteLines(raw, spec.max_line_bytes, spec.sep)
            pending: list[pa.Table] = []
            held = 0
            inflight: deque[Future[pa.Table]] = deque()
            while True:
                while len(inflight) < AHEAD:
                    block = source.read(BLOCK_BYTES)
                    if not block:
                        break
                    inflight.append(ahead.submit(parse, block))
                if not inflight:
                    break
                current = inflight.popleft()
                try:
                    table = current.result()
                except (pa.ArrowException, ValueError):  # any refusal: the NumPy reader decides
                    return done
                pending.append(table)
                held += table.num_rows
                while held >= rows:
                    joined = pa.concat_tables(pending)
                    chunk = _convert(rec, joined.slice(0, rows), done)
                    if chunk is None:
                        return done
                    yield chunk
                    done += rows
                    held -= rows
                    pending = [joined.slice(rows)]
            if source.unusual:
                return done
            if held:
                chunk = _convert(rec, pa.concat_tables(pending), done)
                if chunk is None:
                    return done
                yield chunk
        return None
    finally:
        ahead.shutdown(wait=True, cancel_futures=True)


def _convert(rec: CsvRecording, table: pa.Table, start: int) -> Chunk | None:
    """The chunk of rows ``start``.. of the data held in ``table``; None to fall back."""
    try:
        return _chunk(rec, table, start)
    except (_Unusual, TimeFormatError, ValueError, pa.ArrowException):
        return None


def _floats(column: pa.ChunkedArray) -> NDArray[np.float64]:
    filled = pc.fill_null(column, np.nan)
    return np.asarray(filled.to_numpy(), dtype=np.float64)


def _fixed_width(column: pa.ChunkedArray) -> NDArray[np.uint8] | None:
    """The bytes (n, w) of a string column whose n cells are all w bytes long; else None."""
    cells = column.combine_chunks()
    n = len(cells)
    if n == 0 or cells.null_count or cells.type != pa.string():
        return None
    _, offsets_buffer, data = cells.buffers()
    offsets = np.frombuffer(offsets_buffer, dtype=np.int32, count=n + 1, offset=4 * cells.offset)
    w = int(offsets[1] - offsets[0])
    if w == 0 or data is None or np.any(np.diff(offsets) != w):
        return None
    start = int(offsets[0])
    return np.frombuffer(data, dtype=np.uint8, count=n * w, offset=start).reshape(n, w)


def _distinct(column: pa.ChunkedArray) -> tuple[list[str], NDArray[np.intp]]:
    """The distinct cells of a string column, stripped, and each row's index into them."""
    encoded = column.combine_chunks().dictionary_encode()
    cells = [str(c).strip() for c in encoded.dictionary.to_pylist()]
    return cells, np.asarray(encoded.indices.to_numpy(), dtype=np.intp)


def _chunk(rec: CsvRecording, table: pa.Table, start: int) -> Chunk:
    n = table.num_rows
    col = [f"c{i}" for i in range(len(rec.columns))]
    # Each sensor straight into its column (nulls read as NaN): one copy of the data.
    values = np.empty((n, len(rec.sensor_index)))
    for j, i in enumerate(rec.sensor_index):
        values[:, j] = table.column(col[i]).to_numpy()
    if rec.time_is_number:
        ts = _floats(table.column(col[rec.time_index]))
    else:
        column = table.column(col[rec.time_index])
        fixed = _fixed_width(column)
        parsed = parse_fixed(fixed) if fixed is not None else None
        if parsed is not None:
            ts = parsed
        else:
            cells, index = _distinct(column)
            cells = [c.strip('"') for c in cells]
            if "" in cells:
                raise _Unusual
            ts = parse_times(cells)[index]
    if not np.isfinite(ts).all():
        raise _Unusual
    if rec.id_index is None:
        ids = np.zeros(n, dtype=np.int64)
    else:
        ids = _turbine_ids(rec, table.column(col[rec.id_index]))
    labels = None
    if rec.label_index is not None:
        raw = _floats(table.column(col[rec.label_index]))
        labels = (np.nan_to_num(raw, nan=0.0) != 0).astype(np.int8)
    kinds = None
    if rec.kind_index is not None:
        cells, index = _distinct(table.column(col[rec.kind_index]))
        kinds = np.array(cells, dtype=np.str_)[index]
    lines = np.arange(start, start + n, dtype=np.int64) + rec.data_line
    return Chunk(ts, ids, values, labels, kinds, lines)


def _turbine_ids(rec: CsvRecording, column: pa.ChunkedArray) -> NDArray[np.int64]:
    """As the NumPy reader's names path: integers (however written) are ids, others names."""
    from pipeline.recordings.csvfile import _is_integer, _is_number

    cells, index = _distinct(column)
    canonical = []
    for cell in cells:
        name = cell.strip('"')
        if name == "":
            raise _Unusual
        if _is_number(name):
            if not _is_integer(name):
                raise _Unusual
            name = str(int(float(name)))
        canonical.append(name)
    return rec.names.ids_of(canonical)[index]
