"""Learn one batch into stacked models: grouped moments, Chan's merge, new factors."""

from __future__ import annotations

import numpy as np
from numba import njit
from numpy.typing import NDArray

from pipeline.kernels.blocks import model_blocks
from pipeline.kernels.factors import _TINY_ROOT, factor_one

F64 = NDArray[np.float64]


@njit(cache=True, nogil=True)
def learn_grouped(
    x_t: F64,
    model: NDArray[np.intp],
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
    """Learn the readings ``x_t`` (D, n) not skipped into their models, in place.

    Per model that has readings in the batch: the batch's count, mean and
    co-moment (``grouped_moments``: sums in reading order, then centred
    products in reading order), Chan's combination with the model's state
    (``GroupedCovariance.merge_moments``, with forgetting), and the new
    regularised Cholesky factor (``Detector._factors``).

    Parameters
    ----------
    x_t : ndarray of shape (D, n)
        Model-ready readings, one per column.
    model : ndarray of shape (n,)
        Model of each reading, in ``[0, M)`` (not checked).
    skip : ndarray of shape (n,) or (0,)
        Readings not to learn (none when empty).
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
    d = x_t.shape[0]
    n_models = counts.size
    starts, order = model_blocks(model, skip, n_models)
    k = order.size
    xs = np.empty((d, k))  # the readings by model
    for j in range(d):
        for p in range(k):
            xs[j, p] = x_t[j, order[p]]
    n_changed = 0
    for g in range(n_models):
        if starts[g + 1] > starts[g]:
            n_changed += 1
    changed = np.empty(n_changed, dtype=np.int64)
    failed = np.empty(n_changed, dtype=np.int64)
    n_failed = 0
    mean_b = np.empty(d)
    delta = np.empty(d)
    c = np.empty(d)
    m2_b = np.empty((d, d))
    work = np.empty((d, d))
    use_decay = decay.size == n_models
    r = 0
    for g in range(n_models):
        lo, hi = starts[g], starts[g + 1]
        if hi == lo:
            continue
        changed[r] = g
        r += 1
        n_b = float(hi - lo)
        for j in range(d):
            s = 0.0
            for p in range(lo, hi):
                s += xs[j, p]
            mean_b[j] = s / n_b
        for a in range(d):
            for b in range(d):
                m2_b[a, b] = 0.0
        for p in range(lo, hi):
            for j in range(d):
                c[j] = xs[j, p] - mean_b[j]
            for a in range(d):
                ca = c[a]
                for b in range(d):
                    m2_b[a, b] += ca * c[b]
        # Chan et al., as pipeline.covariance.combine evaluates it.
        if use_decay:
            w = decay[g]
        elif memory > 0.0:
            w = np.exp(-n_b / memory)
        else:
            w = 1.0
        n_a = counts[g] * w
        n = n_a + n_b
        w_b = n_b / (n if n > 0.0 else 1.0)
        for j in range(d):
            delta[j] = mean_b[j] - means[g, j]
            means[g, j] = means[g, j] + delta[j] * w_b
        scale = n_a * w_b
        for a in range(d):
            for b in range(d):
                m2[g, a, b] = (m2[g, a, b] * w + m2_b[a, b]) + delta[a] * delta[b] * scale
        counts[g] = n
        if not factor_one(n, m2[g], floor, ridge, _TINY_ROOT, chol[g], work):
            failed[n_failed] = g
            n_failed += 1
    return changed, failed[:n_failed]
