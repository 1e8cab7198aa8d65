"""The time-constant EWMA (pipeline/charts.py) against the recursion, reading by reading."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.charts import ewma_by_time


def recursive_ewma(keys, ts, z_t, span, state, last_time):
    out = np.zeros_like(z_t)
    for i in range(ts.size):
        k = keys[i]
        gap = 0.0 if np.isnan(last_time[k]) else ts[i] - last_time[k]
        gap = min(max(gap, 0.0), 40.0 * span)
        a = np.exp(-gap / span)
        state[k] = a * state[k] + (1.0 - a) * z_t[:, i]
        last_time[k] = ts[i]
        out[:, i] = state[k]
    return out


@given(
    keys=st.integers(1, 5),
    steps=st.lists(st.integers(1, 40), min_size=1, max_size=4),
    spans=st.sampled_from([0.5, 3.0, 50.0]),  # 0.5: a batch of many 600-span blocks
    drop=st.floats(0.0, 0.6),
    seed=st.integers(0, 2**16),
)
@settings(max_examples=120, deadline=None)
def test_ewma_by_time_is_the_recursion(keys, steps, spans, drop, seed):
    rng = np.random.default_rng(seed)
    state, last = np.zeros((keys, 2)), np.full(keys, np.nan)
    ref_state, ref_last = state.copy(), last.copy()
    t0 = 0.0
    for n_steps in steps:  # one call per batch; the state carries across
        ts = np.repeat(t0 + np.cumsum(rng.integers(1, 400, n_steps)).astype(float), keys)
        ids = np.tile(np.arange(keys), n_steps)
        keep = rng.random(ts.size) >= drop
        ts, ids = ts[keep], ids[keep]
        z = rng.normal(size=(2, ts.size))
        got = ewma_by_time(ids, ts, z, spans, state, last)
        want = recursive_ewma(ids, ts, z, spans, ref_state, ref_last)
        np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(state, ref_state, rtol=1e-9, atol=1e-12)
        np.testing.assert_array_equal(last, ref_last)
        if ts.size:
            t0 = float(ts.max())


@given(steps=st.lists(st.sampled_from([600.0, 1200.0, 1800.0, 7.5, 0.25]), min_size=1, max_size=40))
@settings(max_examples=200, deadline=None)
def test_median_step_is_numpys_median_of_the_steps(steps):
    from pipeline.residual_chart import median_step

    times = 1.4e9 + np.concatenate(([0.0], np.cumsum(steps)))
    assert median_step(times) == float(np.median(np.diff(times)))
