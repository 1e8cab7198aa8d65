"""ISO 8601 date-times with their UTC offsets, parsed to epoch seconds, vectorised.

Real SCADA exports write local time with its offset (``+01:00`` in winter,
``+02:00`` in summer at La Haute Borne).  Each cell's offset is split off
and subtracted, so every time is UTC: ``2014-10-26T02:00:00+01:00`` and
``2014-10-26T01:00:00Z`` are the same instant.  A cell without an offset is
UTC already.  NumPy parses the local part (``datetime64``; its own handling
of offsets is deprecated, so it never sees one).  Consecutive equal cells (a
fleet snapshot: every turbine at one time) are parsed once, and the offsets
of ASCII cells are split off by pyarrow's compute functions (RE2), many at a
time (:func:`split_offsets`), as :func:`split_offset` does one by one.

>>> parse_times(["2014-01-01T01:00:00+01:00", "2014-01-01T00:00:00Z", "2014-01-01 00:10"])
array([1.3885344e+09, 1.3885344e+09, 1.3885350e+09])
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from numpy.typing import NDArray

_OFFSET = re.compile(r"(?:([+-])(\d\d):?(\d\d)|[zZ])$")
# The same, for RE2 on ASCII cells: the shortest local part before an offset.
_SPLIT = r"^(?P<local>.*?)(?P<offset>[+-][0-9][0-9]:?[0-9][0-9]|[zZ])$"
_ASCII_SPACE = " \t\n\r\x0b\x0c\x1c\x1d\x1e\x1f"  # what str.strip() strips of ASCII


class TimeFormatError(ValueError):
    """A cell that is not an ISO 8601 date-time; ``index`` is its position."""

    def __init__(self, index: int, cell: str) -> None:
        super().__init__(f"unreadable timestamp {cell[:40]!r}")
        self.index = index
        self.cell = cell


def split_offset(cell: str) -> tuple[str, int]:
    """The local part of an ISO 8601 cell and its UTC offset in seconds.

    >>> split_offset("2014-06-01T02:00:00+02:00"), split_offset("2014-06-01T00:00Z")
    (('2014-06-01T02:00:00', 7200), ('2014-06-01T00:00', 0))
    """
    text = cell.strip()
    m = _OFFSET.search(text)
    # A bare date ("2014-06-01") ends in "-06-01": digits after a '-' at the end
    # of a date are not an offset, so an offset needs a time part before it.
    if m is None or "T" not in text[: m.start()] and " " not in text[: m.start()]:
        return text, 0
    if m.group(1) is None:
        return text[: m.start()], 0
    sign = -1 if m.group(1) == "-" else 1
    return text[: m.start()], sign * (int(m.group(2)) * 3600 + int(m.group(3)) * 60)


def split_offsets(cells: Sequence[str]) -> tuple[list[str], NDArray[np.int64]]:
    """:func:`split_offset` of each of n cells: n local parts and offsets of shape (n,).

    >>> split_offsets(["2014-06-01T02:00:00+02:00", "2014-06-01", "2014-06-01 00:00-0130"])
    (['2014-06-01T02:00:00', '2014-06-01', '2014-06-01 00:00'], array([ 7200,     0, -5400]))
    """
    if not all(c.isascii() for c in cells):  # Python's \d and strip() reach beyond ASCII
        pairs = [split_offset(c) for c in cells]
        return [p[0] for p in pairs], np.array([p[1] for p in pairs], dtype=np.int64)
    text = pc.utf8_trim(pa.array(cells, type=pa.string()), characters=_ASCII_SPACE)
    parts = pc.extract_regex(text, _SPLIT)
    local = parts.field("local")
    # An offset needs a time part before it: a bare date's "-06-01" is no offset.
    found = pc.and_(parts.is_valid(), pc.match_substring_regex(local, "[T ]"))
    found = pc.fill_null(found, False)
    offset = pc.if_else(found, parts.field("offset"), "Z")
    digits = pc.replace_substring(offset, ":", "")
    sign = np.where(pc.starts_with(digits, "-").to_numpy(zero_copy_only=False), -1, 1)
    zulu = pc.equal(pc.utf8_upper(digits), "Z").to_numpy(zero_copy_only=False)
    numbers = pc.if_else(pc.equal(pc.utf8_upper(digits), "Z"), "+0000", digits)
    hours = pc.cast(pc.utf8_slice_codeunits(numbers, 1, 3), pa.int64()).to_numpy()
    minutes = pc.cast(pc.utf8_slice_codeunits(numbers, 3, 5), pa.int64()).to_numpy()
    offsets = np.where(zulu, 0, sign * (hours * 3600 + minutes * 60)).astype(np.int64)
    locals_ = pc.if_else(found, local, text).to_pylist()
    return locals_, offsets


def parse_times(cells: Sequence[str] | NDArray[np.str_]) -> NDArray[np.float64]:
    """Epoch seconds (UTC) of ISO 8601 cells, shape (n,) for n cells.

    Raises :class:`TimeFormatError` naming the first cell that does not parse.
    """
    arr = np.asarray(cells, dtype=np.str_)
    n = arr.size
    if n == 0:
        return np.zeros(0)
    head = np.ones(n, dtype=bool)
    np.not_equal(arr[1:], arr[:-1], out=head[1:])
    first = np.flatnonzero(head)
    local, offsets = split_offsets(arr[first].tolist())  # once per distinct consecutive time
    try:
        stamps = np.array(local, dtype="datetime64[ms]")
    except ValueError:
        stamps = np.empty(len(local), dtype="datetime64[ms]")
        for k, text in enumerate(local):
            try:
                stamps[k] = np.datetime64(text, "ms")
            except ValueError:
                raise TimeFormatError(int(first[k]), str(arr[first[k]])) from None
    nat = np.isnat(stamps)
    if nat.any():
        k = int(np.flatnonzero(nat)[0])
        raise TimeFormatError(int(first[k]), str(arr[first[k]]))
    seconds = stamps.astype(np.int64) / 1000.0 - offsets
    return seconds[np.cumsum(head) - 1]
