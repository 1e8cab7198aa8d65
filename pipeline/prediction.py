"""Hotelling's T² prediction bound: the alarm threshold of a model that learned n readings.

The chi-square threshold assumes the mean and covariance are known.  A model
that has estimated them from ``n`` readings scores a new, independent
reading ``x`` with

    T² = (x - mean)^T S^-1 (x - mean),   (n / (n + 1)) (n - p) / (p (n - 1)) T² ~ F(p, n - p)

for Gaussian readings with p degrees of freedom: heavier-tailed than
chi2(p), much so for young models (n = 80, p = 4: the chi-square threshold
at 1e-4 has a true tail of 5.4e-4).  The detector keeps its chi-square
threshold (one number for the store, the report and the residual chart) and
scales every point statistic by ``threshold / T²_bound(n)`` instead, so a
model of any age alarms at the configured rate.  The scale comes from a table
over integer n built once per (p, rate) with ``scipy.stats.f.isf`` (called as the
``scipy.special`` function it is, without loading ``scipy.stats``); a decayed
(non-integer) count takes the table's entry below it (the more cautious one);
beyond :data:`N_MAX` the scale is 1 (it differs from 1 by 2e-4 there).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from numpy.typing import NDArray
from scipy import special

F64 = NDArray[np.float64]

N_MAX = 1 << 16


def hotelling_bound(false_alarm_rate: float, dof: int, n: F64) -> F64:
    """T² threshold with tail ``false_alarm_rate`` for models of ``n`` readings (n > dof).

    Parameters
    ----------
    false_alarm_rate : float
    dof : int
        p, the degrees of freedom of the score.
    n : ndarray of shape (m,)
        Readings each model learned.

    >>> round(float(hotelling_bound(1e-4, 4, np.array([80.0]))[0]), 2)
    28.58
    """
    p = float(dof)
    f = special.fdtri(p, n - p, 1.0 - false_alarm_rate)  # scipy.stats.f.isf, exactly
    return np.asarray(f * p * (n - 1.0) * (n + 1.0) / (n * (n - p)), dtype=np.float64)


@lru_cache(maxsize=32)
def _table(false_alarm_rate: float, dof: int) -> F64:
    n = np.arange(N_MAX + 1, dtype=np.float64)
    scale = np.ones(N_MAX + 1)
    chi2 = float(special.chdtri(dof, false_alarm_rate))  # scipy.stats.chi2.isf
    ok = n > dof
    scale[ok] = chi2 / hotelling_bound(false_alarm_rate, dof, n[ok])
    # n <= p: no bound exists (a singular covariance); as cautious as the first one.
    scale[~ok] = scale[dof + 1]
    scale[N_MAX] = 1.0
    scale.setflags(write=False)
    return scale


class PredictionBound:
    """Scale of a point statistic so the chi-square threshold holds for models of n readings.

    ``statistic * scale(n) > chi2.isf(rate, p)`` exactly when the statistic
    is above Hotelling's prediction bound for a model of ``n`` readings.

    Parameters
    ----------
    false_alarm_rate : float
    dof : int
        p, the degrees of freedom of the score (D minus the conditions).

    Examples
    --------
    >>> b = PredictionBound(1e-4, 4)
    >>> s = b.scale(np.array([80.0, 80.7, 1e9]))
    >>> [round(float(v), 3) for v in s]
    [0.823, 0.823, 1.0]
    """

    def __init__(self, false_alarm_rate: float, dof: int) -> None:
        self.table = _table(float(false_alarm_rate), int(dof))

    def scale(self, counts: F64) -> F64:
        """Scale (m,) for models of ``counts`` (m,) readings (decayed counts allowed)."""
        i = np.minimum(counts, N_MAX).astype(np.intp)  # counts >= 0
        return np.take(self.table, i)
