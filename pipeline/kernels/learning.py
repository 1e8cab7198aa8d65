"""Learn one batch into stacked models: grouped moments, Chan's merge, new factors."""

from __future__ import annotations

import numpy as np
from numba import njit
from numpy.typing import NDArray

from pipeline.kernels.blocks import gather_columns, lane_ranks
from pipeline.kernels.factors import _TINY_ROOT, factor_one

F64 = NDArray[np.float64]

# Learn in lanes (one model per lane) when there are at least this many readings
# to learn per reading of the longest block, of at most _LANES_MAX_D sensors
# (measured: no quicker at D = 16, slower with one reading per model).
_LANES = 8
_LANES_MAX_D = 8


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
    kept = np.zeros(n_models, dtype=np.int64)
    for g in range(n_models):
        for p in range(starts[g], starts[g + 1]):
            kept[g] += keep[p]
    total = 0
    longest = 0
    for g in range(n_models):
        total += kept[g]
        longest = max(longest, kept[g])
    # Many models with a few readings each: their moments side by side, one lane per
    # model (the same sums in the same order per model, vectorised across models).
    lanes = d <= _LANES_MAX_D and longest > 1 and total >= _LANES * longest
    if lanes:
        lane_of, lane_mean, lane_m2 = _lane_moments(xs, starts, keep, kept, total, longest)
    else:
        lane_of, lane_mean, lane_m2 = kept, np.empty((0, 0)), np.empty((0, 0, 0))
    changed = np.empty(n_models, dtype=np.int64)
    failed = np.empty(n_models, dtype=np.int64)
    n_changed = 0
    n_failed = 0
    mean_b = np.empty(d)
    delta = np.empty(d)
    cs = np.empty((0, 0) if lanes else (d, n))  # centred readings
    kx = np.empty((0, 0) if lanes else (d, n))  # a block's kept readings
    c = np.empty(d)
    # The upper triangle's pairs, padded to a multiple of four with the last pair.
    n_pairs = d * (d + 1) // 2
    padded = -(-n_pairs // 4) * 4
    pa = np.empty(padded, dtype=np.int64)
    pb = np.empty(padded, dtype=np.int64)
    r = 0
    for a in range(d):
        for b in range(a, d):
            pa[r] = a
            pb[r] = b
            r += 1
    for r in range(n_pairs, padded):
        pa[r] = pa[n_pairs - 1]
        pb[r] = pb[n_pairs - 1]
    m2_b = np.empty((d, d))
    work = np.empty((d, d))
    use_decay = decay.size == n_models
    for g in range(n_models):
        lo, hi = starts[g], starts[g + 1]
        nb = kept[g]
        if nb == 0:
            continue
        changed[n_changed] = g
        n_changed += 1
        n_b = float(nb)
        if lanes:
            k = lane_of[g]
            for a in range(d):
                mean_b[a] = lane_mean[k, a]
                for b in range(d):
                    m2_b[a, b] = lane_m2[k, a, b]
        elif nb == 1:
            # One reading: its own mean (x / 1 is x) and a zero co-moment, as the
            # general case computes them, without the loops.
            for p in range(lo, hi):
                if keep[p]:
                    for j in range(d):
                        mean_b[j] = 0.0 + xs[j, p]  # the sum from 0.0 (a -0.0 turns +0.0)
            for a in range(d):
                for b in range(d):
                    m2_b[a, b] = 0.0
        elif nb == hi - lo:
            _block_moments(xs, lo, hi, n_b, mean_b, cs, c, m2_b, pa, pb, padded)
        else:  # the kept readings side by side first (in order): loops without branches
            q = 0
            for p in range(lo, hi):
                if keep[p]:
                    for j in range(d):
                        kx[j, q] = xs[j, p]
                    q += 1
            _block_moments(kx, 0, nb, n_b, mean_b, cs, c, m2_b, pa, pb, padded)
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
        if not factor_one(g, n_new, m2, floor, ridge, _TINY_ROOT, chol, work):
            failed[n_failed] = g
            n_failed += 1
    return changed[:n_changed], failed[:n_failed]


@njit(cache=True, nogil=True)
def _block_moments(
    xs: F64,
    lo: int,
    hi: int,
    n_b: float,
    mean_b: F64,
    cs: F64,
    c: F64,
    m2_b: F64,
    pa: NDArray[np.int64],
    pb: NDArray[np.int64],
    padded: int,
) -> None:
    """Mean (D,) and co-moment (D, D) of readings ``xs[:, lo:hi]`` into ``mean_b`` and
    ``m2_b`` (``cs`` (D, n) and ``c`` (D,) are scratch)."""
    d = xs.shape[0]
    # Sums in reading order, then centred products in reading order (as
    # np.bincount adds them), four sensors or sensor pairs side by side.
    for j0 in range(0, d, 4):
        s0 = s1 = s2 = s3 = 0.0
        j1, j2, j3 = min(j0 + 1, d - 1), min(j0 + 2, d - 1), min(j0 + 3, d - 1)
        for p in range(lo, hi):
            s0 += xs[j0, p]
            s1 += xs[j1, p]
            s2 += xs[j2, p]
            s3 += xs[j3, p]
        mean_b[j0] = s0 / n_b
        if j0 + 1 < d:
            mean_b[j1] = s1 / n_b
        if j0 + 2 < d:
            mean_b[j2] = s2 / n_b
        if j0 + 3 < d:
            mean_b[j3] = s3 / n_b
    ulo, uhi = np.uint64(lo), np.uint64(hi)  # unsigned: vectorised
    for j in range(d):
        mj = mean_b[j]
        for p in range(ulo, uhi):
            cs[j, p] = xs[j, p] - mj
    if hi - lo >= 8:
        # Four pairs side by side over the block: the sums stay in registers (at
        # D = 16, 2.4x quicker than the outer products below, which load and store
        # the whole D x D co-moment for every reading; the same sums in the same order).
        for r0 in range(0, padded, 4):
            a0, b0 = pa[r0], pb[r0]
            a1, b1 = pa[r0 + 1], pb[r0 + 1]
            a2, b2 = pa[r0 + 2], pb[r0 + 2]
            a3, b3 = pa[r0 + 3], pb[r0 + 3]
            s0 = s1 = s2 = s3 = 0.0
            for p in range(lo, hi):
                s0 += cs[a0, p] * cs[b0, p]
                s1 += cs[a1, p] * cs[b1, p]
                s2 += cs[a2, p] * cs[b2, p]
                s3 += cs[a3, p] * cs[b3, p]
            m2_b[a0, b0] = s0
            m2_b[b0, a0] = s0
            m2_b[a1, b1] = s1
            m2_b[b1, a1] = s1
            m2_b[a2, b2] = s2
            m2_b[b2, a2] = s2
            m2_b[a3, b3] = s3
            m2_b[b3, a3] = s3
    else:
        # Few readings: one reading's outer product at a time.
        for a in range(d):
            for b in range(d):
                m2_b[a, b] = 0.0
        for p in range(lo, hi):
            for j in range(d):
                c[j] = cs[j, p]
            for a in range(d):
                ca = c[a]
                for b in range(d):
                    m2_b[a, b] += ca * c[b]


@njit(cache=True, nogil=True)
def _lane_moments(
    xs: F64,
    starts: NDArray[np.int64],
    keep: NDArray[np.bool_],
    kept: NDArray[np.int64],
    total: int,
    longest: int,
) -> tuple[NDArray[np.int64], F64, F64]:
    """Means and co-moments of the kept readings of every model at once, side by side.

    The models that learn are laid out in lanes, longest block first; the
    ``r``-th kept reading of every model with more than ``r`` is stored side by
    side (rank by rank), so each step of a model's sums (in reading order, as
    :func:`_block_moments` adds them) is one element of a loop over lanes that
    LLVM vectorises.  A model's numbers are those of :func:`_block_moments`.

    Parameters
    ----------
    xs : ndarray of shape (D, n)
    starts : ndarray of shape (M + 1,)
    keep : ndarray of shape (n,)
        Whether each column of ``xs`` is learned.
    kept : ndarray of shape (M,)
        Kept readings per model.
    total, longest : int
        Their sum and maximum (> 0).

    Returns
    -------
    lane_of : ndarray of shape (M,)
        Each model's lane (-1: none).
    mean : ndarray of shape (L, D)
    m2 : ndarray of shape (L, D, D)
    """
    d = xs.shape[0]
    by_length, lane_of, width, offset, n_lanes = lane_ranks(kept, longest)
    # The column of xs of each position, then the readings sensor by sensor (vectorised).
    src = np.empty(total, dtype=np.int64)
    for k in range(n_lanes):
        g = by_length[k]
        q = 0
        for p in range(starts[g], starts[g + 1]):
            if keep[p]:
                src[offset[q] + k] = p
                q += 1
    xr = gather_columns(xs, src)
    sums = np.zeros((d, n_lanes))
    for r in range(longest):
        # Unsigned positions: no negative-index wraparound, so LLVM vectorises.
        o, wr = np.uint64(offset[r]), np.uint64(width[r])
        for j in range(d):
            for k in range(wr):
                sums[j, k] += xr[j, o + k]
    mean_t = np.empty((d, n_lanes))
    for j in range(d):
        for k in range(n_lanes):
            mean_t[j, k] = sums[j, k] / float(kept[by_length[k]])
    for r in range(longest):
        o, wr = np.uint64(offset[r]), np.uint64(width[r])
        for j in range(d):
            for k in range(wr):
                xr[j, o + k] = xr[j, o + k] - mean_t[j, k]
    n_pairs = d * (d + 1) // 2
    prods = np.zeros((n_pairs, n_lanes))
    for r in range(longest):
        o, wr = np.uint64(offset[r]), np.uint64(width[r])
        pair = 0
        for a in range(d):
            for b in range(a, d):
                for k in range(wr):
                    prods[pair, k] += xr[a, o + k] * xr[b, o + k]
                pair += 1
    mean = np.empty((n_lanes, d))
    m2 = np.empty((n_lanes, d, d))
    for k in range(n_lanes):
        for j in range(d):
            mean[k, j] = mean_t[j, k]
        pair = 0
        for a in range(d):
            for b in range(a, d):
                m2[k, a, b] = prods[pair, k]
                m2[k, b, a] = prods[pair, k]
                pair += 1
    return lane_of, mean, m2
