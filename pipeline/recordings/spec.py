"""What a recorded sensor file holds: its options, and the chunks it is read in."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field, field_validator

from pipeline.errors import ConfigError

# Default column names of the long format.
TIME_COL = "timestamp"
ID_COL = "turbine_id"
LABEL_COL = "label"
KIND_COL = "fault_kind"


class RecordingSpec(BaseModel):
    """How to read a recorded file (the defaults read this project's own files).

    >>> RecordingSpec(sep=";", time_col="datetime", label_col="anomaly").id_col
    'turbine_id'
    >>> spec = RecordingSpec(sensors="Ba_avg=pitch,P_avg", sentinels={"pitch": -1e9})
    >>> spec.sensors, spec.sentinels
    ((('Ba_avg', 'pitch'), ('P_avg', 'P_avg')), (('pitch', (-1000000000.0,)),))
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    sep: str = Field(",", min_length=1, max_length=1, description="CSV field separator.")
    time_col: str = Field(TIME_COL, description="Timestamp column (epoch seconds or ISO 8601).")
    id_col: str = Field(
        ID_COL, description="Turbine id column; absent from the file: one machine, id 0."
    )
    label_col: str | None = Field(
        None, description=f"Label column (0/1); default {LABEL_COL!r} when present."
    )
    kind_col: str = Field(KIND_COL, description="Fault-kind column, used when present.")
    drop_cols: tuple[str, ...] = Field((), description="Columns to ignore.")
    chunk_rows: int = Field(65_536, ge=1, le=10_000_000, description="Rows per chunk read.")
    max_sensors: int = Field(
        4096,
        ge=1,
        description="Most sensor columns accepted: the models hold (D, D) arrays per turbine, "
        "so a file of thousands of columns would exhaust memory long before it is scored.",
    )
    max_line_bytes: int = Field(
        1 << 20, ge=64, description="Longest CSV line accepted (a guard against garbage)."
    )
    sensors: tuple[tuple[str, str], ...] | None = Field(
        None,
        description="Sensor columns to read, in order, as (column, sensor name) pairs; "
        "None: every numeric column under its own name.  A column may be read twice "
        "under two names.  Also accepted as "
        "'COL[=NAME],...', a list of such items, or a {column: name} table.",
    )
    sentinels: tuple[tuple[str, tuple[float, ...]], ...] = Field(
        (),
        description="Per sensor (its name, or its column), values that mean 'no reading' "
        "(e.g. -273.2 for a temperature): read as missing.  Also accepted as a "
        "{sensor: value or [values]} table or 'SENSOR=V[;V...],...'.",
    )

    attribution: str | None = Field(
        None,
        description="The data's source and licence, shown wherever results from it are "
        "(the detect summary, the report).",
    )

    @field_validator("sensors", mode="before")
    @classmethod
    def _sensor_pairs(cls, raw: object) -> object:
        if raw is None:
            return None
        if isinstance(raw, str):
            raw = [item for item in raw.split(",") if item.strip()]
        if isinstance(raw, dict):
            items = [(str(k), str(v)) for k, v in raw.items()]
        elif isinstance(raw, list | tuple):
            items = []
            for item in raw:
                if isinstance(item, str):
                    col, _, name = item.partition("=")
                    items.append((col.strip(), name.strip() or col.strip()))
                else:
                    items.append(tuple(item))
        else:
            return raw
        if not items:
            raise ConfigError("sensors: no sensor column named")
        for col, name in items:
            if not col or not name:
                raise ConfigError(f"sensors: empty column or name in {col}={name}")
        # A column may be read twice under two names (a wind speed that conditions
        # the power curve and, fleet-relative, is scored itself); a name only once.
        names = [n for _, n in items]
        dup = next((x for x in names if names.count(x) > 1), None)
        if dup is not None:
            raise ConfigError(f"sensors: name {dup!r} given twice")
        if len(set(items)) != len(items):
            col, name = next(x for x in items if items.count(x) > 1)
            raise ConfigError(f"sensors: column {col!r} named {name!r} twice")
        return tuple(items)

    @field_validator("sentinels", mode="before")
    @classmethod
    def _sentinel_pairs(cls, raw: object) -> object:
        if isinstance(raw, str):
            table: dict[str, object] = {}
            for item in raw.split(","):
                if item.strip():
                    key, _, values = item.partition("=")
                    table[key.strip()] = [v for v in values.split(";") if v.strip()]
            raw = table
        if isinstance(raw, dict):
            pairs = []
            for key, values in raw.items():
                vals = values if isinstance(values, list | tuple) else [values]
                try:
                    numbers = tuple(float(v) for v in vals)
                except (TypeError, ValueError):
                    raise ConfigError(f"sentinels: {key}: not a number in {vals!r}") from None
                if not numbers:
                    raise ConfigError(f"sentinels: {key}: no value given")
                pairs.append((str(key), numbers))
            return tuple(pairs)
        return raw


@dataclass(frozen=True)
class Chunk:
    """A run of consecutive readings from a recorded file.

    Attributes
    ----------
    timestamps : ndarray of shape (n,)
        Seconds since the epoch (UTC).
    turbine_ids : ndarray of shape (n,)
    values : ndarray of shape (n, D)
    labels : ndarray of shape (n,), optional
        1 for a reading labelled faulty.
    kinds : ndarray of shape (n,), optional
        The labelled fault kind ("" for none).
    lines : ndarray of shape (n,)
        Line (CSV, 1-based, header = 1) or row (binary, 0-based) of each reading.
    """

    timestamps: NDArray[np.float64]
    turbine_ids: NDArray[np.int64]
    values: NDArray[np.float64]
    labels: NDArray[np.int8] | None
    kinds: NDArray[np.str_] | None
    lines: NDArray[np.int64]

    def __len__(self) -> int:
        return int(self.timestamps.size)

    def take(self, index: NDArray[np.intp] | slice) -> Chunk:
        """The readings at ``index`` (a slice or an index array)."""
        return Chunk(
            self.timestamps[index],
            self.turbine_ids[index],
            self.values[index],
            None if self.labels is None else self.labels[index],
            None if self.kinds is None else self.kinds[index],
            self.lines[index],
        )

    @staticmethod
    def concat(chunks: list[Chunk]) -> Chunk:
        """One chunk holding ``chunks`` in order (they must agree on labels and kinds)."""
        if len(chunks) == 1:
            return chunks[0]
        first = chunks[0]
        return Chunk(
            np.concatenate([c.timestamps for c in chunks]),
            np.concatenate([c.turbine_ids for c in chunks]),
            np.concatenate([c.values for c in chunks]),
            None if first.labels is None else np.concatenate([c.labels for c in chunks]),
            None if first.kinds is None else np.concatenate([c.kinds for c in chunks]),
            np.concatenate([c.lines for c in chunks]),
        )
