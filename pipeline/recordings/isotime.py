"""ISO 8601 date-times with their UTC offsets, parsed to epoch seconds, vectorised.

Real SCADA exports write local time with its offset (``+01:00`` in winter,
``+02:00`` in summer at La Haute Borne).  Each cell's offset is split off
and subtracted, so every time is UTC: ``2014-10-26T02:00:00+01:00`` and
``2014-10-26T01:00:00Z`` are the same instant.  A cell without an offset is
UTC already.  NumPy parses the local part (``datetime64``; its own handling
of offsets is deprecated, so it never sees one).  Consecutive equal cells (a
fleet snapshot: every turbine at one time) are parsed once.

>>> parse_times(["2014-01-01T01:00:00+01:00", "2014-01-01T00:00:00Z", "2014-01-01 00:10"])
array([1.3885344e+09, 1.3885344e+09, 1.3885350e+09])
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

_OFFSET = re.compile(r"(?:([+-])(\d\d):?(\d\d)|[zZ])$")


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
    local: list[str] = []
    offsets = np.empty(first.size, dtype=np.int64)
    for k, cell in enumerate(arr[first].tolist()):  # one per distinct consecutive time
        text, offsets[k] = split_offset(cell)
        local.append(text)
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
