"""Control charts over whole batches: per-turbine EWMAs in arrival order, no loop over readings.

Two recursions, both per turbine:

* :func:`ewma_by_count` smooths readings with a fixed weight ``lambda`` per
  reading (the ``chart = "mewma"`` option);
* :func:`ewma_by_time` smooths with a time constant: the weight of a new
  value is ``1 - exp(-dt / span)`` for ``dt`` seconds since the turbine's
  previous value, so the chart's memory is a span of time whatever the
  sampling step or the gaps (the ``chart = "residual"`` option, on the
  whitened conditional residuals).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from pipeline.grouping import run_lengths, stable_order

F64 = NDArray[np.float64]

# Above this many time constants between two values of a turbine the old
# value weighs exp(-40) < 1e-17: a clipped gap changes nothing in float64 and
# keeps the cumulative exponents below overflow.
MAX_GAP_SPANS = 40.0
_BLOCK_SPANS = 600.0


def _runs(keys: NDArray[np.intp]) -> tuple[NDArray[np.intp], NDArray[np.intp], NDArray[np.intp]]:
    """Stable order by key, the start of each key's run in it, and each run's key."""
    order = stable_order(keys)
    sorted_keys = keys[order]
    head = np.ones(keys.size, dtype=bool)
    np.not_equal(sorted_keys[1:], sorted_keys[:-1], out=head[1:])
    starts = np.flatnonzero(head)
    return order, starts, sorted_keys[starts]


def ewma_by_count(
    keys: NDArray[np.intp], x_t: F64, lam: float, state: F64, started: NDArray[np.bool_]
) -> F64:
    """Per-key EWMA ``s_i = lam * x_i + (1 - lam) * s_(i-1)`` from each key's first value.

    Loops over the position of a value within its key's run in the batch,
    vectorised across keys.

    Parameters
    ----------
    keys : ndarray of shape (n,)
        The key (turbine) of each value, an index into ``state``.
    x_t : ndarray of shape (D, n)
    lam : float
    state : ndarray of shape (K, D)
        Each key's last smoothed value; updated in place.
    started : ndarray of shape (K,)
        Whether each key has a value yet; updated in place.

    Returns
    -------
    ndarray of shape (D, n)
    """
    out = np.empty_like(x_t)
    if keys.size == 0:
        return out
    order, starts, turb = _runs(keys)
    lengths = run_lengths(starts, keys.size)
    fresh = ~started[turb]
    state[turb[fresh]] = x_t[:, order[starts[fresh]]].T
    started[turb] = True
    for k in range(int(lengths.max())):
        live = lengths > k
        rows = order[starts[live] + k]
        t = turb[live]
        z = lam * x_t[:, rows].T + (1.0 - lam) * state[t]
        out[:, rows] = z.T
        state[t] = z
    return out


def ewma_by_time(
    keys: NDArray[np.intp],
    timestamps: F64,
    z_t: F64,
    span: float,
    state: F64,
    last_time: F64,
) -> F64:
    """Per-key EWMA with time constant ``span`` seconds, starting from 0 (the target).

    ``s_i = a_i s_(i-1) + (1 - a_i) z_i`` with ``a_i = exp(-(t_i - t_(i-1)) / span)``.
    Solved in closed form per key, ``s_i = e^(L_i) (s_0 + sum_j (1 - a_j) z_j e^(-L_j))``
    with ``L`` the cumulative log-decay, on a (keys x run length) padded array:
    cumulative sums along rows, no loop over readings (a loop over blocks of
    600 spans only when a batch is longer than that).

    Parameters
    ----------
    keys : ndarray of shape (n,)
    timestamps : ndarray of shape (n,)
        Non-decreasing per key.
    z_t : ndarray of shape (R, n)
    span : float
    state : ndarray of shape (K, R)
        Each key's last smoothed value; updated in place.
    last_time : ndarray of shape (K,)
        Each key's last time (NaN: none yet, the first value then has weight 0,
        as a MEWMA chart starts at its target); updated in place.

    Returns
    -------
    ndarray of shape (R, n)

    >>> s, t = np.zeros((1, 1)), np.array([0.0])
    >>> out = ewma_by_time(np.zeros(3, np.intp), np.array([1.0, 2.0, 3.0]), np.ones((1, 3)),
    ...                    1.0, s, t)
    >>> out.round(4).tolist()
    [[0.6321, 0.8647, 0.9502]]
    """
    r, n = z_t.shape
    out = np.empty_like(z_t)
    if n == 0:
        return out
    order, starts, turb = _runs(keys)
    lengths = run_lengths(starts, n)
    width = int(lengths.max())
    cells = turb.size * width
    # The padded (keys, width) cell of each reading in key order, and of each reading.
    flat = np.repeat(np.arange(turb.size) * width - starts, lengths) + np.arange(n)
    slot = np.empty(n, dtype=np.intp)
    slot[order] = flat
    ts = timestamps[order]
    prev = last_time[turb]
    prev = np.where(np.isnan(prev), ts[starts], prev)  # a fresh key starts at its first time
    dt = np.empty(n)
    np.subtract(ts[1:], ts[:-1], out=dt[1:])
    dt[starts] = ts[starts] - prev
    # NaN -> 0, then clipped to [0, 40 spans] (fmax and fmin pass over NaN, and inf clips).
    dt = np.fmin(np.fmax(dt, 0.0), MAX_GAP_SPANS * span) / span
    # Each key's cells are its readings then padding (dt 0, weight 0, value 0), so
    # a key's cumulative sums over its readings are those of its readings alone.
    padded = np.zeros((2, cells))
    padded[0, flat] = dt
    padded[1, flat] = -np.expm1(-dt)
    cum = np.cumsum(padded[0].reshape(turb.size, width), axis=1)  # spans since each previous
    lam = padded[1].reshape(turb.size, width)
    z_cells = np.zeros((r, cells))
    z_cells[:, slot] = z_t
    z = z_cells.reshape(r, turb.size, width)
    s0 = state[turb].T.copy()  # (R, rows)
    top = float(cum[:, -1].max())  # the padding adds nothing: a row's last sum is its largest
    if top < _BLOCK_SPANS:
        # One block from each key's last value: no rebasing.  The padding's growth
        # is finite (below e^600) and multiplies a weight of 0.
        acc = np.cumsum(lam[None] * z * np.exp(cum)[None], axis=2)
        result = (s0[:, :, None] + acc) * np.exp(-cum)[None]
        s0 = result[:, np.arange(turb.size), lengths - 1]
    else:
        result, s0 = _blocks(cum, lam, z, s0, flat, width)
    out = np.take(result.reshape(r, cells), slot, axis=1)
    state[turb] = s0.T
    last_time[turb] = ts[starts + lengths - 1]
    return out


def _blocks(
    cum: F64, lam: F64, z: F64, s0: F64, flat: NDArray[np.intp], width: int
) -> tuple[F64, F64]:
    """:func:`ewma_by_time` over a batch longer than one block of 600 spans.

    The cumulative exponents are rebased at each block's start so that they
    stay below overflow.  ``cum`` and ``lam`` are (keys, width), ``z`` is
    (R, keys, width), ``s0`` (R, keys) the keys' values before the batch;
    returns the smoothed cells (R, keys, width) and each key's last value.
    """
    rows, _ = cum.shape
    cells = rows * width
    filled = np.zeros(cells, dtype=bool)
    filled[flat] = True
    valid = filled.reshape(rows, width)
    result = np.zeros(z.shape)
    base = np.zeros(rows)
    top = float(cum[:, -1].max())
    block = 0
    while True:
        lo, hi = block * _BLOCK_SPANS, (block + 1) * _BLOCK_SPANS
        mask = valid & (cum >= lo) & (cum < hi)
        if mask.any():
            rel = np.where(mask, cum - base[:, None], 0.0)
            growth = np.where(mask, np.exp(rel), 0.0)
            acc = np.cumsum(lam[None] * z * growth[None], axis=2)
            s = (s0[:, :, None] + acc) * np.where(mask, np.exp(-rel), 0.0)[None]
            result = np.where(mask[None], s, result)
            # Carry each row's last value and time of the block into the next.
            last_col = np.where(mask, np.arange(width)[None, :], -1).max(axis=1)
            has = last_col >= 0
            rows_idx = np.flatnonzero(has)
            s0[:, rows_idx] = s[:, rows_idx, last_col[rows_idx]]
            base[rows_idx] = cum[rows_idx, last_col[rows_idx]]
        if hi > top:
            break
        block += 1
    return result, s0
