"""Grouping readings by a small integer key (turbine, model), shared by the hot paths."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray


def stable_order(keys: NDArray[np.integer]) -> NDArray[np.intp]:
    """``np.argsort(keys, kind="stable")`` of non-negative integer keys (n,), faster.

    NumPy sorts 8- and 16-bit integers stably by radix sort, larger ones by
    timsort: keys that fit (a fleet's dense turbine or model indices) are
    narrowed first.  The order is the same either way (a stable order is unique).

    >>> stable_order(np.array([2, 0, 2, 1, 0])).tolist()
    [1, 4, 3, 0, 2]
    """
    if keys.size:
        lo, hi = int(keys.min()), int(keys.max())
        if lo >= 0 and hi < 256:
            return np.argsort(keys.astype(np.uint8), kind="stable")
        if lo >= 0 and hi < 65536:
            return np.argsort(keys.astype(np.uint16), kind="stable")
    return np.argsort(keys, kind="stable")


def run_lengths(starts: NDArray[np.intp], n: int) -> NDArray[np.intp]:
    """The length of each run (G,) of n items, from where each begins (``starts``, (G,)).

    >>> run_lengths(np.array([0, 3, 4]), 6).tolist()
    [3, 1, 2]
    """
    lengths = np.empty(starts.size, dtype=np.intp)
    if starts.size:
        np.subtract(starts[1:], starts[:-1], out=lengths[:-1])
        lengths[-1] = n - starts[-1]
    return lengths
