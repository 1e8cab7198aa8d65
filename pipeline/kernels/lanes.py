"""The plain path for many models with a few readings each: one model per lane.

A batch of a fleet holds a few readings of each of many models (turbines).
Reduced model by model, every loop runs over a few readings; here the models
are laid out side by side instead, longest block first, and the ``r``-th
reading of every model with more than ``r`` is stored next to the others
(rank by rank).  Each step of a model's arithmetic (a term of its forward
substitution, a term of its sums) is then one element of a loop over models
that LLVM vectorises, and every model still sees its own readings in batch
order, through the same floating-point operations as
:func:`pipeline.kernels.whitening.whiten_sorted` and
:func:`pipeline.kernels.learning.learn_sorted`: the results are theirs, bit
for bit, whatever the other models of the batch.

Readings not learned are masked, not removed: their centred values are
multiplied by 0.0, and adding a zero product leaves a sum that started at
+0.0 unchanged (the values are finite), so the sums are those of the kept
readings alone, in order.
"""

from __future__ import annotations

import numpy as np
from numba import njit
from numpy.typing import NDArray

from pipeline.kernels.blocks import gather_columns, lane_ranks
from pipeline.kernels.factors import _TINY_ROOT
from pipeline.kernels.whitening import contributions_grouped

F64 = NDArray[np.float64]

# Lanes when the batch holds at least this many readings per reading of the
# longest block (the average width of a rank).
LANES = 8
# Above this many sensors the models' factors (D x D per lane) no longer stay in
# cache across a rank: the block path whitens faster (measured at D = 16).
LANES_MAX_D = 8


@njit(cache=True, nogil=True)
def lane_layout(
    model: NDArray[np.intp], per: NDArray[np.int64], longest: int
) -> tuple[
    NDArray[np.int64],
    NDArray[np.int64],
    NDArray[np.int64],
    NDArray[np.int64],
    NDArray[np.int64],
    int,
]:
    """Lanes of the models (:func:`lane_ranks`) and the batch position at each lane slot.

    Parameters
    ----------
    model : ndarray of shape (n,)
    per : ndarray of shape (M,)
        Readings per model.
    longest : int
        ``per.max()`` (> 0).

    Returns
    -------
    by_lane, lane_of, width, offset
        As :func:`pipeline.kernels.blocks.lane_ranks`.
    src : ndarray of shape (n,)
        Batch position of the reading at each slot.
    n_lanes : int
    """
    by_lane, lane_of, width, offset, n_lanes = lane_ranks(per, longest)
    rank = np.zeros(per.size, dtype=np.int64)
    src = np.empty(model.size, dtype=np.int64)
    for i in range(model.size):  # batch order: each model's readings in order
        g = model[i]
        src[offset[rank[g]] + lane_of[g]] = i
        rank[g] += 1
    return by_lane, lane_of, width, offset, src, n_lanes


