"""The injected faults a run missed, and what the farm was doing meanwhile.

The residual chart compares each turbine with the median of the other
turbines at the same time (``chart_peers``), so a fault is hardest to see
when other turbines are faulty at the same time, and a power fault when the
wind is low (a 6 % derating at 5 m/s is about 10 kW).  For every labelled
fault no alarm episode overlaps, :func:`missed_faults` gives its kind, the
wind it met and the faults of the other turbines that overlap it.

>>> ts = np.tile(np.arange(4.0), 2)
>>> ids = np.repeat([1, 2], 4)
>>> labels = np.array([0, 1, 1, 0, 0, 0, 1, 1], bool)
>>> kinds = np.array(["", "derating", "derating", "", "", "", "gain", "gain"])
>>> alarms = np.array([0, 0, 0, 0, 0, 0, 1, 0], bool)
>>> [m.concurrent for m in missed_faults(ts, ids, labels, kinds, np.full(8, 5.0), alarms, 2.0)]
[((2, 'gain'),)]
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from pipeline.evaluation import LabelRuns

F64 = NDArray[np.float64]
WINDY = 11.0  # m/s: near rated, where a derating costs a turbine 100 kW and more


@dataclass(frozen=True)
class MissedFault:
    """One labelled fault that no alarm episode overlaps."""

    turbine: int
    kind: str
    start: float
    end: float
    wind_median: float  # m/s over the fault's readings (NaN when none is finite)
    windy: int  # the fault's readings above WINDY m/s
    concurrent: tuple[tuple[int, str], ...]  # (turbine, kind) of the overlapping faults


def _runs(
    ts: F64, ids: NDArray[np.int64], labels: NDArray[np.bool_], kinds: NDArray[np.str_]
) -> list[tuple[int, str, float, float]]:
    """Labelled runs (turbine, kind, first, last), the kind that of the run's first reading."""
    runs = LabelRuns()
    runs.update(ts, ids, labels)
    out = []
    for turbine, first, last in zip(*runs.finish(), strict=True):
        at = np.flatnonzero((ids == turbine) & (ts == first) & labels)
        out.append((int(turbine), str(kinds[at[0]]) if at.size else "", float(first), float(last)))
    return out


def missed_faults(
    timestamps: F64,
    turbine_ids: NDArray[np.int64],
    labels: NDArray[np.bool_],
    kinds: NDArray[np.str_],
    wind: F64,
    alarms: NDArray[np.bool_],
    gap: float,
) -> list[MissedFault]:
    """The labelled runs that no alarm episode overlaps, in order of start.

    Parameters
    ----------
    timestamps, turbine_ids, labels, kinds, wind, alarms : ndarray of shape (n,)
        The readings (those that count: scored and in an operating state),
        their fault labels and kinds, wind speeds and alarms.
    gap : float
        Seconds: a turbine's alarms less than this apart are one episode.
    """
    faults = _runs(timestamps, turbine_ids, labels, kinds)
    sel = np.flatnonzero(alarms)
    order = sel[np.lexsort((timestamps[sel], turbine_ids[sel]))]
    t, u = timestamps[order], turbine_ids[order]
    new = np.r_[True, (u[1:] != u[:-1]) | (np.diff(t) >= gap)] if t.size else np.zeros(0, bool)
    heads = np.flatnonzero(new)
    tails = np.r_[heads[1:], t.size][: heads.size] - 1
    e_turbine, e_start, e_end = u[heads], t[heads], t[tails]
    out = []
    for turbine, kind, first, last in faults:
        if np.any((e_turbine == turbine) & (e_start <= last) & (e_end >= first)):
            continue
        rows = (turbine_ids == turbine) & (timestamps >= first) & (timestamps <= last)
        w = wind[rows]
        w = w[np.isfinite(w)]
        others = tuple((o, k) for o, k, a, b in faults if o != turbine and a <= last and b >= first)
        out.append(
            MissedFault(
                turbine=turbine,
                kind=kind,
                start=first,
                end=last,
                wind_median=float(np.median(w)) if w.size else float("nan"),
                windy=int(np.count_nonzero(w > WINDY)),
                concurrent=others,
            )
        )
    return out
