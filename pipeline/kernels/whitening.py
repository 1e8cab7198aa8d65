"""Score readings against their own models: deviations, forward substitution, statistics."""

from __future__ import annotations

import numpy as np
from numba import njit
from numpy.typing import NDArray

F64 = NDArray[np.float64]

# Below this many readings a model's block is whitened one reading at a time
# (vectorised loops over so few readings cost more than they save).
_SMALL = 8


@njit(cache=True, nogil=True)
def whiten_sorted(
    xs: F64,
    starts: NDArray[np.int64],
    order: NDArray[np.int64],
    means: F64,
    chol: F64,
    k: int,
    counts: F64,
    table: F64,
    full: bool,
) -> tuple[F64, F64, F64, F64]:
    """Statistics of readings sorted by model, and optionally their (whitened) deviations.

    ``diff = x - mean_g``, ``L_g z = diff`` (the forward substitution of
    ``whiten_grouped``, term by term, vectorised over a model's readings),
    the statistic ``|z[k:]|^2`` (the sensors after the ``k`` conditions)
    times the prediction bound's scale ``table[min(n_g, len(table) - 1)]``.

    Parameters
    ----------
    xs : ndarray of shape (D, n)
        Readings by model (:func:`pipeline.kernels.blocks.sort_by_model`).
    starts : ndarray of shape (M + 1,)
    order : ndarray of shape (n,)
        Batch position of each column of ``xs``.
    means : ndarray of shape (M, D)
    chol : ndarray of shape (M, D, D)
        Lower Cholesky factors.
    k : int
        Conditioning sensors (first), left out of the statistic.
    counts : ndarray of shape (M,)
        Readings learned by each model (for the scale).
    table : ndarray of shape (N + 1,) or (0,)
        Scale by count (``pipeline.prediction``); none when empty.
    full : bool
        Also return the deviations and whitened deviations in batch order.

    Returns
    -------
    stat, scale : ndarray of shape (n,)
        Scaled squared norms and their scales (ones without a table), batch order.
    diff_t, z_t : ndarray of shape (D, n), or (0, 0) unless ``full``
    """
    d, n = xs.shape
    zs = np.empty((d, n))
    sq = np.zeros(n)
    stat = np.empty(n)
    scale = np.ones(n)
    top = table.size - 1
    for g in range(means.shape[0]):
        lo, hi = starts[g], starts[g + 1]
        if hi == lo:
            continue
        if hi - lo < _SMALL:
            # A few readings: one at a time (the same operations in the same order).
            for p in range(lo, hi):
                s = 0.0
                for j in range(d):
                    acc = xs[j, p] - means[g, j]
                    for q in range(j):
                        acc -= chol[g, j, q] * zs[q, p]
                    acc /= chol[g, j, j]
                    zs[j, p] = acc
                    if j >= k:
                        s += acc * acc
                sq[p] = s
        else:
            # Unsigned positions: no negative-index wraparound, so LLVM vectorises.
            ulo, uhi = np.uint64(lo), np.uint64(hi)
            for j in range(d):
                mu = means[g, j]
                for p in range(ulo, uhi):
                    zs[j, p] = xs[j, p] - mu
                for q in range(j):
                    lq = chol[g, j, q]
                    for p in range(ulo, uhi):
                        zs[j, p] -= lq * zs[q, p]
                ljj = chol[g, j, j]
                for p in range(ulo, uhi):
                    zs[j, p] /= ljj
                if j >= k:
                    for p in range(ulo, uhi):
                        sq[p] += zs[j, p] * zs[j, p]
        sc = table[int(min(counts[g], float(top)))] if top >= 0 else 1.0
        for p in range(lo, hi):
            i = order[p]
            stat[i] = sq[p] * sc
            scale[i] = sc
    if not full:
        return stat, scale, np.empty((0, 0)), np.empty((0, 0))
    diff_t = np.empty((d, n))
    z_t = np.empty((d, n))
    for g in range(means.shape[0]):
        for j in range(d):
            mu = means[g, j]
            for p in range(starts[g], starts[g + 1]):
                i = order[p]
                diff_t[j, i] = xs[j, p] - mu
                z_t[j, i] = zs[j, p]
    return stat, scale, diff_t, z_t


@njit(cache=True, nogil=True)
def contributions_grouped(
    x_t: F64, hit: NDArray[np.intp], model: NDArray[np.intp], means: F64, chol: F64, k: int
) -> tuple[F64, F64]:
    """Each scored sensor's share (h, D - k) of readings' squared distances, and their z.

    The deviation and its forward substitution are recomputed for the ``h``
    readings (the same operations as :func:`whiten_sorted`, so the same
    numbers); then ``S^-1 diff = L^-T z`` by back substitution
    (``unwhiten_transposed_grouped``).  With ``k`` conditions the shares are
    the Schur complement's: the regression residual ``e = diff_r - L21 z_c``
    times ``L22^-T z_r``.

    Parameters
    ----------
    x_t : ndarray of shape (D, n)
    hit : ndarray of shape (h,)
        The readings whose shares are wanted.
    model : ndarray of shape (n,)
    means : ndarray of shape (M, D)
    chol : ndarray of shape (M, D, D)
    k : int

    Returns
    -------
    shares : ndarray of shape (h, D - k)
    z_hit : ndarray of shape (D, h)
        The readings' whitened deviations.
    """
    d = x_t.shape[0]
    out = np.empty((hit.size, d - k))
    z_hit = np.empty((d, hit.size))
    diff = np.empty(d)
    z = np.empty(d)
    w = np.empty(d)
    for h in range(hit.size):
        i = hit[h]
        g = model[i]
        for j in range(d):
            diff[j] = x_t[j, i] - means[g, j]
            acc = diff[j]
            for q in range(j):
                acc -= chol[g, j, q] * z[q]
            acc /= chol[g, j, j]
            z[j] = acc
            z_hit[j, h] = acc
        for j in range(d - 1, k - 1, -1):
            acc = z[j]
            for q in range(j + 1, d):
                acc -= chol[g, q, j] * w[q]
            w[j] = acc / chol[g, j, j]
        for j in range(k, d):
            e = diff[j]
            if k:
                t = 0.0
                for q in range(k):
                    t += chol[g, j, q] * z[q]
                e = e - t
            out[h, j - k] = e * w[j]
    return out, z_hit
