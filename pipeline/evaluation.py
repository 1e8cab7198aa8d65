"""Point-wise detection scores as SKAB defines them, plus detection delay."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

if TYPE_CHECKING:
    from pipeline.recordings.spec import Chunk


@dataclass
class Confusion:
    """Summed point-wise counts and the scores derived from them.

    >>> c = Confusion(tp=8, fp=2, fn=2, tn=88)
    >>> round(c.f1, 3), round(c.far, 3), round(c.mar, 3)
    (0.8, 2.222, 20.0)
    """

    tp: int = 0
    fp: int = 0
    fn: int = 0
    tn: int = 0
    delays: tuple[float, ...] = ()
    missed_faults: int = 0
    # Each fault's kind and whether it was detected (with a kind column; see DelayTracker).
    fault_kinds: tuple[tuple[str, bool], ...] = ()

    def merge(self, other: Confusion) -> None:
        """Add another stream's counts and delays (streams are evaluated separately)."""
        self.tp += other.tp
        self.fp += other.fp
        self.fn += other.fn
        self.tn += other.tn
        self.delays += other.delays
        self.missed_faults += other.missed_faults
        self.fault_kinds += other.fault_kinds

    def by_kind(self) -> dict[str, tuple[int, int]]:
        """Faults detected and faults, per fault kind, sorted by kind.

        >>> Confusion(fault_kinds=(("drift", True), ("spike", False), ("drift", False))).by_kind()
        {'drift': (1, 2), 'spike': (0, 1)}
        """
        out: dict[str, tuple[int, int]] = {}
        for kind, detected in self.fault_kinds:
            hit, total = out.get(kind, (0, 0))
            out[kind] = (hit + int(detected), total + 1)
        return dict(sorted(out.items()))

    def add(self, labels: NDArray[np.bool_], alarms: NDArray[np.bool_]) -> None:
        """Count one stream's labels (n,) against its alarms (n,)."""
        self.tp += int(np.count_nonzero(labels & alarms))
        self.fp += int(np.count_nonzero(~labels & alarms))
        self.fn += int(np.count_nonzero(labels & ~alarms))
        self.tn += int(np.count_nonzero(~labels & ~alarms))

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else math.nan

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else math.nan

    @property
    def f1(self) -> float:
        """SKAB's F1: TP / (TP + (FN + FP) / 2)."""
        denom = self.tp + (self.fn + self.fp) / 2
        return self.tp / denom if denom else math.nan

    @property
    def far(self) -> float:
        """False alarm rate, percent of normal readings flagged."""
        return 100.0 * self.fp / (self.fp + self.tn) if self.fp + self.tn else math.nan

    @property
    def mar(self) -> float:
        """Missed alarm rate, percent of faulty readings not flagged."""
        return 100.0 * self.fn / (self.fn + self.tp) if self.fn + self.tp else math.nan

    @property
    def mean_delay(self) -> float:
        return float(np.mean(self.delays)) if self.delays else math.nan

    def as_dict(self) -> dict[str, float | int]:
        return {
            "precision": self.precision,
            "recall": self.recall,
            "f1": self.f1,
            "far": self.far,
            "mar": self.mar,
            "mean_detection_delay_seconds": self.mean_delay,
            "faults": len(self.delays) + self.missed_faults,
            "faults_missed": self.missed_faults,
            "tp": self.tp,
            "fp": self.fp,
            "fn": self.fn,
            "tn": self.tn,
        }


