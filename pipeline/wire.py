"""The wire format of a sensor batch (schema version 1): bytes in, arrays out.

A Kafka record carries one batch: the readings of one key group (turbine id
mod ``key_groups``) over one engine batch (``batch`` is its number).  The
record key is ``group-<g>``, so a turbine's readings stay in order in one
partition.  Two encodings, told apart by the ``content-type`` header:

``application/vnd.turbine.batch.v1`` (binary, the producers' default)::

    b"TWB1"                       4 bytes, magic
    uint32 little-endian          length M of the metadata
    M bytes                       metadata, UTF-8 JSON (BatchMeta below)
    float64[n]  little-endian     timestamps, seconds since the epoch (UTC)
    int64[n]    little-endian     turbine ids
    float64[n*D] little-endian    values, row-major (reading by reading)
    int8[n]                       fault codes (only if meta.fault_kinds is set):
                                  0 normal, k = meta.fault_kinds[k-1]

``application/json`` (typed by hand, e.g. with kcat)::

    {"schema_version": 1, "sensors": ["a", "b"], "timestamps": [..],
     "turbine_ids": [..], "values": [[..], ..]}

(other metadata fields optional; timestamps may be ISO 8601 strings).

Nothing is ever unpickled.  Every way a record can be wrong raises
:class:`WireError` with a short machine-readable ``reason`` (the dead-letter
header) and a one-line message.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pipeline.errors import TurbineError

SCHEMA_VERSION = 1
MAGIC = b"TWB1"
BINARY_TYPE = "application/vnd.turbine.batch.v1"
JSON_TYPE = "application/json"
_HEAD = struct.Struct("<4sI")
MAX_SENSORS = 4096


class WireError(TurbineError, ValueError):
    """A record that cannot become a batch; ``reason`` names the kind of fault."""

    def __init__(self, reason: str, message: str) -> None:
        self.reason = reason
        super().__init__(f"{reason}: {message}")


class BatchMeta(BaseModel):
    """Metadata of a batch, validated on both sides."""

    model_config = ConfigDict(extra="forbid")

    schema_version: Literal[1] = 1
    site: str = Field("default", max_length=200)
    sensors: list[str] = Field(min_length=1, max_length=MAX_SENSORS)
    units: list[str] | None = Field(None, max_length=MAX_SENSORS)
    producer_id: str = Field("unknown", max_length=200)
    sequence: int = Field(0, ge=0, description="Per producer, per group: strictly increasing.")
    batch: int = Field(0, ge=0, description="Engine batch number (the time window).")
    group: int = Field(0, ge=0, description="Key group of the readings.")
    n: int = Field(0, ge=0, description="Number of readings.")
    fault_kinds: list[str] | None = Field(None, max_length=127)


@dataclass(frozen=True)
class SensorBatch:
    """One decoded batch.

    Attributes
    ----------
    meta : BatchMeta
    timestamps : ndarray of shape (n,)
    turbine_ids : ndarray of shape (n,)
    values : ndarray of shape (n, D)
    labels : ndarray of shape (n,), optional
        1 where the reading is labelled faulty (replays of labelled files).
    kinds : ndarray of shape (n,), optional
        Fault kind names ("" for normal).
    """

    meta: BatchMeta
    timestamps: NDArray[np.float64]
    turbine_ids: NDArray[np.int64]
    values: NDArray[np.float64]
    labels: NDArray[np.int8] | None = None
    kinds: NDArray[np.str_] | None = None

    def __len__(self) -> int:
        return int(self.timestamps.size)


def encode_batch(
    meta: BatchMeta,
    timestamps: NDArray[np.float64],
    turbine_ids: NDArray[np.int64],
    values: NDArray[np.float64],
    kinds: NDArray[np.str_] | None = None,
) -> bytes:
    """The binary encoding of a batch (arrays of shapes (n,), (n,), (n, D), (n,)).

    >>> meta = BatchMeta(sensors=["a"], n=2)
    >>> raw = encode_batch(meta, np.zeros(2), np.arange(2), np.ones((2, 1)))
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
    codes = b""
    if kinds is not None:
        uniq, inverse = np.unique(np.asarray(kinds), return_inverse=True)
        names = [str(k) for k in uniq.tolist() if k != ""]
        # code 0 is "normal"; the kinds keep their sorted order (codes 1..K)
        offset = 0 if uniq.size and uniq[0] == "" else 1
        head_fields["fault_kinds"] = names
        codes = (inverse + offset).astype("i1").tobytes()
    head = json.dumps(head_fields, separators=(",", ":")).encode()
    return b"".join(
        (
            _HEAD.pack(MAGIC, len(head)),
            head,
            np.ascontiguousarray(timestamps, "<f8").tobytes(),
            np.ascontiguousarray(turbine_ids, "<i8").tobytes(),
            np.ascontiguousarray(values).tobytes(),
            codes,
        )
    )


