"""The learning policy's pure parts: operating regimes, learning filters, forgetting in time.

These are the functions under :class:`pipeline.detector.Detector` that decide
which model a reading belongs to, whether it may be learned, and how much the
past weighs; each works on whole batches.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from pipeline.batch_math import compiled_kernels
from pipeline.config import LearnRule
from pipeline.grouping import run_lengths, stable_order
from pipeline.run_medians import deviations_from_run_medians, medians_of_the_others, run_starts

F64 = NDArray[np.float64]


def regime_bins(
    values: F64, edges: Sequence[float] | F64, compiled: bool = False
) -> NDArray[np.intp]:
    """Bin of each value, in ``[0, len(edges)]``; values outside the edges fall in the end bins.

    Parameters
    ----------
    values : ndarray of shape (n,)
        The regime sensor's raw values (finite).
    edges : sequence or ndarray of float, strictly increasing, of length B - 1
    compiled : bool
        Through the compiled kernel (the same bins).

    Returns
    -------
    ndarray of shape (n,)

    >>> regime_bins(np.array([0.0, 3.0, 4.9, 5.0, 99.0]), [3.0, 5.0]).tolist()
    [0, 1, 1, 2, 2]
    """
    kernels = compiled_kernels() if compiled else None
    if kernels is not None:
        e = np.asarray(edges, dtype=np.float64)
        return kernels.regime_bins(np.ascontiguousarray(values, dtype=np.float64), e)
    return np.searchsorted(np.asarray(edges, dtype=np.float64), values, side="right").astype(
        np.intp, copy=False
    )


@dataclass(frozen=True)
class RangeRules:
    """``learn_when`` range rules as arrays, for the compiled :func:`learning_states`.

    ``cols`` and ``where_cols`` (R,): each rule's sensor column and its
    ``where`` sensor's (-1 for none); ``tests`` and ``limits`` (R, 2): whether
    the rule has an ``above`` (column 0) and a ``below`` (column 1) limit, and
    the limits; ``where_tests`` and ``where_limits`` the same for ``where``.
    """

    cols: NDArray[np.int64]
    tests: NDArray[np.bool_]
    limits: F64
    where_cols: NDArray[np.int64]
    where_tests: NDArray[np.bool_]
    where_limits: F64

    @classmethod
    def of(
        cls, rules: Sequence[LearnRule], columns: Sequence[int], where_columns: Sequence[int]
    ) -> RangeRules | None:
        """The rules' arrays; None when a rule lists ``normal`` codes (the NumPy path's)."""
        if any(r.normal is not None for r in rules):
            return None

        def limits(lo: float | None, hi: float | None) -> tuple[list[bool], list[float]]:
            return [lo is not None, hi is not None], [lo or 0.0, hi or 0.0]

        main = [limits(r.above, r.below) for r in rules]
        where = [
            limits(r.where.above, r.where.below) if r.where else limits(None, None) for r in rules
        ]
        return cls(
            cols=np.asarray(columns, dtype=np.int64),
            tests=np.array([t for t, _ in main], dtype=np.bool_).reshape(-1, 2),
            limits=np.array([v for _, v in main], dtype=np.float64).reshape(-1, 2),
            where_cols=np.asarray(where_columns, dtype=np.int64),
            where_tests=np.array([t for t, _ in where], dtype=np.bool_).reshape(-1, 2),
            where_limits=np.array([v for _, v in where], dtype=np.float64).reshape(-1, 2),
        )


def learning_states(
    raw: F64,
    rules: Sequence[LearnRule],
    columns: Sequence[int],
    where_columns: Sequence[int] | None = None,
    compiled: RangeRules | None = None,
) -> NDArray[np.int8]:
    """Which rule each reading fails first: 0 for none (learnable), k for rule k - 1.

    Parameters
    ----------
    raw : ndarray of shape (n, D)
        Raw readings.
    rules : sequence of LearnRule
    columns : sequence of int
        The column of each rule's sensor.
    where_columns : sequence of int, optional
        The column of each rule's ``where`` sensor (-1 for none).
    compiled : RangeRules, optional
        The rules as arrays: the compiled kernel computes the same states.

    Returns
    -------
    ndarray of shape (n,)

    >>> rules = [LearnRule(sensor="p", above=20.0, state="stopped")]
    >>> learning_states(np.array([[10.0], [30.0]]), rules, [0]).tolist()
    [1, 0]
    """
    kernels = compiled_kernels() if compiled is not None else None
    if kernels is not None and compiled is not None:
        c = compiled
        return kernels.learning_states(
            np.ascontiguousarray(raw),
            c.cols,
            c.tests,
            c.limits,
            c.where_cols,
            c.where_tests,
            c.where_limits,
        )
    out = np.zeros(raw.shape[0], dtype=np.int8)
    for k in range(len(rules) - 1, -1, -1):  # the first failed rule wins
        rule, v = rules[k], raw[:, columns[k]]
        fails: list[NDArray[np.bool_]] = []  # each test the reading fails (NaN fails them all)
        if rule.above is not None:
            fails.append(~(v > rule.above))
        if rule.below is not None:
            fails.append(~(v < rule.below))
        if rule.normal is not None:
            fails.append(~np.isin(v, np.asarray(rule.normal, dtype=np.float64)))
        if not fails:
            continue
        fail = fails[0]
        for f in fails[1:]:
            fail |= f
        if rule.where is not None and where_columns is not None:
            w = raw[:, where_columns[k]]
            if rule.where.above is not None:
                fail &= w > rule.where.above
            if rule.where.below is not None:
                fail &= w < rule.where.below
        np.copyto(out, np.int8(k + 1), where=fail)
    return out


def fleet_deviation(timestamps: F64, values: F64) -> F64:
    """Each value minus the median of the values at the same timestamp.

    Parameters
    ----------
    timestamps : ndarray of shape (n,)
    values : ndarray of shape (n,)

    Returns
    -------
    ndarray of shape (n,)
        0 for a reading alone at its time (nothing to compare with).

    >>> fleet_deviation(np.array([0.0, 0.0, 0.0, 1.0]), np.array([1.0, 2.0, 9.0, 5.0])).tolist()
    [-1.0, 0.0, 7.0, 0.0]
    """
    return fleet_deviations(timestamps, values[None, :])[0]


def fleet_deviations(timestamps: F64, values_t: F64, compiled: bool = False) -> F64:
    """:func:`fleet_deviation` of several rows at once, the times grouped once.

    Parameters
    ----------
    timestamps : ndarray of shape (n,)
    values_t : ndarray of shape (R, n)
    compiled : bool
        With the compiled kernel (the same values, bit for bit).

    Returns
    -------
    ndarray of shape (R, n)

    >>> ts = np.array([0.0, 0.0, 0.0, 1.0])
    >>> fleet_deviations(ts, np.array([[1.0, 2.0, 9.0, 5.0]])).tolist()
    [[-1.0, 0.0, 7.0, 0.0]]
    """
    n = timestamps.size
    if n == 0:
        return np.zeros_like(values_t)
    kernels = compiled_kernels() if compiled else None
    deviations = deviations_from_run_medians if kernels is None else kernels.deviations_from_medians
    if np.all(timestamps[1:] >= timestamps[:-1]):
        return deviations(np.ascontiguousarray(values_t), run_starts(timestamps))
    order = np.argsort(timestamps, kind="stable")
    out = np.empty_like(values_t)
    out[:, order] = deviations(values_t[:, order], run_starts(timestamps[order]))
    return out


def time_decay(elapsed: F64, span: float, counts: F64, floor: float) -> F64:
    """Weight kept by old states after ``elapsed`` seconds (time constant ``span``).

    Forgetting never takes a state below ``floor`` readings, so a model that
    was warm stays warm however long its regime was not visited: it only
    learns the new readings with more weight.

    Parameters
    ----------
    elapsed : ndarray of shape (G,)
        Seconds since each state last learned (NaN or negative: 0).
    span : float
    counts : ndarray of shape (G,)
    floor : float

    Returns
    -------
    ndarray of shape (G,)

    >>> time_decay(np.array([0.0, 86400.0]), 86400.0, np.array([1e4, 1e4]), 10.0).round(4).tolist()
    [1.0, 0.3679]
    """
    dt = np.where(np.isfinite(elapsed) & (elapsed > 0), elapsed, 0.0)
    w = np.exp(-dt / span)
    keep = np.minimum(1.0, floor / np.where(counts > 0, counts, np.inf))
    return np.maximum(w, keep)


def ewma_weights(elapsed: F64, span: float) -> F64:
    """EWMA weight of each new reading given the seconds since the previous one.

    ``lambda = 1 - exp(-elapsed / span)``: a fixed time constant whatever the
    sampling step, so a gap weighs the new reading more.

    Parameters
    ----------
    elapsed : ndarray of shape (n,)

    >>> ewma_weights(np.array([600.0]), 86400.0).round(5).tolist()
    [0.00692]
    """
    dt = np.where(np.isfinite(elapsed) & (elapsed > 0), elapsed, 0.0)
    return -np.expm1(-dt / span)


def peer_deviation(
    timestamps: F64, values_t: F64, compiled: bool = False
) -> tuple[F64, NDArray[np.intp]]:
    """Each column minus the median of the *other* columns at the same timestamp, row by row.

    The common-mode rejection of the residual chart (``chart_peers``): what
    moves every turbine's residuals together (air density, atmospheric
    stability, icing) cancels; what moves one turbine's stands out.  The
    turbine itself is left out of its peers' median, so that its own fault
    does not pull the reference towards it (with four turbines, one of the
    middle two of the median would often be the faulty one).

    Parameters
    ----------
    timestamps : ndarray of shape (n,)
    values_t : ndarray of shape (R, n)
        Finite values.
    compiled : bool
        With the compiled kernel (the same values, bit for bit).

    Returns
    -------
    deviations : ndarray of shape (R, n)
        0 for a reading alone at its time.
    peers : ndarray of shape (n,)
        How many readings share each reading's timestamp (itself included).

    >>> ts = np.array([0.0, 0.0, 0.0, 1.0])
    >>> dev, peers = peer_deviation(ts, np.array([[1.0, 2.0, 9.0, 5.0]]))
    >>> dev.tolist(), peers.tolist()
    ([[-4.5, -3.0, 7.5, 0.0]], [3, 3, 3, 1])
    """
    n = timestamps.size
    if n == 0:
        return np.zeros_like(values_t), np.zeros(0, dtype=np.intp)
    if np.all(timestamps[1:] >= timestamps[:-1]):  # a batch in time order, as a farm's is
        order = None
        ts_sorted = timestamps
    else:
        order = np.argsort(timestamps, kind="stable")
        ts_sorted = timestamps[order]
    starts = run_starts(ts_sorted)
    sizes = run_lengths(starts, n)
    v = values_t if order is None else values_t[:, order]
    kernels = compiled_kernels() if compiled else None
    if kernels is None:
        dev = v - medians_of_the_others(v, starts)
    else:
        dev = v - kernels.medians_of_the_others(np.ascontiguousarray(v), starts)
    if not np.isfinite(dev).all():  # NaN: a reading alone at its time
        dev = np.nan_to_num(dev, nan=0.0)
    counts = np.repeat(sizes, sizes)
    if order is None:
        return dev, counts
    out = np.empty_like(values_t)
    peers = np.empty(n, dtype=np.intp)
    peers[order] = counts
    out[:, order] = dev
    return out, peers


def peer_counts(timestamps: F64) -> NDArray[np.intp]:
    """How many readings share each reading's timestamp (itself included), shape (n,).

    The ``peers`` :func:`peer_deviation` returns, without the deviations.

    >>> peer_counts(np.array([0.0, 1.0, 0.0, 0.0])).tolist()
    [3, 1, 3, 3]
    """
    n = timestamps.size
    if n == 0:
        return np.zeros(0, dtype=np.intp)
    if np.all(timestamps[1:] >= timestamps[:-1]):
        sizes = run_lengths(run_starts(timestamps), n)
        return np.repeat(sizes, sizes)
    order = np.argsort(timestamps, kind="stable")
    sizes = run_lengths(run_starts(timestamps[order]), n)
    peers = np.empty(n, dtype=np.intp)
    peers[order] = np.repeat(sizes, sizes)
    return peers


def settling(
    turbines: NDArray[np.intp],
    timestamps: F64,
    in_state: NDArray[np.bool_],
    last_state_time: F64,
    span: float,
    compiled: bool = False,
) -> tuple[NDArray[np.bool_], F64]:
    """Readings within ``span`` after their turbine's last reading in an operating state.

    A 10-minute average that spans a start-up mixes two states (a pitch
    halfway between feathered and fine): it is neither learned nor scored.

    Parameters
    ----------
    turbines : ndarray of shape (n,)
        Dense turbine index of each reading.
    timestamps : ndarray of shape (n,)
    in_state : ndarray of shape (n,)
        The readings in an operating state (a ``learn_when`` rule failed).
    last_state_time : ndarray of shape (T,)
        Each turbine's last time in a state before this batch (NaN: none).
    span : float
        Seconds.
    compiled : bool
        A batch in time order in one compiled pass (the same results).

    Returns
    -------
    settle : ndarray of shape (n,)
        Readings not in a state but within ``span`` after one.
    last : ndarray of shape (T,)
        ``last_state_time`` after this batch.

    >>> settle, last = settling(np.zeros(4, np.intp), np.array([0.0, 600, 1200, 1800]),
    ...                         np.array([True, False, False, False]), np.full(1, np.nan), 900.0)
    >>> settle.tolist(), last.tolist()
    ([False, True, False, False], [0.0])
    """
    n = turbines.size
    kernels = compiled_kernels() if compiled and n else None
    if kernels is not None:
        done, settle, after = kernels.settling_in_order(
            turbines, timestamps, in_state, last_state_time, float(span)
        )
        if done:
            return settle, after
    last = last_state_time.copy()
    if n == 0:
        return np.zeros(0, dtype=bool), last
    if np.all(timestamps[1:] >= timestamps[:-1]):  # in time order: a stable sort by turbine
        order = stable_order(turbines)
    else:
        order = np.lexsort((timestamps, turbines))
    u, t, s = turbines[order], timestamps[order], in_state[order]
    first = np.ones(n, dtype=bool)
    np.not_equal(u[1:], u[:-1], out=first[1:])
    group_start = np.maximum.accumulate(np.where(first, np.arange(n), 0))
    latest = np.maximum.accumulate(np.where(s, np.arange(n), -1))  # last state at or before
    inside = latest >= group_start
    since = np.where(inside, t[np.maximum(latest, 0)], np.take(last_state_time, u))
    out = np.zeros(n, dtype=bool)
    out[order] = ~s & (t - since <= span)  # NaN (never in a state) compares False
    ends = np.append(np.flatnonzero(first)[1:], n) - 1
    last[u[ends]] = since[ends]
    return out, last
