"""Score readings against their own models: deviations, forward substitution, statistics."""

from __future__ import annotations

import numpy as np
from numba import njit
from numpy.typing import NDArray

from pipeline.kernels.blocks import model_blocks

F64 = NDArray[np.float64]


@njit(cache=True, nogil=True)
def whiten_scores(
    x_t: F64,
    model: NDArray[np.intp],
    means: F64,
    chol: F64,
    k: int,
    counts: F64,
    table: F64,
) -> tuple[F64, F64, F64, F64]:
    """Deviations, whitened deviations, statistics and their scales of readings ``x_t``.

    ``diff = x - mean_g``, ``L_g z = diff`` (the forward substitution of
    ``whiten_grouped``, term by term), the statistic ``|z[k:]|^2`` (the
    sensors after the ``k`` conditions) times the prediction bound's scale
    ``table[min(n_g, len(table) - 1)]`` of the model's count.

    Parameters
    ----------
    x_t : ndarray of shape (D, n)
    model : ndarray of shape (n,)
        Model of each reading, in ``[0, M)`` (not checked).
    means : ndarray of shape (M, D)
    chol : ndarray of shape (M, D, D)
        Lower Cholesky factors.
    k : int
        Conditioning sensors (first in ``x_t``), left out of the statistic.
    counts : ndarray of shape (M,)
        Readings learned by each model (for the scale).
    table : ndarray of shape (N + 1,) or (0,)
        Scale by count (``pipeline.prediction``); none when empty.

    Returns
    -------
    diff_t, z_t : ndarray of shape (D, n)
    stat : ndarray of shape (n,)
        Scaled squared norms.
    scale : ndarray of shape (n,)
        Each statistic's scale (ones without a table).
    """
    d, n = x_t.shape
    n_models = means.shape[0]
    starts, order = model_blocks(model, np.zeros(0, dtype=np.bool_), n_models)
    diff_t = np.empty((d, n))
    z_t = np.empty((d, n))
    stat = np.zeros(n)
    scale = np.ones(n)
    zs = np.empty((d, n))  # by model
    top = table.size - 1
    for g in range(n_models):
        lo, hi = starts[g], starts[g + 1]
        if hi == lo:
            continue
        for j in range(d):
            mu = means[g, j]
            for p in range(lo, hi):
                zs[j, p] = x_t[j, order[p]] - mu
        for j in range(d):
            for p in range(lo, hi):
                diff_t[j, order[p]] = zs[j, p]
        for j in range(d):
            for q in range(j):
                lq = chol[g, j, q]
                for p in range(lo, hi):
                    zs[j, p] -= lq * zs[q, p]
            ljj = chol[g, j, j]
            for p in range(lo, hi):
                zs[j, p] /= ljj
        sc = 1.0
        if top >= 0:
            sc = table[int(min(counts[g], float(top)))]
        for p in range(lo, hi):
            i = order[p]
            s = 0.0
            for j in range(d):
                v = zs[j, p]
                z_t[j, i] = v
                if j >= k:
                    s += v * v
            stat[i] = s * sc
            scale[i] = sc
    return diff_t, z_t, stat, scale


@njit(cache=True, nogil=True)
def contributions_grouped(
    diff_t: F64, z_t: F64, hit: NDArray[np.intp], model: NDArray[np.intp], chol: F64, k: int
) -> F64:
    """Each scored sensor's share (h, D - k) of the anomalies' squared distances.

    ``S^-1 diff = L^-T z`` by back substitution (``unwhiten_transposed_grouped``);
    with ``k`` conditions the shares are those of the Schur complement: the
    regression residual ``e = diff_r - L21 z_c`` times ``L22^-T z_r``.

    Parameters
    ----------
    diff_t, z_t : ndarray of shape (D, n)
    hit : ndarray of shape (h,)
        The readings whose shares are wanted.
    model : ndarray of shape (n,)
    chol : ndarray of shape (M, D, D)
    k : int
    """
    d = diff_t.shape[0]
    r = d - k
    out = np.empty((hit.size, r))
    w = np.empty(d)
    for h in range(hit.size):
        i = hit[h]
        g = model[i]
        for j in range(d - 1, k - 1, -1):
            acc = z_t[j, i]
            for q in range(j + 1, d):
                acc -= chol[g, q, j] * w[q]
            w[j] = acc / chol[g, j, j]
        for j in range(k, d):
            e = diff_t[j, i]
            if k:
                t = 0.0
                for q in range(k):
                    t += chol[g, j, q] * z_t[q, i]
                e = e - t
            out[h, j - k] = e * w[j]
    return out
