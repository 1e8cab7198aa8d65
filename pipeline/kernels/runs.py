"""Medians over runs of consecutive columns (a fleet's readings at one time), compiled.

The compiled form of :mod:`pipeline.run_medians`: each run's values are
copied and put in order by an insertion sort (a farm's runs are a few
columns; NaN last, as ``np.sort`` puts them), then the same middle values
are picked and combined with the same operations, so the results are the
NumPy path's bit for bit.
"""

from __future__ import annotations

import numpy as np
from numba import njit
from numpy.typing import NDArray

F64 = NDArray[np.float64]


@njit(cache=True, nogil=True, inline="always")
def _after(a: float, b: float) -> bool:
    """Whether ``a`` sorts after ``b`` (NaN after every number, as ``np.sort``)."""
    if np.isnan(a):
        return not np.isnan(b)
    return a > b


@njit(cache=True, nogil=True)
def _sort_run(v: F64, row: int, a: int, b: int, buf: F64) -> None:
    """``v[row, a:b]`` in order into ``buf[: b - a]``."""
    m = b - a
    for i in range(m):
        x = v[row, a + i]
        j = i - 1
        while j >= 0 and _after(buf[j], x):
            buf[j + 1] = buf[j]
            j -= 1
        buf[j + 1] = x


@njit(cache=True, nogil=True)
def _ends(starts: NDArray[np.int64], n: int) -> NDArray[np.int64]:
    """Where each run (G,) beginning at ``starts`` ends, the last at ``n``."""
    ends = np.empty_like(starts)
    ends[:-1] = starts[1:]
    ends[-1] = n
    return ends


@njit(cache=True, nogil=True)
def deviations_from_medians(v: F64, starts: NDArray[np.int64]) -> F64:
    """Each column minus the median of its run, row by row.

    Parameters
    ----------
    v : ndarray of shape (R, n)
    starts : ndarray of shape (G,)
        Where each run begins (``starts[0] == 0``, increasing).

    Returns
    -------
    ndarray of shape (R, n)
    """
    r, n = v.shape
    ends = _ends(starts, n)
    out = np.empty((r, n))
    buf = np.empty(max(1, int((ends - starts).max())))
    for row in range(r):
        for q in range(starts.size):
            a, b = starts[q], ends[q]
            m = b - a
            _sort_run(v, row, a, b, buf)
            med = (buf[(m - 1) // 2] + buf[m // 2]) / 2.0
            for c in range(a, b):
                out[row, c] = v[row, c] - med
    return out


@njit(cache=True, nogil=True)
def medians_of_the_others(v: F64, starts: NDArray[np.int64]) -> F64:
    """For each column, the median of the other columns of its run, row by row.

    Position ``j`` of a run's ordered values without a value ``x`` is the
    ``j + 1``-th of the run's when ``x`` lies at or below its ``j``-th, else its
    ``j``-th (:func:`pipeline.run_medians.medians_of_the_others`).

    Parameters
    ----------
    v : ndarray of shape (R, n)
        No NaN.
    starts : ndarray of shape (G,)

    Returns
    -------
    ndarray of shape (R, n)
        NaN for a column alone in its run.
    """
    r, n = v.shape
    ends = _ends(starts, n)
    out = np.empty((r, n))
    buf = np.empty(max(1, int((ends - starts).max())))
    for row in range(r):
        for q in range(starts.size):
            a, b = starts[q], ends[q]
            m = b - a
            if m == 1:
                out[row, a] = np.nan
                continue
            _sort_run(v, row, a, b, buf)
            others = m - 1
            lo, hi = (others - 1) // 2, others // 2
            for c in range(a, b):
                x = v[row, c]
                med = buf[lo + 1] if x <= buf[lo] else buf[lo]
                if hi != lo:
                    med = (med + (buf[hi + 1] if x <= buf[hi] else buf[hi])) / 2.0
                out[row, c] = med
    return out
