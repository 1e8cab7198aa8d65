"""Compiled alarm episodes: one pass over a batch's sorted alarms (``pipeline.episodes``).

The NumPy function :func:`pipeline.episodes.advance_episodes` is the oracle:
the same episodes, in the same order, with the same floating-point operations
(a segment's contributions summed as ``np.add.reduceat`` sums them: its first
row plus NumPy's pairwise sum of the others; then added to the carried
episode's sums), so the results are equal bit for bit.  States travel as
integer codes into a table the caller keeps.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def _pairwise(a, lo, n):
    """NumPy's pairwise sum of ``a[lo:lo + n]`` (``pairwise_sum`` of its umath loops)."""
    if n < 8:
        res = 0.0
        for i in range(lo, lo + n):
            res += a[i]
        return res
    if n <= 128:
        r0, r1, r2, r3 = a[lo], a[lo + 1], a[lo + 2], a[lo + 3]
        r4, r5, r6, r7 = a[lo + 4], a[lo + 5], a[lo + 6], a[lo + 7]
        i = 8
        while i < n - (n % 8):
            r0 += a[lo + i]
            r1 += a[lo + i + 1]
            r2 += a[lo + i + 2]
            r3 += a[lo + i + 3]
            r4 += a[lo + i + 4]
            r5 += a[lo + i + 5]
            r6 += a[lo + i + 6]
            r7 += a[lo + i + 7]
            i += 8
        res = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
        while i < n:
            res += a[lo + i]
            i += 1
        return res
    n2 = n // 2
    n2 -= n2 % 8
    return _pairwise(a, lo, n2) + _pairwise(a, lo + n2, n - n2)


@njit(cache=True, nogil=True)
def _reduceat_sum(a, lo, n):
    """``np.add.reduceat``'s sum of a segment ``a[lo:lo + n]`` (n >= 1): first + pairwise rest."""
    if n == 1:
        return a[lo]
    return a[lo] + _pairwise(a, lo + 1, n - 1)


@njit(cache=True, nogil=True)
def _stable_by_two(primary, secondary):
    """Order (n,) by ``primary``, then ``secondary``, stable (``np.lexsort``)."""
    first = np.argsort(secondary, kind="mergesort")
    second = np.argsort(primary[first], kind="mergesort")
    return first[second]


