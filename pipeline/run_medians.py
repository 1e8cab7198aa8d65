"""Medians over runs of consecutive columns: a fleet's readings at one time, row by row.

The fleet-relative sensors (``fleet_relative``) and the residual chart's
peers (``chart_peers``) compare each reading with the median of the readings
that share its timestamp: a batch in time order holds a run of a few columns
(a farm's turbines) per time.  The runs are laid side by side in a padded
(R, G, W) array (G runs of at most W columns, padded with +inf; no copy at
all when every run is W long, as a farm with every turbine reporting is) and
put in order by an odd-even transposition network: a handful of element-wise
min/max over all runs at once, no sort.  The middle values are then picked
per run (``np.choose`` over the W ordered columns), and the results go back
to the columns with one gather, or a reshape.  Runs wider than
:data:`NETWORK_WIDTH`, or values with NaN (sorted last, as ``np.sort``
does), take a lexsort instead.

>>> v = np.array([[3.0, 1.0, 2.0, 5.0, 4.0]])
>>> starts = run_starts(np.array([0.0, 0.0, 0.0, 1.0, 1.0]))
>>> run_medians(v, starts).tolist(), medians_of_the_others(v, starts).tolist()
([[2.0, 4.5]], [[1.5, 2.5, 2.0, 4.0, 5.0]])
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from pipeline.grouping import run_lengths, stable_order

F64 = NDArray[np.float64]
NETWORK_WIDTH = 16  # runs of up to this many columns are ordered by the network


def run_starts(v: NDArray[np.generic]) -> NDArray[np.intp]:
    """Where each run of equal consecutive values of ``v`` (n,) begins (n >= 1).

    >>> run_starts(np.array([5.0, 5.0, 6.0, 7.0, 7.0])).tolist()
    [0, 2, 3]
    """
    head = np.ones(v.size, dtype=bool)
    np.not_equal(v[1:], v[:-1], out=head[1:])
    return np.flatnonzero(head)


@dataclass(frozen=True)
class _OrderedRuns:
    """The runs of ``v`` (R, n) side by side, each in order, grouped by size.

    Attributes
    ----------
    values : ndarray of shape (R, G, W)
        The columns in their runs, unordered, padded with +inf.  Runs of one
        size are adjacent (the largest first), so that a run's middle is a
        slice of the ordered values, the same for all runs of its size.
    ordered : list of W ndarrays of shape (R, G)
        The j-th smallest value of each run (+inf past its end; NaN last).
    classes : list of (size, first, end)
        The runs of each size: layout positions ``first:end``.
    rank : ndarray of shape (G,), or None
        Each run's position in the layout (None: the runs' own order).
    slots : ndarray of shape (n,), or None
        Each column's cell in the flattened (G * W) layout; None when every
        run is W long (then the layout is the columns themselves).
    """

    values: F64
    ordered: list[F64]
    classes: list[tuple[int, int, int]]
    rank: NDArray[np.intp] | None
    slots: NDArray[np.intp] | None

    @property
    def width(self) -> int:
        return len(self.ordered)

    def to_columns(self, cells: F64) -> F64:
        """Values laid out as ``values`` (R, G, W) back to the columns (R, n)."""
        r = cells.shape[0]
        flat = cells.reshape(r, -1)
        return flat if self.slots is None else np.take(flat, self.slots, axis=1)

    def by_class(self, parts: list[F64]) -> F64:
        """One array (R, G, ...) from each class's (R, G_class, ...), in layout order."""
        return parts[0] if len(parts) == 1 else np.concatenate(parts, axis=1)


def _ordered_runs(v: F64, starts: NDArray[np.intp]) -> _OrderedRuns:
    """The runs of ``v`` (R, n) beginning at ``starts`` (G,), side by side and in order."""
    r, n = v.shape
    sizes = run_lengths(starts, n)
    g = starts.size
    width = int(sizes.max())
    rank: NDArray[np.intp] | None = None
    if g * width == n:  # every run is full: the columns are the layout
        slots = None
        cells = v.reshape(r, g, width)
        classes = [(width, 0, g)]
    else:
        order = stable_order(width - sizes)  # the largest runs first
        rank = np.empty(g, dtype=np.intp)
        rank[order] = np.arange(g)
        slots = np.repeat(rank * width - starts, sizes) + np.arange(n)
        pad = np.full((r, g * width), np.inf)
        pad[:, slots] = v
        cells = pad.reshape(r, g, width)
        per_size = np.bincount(sizes, minlength=width + 1)[::-1]  # sizes width .. 0
        ends = np.cumsum(per_size)
        classes = [
            (width - k, int(ends[k] - per_size[k]), int(ends[k]))
            for k in np.flatnonzero(per_size).tolist()
        ]
    if width <= NETWORK_WIDTH and not np.isnan(v).any():
        # Odd-even transposition: ``width`` rounds of compare-exchange.
        cols = [cells[:, :, j] for j in range(width)]
        for step in range(width):
            for j in range(step % 2, width - 1, 2):
                cols[j], cols[j + 1] = (
                    np.minimum(cols[j], cols[j + 1]),
                    np.maximum(cols[j], cols[j + 1]),
                )
        return _OrderedRuns(cells, cols, classes, rank, slots)
    group = np.repeat(np.arange(g) if rank is None else rank, sizes)
    out = np.full((r, g * width), np.inf)
    where = np.arange(n) if slots is None else np.sort(slots)  # the cells run by run
    for k in range(r):
        out[k, where] = v[k, np.lexsort((v[k], group))]  # by run, then by value (NaN last)
    ordered = out.reshape(r, g, width)
    return _OrderedRuns(cells, [ordered[:, :, j] for j in range(width)], classes, rank, slots)