def _meta(raw: object) -> BatchMeta:
    if isinstance(raw, dict) and raw.get("schema_version", SCHEMA_VERSION) != SCHEMA_VERSION:
        raise WireError(
            "unknown_schema_version",
            f"schema version {raw.get('schema_version')!r}, this detector reads {SCHEMA_VERSION}",
        )
    try:
        return BatchMeta.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(x) for x in first["loc"]) or "metadata"
        raise WireError("bad_metadata", f"{loc}: {first['msg']}") from None


def decode_batch(
    value: bytes | None, content_type: str | None, max_bytes: int = 1 << 24
) -> SensorBatch:
    """Decode one record's value; ``content_type`` from its header (binary when absent)."""
    if value is None or len(value) == 0:
        raise WireError("empty", "the record has no value")
    if len(value) > max_bytes:
        raise WireError("too_large", f"{len(value)} bytes, the limit is {max_bytes}")
    kind = (content_type or BINARY_TYPE).split(";")[0].strip().lower()
    if kind == JSON_TYPE:
        return _decode_json(value)
    if kind != BINARY_TYPE:
        raise WireError("unknown_content_type", f"content type {content_type!r}")
    return _decode_binary(value)


def _decode_binary(value: bytes) -> SensorBatch:
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
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise WireError("bad_metadata", f"metadata is not JSON ({exc})") from None
    meta = _meta(raw)
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
    ts = np.frombuffer(buf, "<f8", n, 0)
    ids = np.frombuffer(buf, "<i8", n, 8 * n)
    vals = np.frombuffer(buf, "<f8", n * d, 16 * n).reshape(n, d)
    labels = kinds = None
    if coded:
        codes = np.frombuffer(buf, "i1", n, (16 + 8 * d) * n)
        names = np.array(["", *(meta.fault_kinds or [])])
        if codes.size and (codes.min() < 0 or codes.max() >= names.size):
            raise WireError("bad_metadata", "fault code outside the declared kinds")
        kinds = names[codes]
        labels = (codes > 0).astype(np.int8)
    return SensorBatch(
        meta, ts.astype(np.float64), ids.astype(np.int64), vals.astype(np.float64), labels, kinds
    )


def _decode_json(value: bytes) -> SensorBatch:
    try:
        raw = json.loads(value.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise WireError("bad_json", f"not JSON ({exc})") from None
    if not isinstance(raw, dict):
        raise WireError("bad_json", "the batch must be a JSON object")
    try:
        columns = {k: raw.pop(k) for k in ("timestamps", "turbine_ids", "values")}
    except KeyError as exc:
        raise WireError("bad_json", f"missing {exc.args[0]!r}") from None
    labels_raw = raw.pop("labels", None)
    meta = _meta(
        {**raw, "n": len(columns["timestamps"]) if isinstance(columns["timestamps"], list) else 0}
    )
    try:
        ts_raw = columns["timestamps"]
        if any(isinstance(t, str) for t in ts_raw):
            ts = (
                np.array([np.datetime64(str(t).rstrip("Z"), "ms") for t in ts_raw]).astype(np.int64)
                / 1e3
            )
        else:
            ts = np.asarray(ts_raw, dtype=np.float64)
        ids = np.asarray(columns["turbine_ids"], dtype=np.float64)
        vals = np.asarray(columns["values"], dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise WireError("bad_json", f"arrays are not numeric ({exc})") from None
    n, d = ts.size, len(meta.sensors)
    if ts.ndim != 1 or ids.shape != (n,) or vals.shape != (n, d):
        raise WireError(
            "shape_mismatch",
            f"timestamps {ts.shape}, turbine_ids {ids.shape}, values {vals.shape} for {d} sensors",
        )
    if not np.all(np.isfinite(ids) & (ids == np.round(ids))):
        raise WireError("bad_json", "turbine ids must be integers")
    labels = None
    if labels_raw is not None:
        labels = (np.asarray(labels_raw, dtype=np.float64) != 0).astype(np.int8)
        if labels.shape != (n,):
            raise WireError("shape_mismatch", f"labels {labels.shape} for {n} readings")
    return SensorBatch(meta, ts, ids.astype(np.int64), vals, labels, None)
