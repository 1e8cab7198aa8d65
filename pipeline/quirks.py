"""Data quirks of real SCADA, counted and handled before the engine sees a reading.

Three things real exports do, each counted, none a crash, none learned twice:

``duplicate``
    A second row of one turbine at the time of its latest row (two local
    clock hours that map to one UTC time, an export that repeats a row).
    The first is kept, the others dropped.
``out_of_order``
    A row older than its turbine's latest row: a step back in time.  The
    engine learns each turbine in time order, so the row is dropped.
``sentinel``
    A value that means "no reading" (``-273.2`` deg C: a temperature sensor
    reporting absolute zero), configured per sensor.  It becomes NaN, which
    the engine skips and counts.  Values are matched to a relative 1e-6, the
    precision of the float32 values exports print (``-273.20001``).

:class:`Quirks` keeps, per turbine, the latest time seen (as plain arrays,
:meth:`Quirks.state`), so a stream cut into chunks or Kafka records is
filtered exactly as a whole file.  The pure functions :func:`order_codes` and
:func:`blank_sentinels` do the work.

>>> q = Quirks(("temp", "rpm"), {"temp": (-273.2,)})
>>> from pipeline.recordings.spec import Chunk
>>> c = Chunk(np.array([0.0, 0.0, 60.0, 30.0]), np.array([1, 1, 1, 1]),
...           np.array([[20.0, 1.0], [21.0, 1.0], [-273.20001, 2.0], [5.0, 5.0]]),
...           None, None, np.arange(4))
>>> out = q.apply(c)
>>> out.values.tolist(), q.counts.duplicate, q.counts.out_of_order, q.counts.sentinel
([[20.0, 1.0], [nan, 2.0]], 1, 1, {'temp': 1})
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from pipeline.distinct import distinct_ids
from pipeline.errors import ConfigError
from pipeline.grouping import stable_order
from pipeline.recordings.spec import Chunk, RecordingSpec

F64 = NDArray[np.float64]
I64 = NDArray[np.int64]

KEPT, DUPLICATE, OUT_OF_ORDER = 0, 1, 2
SENTINEL_RTOL = 1e-6


def order_codes(
    timestamps: F64, turbine_ids: I64, last_ids: I64, last_times: F64
) -> tuple[NDArray[np.int8], I64, F64]:
    """Classify each reading against its turbine's latest time, in stream order.

    Parameters
    ----------
    timestamps : ndarray of shape (n,)
    turbine_ids : ndarray of shape (n,)
    last_ids : ndarray of shape (k,)
        Turbines seen before, sorted.
    last_times : ndarray of shape (k,)
        Their latest times.

    Returns
    -------
    codes : ndarray of shape (n,)
        ``KEPT``, ``DUPLICATE`` (the time of the turbine's latest reading) or
        ``OUT_OF_ORDER`` (earlier than it).
    ids, times : ndarrays of shape (k',)
        The updated latest time per turbine (sorted ids).

    >>> codes, ids, times = order_codes(np.array([5.0, 5.0, 4.0, 6.0]), np.array([2, 2, 2, 3]),
    ...                                 np.array([3]), np.array([7.0]))
    >>> codes.tolist(), ids.tolist(), times.tolist()
    ([0, 1, 2, 2], [2, 3], [5.0, 7.0])
    """
    n = timestamps.size
    uniq, inv = distinct_ids(turbine_ids)
    # Each turbine's latest time before this chunk (-inf when new).
    pos = np.searchsorted(last_ids, uniq)
    known = pos < last_ids.size
    known[known] = last_ids[pos[known]] == uniq[known]
    prev = np.full(uniq.size, -np.inf)
    prev[known] = last_times[pos[known]]
    order = stable_order(inv)  # by turbine, each in stream order
    group = inv[order]
    ts = timestamps[order]
    first = np.ones(n, dtype=bool)
    np.not_equal(group[1:], group[:-1], out=first[1:])
    # Each reading's turbine's previous time: its latest before the chunk first.
    before = np.empty(n)
    before[1:] = ts[:-1]
    before[first] = prev[group[first]]
    if not np.all(ts >= before):
        # A step back in time: the running maximum per turbine, in stream order.
        before = _running_before(ts, group, prev)
    sorted_codes = np.where(ts > before, KEPT, np.where(ts == before, DUPLICATE, OUT_OF_ORDER))
    codes = np.empty(n, dtype=np.int8)
    codes[order] = sorted_codes
    latest = prev.copy()
    np.maximum.at(latest, inv, timestamps)
    ids = np.concatenate((last_ids, uniq[~known]))
    times = np.concatenate((last_times, latest[~known]))
    times[pos[known]] = latest[known]
    back = np.argsort(ids, kind="stable")
    return codes, ids[back], times[back]


def _running_before(ts: F64, group: NDArray[np.intp], prev: F64) -> F64:
    """The latest time before each reading of its turbine (readings sorted by turbine, (n,)).

    A running maximum per turbine: rank the times, offset each turbine's ranks
    past the previous turbine's, and take one cumulative max.
    """
    n = ts.size
    values, rank = np.unique(np.concatenate((ts, prev)), return_inverse=True)
    rank = rank.ravel()
    width = values.size + 1
    key = group.astype(np.int64) * width + rank[:n]
    running = np.maximum.accumulate(key)
    before = np.empty(n)
    if n:
        same = np.empty(n, dtype=bool)
        same[0] = False
        same[1:] = group[1:] == group[:-1]
        before[:] = -np.inf
        prior = running[:-1][same[1:]] - group[1:][same[1:]].astype(np.int64) * width
        before[1:][same[1:]] = values[prior]
    return np.maximum(before, prev[group])


def blank_sentinels(values: F64, sentinels: Mapping[int, tuple[float, ...]]) -> tuple[F64, I64]:
    """Readings with sentinel values as NaN, and how many per sensor.

    Parameters
    ----------
    values : ndarray of shape (n, D)
    sentinels : mapping of sensor index to the values that mean "no reading"

    Returns
    -------
    values : ndarray of shape (n, D)
        A copy when anything was blanked, else ``values`` itself.
    counts : ndarray of shape (D,)

    >>> v, c = blank_sentinels(np.array([[1.0, -273.2], [2.0, 3.0]]), {1: (-273.2,)})
    >>> v.tolist(), c.tolist()
    ([[1.0, nan], [2.0, 3.0]], [0, 1])
    """
    counts = np.zeros(values.shape[1], dtype=np.int64)
    out = values
    for j, marks in sentinels.items():  # a loop over the few configured sensors
        col = values[:, j]
        hit = np.zeros(col.shape, dtype=bool)
        for mark in marks:
            if math.isfinite(mark):  # np.isclose(col, mark, rtol, atol=0), without its wrapping
                hit |= np.abs(col - mark) <= SENTINEL_RTOL * abs(mark)
            else:
                hit |= np.isclose(col, mark, rtol=SENTINEL_RTOL, atol=0.0)
        if hit.any():
            if out is values:
                out = values.copy()
            out[hit, j] = np.nan
            counts[j] = int(hit.sum())
    return out, counts


def sentinel_table(
    sentinels: Iterable[tuple[str, tuple[float, ...]]],
    sensors: tuple[str, ...],
    columns: tuple[str, ...] | None = None,
) -> dict[int, tuple[float, ...]]:
    """Sensor index -> sentinel values, from names (or column names, ``columns`` (D,))."""
    table: dict[int, tuple[float, ...]] = {}
    for key, marks in sentinels:
        if key in sensors:
            j = sensors.index(key)
        elif columns is not None and key in columns:
            j = columns.index(key)
        else:
            raise ConfigError(f"sentinels: no sensor {key!r} (sensors: {', '.join(sensors)})")
        table[j] = table.get(j, ()) + tuple(marks)
    return table


@dataclass
class QuirkCounts:
    """What :class:`Quirks` found: readings dropped, and values blanked per sensor."""

    duplicate: int = 0
    out_of_order: int = 0
    sentinel: dict[str, int] = field(default_factory=dict)

    @property
    def sentinels(self) -> int:
        return sum(self.sentinel.values())

    def as_dict(self) -> dict[str, object]:
        return {
            "duplicate": self.duplicate,
            "out_of_order": self.out_of_order,
            "sentinel": dict(self.sentinel),
        }


class Quirks:
    """Drop duplicate and out-of-order readings, blank sentinels; count everything.

    Parameters
    ----------
    sensors : tuple of str
        The D sensor names of the stream.
    sentinels : mapping of sensor name to values, or (name, values) pairs
    columns : tuple of str, optional
        The file columns the sensors were read from, shape (D,): sentinels
        may name those instead.
    """

    def __init__(
        self,
        sensors: tuple[str, ...],
        sentinels: Mapping[str, tuple[float, ...]] | Iterable[tuple[str, tuple[float, ...]]] = (),
        columns: tuple[str, ...] | None = None,
    ) -> None:
        pairs = sentinels.items() if isinstance(sentinels, Mapping) else sentinels
        self.sensors = tuple(sensors)
        self.sentinels = sentinel_table(pairs, self.sensors, columns)
        self.counts = QuirkCounts()
        self.finite = np.zeros(len(self.sensors), dtype=np.int64)
        self._ids = np.zeros(0, dtype=np.int64)
        self._times = np.zeros(0)

    @classmethod
    def for_spec(cls, spec: RecordingSpec, sensors: tuple[str, ...]) -> Quirks:
        """The quirks of a recording read with ``spec`` (its ``sentinels``)."""
        columns = tuple(c for c, _ in spec.sensors) if spec.sensors is not None else None
        return cls(sensors, spec.sentinels, columns)

    def apply(self, chunk: Chunk) -> Chunk:
        """The chunk's readings the engine should see (in order, sentinels as NaN)."""
        if len(chunk) == 0:
            return chunk
        codes, self._ids, self._times = order_codes(
            chunk.timestamps, chunk.turbine_ids, self._ids, self._times
        )
        dropped = np.flatnonzero(codes)
        if dropped.size:
            self.counts.duplicate += int(np.count_nonzero(codes == DUPLICATE))
            self.counts.out_of_order += int(np.count_nonzero(codes == OUT_OF_ORDER))
            chunk = chunk.take(np.flatnonzero(codes == KEPT))
        if self.sentinels:
            values, counts = blank_sentinels(chunk.values, self.sentinels)
            for j in np.flatnonzero(counts).tolist():
                name = self.sensors[j]
                self.counts.sentinel[name] = self.counts.sentinel.get(name, 0) + int(counts[j])
            if values is not chunk.values:
                chunk = Chunk(
                    chunk.timestamps,
                    chunk.turbine_ids,
                    values,
                    chunk.labels,
                    chunk.kinds,
                    chunk.lines,
                )
        self.finite += np.count_nonzero(np.isfinite(chunk.values), axis=0)
        return chunk

    def filter(self, chunks: Iterable[Chunk]) -> Iterator[Chunk]:
        """:meth:`apply` over a stream of chunks (empty results left out)."""
        for chunk in chunks:
            out = self.apply(chunk)
            if len(out):
                yield out

    def unusable(self) -> list[str]:
        """Sensors that had readings but never a usable (finite) one."""
        return [s for s, k in zip(self.sensors, self.finite.tolist(), strict=True) if k == 0]

    # ------------------------------------------------------------------ state
    def state(self) -> dict[str, np.ndarray]:
        """The latest time per turbine, as plain arrays (for a checkpoint)."""
        return {"quirk_ids": self._ids.copy(), "quirk_times": self._times.copy()}

    def restore(self, state: Mapping[str, np.ndarray]) -> None:
        """Continue from :meth:`state` (absent keys: nothing seen yet)."""
        if "quirk_ids" in state:
            self._ids = np.asarray(state["quirk_ids"], dtype=np.int64)
            self._times = np.asarray(state["quirk_times"], dtype=np.float64)