class DelayTracker:
    """Detection delay of each labelled fault, streamed batch by batch.

    A fault is a run of labelled readings of one turbine; its delay is the
    time from its first reading to its first alarm.  Runs may span batches:
    the open run of each turbine is carried over.  Given the readings' fault kinds,
    each fault's kind (that of its first reading) and whether it was
    detected are kept in ``kinds``, in the order the faults end.

    >>> tr = DelayTracker()
    >>> lab = np.array([0, 1, 1, 1], bool)
    >>> tr.update(np.arange(4.0), np.zeros(4, int), lab, np.array([0, 0, 0, 1], bool))
    >>> tr.update(np.array([4.0]), np.zeros(1, int), np.array([0], bool), np.array([0], bool))
    >>> tr.delays, tr.missed
    ([2.0], 0)
    """

    def __init__(self) -> None:
        self.delays: list[float] = []
        self.missed = 0
        self.kinds: list[tuple[str, bool]] = []
        self._open: dict[int, tuple[float, bool, str]] = {}  # turbine -> (onset, detected, kind)

    def update(
        self,
        timestamps: NDArray[np.float64],
        turbine_ids: NDArray[np.int64],
        labels: NDArray[np.bool_],
        alarms: NDArray[np.bool_],
        kinds: NDArray[np.str_] | None = None,
    ) -> None:
        """Add one batch (arrays of shape (n,), in stream order; ``kinds`` "" when none)."""
        if timestamps.size == 0:
            return
        order = np.lexsort((np.arange(timestamps.size), turbine_ids))
        t, ids = timestamps[order], turbine_ids[order]
        lab, al = labels[order], alarms[order]
        kind = None if kinds is None else np.asarray(kinds)[order]
        first = np.r_[True, ids[1:] != ids[:-1]]
        last = np.r_[ids[1:] != ids[:-1], True]
        # Loop over the turbines present (not readings) to join runs across batches.
        for i in np.flatnonzero(first).tolist():
            tid = int(ids[i])
            if tid in self._open and not lab[i]:
                self._close(tid)
        start = lab & (first | ~np.r_[False, lab[:-1]])
        carried = start & first & np.array([int(x) in self._open for x in ids.tolist()])
        run = np.cumsum(start) - 1
        n_runs = int(start.sum())
        if n_runs == 0:
            return
        onset = t[start].copy()
        detected_before = np.zeros(n_runs, dtype=bool)
        run_kind = [""] * n_runs if kind is None else [str(k) for k in kind[start].tolist()]
        for r in np.flatnonzero(carried[start]).tolist():
            tid = int(ids[start][r])
            onset[r], detected_before[r], run_kind[r] = self._open.pop(tid)
        first_alarm = np.full(n_runs, np.inf)
        hit = lab & al
        np.minimum.at(first_alarm, run[hit], t[hit])
        ends_open = np.zeros(n_runs, dtype=bool)
        ends_open[run[lab & last]] = True
        for r in range(n_runs):  # loop over fault runs, not readings
            detected = bool(detected_before[r])
            if not detected and np.isfinite(first_alarm[r]):
                self.delays.append(float(first_alarm[r] - onset[r]))
                detected = True
            if ends_open[r]:
                self._open[int(ids[start][r])] = (float(onset[r]), detected, run_kind[r])
            else:
                self._end(run_kind[r], detected)

    def _close(self, turbine: int) -> None:
        _, detected, kind = self._open.pop(turbine)
        self._end(kind, detected)

    def _end(self, kind: str, detected: bool) -> None:
        self.kinds.append((kind, detected))
        if not detected:
            self.missed += 1

    def finish(self) -> None:
        """Close the runs still open at the end of the stream."""
        for tid in list(self._open):
            self._close(tid)


def alarm_mask(
    timestamps: NDArray[np.float64],
    turbine_ids: NDArray[np.int64],
    alarm_times: NDArray[np.float64],
    alarm_turbines: NDArray[np.int64],
) -> NDArray[np.bool_]:
    """Which readings (n,) have an alarm among (timestamp, turbine) pairs (k,), to the ms.

    >>> alarm_mask(np.array([1.0, 2.0, 2.0]), np.array([5, 5, 6]), np.array([2.0]), np.array([6]))
    array([False, False,  True])
    """
    if alarm_times.size == 0:
        return np.zeros(timestamps.size, dtype=bool)
    t0 = min(float(timestamps.min(initial=np.inf)), float(alarm_times.min()))
    span = 1 << 40  # ms: 34 years per turbine id

    def key(t: NDArray[np.float64], ids: NDArray[np.int64]) -> NDArray[np.int64]:
        return ids.astype(np.int64) * span + np.round((t - t0) * 1000).astype(np.int64)

    alarms = np.sort(key(alarm_times, alarm_turbines))
    k = key(timestamps, turbine_ids)
    pos = np.minimum(np.searchsorted(alarms, k), alarms.size - 1)
    return alarms[pos] == k


# ---------------------------------------------------------------------- episodes
SECONDS_PER_MONTH = 365.25 / 12 * 86_400.0


