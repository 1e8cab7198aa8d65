"""Alarm episodes: a turbine's consecutive alarms, less than a gap apart, as one problem.

An operator wants to see one problem lasting two days, not 288 points.  Two
alarms of one turbine belong to the same episode when the later one comes
less than ``gap`` seconds after the episode's end (its latest alarm so far):
``t - end < gap``.  An episode holds its turbine, start and end (first and
last alarm), peak squared distance and its time, number of alarms, summed
per-sensor contributions (the top sensors are the largest sums) and a state:
the state code of its peak alarm (``normal`` unless the caller gives
per-reading codes such as ``stopped``).

**Closing.** An open episode is closed by the turbine's *own* clock: as soon
as a reading of that turbine (alarm or not, any reading passed in) at a time
``t`` with ``t - end >= gap`` arrives, no later alarm can join it.  The
turbine's clock rather than the stream's, so an episode depends on nothing
but its own turbine's readings, as every detector state does (a partition
holding other turbines, a slower producer, a merge: the same episodes).  A
turbine that stops sending keeps its episode open until :meth:`close_all`
(end of a file) or :meth:`EpisodeTracker.expire` with a stream time.

**Batches.** :meth:`EpisodeTracker.update` takes one scored batch as whole
arrays: alarms are sorted by (turbine, time), split into episodes where the
gap to the previous alarm (or the carried episode's end) reaches ``gap``, and
reduced with ``np.maximum.reduceat`` / ``np.add.reduceat``; no loop over
readings or turbines.  The episodes closed do not depend on how the stream
is cut into batches (hypothesis test against a per-reading reference), except
for the rounding of the contribution sums, which are added in another order.

**State.** The episodes still open (at most one per turbine) are the whole
state: :meth:`EpisodeTracker.state` gives them as plain arrays under
``episode_*`` keys (``np.savez``-able, no pickle), so a checkpoint carries the
episode in progress.

>>> tr = EpisodeTracker(("a", "b"), gap=10.0)
>>> t = np.array([0.0, 1.0, 2.0, 30.0])
>>> alarm = np.array([True, True, False, False])
>>> up = tr.update(t, np.zeros(4, int), alarm, np.array([20.0, 30.0, 1, 1]), np.eye(2) * 9)
>>> len(up.opened), len(up.closed)
(1, 1)
>>> ep = up.closed
>>> float(ep.starts[0]), float(ep.ends[0]), float(ep.peak_distances[0]), int(ep.alarms[0])
(0.0, 1.0, 30.0, 2)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import numpy as np
from numpy.typing import ArrayLike, NDArray

from pipeline.errors import StoreError

if TYPE_CHECKING:
    from pipeline.detector import BatchResult

F64 = NDArray[np.float64]
I64 = NDArray[np.int64]

NORMAL = "normal"
TOP_SENSORS = 3
PREFIX = "episode_"

# The per-episode arrays of an Episodes table, in order (state and store files hold these).
EPISODE_FIELDS = (
    "turbine_ids",
    "starts",
    "ends",
    "peak_distances",
    "peak_times",
    "alarms",
    "contributions",
    "states",
)


@dataclass(frozen=True)
class Episodes:
    """A table of alarm episodes, one row each.

    Attributes
    ----------
    turbine_ids : ndarray of shape (k,)
    starts, ends : ndarray of shape (k,)
        Times (epoch seconds) of the first and the last alarm.
    peak_distances : ndarray of shape (k,)
        The largest squared distance among the episode's alarms.
    peak_times : ndarray of shape (k,)
        When it was reached (the first such alarm on ties).
    alarms : ndarray of shape (k,)
        Number of alarms.
    contributions : ndarray of shape (k, D)
        Each sensor's contributions summed over the episode's alarms.
    states : ndarray of shape (k,), str
        The state code of the peak alarm (``normal``, ``stopped``, ...).
    sensors : tuple of str
        The D sensor names.

    Examples
    --------
    >>> e = Episodes(np.array([3]), np.array([10.0]), np.array([70.0]), np.array([41.0]),
    ...              np.array([30.0]), np.array([5]), np.array([[2.0, 50.0, -1.0]]),
    ...              np.array(["normal"]), ("temp", "rpm", "pitch"))
    >>> e.durations, e.top_sensors(), e.ids()
    (array([60.]), [['rpm', 'temp']], ['3:10.0'])
    """

    turbine_ids: I64
    starts: F64
    ends: F64
    peak_distances: F64
    peak_times: F64
    alarms: I64
    contributions: F64
    states: NDArray[np.str_]
    sensors: tuple[str, ...]

    def __len__(self) -> int:
        return int(self.starts.size)

    @property
    def durations(self) -> F64:
        """``ends - starts`` in seconds, shape (k,)."""
        return self.ends - self.starts

    @staticmethod
    def empty(sensors: Sequence[str]) -> Episodes:
        z = np.zeros(0)
        zi = np.zeros(0, dtype=np.int64)
        return Episodes(
            zi, z, z, z, z, zi, np.zeros((0, len(sensors))), np.zeros(0, np.str_), tuple(sensors)
        )

    def select(self, index: NDArray[np.intp] | NDArray[np.bool_]) -> Episodes:
        return Episodes(
            self.turbine_ids[index],
            self.starts[index],
            self.ends[index],
            self.peak_distances[index],
            self.peak_times[index],
            self.alarms[index],
            self.contributions[index],
            self.states[index],
            self.sensors,
        )

    @staticmethod
    def concat(parts: Sequence[Episodes], sensors: Sequence[str]) -> Episodes:
        parts = [p for p in parts if len(p)]
        if not parts:
            return Episodes.empty(sensors)
        if len(parts) == 1:
            return parts[0]
        arrays = {f: np.concatenate([getattr(p, f) for p in parts]) for f in EPISODE_FIELDS}
        return Episodes(**arrays, sensors=tuple(sensors))

    def chronological(self) -> Episodes:
        """The same episodes by (start, turbine)."""
        return self.select(np.lexsort((self.turbine_ids, self.starts)))

    def top_sensors(self, n: int = TOP_SENSORS) -> list[list[str]]:
        """Per episode, the (up to) ``n`` sensors of largest positive summed contribution."""
        if len(self) == 0:
            return []
        order = np.argsort(-self.contributions, axis=1, kind="stable")[:, :n]
        positive = np.take_along_axis(self.contributions, order, axis=1) > 0
        return [
            [self.sensors[j] for j, p in zip(row, ok, strict=True) if p]
            for row, ok in zip(order.tolist(), positive.tolist(), strict=True)
        ]

    def ids(self) -> list[str]:
        """Deterministic episode ids ``turbine:start`` (one turbine's episodes never overlap)."""
        return [
            f"{u}:{s!r}"
            for u, s in zip(self.turbine_ids.tolist(), self.starts.tolist(), strict=True)
        ]

    # ------------------------------------------------------------------ arrays
    def arrays(self, prefix: str = "") -> dict[str, np.ndarray]:
        """The columns as plain arrays (``np.savez``-able), keys ``prefix + field``."""
        out = {prefix + f: np.asarray(getattr(self, f)) for f in EPISODE_FIELDS}
        out[prefix + "sensors"] = np.array(self.sensors, dtype=np.str_)
        return out

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray], prefix: str = "") -> Episodes:
        """Rebuild from :meth:`arrays`; shapes are checked."""
        sensors = tuple(str(s) for s in np.asarray(arrays[prefix + "sensors"]).tolist())
        cols = {f: np.asarray(arrays[prefix + f]) for f in EPISODE_FIELDS}
        k = cols["starts"].shape[0]
        d = len(sensors)
        cols["contributions"] = cols["contributions"].reshape(k, d).astype(np.float64)
        for f in EPISODE_FIELDS:
            if cols[f].shape[0] != k:
                raise ValueError(f"episode arrays: {f} has {cols[f].shape[0]} rows, not {k}")
        return cls(
            cols["turbine_ids"].astype(np.int64),
            cols["starts"].astype(np.float64),
            cols["ends"].astype(np.float64),
            cols["peak_distances"].astype(np.float64),
            cols["peak_times"].astype(np.float64),
            cols["alarms"].astype(np.int64),
            cols["contributions"],
            cols["states"].astype(np.str_),
            sensors,
        )

    def save(self, file: str | Path | BinaryIO) -> None:
        """Write as an uncompressed ``.npz`` (no object arrays, no pickle)."""
        np.savez(file, **self.arrays())  # type: ignore[arg-type]

    @classmethod
    def load(cls, path: str | Path) -> Episodes:
        """Read a file written by :meth:`save` (``allow_pickle=False``)."""
        try:
            with np.load(path, allow_pickle=False) as f:
                return cls.from_arrays({k: f[k] for k in f.files})
        except (OSError, ValueError, KeyError) as exc:
            raise StoreError(f"{path}: episodes unreadable ({exc})") from None


