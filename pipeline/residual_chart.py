"""The residual MEWMA chart: slow faults added up from each turbine's whitened residuals.

One reading at a time, a power deficit of a few per cent is noise; over days
it is a fault.  Per turbine, the whitened conditional residuals of the
scored sensors (the point score's ``z``) are smoothed with a time constant
(:func:`pipeline.charts.ewma_by_time`), and the smoothed value is scored
against its own learned distribution: a second-level covariance model per
turbine, because the EWMA of autocorrelated residuals is much wider than the
textbook ``lambda / (2 - lambda)``.  That model's variance is floored at
``floor`` times the white-noise EWMA variance, so a residual that hardly ever
moves cannot make a chart of itself.  Residuals are clipped at +-``CLIP``
first (one gross reading, which the point score flags anyway, must not swamp
the chart), and a chart scores only once its model has learned over 10
spans.  The statistic is reported scaled by ``scale`` so that the detector's
alarm threshold applies to it.  All state is plain arrays.

>>> chart = ResidualChart(n_turbines=1, n_responses=1, span=3600.0, floor=1.0,
...                       min_samples=10, scale=1.0, ridge=1e-6)
>>> out = chart.score(np.zeros(3, np.intp), np.array([0.0, 600.0, 1200.0]), np.ones((1, 3)))
>>> out.statistic.tolist()  # not warm yet
[0.0, 0.0, 0.0]
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from pipeline.batch_math import compiled_kernels, factors, learn, whiten
from pipeline.charts import MAX_GAP_SPANS, ewma_by_time
from pipeline.covariance import GroupedCovariance, combine, grouped_moments
from pipeline.mahalanobis import (
    contributions_from_whitened,
    gather_rows,
)

F64 = NDArray[np.float64]
CLIP = 3.0  # whitened residuals beyond +-3 sd enter the chart as +-3
WARM_SPANS = 10.0  # a chart scores once its model has learned over this many spans


def median_step(times: F64) -> float:
    """``np.median(np.diff(times))`` of distinct sorted times (m,), m >= 2, by one partition.

    A batch's step is nearly always one value (then no partition at all);
    otherwise the middle one or two differences, as ``np.median`` takes them.

    >>> median_step(np.array([0.0, 600.0, 1200.0, 2400.0, 3000.0]))
    600.0
    """
    d = np.diff(times)
    lo, hi = float(d.min()), float(d.max())
    if lo == hi:
        return lo
    m = d.size
    k = m // 2
    if m % 2:
        return float(np.partition(d, k)[k])
    part = np.partition(d, (k - 1, k))
    return float((part[k - 1] + part[k]) / 2.0)


@dataclass(frozen=True)
class ChartScores:
    """One batch through the chart.

    Attributes
    ----------
    statistic : ndarray of shape (n,)
        Scaled squared distance of each reading's smoothed residual (0 where
        not scored or not warm).
    deviations, whitened : ndarray of shape (R, n)
        The smoothed residuals minus their model mean, and those whitened.
    charted : ndarray of shape (n,)
        The readings that entered the chart (the others neither score nor learn).
    """

    statistic: F64
    deviations: F64
    whitened: F64
    charted: NDArray[np.bool_]


class ResidualChart:
    """Per-turbine EWMA of whitened residuals, scored against a learned distribution.

    Parameters
    ----------
    n_turbines : int
    n_responses : int
        R, the scored sensors (D minus the conditions).
    span : float
        Time constant of the EWMA, seconds.
    floor : float
        Variance floor in units of the white-noise EWMA variance.
    min_samples : int
        Smoothed values a chart model learns before it scores.
    scale : float
        Factor applied to the statistic (alarm threshold / chart threshold).
    ridge : float
    mask : ndarray of shape (R,), optional
        1 for the scored sensors the chart watches, 0 for the others.
    compiled : bool
        The EWMA, the factors, the whitening and the learning through the
        compiled kernels (:mod:`pipeline.batch_math`); they agree with the
        NumPy path to rounding.
    """

    def __init__(
        self,
        n_turbines: int,
        n_responses: int,
        span: float,
        floor: float,
        min_samples: int,
        scale: float,
        ridge: float,
        mask: F64 | None = None,
        compiled: bool = False,
    ) -> None:
        r = n_responses
        self._kernels = compiled_kernels() if compiled else None
        self.span, self.floor, self.min_samples = span, floor, min_samples
        self.scale, self.ridge = scale, ridge
        self.mask = np.ones(r) if mask is None else np.asarray(mask, dtype=np.float64)
        self.smoothed = np.zeros((n_turbines, r))
        self.last_time = np.full(n_turbines, np.nan)
        self.since = np.full(n_turbines, np.nan)  # when each chart model began to learn
        self.step = 0.0  # the stream's time step, for the variance floor
        self.models = GroupedCovariance(n_turbines, r)
        self.chol = np.broadcast_to(np.eye(r), (n_turbines, r, r)).copy()
        # The variance floor the factors were made with (it moves with the step), and
        # its EWMA weight; None: the factors are stale (all remade before a score).
        self._floor = np.full(r, floor)
        self._factored_lam: float | None = None

    @property
    def n_responses(self) -> int:
        return int(self.mask.size)

    def grow(self, n_turbines: int) -> None:
        extra = n_turbines - self.smoothed.shape[0]
        if extra <= 0:
            return
        r = self.n_responses
        self.smoothed = np.concatenate((self.smoothed, np.zeros((extra, r))))
        self.last_time = np.concatenate((self.last_time, np.full(extra, np.nan)))
        self.since = np.concatenate((self.since, np.full(extra, np.nan)))
        self.models.grow(n_turbines)
        self.chol = np.concatenate((self.chol, np.broadcast_to(np.eye(r), (extra, r, r))))
        self._factored_lam = None

    def score(self, turbines: NDArray[np.intp], timestamps: F64, z_t: F64) -> ChartScores:
        """Smooth and score the whitened residuals of scored readings.

        Parameters
        ----------
        turbines : ndarray of shape (n,)
            Dense turbine index of each reading.
        timestamps : ndarray of shape (n,)
        z_t : ndarray of shape (R, n)
            Whitened residuals of the scored sensors.
        """
        n = turbines.size
        if n == 0:
            z = np.zeros((self.n_responses, 0))
            return ChartScores(np.zeros(0), z, z, np.zeros(0, dtype=bool))
        resid = np.clip(z_t, -CLIP, CLIP) * self.mask[:, None]
        kernels = self._kernels
        if kernels is None:
            s = ewma_by_time(turbines, timestamps, resid, self.span, self.smoothed, self.last_time)
        else:
            s = kernels.ewma_by_time(
                turbines, timestamps, resid, self.span, MAX_GAP_SPANS, self.smoothed, self.last_time
            )
        warm = np.take(self.models.counts, turbines) >= self.min_samples
        learned = timestamps - np.take(self.since, turbines)
        warm &= learned >= WARM_SPANS * self.span  # NaN (not learning yet) compares False
        self._factors(timestamps)
        m = self.models
        w = whiten(s, turbines, m.means, self.chol, 0, m.counts, None, kernels is not None)
        assert w.diff_t is not None and w.z_t is not None  # noqa: S101 (full)
        stat = np.where(warm, w.stat * self.scale, 0.0)
        return ChartScores(stat, w.diff_t, w.z_t, np.ones(n, dtype=bool))

    def _factors(self, timestamps: F64) -> None:
        """The chart models' factors, their variance floored at ``floor`` white noise.

        An EWMA of white noise of unit variance with weight ``lambda`` per step
        has variance ``lambda / (2 - lambda)``.  The step is the batch's median
        time step (the last one seen when a batch holds a single time).  The
        factors are remade only when that floor moved or the models changed
        wholesale; :meth:`learn` refreshes those of the models it changes.
        """
        if timestamps.size and np.all(timestamps[1:] >= timestamps[:-1]):
            uts = timestamps[np.concatenate(([True], timestamps[1:] != timestamps[:-1]))]
        else:
            uts = np.unique(timestamps)
        if uts.size > 1:
            self.step = median_step(uts)
        lam = float(-np.expm1(-self.step / self.span)) if self.step > 0 else 1.0
        if lam == self._factored_lam:
            return
        self._floor = np.full(self.n_responses, self.floor * lam / (2.0 - lam))
        m = self.models
        self.chol = factors(m.counts, m.m2, self._floor, self.ridge, self._kernels is not None)
        self._factored_lam = lam

    def learn(
        self, turbines: NDArray[np.intp], scores: ChartScores, keep: NDArray[np.bool_]
    ) -> None:
        """Learn the smoothed residuals of the readings ``keep`` (shape (n,)) marks."""
        sel = np.flatnonzero(keep)
        if sel.size == 0:
            return
        who = turbines[sel]
        fresh = np.isnan(self.since[who])
        self.since[who[fresh]] = self.last_time[who[fresh]]
        m = self.models
        s = np.take(scores.deviations, sel, axis=1) + gather_rows(m.means, who)
        # The changed models' factors refreshed with the floor of the batch's step.
        if self._kernels is None:
            c, mu, m2 = grouped_moments(s.T, who, m.n_groups)  # (n, R) view of s
            changed = m.merge_moments(c, mu, m2)
            self.chol[changed] = factors(
                m.counts[changed], m.m2[changed], self._floor, self.ridge, False
            )
        else:
            learn(m, self.chol, s, who, None, None, self._floor, self.ridge, True)

    def contributions(
        self, turbines: NDArray[np.intp], scores: ChartScores, rows: NDArray[np.intp]
    ) -> F64:
        """Each watched sensor's share (h, R) of the statistic of the readings ``rows`` (h,)."""
        return self.scale * contributions_from_whitened(
            np.take(scores.deviations, rows, axis=1),
            np.take(scores.whitened, rows, axis=1),
            turbines[rows],
            self.chol,
        )

    def reset(self, turbines: NDArray[np.intp]) -> None:
        """Forget the charts of ``turbines`` (shape (m,)): an operator's re-baseline."""
        self.smoothed[turbines] = 0.0
        self.last_time[turbines] = np.nan
        self.since[turbines] = np.nan
        self.models.counts[turbines] = 0.0
        self.models.means[turbines] = 0.0
        self.models.m2[turbines] = 0.0
        self._factored_lam = None

    # ------------------------------------------------------------------ state
    def state(self) -> dict[str, np.ndarray]:
        return {
            "chart_s": self.smoothed.copy(),
            "chart_time": self.last_time.copy(),
            "chart_since": self.since.copy(),
            "chart_step": np.asarray(self.step),
            "chart_counts": self.models.counts.copy(),
            "chart_means": self.models.means.copy(),
            "chart_m2": self.models.m2.copy(),
        }

    def restore(self, state: Mapping[str, np.ndarray], rows: NDArray[np.intp]) -> None:
        """Load :meth:`state` saved for turbines now at ``rows`` (shape (m,))."""
        if "chart_s" not in state or np.asarray(state["chart_s"]).shape[1:] != (self.n_responses,):
            return
        self.smoothed[rows] = state["chart_s"]
        self.last_time[rows] = state["chart_time"]
        self.since[rows] = state["chart_since"]
        self.step = float(state["chart_step"])
        self.models.counts[rows] = state["chart_counts"]
        self.models.means[rows] = state["chart_means"]
        self.models.m2[rows] = state["chart_m2"]
        self._factored_lam = None
        self._factors(np.zeros(0))

    def merge(self, other: ResidualChart, rows: NDArray[np.intp], known: NDArray[np.bool_]) -> None:
        """Merge ``other``'s chart models (exactly) into ``rows``; its positions where new."""
        m = self.models
        m.counts[rows], m.means[rows], m.m2[rows] = combine(
            m.counts[rows],
            m.means[rows],
            m.m2[rows],
            other.models.counts,
            other.models.means,
            other.models.m2,
        )
        new = rows[~known]
        self.smoothed[new] = other.smoothed[~known]
        self.last_time[new] = other.last_time[~known]
        self.since[rows] = np.fmin(self.since[rows], other.since)
        self.step = self.step or other.step
        self._factored_lam = None
        self._factors(np.zeros(0))