class LabelRuns:
    """Labelled faults as runs of consecutive label-1 readings per turbine, streamed.

    A run ends at the turbine's next unlabelled reading; runs may span
    batches (the open run of each turbine is carried).  The scored readings'
    time span per turbine is kept too, for :func:`turbine_months`.

    >>> runs = LabelRuns()
    >>> runs.update(np.arange(6.0), np.zeros(6, int), np.array([0, 1, 1, 0, 1, 1], bool))
    >>> runs.update(np.array([6.0, 7.0]), np.zeros(2, int), np.array([1, 0], bool))
    >>> runs.finish()
    (array([0, 0]), array([1., 4.]), array([2., 6.]))
    """

    def __init__(self) -> None:
        z = np.zeros(0)
        self._open = (np.zeros(0, dtype=np.int64), z, z)  # by turbine: id, start, end
        self._done: list[tuple[NDArray[np.int64], NDArray[np.float64], NDArray[np.float64]]] = []
        self.covered_turbines = np.zeros(0, dtype=np.int64)
        self.first_seen = z
        self.last_seen = z

    def update(
        self,
        timestamps: NDArray[np.float64],
        turbine_ids: NDArray[np.int64],
        labels: NDArray[np.bool_],
    ) -> None:
        """Add one batch of scored readings (arrays of shape (n,), in stream order)."""
        if timestamps.size == 0:
            return
        self._cover(timestamps, turbine_ids)
        order = np.lexsort((timestamps, turbine_ids))
        t, ids, lab = timestamps[order], turbine_ids[order], labels[order].astype(bool)
        first = np.r_[True, ids[1:] != ids[:-1]]
        last = np.r_[ids[1:] != ids[:-1], True]
        o_ids, o_start, o_end = self._open
        pos = np.minimum(np.searchsorted(o_ids, ids[first]), max(o_ids.size - 1, 0))
        has = (o_ids[pos] == ids[first]) if o_ids.size else np.zeros(first.sum(), bool)
        continues = has & lab[first]
        ended = has & ~lab[first]
        self._done.append((o_ids[pos[ended]], o_start[pos[ended]], o_end[pos[ended]]))
        seen = np.zeros(o_ids.size, dtype=bool)
        seen[pos[has]] = True
        starts = lab & (first | ~np.r_[False, lab[:-1]])
        ends = lab & (last | ~np.r_[lab[1:], False])
        r_ids, r_start, r_end = ids[starts], t[starts].copy(), t[ends]
        carried = np.zeros(t.size, dtype=bool)
        carried[np.flatnonzero(first)[continues]] = True
        r_start[carried[starts]] = o_start[pos[continues]]
        still = (ends & last)[ends]
        self._done.append((r_ids[~still], r_start[~still], r_end[~still]))
        keep = ~seen
        ids_open = np.r_[o_ids[keep], r_ids[still]]
        order_open = np.argsort(ids_open, kind="stable")
        self._open = (
            ids_open[order_open],
            np.r_[o_start[keep], r_start[still]][order_open],
            np.r_[o_end[keep], r_end[still]][order_open],
        )

    def _cover(self, timestamps: NDArray[np.float64], turbine_ids: NDArray[np.int64]) -> None:
        ids = np.r_[self.covered_turbines, turbine_ids]
        turbines, inverse = np.unique(ids, return_inverse=True)
        lo = np.full(turbines.size, np.inf)
        hi = np.full(turbines.size, -np.inf)
        np.minimum.at(lo, inverse.ravel(), np.r_[self.first_seen, timestamps])
        np.maximum.at(hi, inverse.ravel(), np.r_[self.last_seen, timestamps])
        self.covered_turbines, self.first_seen, self.last_seen = turbines, lo, hi

    def finish(self) -> tuple[NDArray[np.int64], NDArray[np.float64], NDArray[np.float64]]:
        """Close the open runs; every run as (turbine (r,), first (r,), last (r,)) by start."""
        self._done.append(self._open)
        self._open = (np.zeros(0, dtype=np.int64), np.zeros(0), np.zeros(0))
        ids = np.concatenate([d[0] for d in self._done]).astype(np.int64)
        start = np.concatenate([d[1] for d in self._done]).astype(np.float64)
        end = np.concatenate([d[2] for d in self._done]).astype(np.float64)
        self._done = [(ids, start, end)]
        order = np.lexsort((ids, start))
        return ids[order], start[order], end[order]

    @property
    def turbine_months(self) -> float:
        """Turbine-months covered: each turbine's first-to-last scored time, summed."""
        return float(np.sum(self.last_seen - self.first_seen)) / SECONDS_PER_MONTH


