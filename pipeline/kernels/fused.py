"""One batch of the plain configuration in one call: score, contributions, then learn."""

from __future__ import annotations

import numpy as np
from numba import njit
from numpy.typing import NDArray

from pipeline.kernels.blocks import sort_by_model
from pipeline.kernels.lanes import LANES, LANES_MAX_D, score_then_learn_lanes
from pipeline.kernels.learning import learn_sorted
from pipeline.kernels.whitening import contributions_grouped, whiten_sorted

F64 = NDArray[np.float64]


@njit(cache=True, nogil=True)
def _all_finite(ts: F64, x_t: F64) -> bool:
    """Whether every timestamp (n,) and value of ``x_t`` (D, n) is finite."""
    # v - v is 0 exactly when v is finite (NaN otherwise): no branch, no call; an
    # integer OR over a flat loop vectorises (a float sum would be a serial chain).
    bad = 0
    for i in range(ts.size):
        bad |= not ts[i] - ts[i] == 0.0
    # The values in memory order: a view when x_t is the transpose of C-ordered
    # readings (the usual case) or C-ordered itself, a copy otherwise.
    flat = x_t.T.ravel() if x_t.strides[0] <= x_t.strides[1] else x_t.ravel()
    for r in range(flat.size):
        bad |= not flat[r] - flat[r] == 0.0
    return bad == 0


