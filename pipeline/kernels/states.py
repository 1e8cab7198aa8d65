"""Operating states and settling, reading by reading: one pass where NumPy makes several."""

from __future__ import annotations

import numpy as np
from numba import njit
from numpy.typing import NDArray

F64 = NDArray[np.float64]


@njit(cache=True, nogil=True)
def learning_states(
    raw: F64,
    cols: NDArray[np.int64],
    tests: NDArray[np.bool_],
    limits: F64,
    where_cols: NDArray[np.int64],
    where_tests: NDArray[np.bool_],
    where_limits: F64,
) -> NDArray[np.int8]:
    """:func:`pipeline.policy.learning_states` of range rules (no ``normal`` codes).

    Parameters
    ----------
    raw : ndarray of shape (n, D)
    cols : ndarray of shape (R,)
        Each rule's sensor column.
    tests, limits : ndarray of shape (R, 2)
        Whether the rule has an ``above`` (column 0) and a ``below`` (column 1)
        limit, and the limits.
    where_cols : ndarray of shape (R,)
        The column of each rule's ``where`` sensor (-1 for none).
    where_tests, where_limits : ndarray of shape (R, 2)
        The same for the ``where`` ranges.

    Returns
    -------
    ndarray of shape (n,)
        0 for a learnable reading, k for the first rule (k - 1) it fails.
    """
    n, n_rules = raw.shape[0], cols.size
    out = np.zeros(n, dtype=np.int8)
    for i in range(n):
        for k in range(n_rules):
            if not (tests[k, 0] or tests[k, 1]):
                continue  # a rule without a range never fails here
            v = raw[i, cols[k]]
            fail = False  # NaN fails every test, as in NumPy
            if tests[k, 0]:
                fail |= not v > limits[k, 0]
            if tests[k, 1]:
                fail |= not v < limits[k, 1]
            if fail and where_cols[k] >= 0:
                w = raw[i, where_cols[k]]
                if where_tests[k, 0]:
                    fail &= w > where_limits[k, 0]
                if where_tests[k, 1]:
                    fail &= w < where_limits[k, 1]
            if fail:
                out[i] = k + 1
                break
    return out


@njit(cache=True, nogil=True)
def settling_in_order(
    turbines: NDArray[np.intp],
    timestamps: F64,
    in_state: NDArray[np.bool_],
    last_state_time: F64,
    span: float,
) -> tuple[bool, NDArray[np.bool_], F64]:
    """:func:`pipeline.policy.settling` of a batch in time order, in one pass.

    Each turbine's readings are met in time order, so its last time in a
    state is carried reading by reading.  Returns ``(False, ...)`` without
    results when the batch is not in time order (the NumPy path sorts it).

    Parameters
    ----------
    turbines : ndarray of shape (n,)
    timestamps : ndarray of shape (n,)
    in_state : ndarray of shape (n,)
    last_state_time : ndarray of shape (T,)
    span : float

    Returns
    -------
    done : bool
    settle : ndarray of shape (n,)
    last : ndarray of shape (T,)
    """
    n = turbines.size
    for i in range(1, n):
        if not timestamps[i] >= timestamps[i - 1]:
            return False, np.zeros(0, dtype=np.bool_), last_state_time
    last = last_state_time.copy()
    out = np.zeros(n, dtype=np.bool_)
    for i in range(n):
        u = turbines[i]
        if in_state[i]:
            last[u] = timestamps[i]
        else:
            out[i] = timestamps[i] - last[u] <= span  # NaN (never in a state) is False
    return True, out, last


@njit(cache=True, nogil=True)
def regime_bins(values: F64, edges: F64) -> NDArray[np.intp]:
    """:func:`pipeline.policy.regime_bins`: ``np.searchsorted(edges, values, "right")``.

    Each bin counted without branches (the edges strictly increasing); NaN in
    the last bin, where ``np.searchsorted`` puts it.

    Parameters
    ----------
    values : ndarray of shape (n,)
    edges : ndarray of shape (B - 1,)
    """
    out = np.empty(values.size, dtype=np.intp)
    for i in range(values.size):
        v, b = values[i], 0
        for e in range(edges.size):
            b += edges[e] <= v
        out[i] = b if v == v else edges.size
    return out
