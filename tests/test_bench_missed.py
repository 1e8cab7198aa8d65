"""bench/missed_faults.py: the injected faults no episode overlaps, with the farm's context."""

from __future__ import annotations

import numpy as np
import pytest

from bench.missed_faults import missed_faults


def _farm() -> dict[str, np.ndarray]:
    """Three turbines, 10 steps of 600 s; turbine 1 derated at steps 2-6, turbine 2 a gain
    at steps 4-8, turbine 3 a stuck power sensor at steps 0-1."""
    steps = np.arange(10) * 600.0
    ts, ids = np.tile(steps, 3), np.repeat([1, 2, 3], 10)
    labels = np.zeros(30, bool)
    kinds = np.full(30, "", dtype="<U8")
    for turbine, kind, lo, hi in [(1, "derating", 2, 6), (2, "gain", 4, 8), (3, "stuck", 0, 1)]:
        rows = (ids == turbine) & (ts >= lo * 600) & (ts <= hi * 600)
        labels[rows], kinds[rows] = True, kind
    wind = np.where(ids == 1, 4.0 + 2.0 * (ts >= 3000), 12.0)
    return {"timestamps": ts, "turbine_ids": ids, "labels": labels, "kinds": kinds, "wind": wind}


@pytest.mark.parametrize(
    ("alarmed", "missed"),
    [
        ([], [3, 1, 2]),  # in order of start
        ([(2, 5)], [3, 1]),
        ([(1, 6), (3, 0)], [2]),
        ([(1, 7)], [3, 1, 2]),  # an alarm just after the fault's end does not detect it
    ],
)
def test_missed_faults_are_those_no_episode_overlaps(alarmed, missed):
    farm = _farm()
    alarms = np.zeros(30, bool)
    for turbine, step in alarmed:
        alarms[(farm["turbine_ids"] == turbine) & (farm["timestamps"] == step * 600)] = True
    found = missed_faults(**farm, alarms=alarms, gap=1800.0)
    assert [m.turbine for m in found] == missed


def test_a_missed_fault_carries_its_wind_and_the_overlapping_faults():
    farm = _farm()
    (third, first, second) = missed_faults(**farm, alarms=np.zeros(30, bool), gap=1800.0)
    assert (first.kind, first.start, first.end) == ("derating", 1200.0, 3600.0)
    # Steps 2-6 of turbine 1: wind 4, 4, 4, 6, 6 m/s; none above 11 m/s.
    assert first.wind_median == 4.0
    assert first.windy == 0
    assert first.concurrent == ((2, "gain"),)
    assert second.concurrent == ((1, "derating"),)
    assert second.windy == 5
    assert third.concurrent == ()