@njit(cache=True, nogil=True)
def score_then_learn(
    x_t: F64,
    ts: F64,
    ids: NDArray[np.int64],
    lookup: NDArray[np.intp],
    idx: NDArray[np.intp],
    model_of: NDArray[np.intp],
    regime: F64,
    edges: F64,
    k: int,
    counts: F64,
    means: F64,
    m2: F64,
    chol: F64,
    table: F64,
    min_count: float,
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
) -> tuple[bool, int, int]:
    """Score readings against their warm models, then learn them, in place.

    What ``Detector.process`` does for readings that are all valid and all
    of warm models, with conditions and regime bins but without charts,
    learning rules, time spans or fleet-relative sensors:
    :func:`whiten_sorted`, the alarms ``stat > threshold`` and their
    contributions (:func:`contributions_grouped`, scaled as the statistic)
    against the models as they were, then :func:`learn_sorted` of the readings
    at or below the learning gate (all of them with ``learn_flagged``).

    Parameters
    ----------
    x_t : ndarray of shape (D, n)
    ts : ndarray of shape (n,)
    ids : ndarray of shape (n,)
        Turbine ids.
    lookup : ndarray of shape (S,) or (0,)
        Dense turbine index by id (``TurbineIndex.table``, -1 unknown): the ids
        are looked up and the readings checked finite here.  Empty: ``idx``
        holds the indices and the readings are known to be finite.
    idx : ndarray of shape (n,) or (0,)
        Dense turbine index of each reading, when ``lookup`` is empty.
    model_of : ndarray of shape (T,) or (0,)
        The model of each turbine (its key group's), before the regime bins;
        empty: the turbine's own.
    regime : ndarray of shape (n,) or (0,)
        The raw regime sensor of each reading; empty: one bin.
    edges : ndarray of shape (B - 1,)
        The regime bins' edges (``pipeline.policy.regime_bins``): the model of
        a reading is ``B * model_of[turbine] + bin``.
    k : int
        Conditioning sensors, the first ``k`` rows of ``x_t``: learned, left out
        of the statistic and of the contributions.
    counts, means, m2, chol : ndarray of shape (M,), (M, D), (M, D, D), (M, D, D)
        The models, updated in place.
    table : ndarray of shape (N + 1,) or (0,)
        The prediction bound's scale by count; none when empty.
    min_count : float
        A model scores once it has learned this many readings.
    threshold, gate : float
        Alarm threshold and learning gate of the (scaled) statistic.
    learn_flagged : bool
        Learn the readings above the gate too.
    memory : float
        Exponential forgetting in readings; 0 for none.
    floor : ndarray of shape (D,) or (0,)
    ridge : float
    stat_out, flags_out : ndarray of shape (n,)
        Receive the statistics and the alarm flags.
    hit_out : ndarray of shape (>= n,)
        Receives the positions of the alarms in ``hit_out[:h]``.
    shares_out : ndarray of shape (>= n, D)
        Receives their contributions in ``shares_out[:h, :D - k]`` (the sensors
        after the conditions, in the order of ``x_t``).
    failed_out : ndarray of shape (M,)
        Receives in ``failed_out[:f]`` the models whose new factor the NumPy
        path must repair.

    (Results go to arrays the caller owns: returning arrays would box each.)

    Returns
    -------
    done : bool
        False (and nothing changed) when a reading is not finite, of an
        unknown turbine or of a model not warm: the caller takes the general path.
    h, f : int
        Alarms and factors to repair.
    """
    d, n = x_t.shape
    not_here = (False, 0, 0)
    model = np.empty(n, dtype=np.intp)
    mapped = model_of.size > 0
    if lookup.size:
        # Branch-free checks where they can be (so LLVM vectorises them): the lookup
        # first, then whether every value is finite, as integer OR reductions.
        size = lookup.size
        unknown = 0
        for i in range(n):
            t = ids[i]
            if t < 0 or t >= size:
                return not_here
            g = lookup[t]
            unknown |= g < 0
            model[i] = g
        if unknown:
            return not_here
        if mapped:
            for i in range(n):
                model[i] = model_of[model[i]]
        if not _all_finite(ts, x_t):
            return not_here
    else:
        for i in range(n):
            model[i] = model_of[idx[i]] if mapped else idx[i]
    if regime.size:  # after the finite check: every value has its bin
        bins = edges.size + 1
        for i in range(n):
            v, b = regime[i], 0
            for e in range(edges.size):  # np.searchsorted(side="right"), without branches
                b += edges[e] <= v
            model[i] = model[i] * bins + b
    per = np.zeros(counts.size, dtype=np.int64)
    for i in range(n):
        per[model[i]] += 1
    longest = 0
    for g in range(counts.size):  # once per model, not per reading
        if per[g] > 0:
            if not counts[g] >= min_count:
                return not_here
            longest = max(longest, per[g])
    if d <= LANES_MAX_D and longest > 1 and n >= LANES * longest:
        # Many models, a few readings each (one per model: the blocks are quicker).
        n_hit, n_failed = score_then_learn_lanes(
            x_t,
            model,
            per,
            longest,
            counts,
            means,
            m2,
            chol,
            k,
            table,
            threshold,
            gate,
            learn_flagged,
            memory,
            floor,
            ridge,
            stat_out,
            flags_out,
            hit_out,
            shares_out,
            failed_out,
        )
        return True, n_hit, n_failed
    starts, order, xs = sort_by_model(x_t, model, counts.size)
    stat, scale, _, _ = whiten_sorted(xs, starts, order, means, chol, k, counts, table, False)
    n_hit = 0
    for i in range(n):
        f = stat[i] > threshold
        stat_out[i] = stat[i]
        flags_out[i] = f
        if f:
            hit_out[n_hit] = i
            n_hit += 1
    hit = hit_out[:n_hit]
    shares, _ = contributions_grouped(x_t, hit, model, means, chol, k)
    for h in range(n_hit):
        sc = scale[hit[h]]
        for j in range(d - k):
            shares_out[h, j] = shares[h, j] * sc
    if learn_flagged:
        skip = np.empty(0, dtype=np.bool_)
    else:
        skip = np.empty(n, dtype=np.bool_)
        for i in range(n):
            skip[i] = stat[i] > gate
    empty = np.empty(0)
    _, failed = learn_sorted(
        xs, starts, order, skip, counts, means, m2, memory, empty, chol, floor, ridge
    )
    for r in range(failed.size):
        failed_out[r] = failed[r]
    return True, n_hit, failed.size
