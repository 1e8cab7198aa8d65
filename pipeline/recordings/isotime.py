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
Cells all of one fixed layout, as exports write them
(``2014-01-01T01:00:00+01:00``), are read straight from their bytes
(:func:`parse_fixed`), with the same result.

>>> parse_times(["2014-01-01T01:00:00+01:00", "2014-01-01T00:00:00Z", "2014-01-01 00:10"])
array([1.3885344e+09, 1.3885344e+09, 1.3885350e+09])
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import lru_cache

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


# The fixed layouts parse_fixed reads: width -> what follows "YYYY-MM-DDTHH:MM:SS".
_FIXED_WIDTHS = {19: "", 20: "Z", 24: "+HHMM", 25: "+HH:MM"}
_MONTH_DAYS = np.array([0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31], dtype=np.int64)
# The fields read from a cell: each is its digits' columns with their place values.
_FIELDS = {
    "year": ((0, 1000), (1, 100), (2, 10), (3, 1)),
    "month": ((5, 10), (6, 1)),
    "day": ((8, 10), (9, 1)),
    "hour": ((11, 10), (12, 1)),
    "minute": ((14, 10), (15, 1)),
    "second": ((17, 10), (18, 1)),
}


@lru_cache(maxsize=8)
def _layout(width: int) -> tuple[NDArray[np.uint8], NDArray[np.uint8], NDArray[np.float64]]:
    """Per-column byte ranges (lowest byte, span) of a layout, and its field weights.

    A byte b of column j is allowed when ``b - low[j]`` (uint8, wrapping) is at
    most ``span[j]``: digits are '0' + 0..9, separators one byte.  Columns 10
    ('T' or ' ') and 19 (the offset's sign or 'Z') allow two bytes and are
    checked apart (span 255 here).  The weights (W, F) turn a cell's digits
    into its fields by one product; every value is a small integer, exact in
    float64.
    """
    tail = _FIXED_WIDTHS[width]
    low = np.full(width, ord("0"), dtype=np.uint8)
    span = np.full(width, 9, dtype=np.uint8)
    for j, sep in ((4, "-"), (7, "-"), (13, ":"), (16, ":")):
        low[j], span[j] = ord(sep), 0
    fields = dict(_FIELDS)
    if tail == "+HH:MM":
        low[22], span[22] = ord(":"), 0
        fields["offset"] = ((20, 36000), (21, 3600), (23, 600), (24, 60))
    elif tail == "+HHMM":
        fields["offset"] = ((20, 36000), (21, 3600), (22, 600), (23, 60))
    for j in (10, 19) if width > 19 else (10,):
        low[j], span[j] = 0, 255
    weights = np.zeros((width, len(fields)))
    for f, digits in enumerate(fields.values()):
        for j, place in digits:
            weights[j, f] = place
    for a in (low, span, weights):
        a.setflags(write=False)
    return low, span, weights


def parse_fixed(cells: NDArray[np.uint8]) -> NDArray[np.float64] | None:
    """Epoch seconds (UTC) of n cells of one fixed layout, read from their bytes; else None.

    The layouts: ``YYYY-MM-DDTHH:MM:SS`` (``T`` or a space between date and
    time), then nothing (UTC), ``Z``/``z``, ``+HHMM`` or ``+HH:MM`` (either
    sign).  The result is :func:`parse_times`'s, bit for bit; None when any
    cell is of another layout or not a valid date-time (then
    :func:`parse_times` decides, and names the cell).  Each distinct cell's
    bytes are checked against the layout in one comparison, and its fields
    (year, month, ..., the offset in seconds) come from one matrix product.

    Parameters
    ----------
    cells : ndarray of shape (n, w)
        The cells' bytes, one row per cell (ASCII, no padding).

    Returns
    -------
    ndarray of shape (n,), or None

    >>> cells = np.frombuffer(b"2014-01-01T01:00:00+01:002014-06-01 00:00:00-00:30", np.uint8)
    >>> parse_fixed(cells.reshape(2, 25)).tolist()
    [1388534400.0, 1401582600.0]
    >>> parse_fixed(np.frombuffer(b"2014-02-29T00:00:00", np.uint8).reshape(1, 19)) is None
    True
    """
    n, w = cells.shape
    layout = _FIXED_WIDTHS.get(w)
    if layout is None or n == 0:
        return None
    # Consecutive equal cells (a fleet's turbines at one time) are read once.
    rows = np.ascontiguousarray(cells).view(f"S{w}").reshape(n)
    head = np.ones(n, dtype=bool)
    np.not_equal(rows[1:], rows[:-1], out=head[1:])
    c = cells[head]
    low, span, weights = _layout(w)
    if bool(((c - low) > span).any()):  # a byte outside its column's range (uint8 wraps)
        return None
    sep = c[:, 10]
    ok = (sep == 84) | (sep == 32)  # 'T' or ' '
    if layout == "Z":
        ok &= (c[:, 19] == 90) | (c[:, 19] == 122)
    elif layout:
        ok &= (c[:, 19] == 43) | (c[:, 19] == 45)
    if not ok.all():
        return None
    # The digits' bytes minus '0', times their place values: each field, exactly.
    values = c.astype(np.float64) @ weights - 48.0 * weights.sum(axis=0)  # BLAS in float64
    fields = values.astype(np.int64).T
    year, month, day, hour, minute, second = fields[:6]
    leap = (year % 4 == 0) & ((year % 100 != 0) | (year % 400 == 0))
    if not ((month >= 1) & (month <= 12)).all():
        return None
    days_in = _MONTH_DAYS[month] + (leap & (month == 2))
    valid = (year >= 1) & (day >= 1) & (day <= days_in)
    valid &= (hour <= 23) & (minute <= 59) & (second <= 59)
    if not valid.all():
        return None
    # Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's days_from_civil).
    y = year - (month <= 2)
    era = y // 400
    yoe = y - era * 400
    doy = (153 * ((month + 9) % 12) + 2) // 5 + day - 1
    days = era * 146097 + yoe * 365 + yoe // 4 - yoe // 100 + doy - 719468
    ms = (days * 86400 + hour * 3600 + minute * 60 + second) * 1000
    if layout in ("+HHMM", "+HH:MM"):
        offsets = np.where(c[:, 19] == 45, -1, 1) * fields[6]
    else:
        offsets = np.zeros(ms.size, dtype=np.int64)
    return (ms / 1000.0 - offsets)[np.cumsum(head) - 1]
