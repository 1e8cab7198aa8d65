"""Regularised Cholesky factors of models' covariances, refreshed per changed model."""

from __future__ import annotations

import numpy as np
from numba import njit
from numpy.typing import NDArray

F64 = NDArray[np.float64]

_TINY_ROOT = float(np.finfo(np.float64).tiny ** 0.5)


@njit(cache=True, nogil=True)
def factor_one(
    g: int, count: float, m2: F64, floor: F64, ridge: float, tiny_root: float, chol: F64, work: F64
) -> bool:
    """Factor model ``g`` into ``chol[g]``; False when its regularised matrix is not positive.

    ``covariance_of`` then ``regularised_cholesky`` of :mod:`pipeline.mahalanobis`
    for one model: ``cov = m2 / (n - 1)`` (zero before two readings; here a
    multiplication by the reciprocal) plus the sensor floors,
    ``ridge * |trace / D| + sqrt(tiny)`` on the diagonal, then the lower factor.

    Parameters
    ----------
    g : int
    count : float
    m2 : ndarray of shape (M, D, D)
    floor : ndarray of shape (D,) or (0,)
        Variance floors added to the diagonal (none when empty).
    ridge, tiny_root : float
    chol : ndarray of shape (M, D, D)
        Receives the lower factor of model ``g`` (upper triangle zero).
    work : ndarray of shape (D, D)
        Scratch.
    """
    d = m2.shape[1]
    denom = count - 1.0
    inv = 1.0 / denom if denom > 0.0 else 0.0
    for a in range(d):
        for b in range(d):
            work[a, b] = m2[g, a, b] * inv
    if floor.size == d:
        for a in range(d):
            work[a, a] = work[a, a] + floor[a]
    trace = 0.0
    for a in range(d):
        trace += work[a, a]
    added = ridge * abs(trace / d) + tiny_root
    for a in range(d):
        work[a, a] = work[a, a] + added
    for j in range(d):
        s = work[j, j]
        for k in range(j):
            s -= chol[g, j, k] * chol[g, j, k]
        if not s > 0.0:
            return False
        ljj = np.sqrt(s)
        chol[g, j, j] = ljj
        inv_ljj = 1.0 / ljj  # LAPACK's dpotf2 scales the column by the reciprocal too
        for i in range(j + 1, d):
            t = work[i, j]
            for k in range(j):
                t -= chol[g, i, k] * chol[g, j, k]
            chol[g, i, j] = t * inv_ljj
        for i in range(j):
            chol[g, i, j] = 0.0
    return True


@njit(cache=True, nogil=True)
def refactor(
    counts: F64, m2: F64, rows: NDArray[np.int64], floor: F64, ridge: float, chol: F64
) -> NDArray[np.int64]:
    """Refresh ``chol[rows]`` from the models' moments, in place.

    Parameters
    ----------
    counts : ndarray of shape (M,)
    m2 : ndarray of shape (M, D, D)
    rows : ndarray of shape (r,)
        The models to refactor.
    floor : ndarray of shape (D,) or (0,)
    ridge : float
    chol : ndarray of shape (M, D, D)
        Lower factors, updated in place.

    Returns
    -------
    ndarray of shape (f,)
        The rows whose regularised covariance was not positive definite (left
        to the NumPy path's eigenvalue repair).
    """
    d = m2.shape[1]
    work = np.empty((d, d))
    failed = np.empty(rows.size, dtype=np.int64)
    nf = 0
    for r in range(rows.size):
        g = rows[r]
        if not factor_one(g, counts[g], m2, floor, ridge, _TINY_ROOT, chol, work):
            failed[nf] = g
            nf += 1
    return failed[:nf]
