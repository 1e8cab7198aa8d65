"""Re-baselining: an alarm that persists at a steady level becomes the new normal.

A model (turbine, regime bin) that keeps alarming after a repair, a retrofit
or a new operating point would otherwise alarm for ever (lock-out).  Per
model, a *run* opens at its first alarm; from then on every reading of that
model is accumulated, the first half of the span in one moment state and the
second half in another.  When the run has lasted ``after`` seconds it is
accepted if

* alarms make up at least ``share`` of its readings (the alarm persisted),
* the two halves' means differ by at most ``steady`` standard deviations of
  the model's normal scatter (Mahalanobis distance of the shift, of the
  scored sensors given the conditions, under the model's covariance): the
  level is steady, not a drift still under way,

and the model restarts from the run's readings.  A run whose alarms pause for
longer than ``(1 - share) * after`` is abandoned: a pause between two of its
alarms (within one batch as well as across batches; a gap in the readings is
such a pause, since no alarm was seen in it) restarts the run at the alarm
after the pause, and a pause since its last alarm closes it.  The alarm must
be seen to persist over the whole span, not only at both ends of it.  All
state is plain arrays.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from numpy.typing import NDArray

from pipeline.covariance import GroupedCovariance, combine, grouped_moments
from pipeline.mahalanobis import whiten_grouped

F64 = NDArray[np.float64]


class RebaselineRuns:
    """Runs of persistent alarms per model, and the readings since each began.

    Parameters
    ----------
    n_models : int
    n_features : int
        D, in the detector's (conditions first) order.
    n_conditions : int
        k, the leading conditioning sensors (not part of the steadiness test).
    after : float
        Seconds a run must last.
    share : float
    steady : float
    """

    def __init__(
        self,
        n_models: int,
        n_features: int,
        n_conditions: int,
        after: float,
        share: float,
        steady: float,
    ) -> None:
        self.d, self.k = n_features, n_conditions
        self.after, self.share, self.steady = after, share, steady
        # The longest pause in a run's alarms (seconds).
        self.pause = (1.0 - share) * after
        self.since = np.full(n_models, np.nan)
        self.last_alarm = np.full(n_models, np.nan)
        self.alarms = np.zeros(n_models)
        self.first = GroupedCovariance(n_models, n_features)
        self.second = GroupedCovariance(n_models, n_features)

    def grow(self, n_models: int) -> None:
        extra = n_models - self.since.size
        if extra <= 0:
            return
        self.since = np.concatenate((self.since, np.full(extra, np.nan)))
        self.last_alarm = np.concatenate((self.last_alarm, np.full(extra, np.nan)))
        self.alarms = np.concatenate((self.alarms, np.zeros(extra)))
        self.first.grow(n_models)
        self.second.grow(n_models)

    def reset(self, models: NDArray[np.intp]) -> None:
        """Close the runs of ``models`` (shape (m,)) without accepting them."""
        self.since[models] = np.nan
        self.last_alarm[models] = np.nan
        self.alarms[models] = 0.0
        for half in (self.first, self.second):
            half.counts[models] = 0.0
            half.means[models] = 0.0
            half.m2[models] = 0.0

    def observe(
        self, model: NDArray[np.intp], timestamps: F64, x_t: F64, alarm: NDArray[np.bool_]
    ) -> None:
        """Feed scored readings: open runs at alarms, accumulate readings of open runs.

        Parameters
        ----------
        model : ndarray of shape (n,)
        timestamps : ndarray of shape (n,)
        x_t : ndarray of shape (D, n)
        alarm : ndarray of shape (n,)
        """
        m_count = self.since.size
        if alarm.any():
            self._restart_paused(model, timestamps, alarm)
            first_alarm = np.full(m_count, np.inf)
            np.minimum.at(first_alarm, model[alarm], timestamps[alarm])
            opening = np.isnan(self.since) & np.isfinite(first_alarm)
            self.since[opening] = first_alarm[opening]
        since = self.since[model]
        live = np.isfinite(since) & (timestamps >= since)
        if not live.any():
            return
        sel = np.flatnonzero(live)
        m, ts = model[sel], timestamps[sel]
        late = ts >= since[sel] + self.after / 2.0
        x = np.ascontiguousarray(np.take(x_t, sel, axis=1).T)
        for half, part in ((self.first, ~late), (self.second, late)):
            if part.any():
                c, mu, m2 = grouped_moments(x[part], m[part], m_count)
                half.merge_moments(c, mu, m2)
        hit = alarm[sel]
        if hit.any():
            self.alarms += np.bincount(m[hit], minlength=m_count)
            latest = np.full(m_count, -np.inf)
            np.maximum.at(latest, m[hit], ts[hit])
            self.last_alarm = np.fmax(
                self.last_alarm, np.where(np.isfinite(latest), latest, np.nan)
            )

    def _restart_paused(
        self, model: NDArray[np.intp], timestamps: F64, alarm: NDArray[np.bool_]
    ) -> None:
        """Restart the open runs whose alarms pause too long, at the alarm after the pause.

        Parameters
        ----------
        model, timestamps, alarm : ndarray of shape (n,)
            Readings in time order per model.
        """
        hit = np.flatnonzero(alarm)
        m, t = model[hit], timestamps[hit]
        order = np.argsort(m, kind="stable")  # each model's alarms, in time order
        m, t = m[order], t[order]
        prev = np.empty_like(t)
        prev[1:] = t[:-1]
        first = np.ones(m.size, dtype=bool)
        np.not_equal(m[1:], m[:-1], out=first[1:])
        # A model's first alarm of the batch follows its run's last one (NaN: no open run).
        prev[first] = self.last_alarm[m[first]]
        paused = t - prev > self.pause  # NaN compares False
        if not paused.any():
            return
        restart = np.full(self.since.size, -np.inf)
        np.maximum.at(restart, m[paused], t[paused])
        rows = np.flatnonzero(np.isfinite(restart))
        self.reset(rows)
        self.since[rows] = restart[rows]

    def settle(self, now: F64, chol: F64) -> NDArray[np.intp]:
        """Accept or abandon runs as of ``now`` (shape (M,), each model's latest time).

        ``chol`` (shape (M, D, D)) holds the models' Cholesky factors, the
        yardstick of steadiness.

        Returns the models whose run is accepted (their moments are then taken
        with :meth:`take`); abandoned runs are reset.
        """
        open_ = np.isfinite(self.since) & np.isfinite(now)
        if not open_.any():
            return np.zeros(0, dtype=np.intp)
        quiet = open_ & (now - np.nan_to_num(self.last_alarm, nan=-np.inf) > self.pause)
        due = open_ & ~quiet & (now >= self.since + self.after)
        self.reset(np.flatnonzero(quiet))
        idx = np.flatnonzero(due)
        if idx.size == 0:
            return idx
        total = self.first.counts[idx] + self.second.counts[idx]
        persistent = (self.alarms[idx] >= self.share * total) & (self.second.counts[idx] > self.d)
        steady = self._steady(idx, chol)
        accept = idx[persistent & steady]
        self.reset(idx[~(persistent & steady)])
        return accept

    def _steady(self, idx: NDArray[np.intp], chol: F64) -> NDArray[np.bool_]:
        a, b = self.first, self.second
        shift = np.ascontiguousarray((b.means[idx] - a.means[idx]).T)
        z = whiten_grouped(shift, idx, chol)
        d2 = np.sum(z[self.k :] ** 2, axis=0)
        return (d2 <= self.steady**2) & (a.counts[idx] > 1) & (b.counts[idx] > 1)

    def take(self, models: NDArray[np.intp]) -> tuple[F64, F64, F64, F64]:
        """Moments (counts (m,), means (m, D), co-moments (m, D, D)) and start times of runs."""
        a, b = self.first, self.second
        n, mean, m2 = combine(
            a.counts[models],
            a.means[models],
            a.m2[models],
            b.counts[models],
            b.means[models],
            b.m2[models],
        )
        since = self.since[models].copy()
        self.reset(models)
        return n, mean, m2, since

    # ------------------------------------------------------------------ state
    def state(self) -> dict[str, np.ndarray]:
        return {
            "rebaseline_since": self.since.copy(),
            "rebaseline_last_alarm": self.last_alarm.copy(),
            "rebaseline_alarms": self.alarms.copy(),
            "rebaseline_first_counts": self.first.counts.copy(),
            "rebaseline_first_means": self.first.means.copy(),
            "rebaseline_first_m2": self.first.m2.copy(),
            "rebaseline_second_counts": self.second.counts.copy(),
            "rebaseline_second_means": self.second.means.copy(),
            "rebaseline_second_m2": self.second.m2.copy(),
        }

    def restore(self, state: Mapping[str, np.ndarray], rows: NDArray[np.intp]) -> None:
        """Load :meth:`state` saved for models now at ``rows`` (shape (m,))."""
        if "rebaseline_since" not in state:
            return
        self.since[rows] = state["rebaseline_since"]
        self.last_alarm[rows] = state["rebaseline_last_alarm"]
        self.alarms[rows] = state["rebaseline_alarms"]
        for name, half in (("first", self.first), ("second", self.second)):
            half.counts[rows] = state[f"rebaseline_{name}_counts"]
            half.means[rows] = state[f"rebaseline_{name}_means"]
            half.m2[rows] = state[f"rebaseline_{name}_m2"]