@njit(cache=True, nogil=True)
def advance_episodes_compiled(
    c_turbines,
    c_starts,
    c_ends,
    c_peaks,
    c_peak_times,
    c_alarms,
    c_contributions,
    c_states,
    timestamps,
    turbine_ids,
    is_anomaly,
    distances,
    contributions,
    states,
    gap,
):
    """One batch's alarms grouped into episodes (at least one alarm in the batch).

    Parameters
    ----------
    c_turbines, c_starts, c_ends, c_peaks, c_peak_times, c_alarms, c_states : (m,)
        The carried episodes (sorted by turbine, one per turbine); states as codes.
    c_contributions : (m, D)
    timestamps, turbine_ids, is_anomaly, distances, states : (n,)
        The batch's readings; states as codes.
    contributions : (k, D)
        The alarms' contributions in batch order (k = is_anomaly.sum() > 0).
    gap : float

    Returns
    -------
    every : tuple of the (m + G,) columns and the (m + G, D) sums
        The carried episodes, then the batch's segments in (turbine, time) order.
    opened, closed, still_open : (.,) int64
        Rows of ``every``: the first two by (start, turbine), the last by turbine.
    """
    n = timestamps.size
    m = c_turbines.size
    dims = c_contributions.shape[1]
    hit = np.flatnonzero(is_anomaly)
    k = hit.size
    perm = _stable_by_two(turbine_ids[hit], timestamps[hit])

    # Segments: per sorted alarm, a new one where a turbine starts or a gap breaks.
    seg_turbine = np.empty(k, np.int64)
    seg_start = np.empty(k)
    seg_end = np.empty(k)
    seg_peak = np.empty(k)
    seg_peak_t = np.empty(k)
    seg_state = np.empty(k, np.int64)
    seg_alarms = np.empty(k, np.int64)
    seg_first = np.empty(k, np.int64)  # the segment's first position in sorted order
    seg_carried = np.full(k, -1, np.int64)  # the carried episode a segment continues
    untouched = np.ones(m, np.bool_)
    g = -1
    carried_end = -np.inf
    pos = -1
    prev_t = 0.0
    prev_u = 0
    for p in range(k):
        row = perm[p]
        i = hit[row]
        t = timestamps[i]
        u = turbine_ids[i]
        first = p == 0 or u != prev_u
        if first:
            pos = np.searchsorted(c_turbines, u)
            if pos < m and c_turbines[pos] == u:
                carried_end = c_ends[pos]
            else:
                pos = -1
                carried_end = -np.inf
            previous = carried_end
        else:
            previous = max(prev_t, carried_end)
        breaks = (t - previous) >= gap
        if first or breaks:
            g += 1
            seg_turbine[g] = u
            seg_start[g] = t
            seg_end[g] = t
            seg_peak[g] = distances[i]
            seg_peak_t[g] = t
            seg_state[g] = states[i]
            seg_alarms[g] = 1
            seg_first[g] = p
            if first and not breaks and pos >= 0:
                seg_carried[g] = pos
        else:
            seg_end[g] = max(seg_end[g], t)
            if distances[i] > seg_peak[g]:
                seg_peak[g] = distances[i]
                seg_peak_t[g] = t
                seg_state[g] = states[i]
            seg_alarms[g] += 1
        prev_t = t
        prev_u = u
    n_seg = g + 1
    seg_sums = np.empty((n_seg, dims))
    column = np.empty(k)
    for c in range(dims):
        for p in range(k):
            column[p] = contributions[perm[p], c]
        for g in range(n_seg):
            seg_sums[g, c] = _reduceat_sum(column, seg_first[g], seg_alarms[g])

    # A segment continuing a carried episode takes its start, alarms, sums and (if higher) peak.
    for g in range(n_seg):
        cj = seg_carried[g]
        if cj < 0:
            continue
        untouched[cj] = False
        seg_start[g] = c_starts[cj]
        seg_end[g] = max(c_ends[cj], seg_end[g])
        if c_peaks[cj] >= seg_peak[g]:
            seg_peak[g] = c_peaks[cj]
            seg_peak_t[g] = c_peak_times[cj]
            seg_state[g] = c_states[cj]
        seg_alarms[g] += c_alarms[cj]
        for c in range(dims):
            seg_sums[g, c] = c_contributions[cj, c] + seg_sums[g, c]

    total = m + n_seg
    e_turbines = np.concatenate((c_turbines, seg_turbine[:n_seg]))
    e_starts = np.concatenate((c_starts, seg_start[:n_seg]))
    e_ends = np.concatenate((c_ends, seg_end[:n_seg]))
    e_peaks = np.concatenate((c_peaks, seg_peak[:n_seg]))
    e_peak_times = np.concatenate((c_peak_times, seg_peak_t[:n_seg]))
    e_alarms = np.concatenate((c_alarms, seg_alarms[:n_seg]))
    e_states = np.concatenate((c_states, seg_state[:n_seg]))
    e_sums = np.empty((total, dims))
    e_sums[:m] = c_contributions
    e_sums[m:] = seg_sums

    # A turbine's episodes but its last are closed; its last is closed by a reading of the
    # turbine at least `gap` after its end.
    valid = np.empty(total, np.bool_)
    valid[:m] = untouched
    valid[m:] = True
    rows = np.flatnonzero(valid)
    rows = rows[_stable_by_two(e_turbines[rows], e_starts[rows])]
    done = np.zeros(total, np.bool_)
    n_last = 0
    last_rows = np.empty(rows.size, np.int64)
    for r in range(rows.size):
        if r + 1 < rows.size and e_turbines[rows[r + 1]] == e_turbines[rows[r]]:
            done[rows[r]] = True
        else:
            last_rows[n_last] = rows[r]
            n_last += 1
    last_rows = last_rows[:n_last]  # by turbine, one per turbine
    last_turbines = e_turbines[last_rows]
    for i in range(n):
        q = np.searchsorted(last_turbines, turbine_ids[i])
        if q < n_last and last_turbines[q] == turbine_ids[i]:
            row = last_rows[q]
            if timestamps[i] - e_ends[row] >= gap:
                done[row] = True

    opened = np.flatnonzero(np.concatenate((np.zeros(m, np.bool_), seg_carried[:n_seg] < 0)))
    opened = opened[_stable_by_two(e_starts[opened], e_turbines[opened])]
    closed = np.flatnonzero(done)
    closed = closed[_stable_by_two(e_starts[closed], e_turbines[closed])]
    still_open = np.flatnonzero(valid & ~done)
    still_open = still_open[np.argsort(e_turbines[still_open], kind="mergesort")]
    every = (e_turbines, e_starts, e_ends, e_peaks, e_peak_times, e_alarms, e_sums, e_states)
    return every, opened, closed, still_open