@njit(cache=True, nogil=True)
def score_then_learn_lanes(
    x_t: F64,
    model: NDArray[np.intp],
    per: NDArray[np.int64],
    longest: int,
    counts: F64,
    means: F64,
    m2: F64,
    chol: F64,
    n_cond: int,
    table: F64,
    threshold: float,
    gate: float,
    learn_flagged: bool,
    memory: float,
    floor: F64,
    ridge: float,
    stat_out: F64,
    flags_out: NDArray[np.bool_],
    hit_out: NDArray[np.int64],
    shares_out: F64,
    failed_out: NDArray[np.int64],
) -> tuple[int, int]:
    """:func:`pipeline.kernels.fused.score_then_learn` of checked readings, in lanes.

    Parameters
    ----------
    x_t : ndarray of shape (D, n)
        Finite readings.
    model : ndarray of shape (n,)
        Model of each reading (all warm).
    per : ndarray of shape (M,)
        Readings per model; ``longest`` their maximum (> 0).
    counts, means, m2, chol : ndarray of shape (M,), (M, D), (M, D, D), (M, D, D)
        The models, updated in place.
    n_cond : int
        Conditioning sensors (the first rows of ``x_t``), left out of the statistic.
    table : ndarray of shape (N + 1,) or (0,)
    threshold, gate, learn_flagged, memory, floor, ridge
        As :func:`pipeline.kernels.fused.score_then_learn`.
    stat_out, flags_out : ndarray of shape (n,)
    hit_out : ndarray of shape (>= n,)
    shares_out : ndarray of shape (>= n, D)
    failed_out : ndarray of shape (M,)

    Returns
    -------
    h, f : int
        Alarms and factors to repair.
    """
    d, n = x_t.shape
    by_lane, lane_of, width, offset, src, n_lanes = lane_layout(model, per, longest)
    xr = gather_columns(x_t, src)
    # The models' numbers lane by lane (sensor-major, lanes contiguous).
    mu = np.empty((d, n_lanes))
    low = np.empty((d, d, n_lanes))
    sc = np.empty(n_lanes)
    top = table.size - 1
    for k in range(n_lanes):
        g = by_lane[k]
        for j in range(d):
            mu[j, k] = means[g, j]
            for q in range(j + 1):
                low[j, q, k] = chol[g, j, q]
        sc[k] = table[int(min(counts[g], float(top)))] if top >= 0 else 1.0
    # Score: the forward substitution term by term, as whiten_sorted.
    z = np.empty((d, n_lanes))
    for r in range(longest):
        # Unsigned positions: no negative-index wraparound, so LLVM vectorises.
        o, w = np.uint64(offset[r]), np.uint64(width[r])
        for j in range(d):
            for k in range(w):
                z[j, k] = xr[j, o + k] - mu[j, k]
            for q in range(j):
                for k in range(w):
                    z[j, k] -= low[j, q, k] * z[q, k]
            for k in range(w):
                z[j, k] /= low[j, j, k]
        for k in range(w):
            s = 0.0
            for j in range(n_cond, d):
                s += z[j, k] * z[j, k]
            i = src[o + k]
            stat_out[i] = s * sc[k]
    n_hit = 0
    for i in range(n):
        f = stat_out[i] > threshold
        flags_out[i] = f
        if f:
            hit_out[n_hit] = i
            n_hit += 1
    hit = hit_out[:n_hit]
    shares, _ = contributions_grouped(x_t, hit, model, means, chol, n_cond)
    for h in range(n_hit):
        g = model[hit[h]]
        sch = table[int(min(counts[g], float(top)))] if top >= 0 else 1.0
        for j in range(d - n_cond):
            shares_out[h, j] = shares[h, j] * sch
    # Learn: the kept readings' sums, then their centred products, in order.
    keep = np.empty(n)
    kept = np.zeros(n_lanes)
    for r in range(longest):
        o = offset[r]
        for k in range(width[r]):
            learned = learn_flagged or not stat_out[src[o + k]] > gate
            keep[o + k] = 1.0 if learned else 0.0
            kept[k] += keep[o + k]
    sums = np.zeros((d, n_lanes))
    for r in range(longest):
        o, w = np.uint64(offset[r]), np.uint64(width[r])
        for j in range(d):
            for k in range(w):
                sums[j, k] += xr[j, o + k] * keep[o + k]
    for j in range(d):
        for k in range(n_lanes):
            mu[j, k] = sums[j, k] / kept[k] if kept[k] > 0.0 else 0.0
    for r in range(longest):
        o, w = np.uint64(offset[r]), np.uint64(width[r])
        for j in range(d):
            for k in range(w):
                xr[j, o + k] = (xr[j, o + k] - mu[j, k]) * keep[o + k]
    n_pairs = d * (d + 1) // 2
    prods = np.zeros((n_pairs, n_lanes))
    for r in range(longest):
        o, w = np.uint64(offset[r]), np.uint64(width[r])
        pair = 0
        for a in range(d):
            for b in range(a, d):
                for k in range(w):
                    prods[pair, k] += xr[a, o + k] * xr[b, o + k]
                pair += 1
    # Chan et al. and the new factors, lane by lane (LLVM vectorises over the models):
    # the operations of learn_sorted and factor_one, element by element.
    weight = np.empty(n_lanes)
    n_new = np.empty(n_lanes)
    w_b = np.empty(n_lanes)
    scale = np.empty(n_lanes)
    inv = np.empty(n_lanes)
    old_mu = np.empty((d, n_lanes))
    m2_l = np.empty((d, d, n_lanes))
    for k in range(n_lanes):
        g = by_lane[k]
        n_b = kept[k]
        # exp one lane at a time: libm's, as learn_sorted's (a vector exp may round otherwise)
        weight[k] = np.exp(-n_b / memory) if memory > 0.0 else 1.0
        for j in range(d):
            old_mu[j, k] = means[g, j]
        for a in range(d):
            for b in range(d):
                m2_l[a, b, k] = m2[g, a, b]
        n_a = counts[g] * weight[k]
        n_new[k] = n_a + n_b
        w_b[k] = n_b / (n_new[k] if n_new[k] > 0.0 else 1.0)
        scale[k] = n_a * w_b[k]
        denom = n_new[k] - 1.0
        inv[k] = 1.0 / denom if denom > 0.0 else 0.0
    for j in range(d):  # delta in the batch means' place
        for k in range(n_lanes):
            mu[j, k] = mu[j, k] - old_mu[j, k]
            old_mu[j, k] = old_mu[j, k] + mu[j, k] * w_b[k]
    pair = 0
    for a in range(d):
        for b in range(a, d):
            for k in range(n_lanes):
                m2_l[a, b, k] = (m2_l[a, b, k] * weight[k] + prods[pair, k]) + mu[a, k] * mu[
                    b, k
                ] * scale[k]
            if b > a:
                for k in range(n_lanes):
                    m2_l[b, a, k] = (m2_l[b, a, k] * weight[k] + prods[pair, k]) + mu[b, k] * mu[
                        a, k
                    ] * scale[k]
            pair += 1
    # factor_one, lane by lane: covariance, floors, ridge, then the lower factor.
    work = np.empty((d, d, n_lanes))
    for a in range(d):
        for b in range(d):
            for k in range(n_lanes):
                work[a, b, k] = m2_l[a, b, k] * inv[k]
    if floor.size == d:
        for a in range(d):
            for k in range(n_lanes):
                work[a, a, k] = work[a, a, k] + floor[a]
    trace = np.zeros(n_lanes)
    for a in range(d):
        for k in range(n_lanes):
            trace[k] += work[a, a, k]
    for k in range(n_lanes):
        trace[k] = ridge * abs(trace[k] / d) + _TINY_ROOT
    for a in range(d):
        for k in range(n_lanes):
            work[a, a, k] = work[a, a, k] + trace[k]
    low_new = np.zeros((d, d, n_lanes))
    ok = np.ones(n_lanes, dtype=np.bool_)
    pivot = np.empty(n_lanes)
    inv_l = np.empty(n_lanes)
    for j in range(d):
        for k in range(n_lanes):
            pivot[k] = work[j, j, k]
        for q in range(j):
            for k in range(n_lanes):
                pivot[k] -= low_new[j, q, k] * low_new[j, q, k]
        for k in range(n_lanes):
            ok[k] &= pivot[k] > 0.0
            root = np.sqrt(pivot[k]) if pivot[k] > 0.0 else 1.0  # a failed lane is repaired later
            low_new[j, j, k] = root
            inv_l[k] = 1.0 / root  # LAPACK's dpotf2 scales the column by the reciprocal too
        for i in range(j + 1, d):
            for k in range(n_lanes):
                t = work[i, j, k]
                for q in range(j):
                    t -= low_new[i, q, k] * low_new[j, q, k]
                low_new[i, j, k] = t * inv_l[k]
    # Back to the models, ascending (the failed ones in model order).
    n_failed = 0
    for g in range(counts.size):
        k = lane_of[g]
        if k < 0 or kept[k] == 0.0:
            continue
        counts[g] = n_new[k]
        for j in range(d):
            means[g, j] = old_mu[j, k]
        for a in range(d):
            for b in range(d):
                m2[g, a, b] = m2_l[a, b, k]
                chol[g, a, b] = low_new[a, b, k]
        if not ok[k]:
            failed_out[n_failed] = g
            n_failed += 1
    return n_hit, n_failed
