"""Readings grouped by model: a stable counting sort, linear in the batch."""

from __future__ import annotations

import numpy as np
from numba import njit
from numpy.typing import NDArray


@njit(cache=True, nogil=True)
def model_blocks(
    model: NDArray[np.intp], skip: NDArray[np.bool_], n_models: int
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Block bounds (M + 1,) and reading order (k,) of the readings not skipped.

    Parameters
    ----------
    model : ndarray of shape (n,)
        Model of each reading, in ``[0, n_models)`` (not checked).
    skip : ndarray of shape (n,) or (0,)
        Readings to leave out; an empty array leaves none out.
    n_models : int
        M.

    Returns
    -------
    starts : ndarray of shape (M + 1,)
        Model ``g``'s readings are ``order[starts[g]:starts[g + 1]]``.
    order : ndarray of shape (k,)
        Positions of the readings, by model, in batch order within a model.
    """
    n = model.size
    use_skip = skip.size == n and n > 0
    starts = np.zeros(n_models + 1, dtype=np.int64)
    for i in range(n):
        if use_skip and skip[i]:
            continue
        starts[model[i] + 1] += 1
    for g in range(n_models):
        starts[g + 1] += starts[g]
    pos = starts[:-1].copy()
    order = np.empty(starts[n_models], dtype=np.int64)
    for i in range(n):
        if use_skip and skip[i]:
            continue
        g = model[i]
        order[pos[g]] = i
        pos[g] += 1
    return starts, order
