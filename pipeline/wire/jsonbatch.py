"""The JSON encoding (``application/json``): a batch typed by hand, e.g. with kcat.

Strict on types, so nothing is silently coerced: timestamps are JSON numbers
(seconds since the epoch) or ISO 8601 strings, turbine ids JSON integers (or,
in version 2, strings: turbine names), values JSON numbers or ``null`` (a
missing reading), labels integers or booleans.  Integers are never taken
through float64, so an id such as ``2**63 - 1`` stays exact.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime

import numpy as np
from numpy.typing import NDArray

from pipeline.names import TurbineNames
from pipeline.wire.schema import (
    NAMES_VERSION,
    TIME_RANGE,
    SensorBatch,
    WireError,
    check_timestamps,
    exact_int,
    finite_float,
    ids_of_names,
    is_number,
    parse_meta,
)

JSON_TYPE = "application/json"
_ISO = re.compile(
    r"\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?)?(Z|[+-]\d{2}(:?\d{2})?)?",
    re.ASCII,
)
_COLUMNS = ("timestamps", "turbine_ids", "values")


def decode_json(value: bytes, time_range: tuple[float, float] = TIME_RANGE) -> SensorBatch:
    """Decode a JSON batch; raises WireError."""
    try:
        raw = json.loads(value.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        # ValueError: not JSON, or an integer of more digits than Python converts;
        # RecursionError: nesting deeper than the parser's stack.
        raise WireError("bad_json", f"not JSON ({type(exc).__name__})") from None
    if not isinstance(raw, dict):
        raise WireError("bad_json", "the batch must be a JSON object")
    missing = [k for k in _COLUMNS if k not in raw]
    if missing:
        raise WireError("bad_json", f"missing {missing[0]!r}")
    ts_raw, ids_raw, vals_raw = (raw.pop(k) for k in _COLUMNS)
    labels_raw = raw.pop("labels", None)
    for name, column in zip(_COLUMNS, (ts_raw, ids_raw, vals_raw), strict=True):
        if not isinstance(column, list):
            raise WireError("bad_json", f"{name!r} must be a list")
    n = len(ts_raw)
    meta = parse_meta({**raw, "n": n})
    d = len(meta.sensors)
    if len(ids_raw) != n or len(vals_raw) != n:
        raise WireError(
            "shape_mismatch",
            f"{n} timestamps, {len(ids_raw)} turbine_ids, {len(vals_raw)} rows of values",
        )
    ts = _timestamps(ts_raw)
    check_timestamps(ts, time_range)
    ids, names = _turbine_ids(ids_raw, names_allowed=meta.schema_version >= NAMES_VERSION)
    vals = _values(vals_raw, d)
    labels = None if labels_raw is None else _labels(labels_raw, n)
    return SensorBatch(meta, ts, ids, vals, labels, None, names)


def _timestamps(items: list[object]) -> NDArray[np.float64]:
    """Seconds since the epoch, shape (n,), from JSON numbers and ISO 8601 strings."""
    if all(is_number(t) for t in items):
        try:
            return np.array(items, dtype=np.float64).reshape(len(items))
        except OverflowError:  # an integer beyond float64: out of range anyway
            return np.array([finite_float(t) for t in items], dtype=np.float64)  # type: ignore[arg-type]
    out = np.empty(len(items), dtype=np.float64)
    for i, t in enumerate(items):
        if is_number(t):
            out[i] = finite_float(t)  # type: ignore[arg-type]
        elif isinstance(t, str):
            out[i] = _iso_seconds(t)
        else:
            raise WireError(
                "bad_timestamp", f"timestamp {i}: {type(t).__name__}, not a number or ISO 8601"
            )
    return out


def _iso_seconds(text: str) -> float:
    """An ISO 8601 date/time (UTC unless it carries an offset) as epoch seconds."""
    if not _ISO.fullmatch(text):
        raise WireError("bad_timestamp", f"{text[:40]!r} is not an ISO 8601 date/time")
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise WireError("bad_timestamp", f"{text[:40]!r} is not a valid date/time") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


def _turbine_ids(
    items: list[object], names_allowed: bool
) -> tuple[NDArray[np.int64], TurbineNames]:
    """Exact int64 ids, shape (n,), and the names behind them (version 2)."""
    if all(type(t) is int for t in items):
        try:
            return np.array(items, dtype=np.int64).reshape(len(items)), TurbineNames()
        except OverflowError:
            raise WireError("bad_turbine_id", "a turbine id does not fit in 64 bits") from None
    texts = sorted({t for t in items if isinstance(t, str)})
    if texts and not names_allowed:
        raise WireError("bad_turbine_id", "turbine names (strings) need schema version 2")
    table, names = ids_of_names(texts)
    by_name = dict(zip(texts, table.tolist(), strict=True))
    out = np.empty(len(items), dtype=np.int64)
    for i, t in enumerate(items):
        if isinstance(t, str):
            out[i] = by_name[t]
            continue
        exact = exact_int(t)
        if exact is None:
            raise WireError(
                "bad_turbine_id", f"turbine id {i}: {str(t)[:40]} is not a 64-bit integer"
            )
        out[i] = exact
    return out, names


def _values(rows: list[object], d: int) -> NDArray[np.float64]:
    """Readings of shape (n, d) from rows of JSON numbers (``null``: missing)."""
    if not all(type(r) is list and len(r) == d for r in rows):
        raise WireError("shape_mismatch", f"values must be {len(rows)} rows of {d} numbers")
    kinds = {type(v) for r in rows for v in r}  # type: ignore[attr-defined]
    if not kinds <= {int, float, type(None)}:
        odd = sorted(k.__name__ for k in kinds - {int, float, type(None)})
        raise WireError("bad_json", f"values must be numbers or null, not {', '.join(odd)}")
    try:
        return np.array(rows, dtype=np.float64).reshape(len(rows), d)
    except OverflowError:
        raise WireError("bad_json", "a value does not fit in float64") from None


def _labels(items: object, n: int) -> NDArray[np.int8]:
    """Labels of shape (n,): 1 where a reading is labelled faulty."""
    if not isinstance(items, list) or len(items) != n:
        raise WireError("shape_mismatch", f"labels must be a list of {n} integers")
    if not all(type(v) is int or type(v) is bool for v in items):
        raise WireError("bad_json", "labels must be integers or booleans")
    return np.array([v != 0 for v in items], dtype=np.int8)
