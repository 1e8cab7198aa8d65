"""The residual chart's per-turbine EWMA with a time constant, compiled.

The recursion itself, reading by reading in batch order (each turbine's
readings are in time order, and each turbine's state is its own):
``s_i = a_i s_(i-1) + (1 - a_i) z_i`` with ``a_i = exp(-dt_i / span)``.  The
NumPy path (:func:`pipeline.charts.ewma_by_time`) solves the same recursion
in closed form over whole runs; the two agree to rounding.
"""

from __future__ import annotations

import numpy as np
from numba import njit
from numpy.typing import NDArray

F64 = NDArray[np.float64]


@njit(cache=True, nogil=True)
def ewma_by_time(
    keys: NDArray[np.intp],
    timestamps: F64,
    z_t: F64,
    span: float,
    max_gap_spans: float,
    state: F64,
    last_time: F64,
) -> F64:
    """Per-key EWMA with time constant ``span`` seconds, from 0 (the chart's target).

    Parameters
    ----------
    keys : ndarray of shape (n,)
    timestamps : ndarray of shape (n,)
        Non-decreasing per key.
    z_t : ndarray of shape (R, n)
    span : float
    max_gap_spans : float
        Gaps are clipped to this many spans (a clipped gap changes nothing).
    state : ndarray of shape (K, R)
        Each key's last smoothed value; updated in place.
    last_time : ndarray of shape (K,)
        Each key's last time (NaN: none yet, the first value then has weight
        0); updated in place.

    Returns
    -------
    ndarray of shape (R, n)
    """
    r, n = z_t.shape
    out = np.empty((r, n))
    for i in range(n):
        k = keys[i]
        t = timestamps[i]
        prev = last_time[k]
        dt = 0.0 if np.isnan(prev) else t - prev
        # NaN -> 0, then clipped to [0, max_gap_spans] spans (as np.fmax/np.fmin do).
        if not dt > 0.0:
            dt = 0.0
        dt = min(dt, max_gap_spans * span) / span
        keep = np.exp(-dt)
        lam = -np.expm1(-dt)
        for j in range(r):
            s = keep * state[k, j] + lam * z_t[j, i]
            state[k, j] = s
            out[j, i] = s
        last_time[k] = t
    return out
