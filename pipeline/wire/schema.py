"""What every wire encoding shares: the metadata model, the decoded batch, the checks."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pipeline.errors import SchemaError, TurbineError
from pipeline.names import TurbineNames, turbine_id

SCHEMA_VERSION = 1  # what a producer sends for turbines without names
NAMES_VERSION = 2  # ... and with names (``turbine_names`` in the metadata)
VERSIONS = (1, 2)
MAX_SENSORS = 4096
MAX_NAMES = 1 << 20
# The default range of a valid timestamp: 1970-01-01 to 2200-01-01 (UTC), seconds.
TIME_RANGE = (0.0, 7_258_118_400.0)


class WireError(TurbineError, ValueError):
    """A record that cannot become a batch; ``reason`` names the kind of fault."""

    def __init__(self, reason: str, message: str) -> None:
        self.reason = reason
        super().__init__(f"{reason}: {message}")


class BatchMeta(BaseModel):
    """Metadata of a batch, validated on both sides (strictly: "5" is not 5)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    schema_version: Literal[1, 2] = 1
    site: str = Field("default", max_length=200)
    sensors: list[str] = Field(min_length=1, max_length=MAX_SENSORS)
    units: list[str] | None = Field(None, max_length=MAX_SENSORS)
    producer_id: str = Field("unknown", max_length=200)
    sequence: int = Field(0, ge=0, description="Per producer, per group: strictly increasing.")
    batch: int = Field(0, ge=0, lt=1 << 63, description="Engine batch number (the time window).")
    group: int = Field(0, ge=0, lt=1 << 63, description="Key group of the readings.")
    n: int = Field(0, ge=0, description="Number of readings.")
    fault_kinds: list[str] | None = Field(None, max_length=127)
    turbine_names: list[str] | None = Field(
        None,
        max_length=MAX_NAMES,
        description="Version 2: the binary id column holds indices into this list.",
    )


@dataclass(frozen=True)
class SensorBatch:
    """One decoded batch.

    Attributes
    ----------
    meta : BatchMeta
    timestamps : ndarray of shape (n,)
        Finite seconds since the epoch, inside the decoder's time range.
    turbine_ids : ndarray of shape (n,)
        int64 ids (a named turbine's id is ``pipeline.names.turbine_id(name)``).
    values : ndarray of shape (n, D)
    labels : ndarray of shape (n,), optional
        1 where the reading is labelled faulty (replays of labelled files).
    kinds : ndarray of shape (n,), optional
        Fault kind names ("" for normal).
    names : TurbineNames
        The names behind the hashed ids of this batch (empty for version 1).
    """

    meta: BatchMeta
    timestamps: NDArray[np.float64]
    turbine_ids: NDArray[np.int64]
    values: NDArray[np.float64]
    labels: NDArray[np.int8] | None = None
    kinds: NDArray[np.str_] | None = None
    names: TurbineNames = field(default_factory=TurbineNames)

    def __len__(self) -> int:
        return int(self.timestamps.size)


def parse_meta(raw: object) -> BatchMeta:
    """Validate metadata (a decoded JSON object); raises WireError."""
    if not isinstance(raw, dict):
        raise WireError("bad_metadata", "metadata must be a JSON object")
    version = raw.get("schema_version", SCHEMA_VERSION)
    if type(version) is not int or version not in VERSIONS:
        raise WireError(
            "unknown_schema_version",
            f"schema version {str(version)[:40]!r}, this detector reads {list(VERSIONS)}",
        )
    try:
        meta = BatchMeta.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(x) for x in first["loc"]) or "metadata"
        raise WireError("bad_metadata", f"{loc}: {first['msg']}") from None
    if meta.turbine_names is not None and meta.schema_version < NAMES_VERSION:
        raise WireError("bad_metadata", "turbine_names needs schema version 2")
    return meta


def check_timestamps(ts: NDArray[np.float64], time_range: tuple[float, float]) -> None:
    """Every timestamp (shape (n,)) finite and inside ``[low, high)``; raises WireError."""
    low, high = time_range
    ok = np.isfinite(ts) & (ts >= low) & (ts < high)
    if not ok.all():
        bad = float(ts[np.flatnonzero(~ok)[0]])
        raise WireError(
            "bad_timestamp",
            f"{int((~ok).sum())} timestamps outside [{low:g}, {high:g}) s, e.g. {bad!r}",
        )


def ids_of_names(names: list[str]) -> tuple[NDArray[np.int64], TurbineNames]:
    """The ids of a list of k names (shape (k,)) and the map back; raises WireError."""
    known = TurbineNames()
    try:
        known.add(names)
        ids = np.array([turbine_id(n) for n in names], dtype=np.int64)
    except SchemaError as exc:
        raise WireError("bad_turbine_id", str(exc)) from None
    return ids, known


def exact_int(value: object) -> int | None:
    """``value`` as an int64 when it is a JSON integer that fits, else None."""
    if type(value) is int and -(1 << 63) <= value < 1 << 63:
        return value
    return None


def is_number(value: object) -> bool:
    """A JSON number (not a bool, not a string); huge integers count (checked later)."""
    return type(value) is float or type(value) is int


def finite_float(value: float | int) -> float:
    """A JSON number as float64 (inf for an integer too large for it)."""
    try:
        return float(value)
    except OverflowError:
        return math.inf


def version_for(names: TurbineNames | None) -> int:
    """The schema version a producer sends: 2 when its turbines have names, else 1."""
    return NAMES_VERSION if names is not None and len(names) else SCHEMA_VERSION
