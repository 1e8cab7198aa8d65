"""Shared pieces of the report: figure names, options, small array helpers."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from pipeline.store import Anomalies

TIMELINE = "timeline.png"
HEATMAP = "heatmap.png"
CONTRIBUTIONS = "contributions.png"
CORRELATION = "correlation.png"
FIGURES = (TIMELINE, HEATMAP, CONTRIBUTIONS, CORRELATION)

F64 = NDArray[np.float64]
I64 = NDArray[np.int64]


@dataclass(frozen=True)
class ReportOptions:
    """How much the report shows.

    >>> ReportOptions().worst_turbines
    6
    """

    worst_turbines: int = 6
    top_events: int = 6
    similar: int = 5
    time_buckets: int = 96
    heatmap_turbines: int = 60
    correlation_groups: int = 12
    max_points: int = 20_000
    dpi: int = 100


# ---------------------------------------------------------------------- small helpers
def to_datetime64(timestamps: F64) -> NDArray[np.datetime64]:
    """Epoch seconds (n,) as ``datetime64[ms]`` (n,), what matplotlib puts on a date axis.

    >>> to_datetime64(np.array([0.0, 1.5])).tolist()[1].isoformat()
    '1970-01-01T00:00:01.500000'
    """
    return (
        np.round(np.asarray(timestamps, dtype=np.float64) * 1000)
        .astype(np.int64)
        .astype("datetime64[ms]")
    )


def iso(ts: float) -> str:
    """Epoch seconds as ``YYYY-MM-DD HH:MM:SS`` UTC; a time no date can show is flagged.

    >>> iso(1767225600.0), iso(-1e300)
    ('2026-01-01 00:00:00', 'invalid:-1e+300')
    """
    value = float(ts)
    if not (-62_135_596_800.0 <= value < 253_402_300_800.0):  # years 1 to 9999
        return f"invalid:{value!r}"
    return str(np.datetime64(int(round(value)), "s")).replace("T", " ")


def thin(values: F64, max_points: int) -> NDArray[np.intp]:
    """Indices of at most ``max_points`` points of a series (n,) keeping its envelope.

    The series is cut into ``max_points // 2`` equal runs and each run keeps
    its minimum and its maximum, in order: spikes survive the thinning.

    >>> thin(np.array([0.0, 5.0, 1.0, 2.0, 9.0, 3.0]), 4).tolist()
    [0, 1, 3, 4]
    >>> thin(np.arange(3.0), 10).tolist()
    [0, 1, 2]
    """
    n = values.size
    if n <= max_points:
        return np.arange(n)
    bins = max(1, max_points // 2)
    run = np.arange(n) * bins // n
    order = np.lexsort((values, run))
    first = np.r_[True, run[order][1:] != run[order][:-1]]
    last = np.r_[run[order][1:] != run[order][:-1], True]
    return np.unique(np.concatenate((order[first], order[last])))


def correlations(counts: F64, m2: F64) -> F64:
    """Correlation matrices (G, D, D) from Welford counts (G,) and co-moments (G, D, D).

    A sensor without variance (or a model with fewer than 2 readings) gives NaN.

    >>> m2 = np.array([[[4.0, 2.0], [2.0, 9.0]]])
    >>> correlations(np.array([10.0]), m2).round(3).tolist()
    [[[1.0, 0.333], [0.333, 1.0]]]
    """
    var = np.einsum("gii->gi", m2)
    with np.errstate(divide="ignore", invalid="ignore"):
        scale = 1.0 / np.sqrt(var)
        corr = m2 * scale[:, :, None] * scale[:, None, :]
    corr[counts < 2] = np.nan
    return np.asarray(np.clip(corr, -1.0, 1.0), dtype=np.float64)


def worst(turbines: I64, counts: I64, n: int) -> I64:
    """The ``n`` turbines (T,) with the most anomalies (T,), ties to the lower id.

    >>> worst(np.array([3, 5, 8]), np.array([2, 7, 2]), 2).tolist()
    [5, 3]
    """
    order = np.lexsort((turbines, -counts))
    order = order[counts[order] > 0][:n]
    return turbines[order]


def best_per_turbine(table: Anomalies, n: int) -> NDArray[np.intp]:
    """Rows of the ``n`` largest anomalies of ``table``, at most one per turbine.

    >>> t = Anomalies(np.zeros(4), np.array([1, 1, 2, 3]), np.array([9.0, 8.0, 5.0, 7.0]),
    ...               np.ones(4), np.zeros((4, 1)), *(np.zeros(4, np.int64),) * 3,
    ...               np.ones(4, np.int8), ("a",))
    >>> best_per_turbine(t, 2).tolist()
    [0, 3]
    """
    if len(table) == 0:
        return np.zeros(0, dtype=np.intp)
    order = np.lexsort((-table.distances, table.turbine_ids))
    ids = table.turbine_ids[order]
    first = order[np.r_[True, ids[1:] != ids[:-1]]]
    ranked = first[np.lexsort((table.turbine_ids[first], -table.distances[first]))]
    return ranked[:n].astype(np.intp)
