"""The wire format of a sensor batch (schema versions 1 and 2): bytes in, arrays out.

A Kafka record carries one batch: the readings of one key group (turbine id
mod ``key_groups``) over one engine batch (``batch`` is its number).  The
record key is ``group-<g>``, so a turbine's readings stay in order in one
partition.  Headers ``content-type`` and ``schema-version`` (1 or 2).  Two
encodings, told apart by the ``content-type`` header:

``application/vnd.turbine.batch.v1`` (binary, the producers' default)::

    b"TWB1"                       4 bytes, magic
    uint32 little-endian          length M of the metadata
    M bytes                       metadata, UTF-8 JSON (BatchMeta)
    float64[n]  little-endian     timestamps, seconds since the epoch (UTC)
    int64[n]    little-endian     turbine ids (version 1), or indices into
                                  meta.turbine_names (version 2)
    float64[n*D] little-endian    values, row-major (reading by reading)
    int8[n]                       fault codes (only if meta.fault_kinds is set):
                                  0 normal, k = meta.fault_kinds[k-1]

Version 2 adds ``turbine_names`` (a list of strings) to the metadata: the
turbines of the batch by name; a name's id is ``pipeline.names.turbine_id``
(an integer name such as ``"7"`` is 7), and the decoded batch carries the
names (``SensorBatch.names``) so the detector can show them.

``application/json`` (typed by hand, e.g. with kcat)::

    {"schema_version": 1, "sensors": ["a", "b"], "timestamps": [..],
     "turbine_ids": [..], "values": [[..], ..]}

(other metadata fields optional; timestamps JSON numbers or ISO 8601 strings;
in version 2 ``turbine_ids`` may hold names, strings, beside integers).

Every timestamp must be finite and inside the decoder's time range (default
1970-01-01 to 2200-01-01).  Nothing is ever unpickled.  Every way a record can
be wrong raises :class:`WireError` with a short machine-readable ``reason``
(the dead-letter header) and a one-line message.
"""

from __future__ import annotations

from pipeline.wire.binary import BINARY_TYPE, MAGIC, decode_binary, encode_batch
from pipeline.wire.jsonbatch import JSON_TYPE, decode_json
from pipeline.wire.schema import (
    MAX_SENSORS,
    NAMES_VERSION,
    SCHEMA_VERSION,
    TIME_RANGE,
    VERSIONS,
    BatchMeta,
    SensorBatch,
    WireError,
    version_for,
)

__all__ = [
    "BINARY_TYPE",
    "JSON_TYPE",
    "MAGIC",
    "MAX_SENSORS",
    "NAMES_VERSION",
    "SCHEMA_VERSION",
    "TIME_RANGE",
    "VERSIONS",
    "BatchMeta",
    "SensorBatch",
    "WireError",
    "decode_batch",
    "encode_batch",
    "version_for",
]


def decode_batch(
    value: bytes | None,
    content_type: str | None,
    max_bytes: int = 1 << 24,
    time_range: tuple[float, float] = TIME_RANGE,
) -> SensorBatch:
    """Decode one record's value; ``content_type`` from its header (binary when absent)."""
    if value is None or len(value) == 0:
        raise WireError("empty", "the record has no value")
    if len(value) > max_bytes:
        raise WireError("too_large", f"{len(value)} bytes, the limit is {max_bytes}")
    kind = (content_type or BINARY_TYPE).split(";")[0].strip().lower()
    if kind == JSON_TYPE:
        return decode_json(value, time_range)
    if kind != BINARY_TYPE:
        raise WireError("unknown_content_type", f"content type {str(content_type)[:80]!r}")
    return decode_binary(value, time_range)