@dataclass(frozen=True)
class EpisodeUpdate:
    """What one batch did to the episodes.

    Attributes
    ----------
    opened : Episodes
        Episodes whose first alarm is in this batch, as they stand at its
        end (an episode opened and closed in the same batch is in both).
    closed : Episodes
        Episodes closed by this batch: complete, by (start, turbine).
    """

    opened: Episodes
    closed: Episodes


# ---------------------------------------------------------------------- pure maths
def _first_in_segments(mask: NDArray[np.bool_], segment: I64) -> NDArray[np.intp]:
    """Position of the first True of each segment, for a mask True somewhere in every segment."""
    idx = np.flatnonzero(mask)
    return idx[_starts_of(segment[idx])]


def _starts_of(keys: NDArray[np.int64]) -> NDArray[np.bool_]:
    """True where a sorted key differs from the one before (and at 0), shape (n,)."""
    out = np.empty(keys.size, dtype=bool)
    if keys.size:
        out[0] = True
        np.not_equal(keys[1:], keys[:-1], out=out[1:])
    return out


def closed_by(
    turbines: I64, ends: F64, timestamps: F64, turbine_ids: I64, gap: float
) -> NDArray[np.bool_]:
    """Which open episodes (m,) the readings (n,) close: ``t - end >= gap`` for a reading
    of the episode's turbine.

    ``turbines`` (m,) sorted and distinct (one open episode per turbine).  Only
    readings late enough to close the earliest-ending episode are looked up,
    so a batch that closes nothing costs one pass over its times.

    >>> closed_by(np.array([1, 2, 9]), np.array([0.0, 0.0, 0.0]),
    ...           np.array([1.0, 5.0, 3.0]), np.array([2, 1, 2]), 4.0)
    array([ True, False, False])
    """
    m = turbines.size
    out = np.zeros(m, dtype=bool)
    if m == 0 or timestamps.size == 0:
        return out
    late = np.flatnonzero((timestamps - ends.min()) >= gap)  # no false negatives: min end
    if late.size == 0:
        return out
    ids = turbine_ids[late]
    pos = np.searchsorted(turbines, ids)
    pos[pos == m] = 0
    ok = (turbines[pos] == ids) & ((timestamps[late] - ends[pos]) >= gap)
    out[pos[ok]] = True
    return out


