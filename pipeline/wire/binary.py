"""The binary encoding (``application/vnd.turbine.batch.v1``), versions 1 and 2."""

from __future__ import annotations

import json
import struct

import numpy as np
from numpy.typing import NDArray

from pipeline.names import TurbineNames
from pipeline.wire.schema import (
    NAMES_VERSION,
    TIME_RANGE,
    BatchMeta,
    SensorBatch,
    WireError,
    check_timestamps,
    ids_of_names,
    parse_meta,
    version_for,
)

MAGIC = b"TWB1"
BINARY_TYPE = "application/vnd.turbine.batch.v1"
_HEAD = struct.Struct("<4sI")


def encode_batch(
    meta: BatchMeta,
    timestamps: NDArray[np.float64],
    turbine_ids: NDArray[np.int64],
    values: NDArray[np.float64],
    kinds: NDArray[np.str_] | None = None,
    names: TurbineNames | None = None,
) -> bytes:
    """The binary encoding of a batch (arrays of shapes (n,), (n,), (n, D), (n,)).

    With ``names`` that hold any name, the record is version 2: the metadata
    lists the names of the batch's turbines and the id column holds indices
    into that list; otherwise version 1 (the ids themselves).

    >>> meta = BatchMeta(sensors=["a"], n=2)
    >>> raw = encode_batch(meta, np.zeros(2), np.arange(2), np.ones((2, 1)))
    >>> from pipeline.wire import decode_batch
    >>> b = decode_batch(raw, BINARY_TYPE)
    >>> b.values.tolist(), b.turbine_ids.tolist()
    ([[1.0], [1.0]], [0, 1])
    """
    n = int(np.asarray(timestamps).size)
    values = np.asarray(values, dtype="<f8")
    if values.shape != (n, len(meta.sensors)):
        raise WireError("shape_mismatch", f"values {values.shape} for {n} readings")
    head_fields = meta.model_dump(exclude_none=True)
    head_fields["n"] = n
    head_fields["schema_version"] = version_for(names)
    head_fields.pop("turbine_names", None)
    id_column = np.ascontiguousarray(turbine_ids, "<i8")
    if names is not None and head_fields["schema_version"] == NAMES_VERSION:
        uniq, inverse = np.unique(id_column, return_inverse=True)
        head_fields["turbine_names"] = names.labels(uniq)
        id_column = inverse.astype("<i8").ravel()
    codes = b""
    if kinds is not None:
        uniq_kinds, inverse_kinds = np.unique(np.asarray(kinds), return_inverse=True)
        kind_names = [str(k) for k in uniq_kinds.tolist() if k != ""]
        # code 0 is "normal"; the kinds keep their sorted order (codes 1..K)
        offset = 0 if uniq_kinds.size and uniq_kinds[0] == "" else 1
        head_fields["fault_kinds"] = kind_names
        codes = (inverse_kinds + offset).astype("i1").tobytes()
    head = json.dumps(head_fields, separators=(",", ":")).encode()
    return b"".join(
        (
            _HEAD.pack(MAGIC, len(head)),
            head,
            np.ascontiguousarray(timestamps, "<f8").tobytes(),
            id_column.tobytes(),
            np.ascontiguousarray(values).tobytes(),
            codes,
        )
    )


def decode_binary(value: bytes, time_range: tuple[float, float] = TIME_RANGE) -> SensorBatch:
    """Decode a binary record (magic, metadata, columns); raises WireError."""
    if len(value) < _HEAD.size:
        raise WireError("truncated", f"{len(value)} bytes, shorter than the header")
    magic, mlen = _HEAD.unpack_from(value)
    if magic != MAGIC:
        raise WireError("bad_magic", f"starts with {magic!r}, expected {MAGIC!r}")
    end = _HEAD.size + mlen
    if end > len(value):
        raise WireError("truncated", f"metadata of {mlen} bytes declared, {len(value)} in all")
    try:
        raw = json.loads(value[_HEAD.size : end].decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        # ValueError: not JSON, or an integer of more digits than Python converts;
        # RecursionError: nesting deeper than the parser's stack.
        raise WireError("bad_metadata", f"metadata is not JSON ({type(exc).__name__})") from None
    meta = parse_meta(raw)
    n, d = meta.n, len(meta.sensors)
    coded = meta.fault_kinds is not None
    need = n * (8 + 8 + 8 * d + (1 if coded else 0))
    if len(value) - end != need:
        raise WireError(
            "shape_mismatch",
            f"metadata declares {n} readings of {d} sensors ({need} bytes), "
            f"the record holds {len(value) - end}",
        )
    buf = memoryview(value)[end:]
    ts = np.frombuffer(buf, "<f8", n, 0).astype(np.float64)
    check_timestamps(ts, time_range)
    ids = np.frombuffer(buf, "<i8", n, 8 * n).astype(np.int64)
    vals = np.frombuffer(buf, "<f8", n * d, 16 * n).reshape(n, d).astype(np.float64)
    names = TurbineNames()
    if meta.turbine_names is not None:
        table, names = ids_of_names(meta.turbine_names)
        if ids.size and (ids.min() < 0 or ids.max() >= table.size):
            raise WireError(
                "bad_turbine_id",
                f"turbine index outside the {table.size} names of the metadata",
            )
        ids = table[ids]
    labels = kinds = None
    if coded:
        codes = np.frombuffer(buf, "i1", n, (16 + 8 * d) * n)
        kind_names = np.array(["", *(meta.fault_kinds or [])])
        if codes.size and (codes.min() < 0 or codes.max() >= kind_names.size):
            raise WireError("bad_metadata", "fault code outside the declared kinds")
        kinds = kind_names[codes]
        labels = (codes > 0).astype(np.int8)
    return SensorBatch(meta, ts, ids, vals, labels, kinds, names)