def _middle(runs: _OrderedRuns) -> F64:
    """The median of each run (R, G) in layout order: the mean of its two middle values."""
    parts = []
    for size, a, b in runs.classes:
        lo, hi = runs.ordered[(size - 1) // 2], runs.ordered[size // 2]
        parts.append((lo[:, a:b] + hi[:, a:b]) / 2.0)
    return runs.by_class(parts)


def run_medians(v: F64, starts: NDArray[np.intp]) -> F64:
    """The median of each run of consecutive columns, row by row.

    Parameters
    ----------
    v : ndarray of shape (R, n)
        Values, each run's columns contiguous (e.g. sorted by time).
    starts : ndarray of shape (G,)
        Where each run begins (``starts[0] == 0``, increasing).

    Returns
    -------
    ndarray of shape (R, G)
        The mean of the two middle values of each run (the middle one of an
        odd run), NaN sorted last as ``np.sort`` does.

    >>> run_medians(np.array([[3.0, 1.0, 2.0, 5.0, 4.0]]), np.array([0, 3])).tolist()
    [[2.0, 4.5]]
    """
    runs = _ordered_runs(v, starts)
    med = _middle(runs)
    return med if runs.rank is None else np.take(med, runs.rank, axis=1)


def deviations_from_run_medians(v: F64, starts: NDArray[np.intp]) -> F64:
    """Each column minus the median of its run (:func:`run_medians`), row by row (R, n).

    >>> deviations_from_run_medians(np.array([[3.0, 1.0, 2.0, 5.0, 4.0]]),
    ...                             np.array([0, 3])).tolist()
    [[1.0, -1.0, 0.0, 0.5, -0.5]]
    """
    runs = _ordered_runs(v, starts)
    med = _middle(runs)
    if runs.slots is None:  # every run full: broadcast over the (R, G, W) layout
        return (runs.values - med[:, :, None]).reshape(v.shape)
    sizes = run_lengths(starts, v.shape[1])
    rank = np.arange(starts.size) if runs.rank is None else runs.rank
    return v - np.take(med, np.repeat(rank, sizes), axis=1)


def medians_of_the_others(v: F64, starts: NDArray[np.intp]) -> F64:
    """For each column, the median of the other columns of its run, row by row.

    Position ``j`` of a run's ordered values without a value ``x`` is the
    ``j + 1``-th of the run's when ``x`` lies at or below its ``j``-th, else
    its ``j``-th (ties give the same multiset whichever copy goes).  With an
    odd number of others the two middle positions are one: it is taken once.

    Parameters
    ----------
    v : ndarray of shape (R, n)
        Values, each run's columns contiguous; no NaN.
    starts : ndarray of shape (G,)

    Returns
    -------
    ndarray of shape (R, n)
        NaN for a column alone in its run.

    >>> medians_of_the_others(np.array([[3.0, 1.0, 2.0, 5.0, 4.0]]), np.array([0, 3])).tolist()
    [[1.5, 2.5, 2.0, 4.0, 5.0]]
    """
    runs = _ordered_runs(v, starts)
    x, top = runs.values, runs.width - 1

    def without(j: int, a: int, b: int) -> F64:
        at = runs.ordered[j][:, a:b, None]
        above = runs.ordered[min(j + 1, top)][:, a:b, None]
        return np.where(x[:, a:b] <= at, above, at)

    parts = []
    for size, a, b in runs.classes:
        others = size - 1
        if others == 0:  # a run alone: no others
            parts.append(np.full((x.shape[0], b - a, runs.width), np.nan))
            continue
        lo, hi = (others - 1) // 2, others // 2
        med = without(lo, a, b)
        if hi != lo:  # an even number of others: the mean of the two middle ones
            med = (med + without(hi, a, b)) / 2.0
        parts.append(med)
    return runs.to_columns(runs.by_class(parts))