@lru_cache(maxsize=64)
def _empty(sensors: tuple[str, ...]) -> Episodes:
    return Episodes.empty(sensors)


def _pick(every: Episodes, mask: NDArray[np.bool_], by_start: bool) -> Episodes:
    """The episodes where ``mask``, by (start, turbine) or by turbine, in one selection."""
    idx = np.flatnonzero(mask)
    if idx.size == 0:
        return _empty(every.sensors)
    if by_start:
        idx = idx[np.lexsort((every.turbine_ids[idx], every.starts[idx]))]
    else:
        idx = idx[np.argsort(every.turbine_ids[idx], kind="stable")]
    return every.select(idx)


def advance_episodes(
    open_episodes: Episodes,
    timestamps: F64,
    turbine_ids: I64,
    is_anomaly: NDArray[np.bool_],
    distances: F64,
    contributions: F64,
    states: NDArray[np.str_] | None,
    gap: float,
) -> tuple[Episodes, Episodes, Episodes]:
    """One batch's alarms grouped into episodes: (opened, closed, still open).

    Parameters
    ----------
    open_episodes : Episodes
        At most one per turbine, sorted by turbine: those carried in.
    timestamps, turbine_ids, is_anomaly, distances : ndarray of shape (n,)
    contributions : ndarray of shape (k, D)
        Rows for the anomalies, in batch order (``k = is_anomaly.sum()``).
    states : ndarray of str, shape (n,), or None (all ``normal``)
    gap : float
        Seconds: an alarm less than ``gap`` after an episode's end joins it.

    Returns
    -------
    opened, closed, still_open : Episodes
        ``still_open`` sorted by turbine, the others by (start, turbine).
    """
    carried = open_episodes
    sensors = carried.sensors
    hit = np.flatnonzero(is_anomaly)
    k, m = hit.size, len(carried)
    if k == 0:  # the usual batch: only the clocks move
        if m == 0:
            return carried, carried, carried
        done = closed_by(carried.turbine_ids, carried.ends, timestamps, turbine_ids, gap)
        if not done.any():
            return _empty(sensors), _empty(sensors), carried
        return _empty(sensors), _pick(carried, done, True), _pick(carried, ~done, False)

    perm = np.lexsort((timestamps[hit], turbine_ids[hit]))  # stable: ties keep batch order
    order = hit[perm]
    t, u, d = timestamps[order], turbine_ids[order], distances[order]
    s = np.full(k, NORMAL) if states is None else states[order]
    c = contributions[perm]

    # The carried episode of each alarm's turbine, if any; where a new episode begins.
    first = _starts_of(u)
    if m:
        pos = np.searchsorted(carried.turbine_ids, u)
        pos[pos == m] = 0
        has = carried.turbine_ids[pos] == u
        carried_end = np.where(has, carried.ends[pos], -np.inf)
    else:
        pos = np.zeros(k, dtype=np.intp)
        carried_end = np.full(k, -np.inf)
    previous = np.empty(k)
    previous[0] = -np.inf
    previous[1:] = t[:-1]
    previous = np.where(first, carried_end, np.maximum(previous, carried_end))
    breaks = (t - previous) >= gap
    begins = breaks | first
    starts_at = np.flatnonzero(begins)
    segment = np.cumsum(begins) - 1

    peak = np.maximum.reduceat(d, starts_at)
    at_peak = _first_in_segments(d == peak[segment], segment)
    seg_start = t[starts_at]
    seg_end = np.maximum.reduceat(t, starts_at)
    seg_peak_t = t[at_peak]
    seg_state = s[at_peak]
    counts = np.diff(np.append(starts_at, k)).astype(np.int64)
    sums = np.add.reduceat(c, starts_at, axis=0)

    # Segments continuing a carried episode take its start, alarms, sums and (if higher) peak.
    j = np.flatnonzero(first[starts_at] & ~breaks[starts_at])
    untouched = np.ones(m, dtype=bool)
    if j.size:
        cj = pos[starts_at[j]]
        untouched[cj] = False  # replaced by the segment that continues it
        old = carried.peak_distances[cj] >= peak[j]
        seg_start[j] = carried.starts[cj]
        seg_end[j] = np.maximum(carried.ends[cj], seg_end[j])
        peak[j] = np.where(old, carried.peak_distances[cj], peak[j])
        seg_peak_t[j] = np.where(old, carried.peak_times[cj], seg_peak_t[j])
        seg_state = seg_state.astype(np.result_type(seg_state, carried.states))
        seg_state[j] = np.where(old, carried.states[cj], seg_state[j])
        counts[j] += carried.alarms[cj]
        sums[j] = carried.contributions[cj] + sums[j]
    new = np.ones(starts_at.size, dtype=bool)
    new[j] = False

    every = Episodes(
        np.concatenate([carried.turbine_ids, u[starts_at]]),
        np.concatenate([carried.starts, seg_start]),
        np.concatenate([carried.ends, seg_end]),
        np.concatenate([carried.peak_distances, peak]),
        np.concatenate([carried.peak_times, seg_peak_t]),
        np.concatenate([carried.alarms, counts]),
        np.concatenate([carried.contributions, sums]),
        np.concatenate([carried.states, seg_state]),
        sensors,
    )
    valid = np.concatenate([untouched, np.ones(starts_at.size, dtype=bool)])
    opened = np.concatenate([np.zeros(m, dtype=bool), new])
    # A turbine's episodes but its last are closed: an alarm came at least `gap` after
    # each (and a reading of that turbine at least as late). Its last one is looked up.
    idx = np.flatnonzero(valid)
    idx = idx[np.lexsort((every.starts[idx], every.turbine_ids[idx]))]
    last = _starts_of(every.turbine_ids[idx][::-1])[::-1]
    done = np.zeros(len(every), dtype=bool)
    done[idx[~last]] = True
    tail = idx[last]
    done[tail] = closed_by(every.turbine_ids[tail], every.ends[tail], timestamps, turbine_ids, gap)
    return (
        _pick(every, opened, True),
        _pick(every, done, True),
        _pick(every, valid & ~done, False),
    )


