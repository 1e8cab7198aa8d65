"""Medians over runs of consecutive columns (pipeline/run_medians.py) against np.sort per run."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.run_medians import (
    deviations_from_run_medians,
    medians_of_the_others,
    run_medians,
    run_starts,
)


def middle(values: np.ndarray) -> float:
    """The median as the engine defines it: NaN sorted last, the two middle values' mean."""
    s = np.sort(values)
    return (s[(s.size - 1) // 2] + s[s.size // 2]) / 2.0


@given(
    sizes=st.lists(st.integers(1, 20), min_size=1, max_size=30),
    rows=st.integers(1, 4),
    ties=st.booleans(),
    nan=st.booleans(),
    seed=st.integers(0, 2**16),
)
@settings(max_examples=150, deadline=None)
def test_run_medians_are_each_runs_sorted_middle(sizes, rows, ties, nan, seed):
    rng = np.random.default_rng(seed)
    ts = np.repeat(np.arange(len(sizes), dtype=float), sizes)
    v = (
        rng.integers(0, 3, (rows, ts.size)).astype(float)
        if ties
        else rng.normal(size=(rows, ts.size))
    )
    if nan:
        v[rng.random(v.shape) < 0.2] = np.nan
    starts = run_starts(ts)
    got = run_medians(v, starts)
    dev = deviations_from_run_medians(v, starts)
    for g, (a, b) in enumerate(zip(starts, [*starts[1:], ts.size], strict=True)):
        for r in range(rows):
            want = middle(v[r, a:b])
            np.testing.assert_array_equal(got[r, g], want)
            np.testing.assert_array_equal(dev[r, a:b], v[r, a:b] - want)


@given(
    sizes=st.lists(st.integers(1, 20), min_size=1, max_size=30),
    rows=st.integers(1, 4),
    ties=st.booleans(),
    seed=st.integers(0, 2**16),
)
@settings(max_examples=150, deadline=None)
def test_medians_of_the_others_leave_each_column_out(sizes, rows, ties, seed):
    rng = np.random.default_rng(seed)
    ts = np.repeat(np.arange(len(sizes), dtype=float), sizes)
    v = (
        rng.integers(0, 3, (rows, ts.size)).astype(float)
        if ties
        else rng.normal(size=(rows, ts.size))
    )
    got = medians_of_the_others(v, run_starts(ts))
    for i in range(ts.size):
        others = (ts == ts[i]) & (np.arange(ts.size) != i)
        for r in range(rows):
            want = middle(v[r, others]) if others.any() else np.nan
            np.testing.assert_allclose(got[r, i], want, rtol=0, atol=0)
