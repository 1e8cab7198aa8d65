"""Point-wise detection scores as SKAB defines them, plus detection delay."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray


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

    def merge(self, other: Confusion) -> None:
        """Add another stream's counts and delays (streams are evaluated separately)."""
        self.tp += other.tp
        self.fp += other.fp
        self.fn += other.fn
        self.tn += other.tn
        self.delays += other.delays
        self.missed_faults += other.missed_faults

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
    the open run of each turbine is carried over.

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
        self._open: dict[int, tuple[float, bool]] = {}  # turbine -> (onset, detected)

    def update(
        self,
        timestamps: NDArray[np.float64],
        turbine_ids: NDArray[np.int64],
        labels: NDArray[np.bool_],
        alarms: NDArray[np.bool_],
    ) -> None:
        """Add one batch (arrays of shape (n,), in stream order)."""
        if timestamps.size == 0:
            return
        order = np.lexsort((np.arange(timestamps.size), turbine_ids))
        t, ids = timestamps[order], turbine_ids[order]
        lab, al = labels[order], alarms[order]
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
        for r in np.flatnonzero(carried[start]).tolist():
            tid = int(ids[start][r])
            onset[r], detected_before[r] = self._open.pop(tid)
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
                self._open[int(ids[start][r])] = (float(onset[r]), detected)
            elif not detected:
                self.missed += 1

    def _close(self, turbine: int) -> None:
        _, detected = self._open.pop(turbine)
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