def _advance_compiled(
    open_episodes: Episodes,
    timestamps: F64,
    turbine_ids: I64,
    is_anomaly: NDArray[np.bool_],
    distances: F64,
    contributions: F64,
    states: NDArray[np.str_] | None,
    gap: float,
) -> tuple[Episodes, Episodes, Episodes]:
    """:func:`advance_episodes` by the compiled kernel (a batch with at least one alarm)."""
    from pipeline.batch_math import compiled_kernels

    kernels = compiled_kernels()
    if kernels is None:  # pragma: no cover - numba is a dependency
        raise RuntimeError("a compiled episode tracker, and numba is not importable")
    carried, sensors, m = open_episodes, open_episodes.sensors, len(open_episodes)
    if states is None and not (carried.states != NORMAL).any():
        table = np.array([NORMAL])
        carried_codes = np.zeros(m, np.int64)
        codes = np.zeros(timestamps.size, np.int64)
    else:
        named = np.full(timestamps.size, NORMAL) if states is None else states
        table, inverse = np.unique(np.concatenate([carried.states, named]), return_inverse=True)
        carried_codes, codes = inverse[:m].astype(np.int64), inverse[m:].astype(np.int64)
    every_columns, opened, closed, still_open = kernels.advance_episodes_compiled(
        carried.turbine_ids,
        carried.starts,
        carried.ends,
        carried.peak_distances,
        carried.peak_times,
        carried.alarms,
        np.ascontiguousarray(carried.contributions, dtype=np.float64),
        carried_codes,
        timestamps,
        turbine_ids,
        is_anomaly,
        distances,
        np.ascontiguousarray(contributions, dtype=np.float64),
        codes,
        float(gap),
    )
    turbines, starts, ends, peaks, peak_times, alarms, sums, state_codes = every_columns
    every = Episodes(
        turbines, starts, ends, peaks, peak_times, alarms, sums, table[state_codes], sensors
    )

    def pick(rows: NDArray[np.intp]) -> Episodes:
        return every.select(rows) if rows.size else _empty(sensors)

    return pick(opened), pick(closed), pick(still_open)