def first_overlap(
    q_turbines: NDArray[np.int64],
    q_starts: NDArray[np.float64],
    q_ends: NDArray[np.float64],
    r_turbines: NDArray[np.int64],
    r_starts: NDArray[np.float64],
    r_ends: NDArray[np.float64],
) -> NDArray[np.intp]:
    """For each interval q (q,), the earliest interval r (r,) of its turbine overlapping it.

    Intervals are closed, ``[start, end]``; one turbine's r intervals must not
    overlap each other (episodes, label runs).  -1 where none overlaps.

    >>> first_overlap(np.array([1, 1, 2]), np.array([0.0, 9, 0]), np.array([5.0, 9, 1]),
    ...               np.array([1, 1]), np.array([3.0, 7]), np.array([4.0, 8]))
    array([ 0, -1, -1])
    """
    out = np.full(q_starts.size, -1, dtype=np.intp)
    order = np.lexsort((r_starts, r_turbines))
    rt = r_turbines[order]
    for u in np.intersect1d(q_turbines, r_turbines).tolist():  # a loop over turbines
        qi = np.flatnonzero(q_turbines == u)
        block = order[np.searchsorted(rt, u, "left") : np.searchsorted(rt, u, "right")]
        j = np.searchsorted(r_ends[block], q_starts[qi], "left")  # first ending at/after q
        jj = np.minimum(j, block.size - 1)
        ok = (j < block.size) & (r_starts[block[jj]] <= q_ends[qi])
        out[qi[ok]] = block[jj[ok]]
    return out


@dataclass
class EpisodeScores:
    """Labelled faults against alarm episodes.

    ``faults`` labelled runs; ``detected`` those an episode overlaps;
    ``false_episodes`` episodes overlapping no run; ``delays`` from each
    detected fault's start to its first overlapping episode's start (0 when
    the episode began before the fault).

    >>> s = score_episodes(np.array([1]), np.array([100.0]), np.array([200.0]),
    ...                    np.array([1, 1]), np.array([10.0, 130.0]), np.array([20.0, 150.0]), 2.0)
    >>> s.faults, s.detected, s.false_episodes, s.delay_median_s, s.false_per_turbine_month
    (1, 1, 1, 30.0, 0.5)
    """

    faults: int = 0
    detected: int = 0
    episodes: int = 0
    false_episodes: int = 0
    turbine_months: float = 0.0
    delays: tuple[float, ...] = ()

    def merge(self, other: EpisodeScores) -> None:
        """Add another stream's figures."""
        self.faults += other.faults
        self.detected += other.detected
        self.episodes += other.episodes
        self.false_episodes += other.false_episodes
        self.turbine_months += other.turbine_months
        self.delays += other.delays

    @property
    def delay_median_s(self) -> float:
        return float(np.median(self.delays)) if self.delays else math.nan

    @property
    def delay_p90_s(self) -> float:
        return float(np.percentile(self.delays, 90)) if self.delays else math.nan

    @property
    def false_per_turbine_month(self) -> float:
        return self.false_episodes / self.turbine_months if self.turbine_months else math.nan

    def as_dict(self) -> dict[str, float | int]:
        return {
            "faults": self.faults,
            "detected": self.detected,
            "detected_fraction": self.detected / self.faults if self.faults else math.nan,
            "episodes": self.episodes,
            "false_episodes": self.false_episodes,
            "turbine_months": self.turbine_months,
            "false_episodes_per_turbine_month": self.false_per_turbine_month,
            "delay_median_s": self.delay_median_s,
            "delay_p90_s": self.delay_p90_s,
        }


def score_episodes(
    fault_turbines: NDArray[np.int64],
    fault_starts: NDArray[np.float64],
    fault_ends: NDArray[np.float64],
    episode_turbines: NDArray[np.int64],
    episode_starts: NDArray[np.float64],
    episode_ends: NDArray[np.float64],
    turbine_months: float,
) -> EpisodeScores:
    """Faults (f,) against episodes (e,): detections, false episodes, delays."""
    hit = first_overlap(
        fault_turbines, fault_starts, fault_ends, episode_turbines, episode_starts, episode_ends
    )
    matched = first_overlap(
        episode_turbines, episode_starts, episode_ends, fault_turbines, fault_starts, fault_ends
    )
    found = hit >= 0
    delays = np.maximum(episode_starts[hit[found]] - fault_starts[found], 0.0)
    return EpisodeScores(
        faults=int(fault_starts.size),
        detected=int(found.sum()),
        episodes=int(episode_starts.size),
        false_episodes=int(np.count_nonzero(matched < 0)),
        turbine_months=float(turbine_months),
        delays=tuple(delays.tolist()),
    )


def fault_kinds(chunks: Iterable[Chunk]) -> DelayTracker:
    """The faults of labelled chunks (in stream order), counted as the evaluation counts them.

    A fault is a run of labelled readings of one turbine (:class:`DelayTracker`);
    ``tracker.kinds`` holds each one's kind.  ``turbine simulate`` reports
    this count, so its summary and the report's evaluation agree.
    """
    tracker = DelayTracker()
    for c in chunks:
        if c.labels is None:
            continue
        lab = c.labels.astype(bool)
        tracker.update(c.timestamps, c.turbine_ids, lab, np.zeros(lab.size, bool), c.kinds)
    tracker.finish()
    return tracker
