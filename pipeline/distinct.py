"""Distinct values and each element's index among them, without a sort where none is needed.

``np.unique(a, return_inverse=True)`` sorts its input: O(n log n) for every
chunk of a stream, although the arrays the engine meets rarely need it.
Turbine ids are a few small integers, repeated (a count per id finds them);
timestamps arrive in time order (one pass over the runs finds them).  Each
function here returns exactly what ``np.unique`` does, and falls back to it
when its shortcut does not apply.

>>> u, inv = distinct_ids(np.array([7, 3, 7, 9, 3]))
>>> u.tolist(), inv.tolist()
([3, 7, 9], [1, 0, 1, 2, 0])
>>> u, inv = distinct_sorted(np.array([1.0, 1.0, 2.5, 4.0, 4.0]))
>>> u.tolist(), inv.tolist()
([1.0, 2.5, 4.0], [0, 0, 1, 2, 2])
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

I64 = NDArray[np.int64]
F64 = NDArray[np.float64]

# The rows whose turbines are looked for in the rest of an array.
HEAD_ROWS = 1024
# A count per id when the ids span at most this many times the array's length
# (and at least DENSE_SPAN_MIN): the counts array stays small beside the input.
DENSE_SPAN_FACTOR = 4
DENSE_SPAN_MIN = 1 << 16


def distinct_ids(turbine_ids: I64) -> tuple[I64, NDArray[np.intp]]:
    """``np.unique(turbine_ids, return_inverse=True)``, the inverse flat.

    Non-negative ids in a span small beside the array are counted (one
    ``bincount``, no sort).  Otherwise the turbines of the first
    :data:`HEAD_ROWS` rows are looked up for every row (a binary search among a
    few); a row of another turbine sends the array to ``np.unique``.

    Parameters
    ----------
    turbine_ids : ndarray of shape (n,)
        Integer ids.
    """
    ids = np.asarray(turbine_ids).reshape(-1)
    n = ids.size
    if n == 0:
        return np.unique(ids), np.zeros(0, dtype=np.intp)
    low, high = int(ids.min()), int(ids.max())
    countable = ids.dtype != np.uint64  # bincount takes what casts safely to intp
    if countable and low >= 0 and high < max(DENSE_SPAN_FACTOR * n, DENSE_SPAN_MIN):
        present = np.flatnonzero(np.bincount(ids, minlength=high + 1))
        where = np.empty(high + 1, dtype=np.intp)
        where[present] = np.arange(present.size)
        return present.astype(ids.dtype, copy=False), where[ids]
    head = np.unique(ids[:HEAD_ROWS])
    pos = np.searchsorted(head, ids)
    np.minimum(pos, head.size - 1, out=pos)
    if bool((head[pos] == ids).all()):
        return head, pos
    uniq, inv = np.unique(ids, return_inverse=True)
    return uniq, inv.ravel()


def distinct_sorted(values: F64) -> tuple[F64, NDArray[np.intp]]:
    """``np.unique(values, return_inverse=True)``, in one pass when ``values`` are in order.

    Parameters
    ----------
    values : ndarray of shape (n,)
        Finite numbers, usually non-decreasing (a stream's timestamps); any
        other order is sorted by ``np.unique``.
    """
    v = np.asarray(values).reshape(-1)
    if v.size < 2 or not bool(np.all(v[1:] >= v[:-1])):
        uniq, inv = np.unique(v, return_inverse=True)
        return uniq, inv.ravel()
    first = np.empty(v.size, dtype=bool)
    first[0] = True
    np.not_equal(v[1:], v[:-1], out=first[1:])
    inverse = np.cumsum(first, dtype=np.intp)
    inverse -= 1
    return v[first], inverse