def _state_names(
    states: ArrayLike, names: Sequence[str] | None, *, names_wanted: bool = True
) -> NDArray[np.str_]:
    """Per-reading state names (n,) from names or from integer codes into ``names``.

    With ``names_wanted=False`` integer codes are only checked (and returned as
    they are).

    >>> _state_names(np.array([0, 2, 0], np.int8), ("normal", "x", "stopped")).tolist()
    ['normal', 'stopped', 'normal']
    """
    arr = np.asarray(states).ravel()
    if arr.dtype.kind not in "iu":
        return arr.astype(np.str_) if names_wanted else arr
    size = len(names) if names is not None else 1
    if arr.size and (int(arr.min()) < 0 or int(arr.max()) >= size):
        raise ValueError(f"state codes {int(arr.min())}..{int(arr.max())} for {size} names")
    if not names_wanted:
        return arr
    table = np.asarray(names if names is not None else (NORMAL,), dtype=np.str_)
    return table[arr]


# ---------------------------------------------------------------------- the tracker
class EpisodeTracker:
    """Streams scored batches into alarm episodes; the open episodes are its state.

    Parameters
    ----------
    sensors : sequence of str
        The D sensor names (columns of the contributions).
    gap : float
        Seconds; alarms of one turbine less than ``gap`` apart form one episode.
    compiled : bool, optional
        Group a batch's alarms with the compiled kernel
        (:mod:`pipeline.kernels.episodes`), the same episodes as the NumPy function
        :func:`advance_episodes`, its oracle.

    Examples
    --------
    >>> tr = EpisodeTracker(("a",), gap=5.0)
    >>> up = tr.update([0.0, 1.0], [7, 7], [True, True], [12.0, 15.0], [[12.0], [15.0]])
    >>> len(up.opened), len(up.closed), len(tr.in_progress)
    (1, 0, 1)
    >>> done = tr.close_all()
    >>> int(done.alarms[0]), float(done.peak_times[0]), done.top_sensors()
    (2, 1.0, [['a']])
    """

    def __init__(self, sensors: Sequence[str], gap: float, compiled: bool = False) -> None:
        if not gap > 0:
            raise ValueError(f"episode gap must be positive seconds, got {gap!r}")
        self.sensors = tuple(sensors)
        self.gap = float(gap)
        # The compiled kernel for batches with alarms (its detector's choice); NumPy's otherwise.
        self.compiled = compiled
        self._open = Episodes.empty(self.sensors)

    @property
    def in_progress(self) -> Episodes:
        """The episodes still open, at most one per turbine, by turbine."""
        return self._open

    def update(
        self,
        timestamps: ArrayLike,
        turbine_ids: ArrayLike,
        is_anomaly: ArrayLike,
        distances: ArrayLike,
        contributions: ArrayLike,
        states: ArrayLike | None = None,
        state_names: Sequence[str] | None = None,
    ) -> EpisodeUpdate:
        """Add one scored batch.

        Parameters
        ----------
        timestamps, turbine_ids, is_anomaly, distances : array-like of shape (n,)
            Every reading of the batch (non-alarms move the turbines' clocks).
        contributions : array-like of shape (k, D)
            The anomalies' contributions, in batch order (``k = sum(is_anomaly)``).
        states : array-like of shape (n,), optional
            Each reading's state (default all ``normal``): names (str), or
            integer codes into ``state_names`` (as ``BatchResult.states``).
        state_names : sequence of str, optional
            The names of integer ``states`` (default ``("normal",)``).
        """
        t = np.asarray(timestamps, dtype=np.float64).ravel()
        ids = np.asarray(turbine_ids, dtype=np.int64).ravel()
        alarm = np.asarray(is_anomaly, dtype=bool).ravel()
        dist = np.asarray(distances, dtype=np.float64).ravel()
        n, k, dims = t.size, int(np.count_nonzero(alarm)), len(self.sensors)
        contrib = np.asarray(contributions, dtype=np.float64).reshape(-1, dims)
        codes = None
        if states is not None:
            raw_states = np.asarray(states).ravel()
            if raw_states.size != n:
                raise ValueError(f"states has shape ({raw_states.size},), timestamps ({n},)")
            # Only alarms carry a state into an episode: without any, the codes are
            # checked but not named.
            named = _state_names(raw_states, state_names, names_wanted=k > 0)
            codes = named if k else None
        for name, arr in (("turbine_ids", ids), ("is_anomaly", alarm), ("distances", dist)):
            if arr.size != n:
                raise ValueError(f"{name} has shape ({arr.size},), timestamps ({n},)")
        if contrib.shape[0] != k:
            raise ValueError(f"contributions has shape {contrib.shape}, expected ({k}, {dims})")
        advance = advance_episodes
        if self.compiled and k:
            advance = _advance_compiled
        opened, closed, self._open = advance(
            self._open, t, ids, alarm, dist, contrib, codes, self.gap
        )
        return EpisodeUpdate(opened, closed)

    def update_result(self, result: BatchResult) -> EpisodeUpdate:
        """:meth:`update` from a detector's ``BatchResult`` (with its ``states``, if any).

        The engine never scores a reading outside ``learn_when`` (a stop, say),
        so its alarms, and the episodes made of them, are in state ``normal``.
        """
        return self.update(
            result.timestamps,
            result.turbine_ids,
            result.is_anomaly,
            result.distances,
            result.contributions,
            result.states if result.states is not None and result.states.any() else None,
            result.state_names,
        )

    def expire(self, now: float) -> Episodes:
        """Close the open episodes whose end is at least ``gap`` before ``now`` (stream time)."""
        done = (float(now) - self._open.ends) >= self.gap
        closed = self._open.select(done)
        self._open = self._open.select(~done)
        return closed.chronological()

    def close_all(self) -> Episodes:
        """Close every open episode (end of a recorded file)."""
        closed, self._open = self._open, Episodes.empty(self.sensors)
        return closed.chronological()

    def merge(self, other: EpisodeTracker) -> EpisodeTracker:
        """Take over another tracker's open episodes (disjoint turbines: other partitions)."""
        if other.sensors != self.sensors or other.gap != self.gap:
            raise ValueError("episode trackers with different sensors or gaps do not merge")
        both = Episodes.concat([self._open, other._open], self.sensors)
        if np.unique(both.turbine_ids).size != len(both):
            raise ValueError("both trackers have an open episode for the same turbine")
        self._open = both.select(np.argsort(both.turbine_ids, kind="stable"))
        return self

    # ------------------------------------------------------------------ state
    def state(self) -> dict[str, np.ndarray]:
        """Plain arrays (``np.savez``-able): ``episode_gap``, ``episode_sensors`` and the open
        episodes' columns ``episode_turbine_ids``, ``episode_starts``, ``episode_ends``,
        ``episode_peak_distances``, ``episode_peak_times``, ``episode_alarms``,
        ``episode_contributions`` (m, D), ``episode_states``."""
        return {**self._open.arrays(PREFIX), PREFIX + "gap": np.asarray(self.gap)}

    @classmethod
    def from_state(
        cls, state: Mapping[str, np.ndarray], gap: float | None = None
    ) -> EpisodeTracker:
        """Rebuild from :meth:`state` (other keys, e.g. a detector's, are ignored).

        ``gap`` replaces the saved gap (a configuration changed across a
        restart applies from the next batch on); default the saved one.
        """
        episodes = Episodes.from_arrays(state, PREFIX)
        saved = float(np.asarray(state[PREFIX + "gap"]))
        out = cls(episodes.sensors, saved if gap is None else gap)
        out._open = episodes.select(np.argsort(episodes.turbine_ids, kind="stable"))
        return out


