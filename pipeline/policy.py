"""The learning policy's pure parts: operating regimes, learning filters, forgetting in time.

These are the functions under :class:`pipeline.detector.Detector` that decide
which model a reading belongs to, whether it may be learned, and how much the
past weighs; each works on whole batches.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

from pipeline.config import LearnRule

F64 = NDArray[np.float64]


def regime_bins(values: F64, edges: Sequence[float]) -> NDArray[np.intp]:
    """Bin of each value, in ``[0, len(edges)]``; values outside the edges fall in the end bins.

    Parameters
    ----------
    values : ndarray of shape (n,)
        The regime sensor's raw values (finite).
    edges : sequence of float, strictly increasing, of length B - 1

    Returns
    -------
    ndarray of shape (n,)

    >>> regime_bins(np.array([0.0, 3.0, 4.9, 5.0, 99.0]), [3.0, 5.0]).tolist()
    [0, 1, 1, 2, 2]
    """
    return np.searchsorted(np.asarray(edges, dtype=np.float64), values, side="right").astype(
        np.intp
    )


def learning_states(
    raw: F64,
    rules: Sequence[LearnRule],
    columns: Sequence[int],
    where_columns: Sequence[int] | None = None,
) -> NDArray[np.int8]:
    """Which rule each reading fails first: 0 for none (learnable), k for rule k - 1.

    Parameters
    ----------
    raw : ndarray of shape (n, D)
        Raw readings.
    rules : sequence of LearnRule
    columns : sequence of int
        The column of each rule's sensor.
    where_columns : sequence of int, optional
        The column of each rule's ``where`` sensor (-1 for none).

    Returns
    -------
    ndarray of shape (n,)

    >>> rules = [LearnRule(sensor="p", above=20.0, state="stopped")]
    >>> learning_states(np.array([[10.0], [30.0]]), rules, [0]).tolist()
    [1, 0]
    """
    out = np.zeros(raw.shape[0], dtype=np.int8)
    for k in range(len(rules) - 1, -1, -1):  # the first failed rule wins
        rule, v = rules[k], raw[:, columns[k]]
        ok = np.ones(v.shape, dtype=bool)
        if rule.above is not None:
            ok &= v > rule.above
        if rule.below is not None:
            ok &= v < rule.below
        if rule.normal is not None:
            ok &= np.isin(v, np.asarray(rule.normal, dtype=np.float64))
        if rule.where is not None and where_columns is not None:
            w = raw[:, where_columns[k]]
            applies = np.ones(w.shape, dtype=bool)
            if rule.where.above is not None:
                applies &= w > rule.where.above
            if rule.where.below is not None:
                applies &= w < rule.where.below
            ok |= ~applies
        out[~ok] = k + 1
    return out


def fleet_deviation(timestamps: F64, values: F64) -> F64:
    """Each value minus the median of the values at the same timestamp.

    Parameters
    ----------
    timestamps : ndarray of shape (n,)
    values : ndarray of shape (n,)

    Returns
    -------
    ndarray of shape (n,)
        0 for a reading alone at its time (nothing to compare with).

    >>> fleet_deviation(np.array([0.0, 0.0, 0.0, 1.0]), np.array([1.0, 2.0, 9.0, 5.0])).tolist()
    [-1.0, 0.0, 7.0, 0.0]
    """
    n = values.size
    if n == 0:
        return np.zeros(0)
    order = np.lexsort((values, timestamps))
    ts_sorted = timestamps[order]
    v_sorted = values[order]
    starts = np.flatnonzero(np.r_[True, ts_sorted[1:] != ts_sorted[:-1]])
    sizes = np.diff(np.r_[starts, n])
    lo = v_sorted[starts + (sizes - 1) // 2]
    hi = v_sorted[starts + sizes // 2]
    median = np.repeat((lo + hi) / 2.0, sizes)
    out = np.empty(n)
    out[order] = v_sorted - median
    return out


def time_decay(elapsed: F64, span: float, counts: F64, floor: float) -> F64:
    """Weight kept by old states after ``elapsed`` seconds (time constant ``span``).

    Forgetting never takes a state below ``floor`` readings, so a model that
    was warm stays warm however long its regime was not visited: it only
    learns the new readings with more weight.

    Parameters
    ----------
    elapsed : ndarray of shape (G,)
        Seconds since each state last learned (NaN or negative: 0).
    span : float
    counts : ndarray of shape (G,)
    floor : float

    Returns
    -------
    ndarray of shape (G,)

    >>> time_decay(np.array([0.0, 86400.0]), 86400.0, np.array([1e4, 1e4]), 10.0).round(4).tolist()
    [1.0, 0.3679]
    """
    dt = np.where(np.isfinite(elapsed) & (elapsed > 0), elapsed, 0.0)
    w = np.exp(-dt / span)
    keep = np.minimum(1.0, floor / np.where(counts > 0, counts, np.inf))
    return np.maximum(w, keep)


def ewma_weights(elapsed: F64, span: float) -> F64:
    """EWMA weight of each new reading given the seconds since the previous one.

    ``lambda = 1 - exp(-elapsed / span)``: a fixed time constant whatever the
    sampling step, so a gap weighs the new reading more.

    Parameters
    ----------
    elapsed : ndarray of shape (n,)

    >>> ewma_weights(np.array([600.0]), 86400.0).round(5).tolist()
    [0.00692]
    """
    dt = np.where(np.isfinite(elapsed) & (elapsed > 0), elapsed, 0.0)
    return -np.expm1(-dt / span)
