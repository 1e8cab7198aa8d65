"""Learn one batch into stacked models: grouped moments, Chan's merge, new factors."""

from __future__ import annotations

import numpy as np
from numba import njit
from numpy.typing import NDArray

from pipeline.kernels.factors import _TINY_ROOT, factor_one

F64 = NDArray[np.float64]


@njit(cache=True, nogil=True)
def learn_sorted(
    xs: F64,
    starts: NDArray[np.int64],
    order: NDArray[np.int64],
    skip: NDArray[np.bool_],
    counts: F64,
    means: F64,
    m2: F64,
    memory: float,
    decay: F64,
    chol: F64,
    floor: F64,
    ridge: float,
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Learn readings sorted by model, less the skipped ones, into their models, in place.

    Per model that has readings to learn: the batch's count, mean and
    co-moment (as ``grouped_moments``: sums in reading order, then centred
    products in reading order), Chan's combination with the model's state
    (``GroupedCovariance.merge_moments``, with forgetting), and the new
    regularised Cholesky factor (``Detector._factors``).

    Parameters
    ----------
    xs : ndarray of shape (D, n)
        Readings by model (:func:`pipeline.kernels.blocks.sort_by_model`).
    starts : ndarray of shape (M + 1,)
    order : ndarray of shape (n,)
        Batch position of each column of ``xs``.
    skip : ndarray of shape (n,) or (0,)
        Readings (in batch order) not to learn; none when empty.
    counts, means, m2 : ndarray of shape (M,), (M, D), (M, D, D)
        The models' state, updated in place.
    memory : float
        Exponential forgetting in readings; 0 for none.
    decay : ndarray of shape (M,) or (0,)
        Weight each model's old state keeps (forgetting in time); overrides
        ``memory`` when given.
    chol : ndarray of shape (M, D, D)
        Lower factors, refreshed in place for the changed models.
    floor : ndarray of shape (D,) or (0,)
        Variance floors added to the factored covariances.
    ridge : float

    Returns
    -------
    changed : ndarray of shape (c,)
        The models that learned, ascending.
    failed : ndarray of shape (f,)
        Changed models whose factor the NumPy path must repair (not positive definite).
    """
    d, n = xs.shape
    n_models = counts.size
    use_skip = skip.size == n
    keep = np.ones(n, dtype=np.bool_)  # in xs order
    if use_skip:
        for p in range(n):
            keep[p] = not skip[order[p]]
    changed = np.empty(n_models, dtype=np.int64)
    failed = np.empty(n_models, dtype=np.int64)
    n_changed = 0
    n_failed = 0
    mean_b = np.empty(d)
    delta = np.empty(d)
    c = np.empty(d)
    m2_b = np.empty((d, d))
    work = np.empty((d, d))
    use_decay = decay.size == n_models
    for g in range(n_models):
        lo, hi = starts[g], starts[g + 1]
        nb = 0
        for p in range(lo, hi):
            if keep[p]:
                nb += 1
        if nb == 0:
            continue
        changed[n_changed] = g
        n_changed += 1
        n_b = float(nb)
        mean_b[:] = 0.0
        for p in range(lo, hi):
            if keep[p]:
                for j in range(d):
                    mean_b[j] += xs[j, p]
        for j in range(d):
            mean_b[j] = mean_b[j] / n_b
        m2_b[:] = 0.0
        for p in range(lo, hi):
            if not keep[p]:
                continue
            for j in range(d):
                c[j] = xs[j, p] - mean_b[j]
            for a in range(d):
                ca = c[a]
                row = m2_b[a]
                for b in range(d):
                    row[b] += ca * c[b]
        # Chan et al., as pipeline.covariance.combine evaluates it.
        if use_decay:
            w = decay[g]
        elif memory > 0.0:
            w = np.exp(-n_b / memory)
        else:
            w = 1.0
        n_a = counts[g] * w
        n_new = n_a + n_b
        w_b = n_b / (n_new if n_new > 0.0 else 1.0)
        for j in range(d):
            delta[j] = mean_b[j] - means[g, j]
            means[g, j] = means[g, j] + delta[j] * w_b
        scale = n_a * w_b
        for a in range(d):
            for b in range(d):
                m2[g, a, b] = (m2[g, a, b] * w + m2_b[a, b]) + delta[a] * delta[b] * scale
        counts[g] = n_new
        if not factor_one(n_new, m2[g], floor, ridge, _TINY_ROOT, chol[g], work):
            failed[n_failed] = g
            n_failed += 1
    return changed[:n_changed], failed[:n_failed]