def own_episode_starts(
    episodes: Episodes, turbines: ArrayLike, times: ArrayLike, gap: float
) -> NDArray[np.float64]:
    """When the episode holding each anomaly began, shape (q,).

    The anomaly of ``turbines[i]`` at ``times[i]`` belongs to the episode of
    that turbine spanning its time; with none recorded (a store written
    without episodes), its episode is taken to start ``gap`` seconds
    earlier.

    >>> eps = Episodes(np.array([3]), np.array([100.0]), np.array([500.0]), np.array([40.0]),
    ...                np.array([300.0]), np.array([9]), np.zeros((1, 1)), np.array(["normal"]),
    ...                ("a",))
    >>> own_episode_starts(eps, [3, 3, 4], [300.0, 900.0, 300.0], 60.0).tolist()
    [100.0, 840.0, 240.0]
    """
    t = np.asarray(turbines, dtype=np.int64).reshape(-1)
    when = np.asarray(times, dtype=np.float64).reshape(-1)
    out = when - float(gap)
    for i in range(t.size):  # a loop over the few queried anomalies
        hold = (
            (episodes.turbine_ids == t[i])
            & (episodes.starts <= when[i])
            & (episodes.ends >= when[i])
        )
        if hold.any():
            out[i] = float(episodes.starts[hold].min())
    return out
