"""The compiled kernels (pipeline/kernels) against the NumPy path, their oracle.

Moments, merges, deviations and whitened deviations are the NumPy path's bit
for bit (the same operations in the same order per model); Cholesky factors
and what depends on them agree to rounding.  The detector is run both ways
(``Detector(compiled=False)`` is the NumPy path) on the configurations of the
detector tests and with conditions, regimes, forgetting and the residual chart.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline import Detector, DetectorConfig, GroupedCovariance
from pipeline import batch_math as bm
from pipeline.covariance import covariance_of, grouped_moments
from pipeline.mahalanobis import gather_rows, regularised_cholesky, whiten_grouped
from pipeline.prediction import PredictionBound
from tests.test_detector import CONFIGS, fleet_batches

pytestmark = pytest.mark.skipif(not bm.kernels_available(), reason="numba is not installed")


def _stack(rng, m, d, n_per=30):
    """A GroupedCovariance of m models that learned n_per readings each, and its factors."""
    stack = GroupedCovariance(m, d)
    x = rng.normal(size=(m * n_per, d)) @ rng.normal(size=(d, d)) + rng.normal(size=d) * 5
    stack.update(np.repeat(np.arange(m), n_per).astype(np.intp), x)
    chol = bm.factors(stack.counts, stack.m2, None, 1e-6, compiled=False)
    return stack, chol


def _copy(stack):
    return GroupedCovariance.from_state(stack.state(), memory=stack.memory)


@settings(max_examples=120, deadline=None)
@given(
    st.integers(1, 9),
    st.integers(1, 12),
    st.integers(0, 300),
    st.integers(0, 2**32 - 1),
    st.sampled_from([None, 50.0]),
    st.booleans(),
)
def test_learning_matches_the_numpy_path_bit_for_bit(d, m, n, seed, memory, skipping):
    rng = np.random.default_rng(seed)
    stack, chol = _stack(rng, m, d)
    stack.memory = memory
    x_t = rng.normal(size=(d, n)) * rng.uniform(0.1, 100, size=(d, 1))
    model = rng.integers(0, m, size=n).astype(np.intp)
    skip = rng.random(n) < 0.2 if skipping else None
    a, b = _copy(stack), _copy(stack)
    chol_a, chol_b = chol.copy(), chol.copy()
    bm.learn(a, chol_a, x_t, model, skip, None, None, 1e-6, compiled=True)
    bm.learn(b, chol_b, x_t, model, skip, None, None, 1e-6, compiled=False)
    # The NumPy path's bincount moments are the same sums, in order; np.exp (forgetting)
    # is NumPy's own vectorised exp, which may differ from libm's in the last bit.
    if d <= 8 and m > 1 and memory is None:
        np.testing.assert_array_equal(a.counts, b.counts)
        np.testing.assert_array_equal(a.means, b.means)
        np.testing.assert_array_equal(a.m2, b.m2)
    else:  # one model (BLAS sums), wide (BLAS per group), forgetting: equal to rounding
        np.testing.assert_allclose(a.counts, b.counts, rtol=1e-14)
        np.testing.assert_allclose(a.m2, b.m2, rtol=1e-10, atol=1e-9 * np.abs(b.m2).max())
        np.testing.assert_allclose(a.means, b.means, rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(chol_a, chol_b, rtol=1e-9, atol=1e-12)


def test_learning_with_decay_and_floors_matches(rng):
    d, m, n = 4, 7, 400
    stack, chol = _stack(rng, m, d)
    x_t = rng.normal(size=(d, n))
    model = rng.integers(0, m, size=n).astype(np.intp)
    decay = rng.uniform(0.3, 1.0, size=m)
    floor = np.array([0.5, 0.0, 2.0, 0.1])
    a, b = _copy(stack), _copy(stack)
    chol_a, chol_b = chol.copy(), chol.copy()
    bm.learn(a, chol_a, x_t, model, None, decay, floor, 1e-6, compiled=True)
    bm.learn(b, chol_b, x_t, model, None, decay, floor, 1e-6, compiled=False)
    np.testing.assert_array_equal(a.m2, b.m2)
    np.testing.assert_array_equal(a.counts, b.counts)
    np.testing.assert_allclose(chol_a, chol_b, rtol=1e-10, atol=1e-13)


@settings(max_examples=120, deadline=None)
@given(st.integers(1, 17), st.integers(1, 12), st.integers(0, 400), st.integers(0, 2**32 - 1))
def test_whitening_matches_the_numpy_path_bit_for_bit(d, m, n, seed):
    rng = np.random.default_rng(seed)
    stack, chol = _stack(rng, m, d)
    x_t = rng.normal(size=(d, n)) * 3
    model = rng.integers(0, m, size=n).astype(np.intp)
    k = int(rng.integers(0, d))
    table = PredictionBound(1e-4, d - k).table
    got = bm.whiten(x_t, model, stack.means, chol, k, stack.counts, table, True, full=True)
    diff_t = x_t - gather_rows(stack.means, model)
    z_t = whiten_grouped(diff_t, model, chol)
    np.testing.assert_array_equal(got.diff_t, diff_t)
    np.testing.assert_array_equal(got.z_t, z_t)
    scale = PredictionBound(1e-4, d - k).scale(stack.counts)[model]
    np.testing.assert_array_equal(got.scale, scale)
    np.testing.assert_allclose(got.stat, (z_t[k:] ** 2).sum(axis=0) * scale, rtol=1e-12)
    ref = bm.whiten(x_t, model, stack.means, chol, k, stack.counts, table, False)
    np.testing.assert_allclose(got.stat, ref.stat, rtol=1e-12)
    short = bm.whiten(x_t, model, stack.means, chol, k, stack.counts, None, True, full=False)
    assert short.diff_t is None and short.scale is None
    np.testing.assert_allclose(short.stat, (z_t[k:] ** 2).sum(axis=0), rtol=1e-12)


@pytest.mark.parametrize("k", [0, 1, 2])
def test_contributions_match_the_numpy_path(rng, k):
    d, m, n = 5, 6, 200
    stack, chol = _stack(rng, m, d)
    x_t = rng.normal(size=(d, n)) * 4
    model = rng.integers(0, m, size=n).astype(np.intp)
    hit = np.flatnonzero(rng.random(n) < 0.3)
    w = bm.whiten(x_t, model, stack.means, chol, k, stack.counts, None, False)
    shares, z = bm.contributions(x_t, w, hit, model, stack.means, chol, k, compiled=True)
    ref, z_ref = bm.contributions(x_t, w, hit, model, stack.means, chol, k, compiled=False)
    np.testing.assert_allclose(shares, ref, rtol=1e-9, atol=1e-12)
    np.testing.assert_array_equal(z, z_ref)
    np.testing.assert_allclose(shares.sum(axis=1), w.stat[hit], rtol=1e-9)


def test_factors_match_and_repair_indefinite_matrices(rng):
    d, m = 4, 9
    stack, _ = _stack(rng, m, d)
    counts, m2 = stack.counts.copy(), stack.m2.copy()
    counts[1] = 1.0  # one reading: a zero covariance, regularised
    m2[2] = -np.eye(d)  # indefinite: the NumPy path's eigenvalue repair
    floor = np.full(d, 0.25)
    for fl in (None, floor):
        got = bm.factors(counts, m2, fl, 1e-6, compiled=True)
        cov = covariance_of(counts, m2) + (np.diag(fl) if fl is not None else 0.0)
        ref = regularised_cholesky(cov, 1e-6)[0]
        np.testing.assert_allclose(got, ref, rtol=1e-10, atol=1e-14)
        assert np.all(np.triu(got, 1) == 0)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 6), st.integers(1, 8), st.integers(0, 2**32 - 1))
def test_any_split_of_a_batch_learns_what_the_numpy_path_learns(d, m, seed):
    """Learning in sub-batches (the compiled path) equals the NumPy path's, split alike."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 200))
    x_t = rng.normal(size=(d, n)) + rng.uniform(-50, 50, size=(d, 1))
    model = rng.integers(0, m, size=n).astype(np.intp)
    cuts = np.unique(np.concatenate(([0, n], rng.integers(0, n + 1, size=4))))
    a, b = GroupedCovariance(m, d), GroupedCovariance(m, d)
    chol_a, chol_b = np.zeros((m, d, d)), np.zeros((m, d, d))
    for lo, hi in zip(cuts[:-1], cuts[1:], strict=True):
        part, part_model = np.ascontiguousarray(x_t[:, lo:hi]), model[lo:hi]
        bm.learn(a, chol_a, part, part_model, None, None, None, 1e-6, compiled=True)
        bm.learn(b, chol_b, part, part_model, None, None, None, 1e-6, compiled=False)
    if m > 1:
        np.testing.assert_array_equal(a.m2, b.m2)
    counts, _, m2 = grouped_moments(x_t.T, model, m)
    present = counts >= 2
    np.testing.assert_allclose(
        covariance_of(a.counts, a.m2)[present],
        covariance_of(counts, m2)[present],
        rtol=1e-8,
        atol=1e-8,
    )


def _same_results(fast, slow, batches):
    """Both detectors' results on every batch (scores, alarms, contributions); the alarms."""
    alarms = 0
    for ts, ids, x in batches:
        a, b = fast.process(ts, ids, x), slow.process(ts, ids, x)
        np.testing.assert_array_equal(a.scored_by, b.scored_by)
        np.testing.assert_allclose(a.distances, b.distances, rtol=1e-9, atol=1e-12)
        np.testing.assert_array_equal(a.is_anomaly, b.is_anomaly)
        np.testing.assert_allclose(a.contributions, b.contributions, rtol=1e-8, atol=1e-10)
        alarms += a.n_anomalies
    return alarms


def _same_states(fast, slow):
    """Their float state arrays, to rounding."""
    for key, value in slow.state().items():
        if value.dtype.kind == "f":
            np.testing.assert_allclose(fast.state()[key], value, rtol=1e-9, atol=1e-9, err_msg=key)


MORE_CONFIGS = {
    **CONFIGS,
    "forgetting": DetectorConfig(min_samples=30, key_groups=2, memory=80.0),
    "learn-gate": DetectorConfig(min_samples=30, key_groups=2, learn_gate=1e-6),
    "residual-chart": DetectorConfig(
        min_samples=30, key_groups=2, chart="residual", sensors=("a", "b", "c")
    ),
    # A chart that warms within the test's 120 s, against the peers' median, with a
    # fleet-relative sensor: the compiled EWMA, run medians and chart learning.
    "peers-chart": DetectorConfig(
        min_samples=30,
        key_groups=2,
        sensors=("a", "b", "c"),
        conditions=("a",),
        fleet_relative=("b",),
        chart="residual",
        chart_span="4s",
        chart_peers=3,
    ),
    "conditions-regime": DetectorConfig(
        min_samples=30,
        fleet_min_samples=12,
        key_groups=2,
        sensors=("a", "b", "c"),
        conditions=("a",),
        regime={"sensor": "a", "edges": (0.0,)},
    ),
    # Operating states and settling after them (the compiled states and settling).
    "states-settling": DetectorConfig(
        min_samples=30,
        fleet_min_samples=12,
        key_groups=2,
        sensors=("a", "b", "c"),
        learn_when=(
            {"sensor": "b", "above": -6.0, "state": "stopped"},
            {"sensor": "c", "below": 6.0, "where": {"sensor": "a", "above": -3.0}},
        ),
        settle_span="2s",
        warmup_span="20s",
        memory_span="60s",
    ),
}


@pytest.mark.parametrize("name", MORE_CONFIGS)
def test_detector_compiled_matches_the_numpy_path(rng, name):
    config = MORE_CONFIGS[name]
    batches = fleet_batches(rng, fault_rate=0.05)
    fast, slow = Detector(config, compiled=True), Detector(config, compiled=False)
    alarms = _same_results(fast, slow, batches)
    assert alarms > 0, "the data must exercise the anomaly path"
    _same_states(fast, slow)


def test_compiled_state_round_trip_continues_identically(tmp_path, rng):
    config = DetectorConfig(min_samples=30, key_groups=2)
    batches = fleet_batches(rng)
    straight = Detector(config, compiled=True)
    expected = [straight.process(*b) for b in batches]
    first = Detector(config, compiled=True)
    for b in batches[:5]:
        first.process(*b)
    resumed = Detector.from_state(first.state(), compiled=True)
    for b, e in zip(batches[5:], expected[5:], strict=True):
        np.testing.assert_array_equal(resumed.process(*b).distances, e.distances)


@pytest.mark.parametrize("per_turbine", [True, False])
def test_plain_path_hands_odd_batches_to_the_general_path(rng, per_turbine):
    """NaN readings, a new turbine, an id outside the table: the same results both ways."""
    config = DetectorConfig(
        min_samples=30,
        fleet_min_samples=12,
        key_groups=2 if per_turbine else 1,
        per_turbine=per_turbine,
    )
    fast, slow = Detector(config, compiled=True), Detector(config, compiled=False)
    batches = fleet_batches(rng, fault_rate=0.05)
    odd = []
    ts, ids, x = batches[-1]
    nan = x.copy()
    nan[3, 1] = np.nan
    odd.append((ts, ids, nan))
    odd.append((ts[:4], np.array([0, 1, 77, 2]), x[:4]))  # turbine 77 is new
    odd.append((ts[:3], np.array([0, -5, 1]), x[:3]))  # a negative id: no table
    for ts, ids, x in [*batches, *odd, *batches[:3]]:
        a, b = fast.process(ts, ids, x), slow.process(ts, ids, x)
        np.testing.assert_array_equal(a.scored_by, b.scored_by)
        np.testing.assert_allclose(a.distances, b.distances, rtol=1e-9, atol=1e-12)
        np.testing.assert_array_equal(a.is_anomaly, b.is_anomaly)
    assert fast.skipped == slow.skipped == 1
    assert fast.readings == slow.readings and fast.anomalies == slow.anomalies


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.integers(1, 7), min_size=1, max_size=12),
    st.integers(1, 3),
    st.integers(0, 2**32 - 1),
    st.booleans(),
)
def test_run_medians_match_the_numpy_path_bit_for_bit(sizes, r, seed, with_nan):
    from pipeline import run_medians
    from pipeline.kernels import runs

    rng = np.random.default_rng(seed)
    starts = np.concatenate(([0], np.cumsum(sizes)[:-1])).astype(np.intp)
    v = rng.integers(-3, 4, size=(r, sum(sizes))).astype(float) * 0.7  # ties
    others = runs.medians_of_the_others(v, starts)
    np.testing.assert_array_equal(others, run_medians.medians_of_the_others(v, starts))
    if with_nan:
        v[rng.random(v.shape) < 0.2] = np.nan  # sorted last, as np.sort does
    np.testing.assert_array_equal(
        runs.deviations_from_medians(v, starts), run_medians.deviations_from_run_medians(v, starts)
    )


@pytest.mark.parametrize("long", [False, True])
def test_time_constant_ewma_matches_the_closed_form(rng, long):
    """The recursion reading by reading against the NumPy closed form (blocks when long)."""
    from pipeline import charts
    from pipeline.kernels import charting

    k, n, span = 5, 3000, 60.0
    keys = rng.integers(0, k, size=n).astype(np.intp)
    step = 40.0 if long else 1.0  # 3000 readings of 5 keys: ~400 spans, or ~16,000
    ts = np.cumsum(rng.exponential(step, size=n))
    ts[rng.random(n) < 0.02] += 100 * span  # gaps past the 40-span clip
    ts = np.maximum.accumulate(ts)
    z_t = rng.normal(size=(2, n))
    state = rng.normal(size=(k, 2))
    states = [state.copy(), state.copy()]
    last = [np.where(np.arange(k) % 2 == 0, np.nan, ts[0] - 30.0) for _ in range(2)]
    slow = charts.ewma_by_time(keys, ts, z_t, span, states[0], last[0])
    fast = charting.ewma_by_time(keys, ts, z_t, span, charts.MAX_GAP_SPANS, states[1], last[1])
    np.testing.assert_allclose(fast, slow, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(states[1], states[0], rtol=1e-9, atol=1e-12)
    np.testing.assert_array_equal(last[1], last[0])


def test_warm_up_loads_every_kernel_a_detector_calls():
    """What a service runs before it joins its group: no kernel left to load at the first batch."""
    import subprocess
    import sys

    probe = (
        "from pipeline.batch_math import warm_kernels\n"
        "import pipeline.kernels as k\n"
        "assert warm_kernels() > 0\n"
        "print(sorted(n for n in k.__all__ if not getattr(k, n).signatures))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


@pytest.mark.parametrize(
    ("per", "learn_flagged", "memory"), [(5, False, None), (3, True, None), (9, False, 50.0)]
)
def test_plain_kernel_in_lanes_matches_the_numpy_path(rng, per, learn_flagged, memory):
    """Many models with a few readings each (the lanes of pipeline/kernels/lanes.py)."""
    from pipeline.kernels import score_then_learn

    d, m = 4, 40
    stack, chol = _stack(rng, m, d)
    stack.memory = memory
    model = rng.permutation(np.tile(np.arange(m), per)).astype(np.intp)
    model = model[: model.size - 7]  # uneven blocks
    n = model.size
    x_t = stack.means[model].T + rng.normal(size=(d, n)) * rng.uniform(0.5, 3.0, size=(d, 1))
    x_t[:, ::13] += 25.0  # alarms
    table = PredictionBound(1e-4, d).table
    threshold = gate = 16.0
    fast, fast_chol = _copy(stack), chol.copy()
    stat, flags = np.empty(n), np.empty(n, dtype=bool)
    hit, shares, failed = np.empty(n, np.int64), np.empty((n, d)), np.empty(m, np.int64)
    ids = model.astype(np.int64)
    done, h, f = score_then_learn(
        np.asfortranarray(x_t),
        np.zeros(n),
        ids,
        np.arange(m, dtype=np.intp),
        np.empty(0, np.intp),
        np.empty(0, np.intp),
        np.empty(0),
        np.empty(0),
        0,
        fast.counts,
        fast.means,
        fast.m2,
        fast_chol,
        table,
        1.0,
        threshold,
        gate,
        learn_flagged,
        0.0 if memory is None else memory,
        np.empty(0),
        1e-6,
        stat,
        flags,
        hit,
        shares,
        failed,
    )
    assert done and f == 0
    z_t = whiten_grouped(x_t - gather_rows(stack.means, model), model, chol)
    scale = PredictionBound(1e-4, d).scale(stack.counts)[model]
    np.testing.assert_array_equal(stat, (z_t**2).sum(axis=0) * scale)
    np.testing.assert_array_equal(flags, stat > threshold)
    np.testing.assert_array_equal(hit[:h], np.flatnonzero(flags))
    assert h > 0
    np.testing.assert_allclose(shares[:h].sum(axis=1), stat[flags], rtol=1e-9)
    slow, slow_chol = _copy(stack), chol.copy()
    skip = None if learn_flagged else stat > gate
    bm.learn(slow, slow_chol, x_t, model, skip, None, None, 1e-6, compiled=False)
    if memory is None:
        np.testing.assert_array_equal(fast.counts, slow.counts)
        np.testing.assert_array_equal(fast.means, slow.means)
        np.testing.assert_array_equal(fast.m2, slow.m2)
    else:  # np.exp against libm's exp: equal to rounding
        np.testing.assert_allclose(fast.m2, slow.m2, rtol=1e-12)
        np.testing.assert_allclose(fast.means, slow.means, rtol=1e-12)
    np.testing.assert_allclose(fast_chol, slow_chol, rtol=1e-9, atol=1e-12)


def _regime_batches(rng, n_turbines=6, steps=240, per_batch=10, d=4):
    """Readings whose regime sensor (column 1) spreads over both bins of every turbine."""
    mix = np.eye(d) + 0.3 * rng.normal(size=(d, d))
    offsets = rng.normal(scale=3.0, size=(n_turbines, d))
    offsets[:, 1] = 0.0
    batches = []
    for start in range(0, steps, per_batch):
        ids = np.tile(np.arange(n_turbines), per_batch)
        ts = np.repeat(np.arange(start, start + per_batch, dtype=float), n_turbines)
        x = rng.normal(size=(ids.size, d)) @ mix + offsets[ids]
        x[:, 1] = rng.uniform(-2.0, 2.0, size=ids.size)
        x[:, 2] += 1.5 * x[:, 1]  # a response that follows the condition
        faulty = rng.random(ids.size) < 0.04
        x[faulty, 2:] += rng.choice([-1, 1], size=(faulty.sum(), d - 2)) * 7.0
        batches.append((ts, ids, x))
    return batches


PLAIN_REGIME_CONFIGS = {
    # The condition is not the first sensor: the kernel sees the sensors permuted.
    "per-turbine": DetectorConfig(
        min_samples=30,
        key_groups=2,
        sensors=("a", "b", "c", "d"),
        conditions=("b",),
        regime={"sensor": "b", "edges": (-0.5, 0.5)},
    ),
    "calibrated": DetectorConfig(
        min_samples=30,
        key_groups=2,
        sensors=("a", "b", "c", "d"),
        gains=(2.0, 1.0, 0.5, 1.0),
        conditions=("b", "a"),
        regime={"sensor": "b", "edges": (0.0,)},
        prediction_bound="hotelling",
    ),
    "fleet-groups": DetectorConfig(
        per_turbine=False,
        key_groups=2,
        fleet_min_samples=30,
        sensors=("a", "b", "c", "d"),
        conditions=("b",),
        regime={"sensor": "b", "edges": (0.0,)},
    ),
}


@pytest.mark.parametrize("batch_steps", [1, 10])
@pytest.mark.parametrize("name", PLAIN_REGIME_CONFIGS)
def test_conditions_and_regimes_take_the_plain_path_with_the_numpy_results(rng, name, batch_steps):
    """Conditions and regime bins in the one-call kernel (blocks and lanes): the NumPy path's
    scores, alarms, contributions and models, once the regimes' models are warm."""
    config = PLAIN_REGIME_CONFIGS[name]
    fast, slow = Detector(config, compiled=True), Detector(config, compiled=False)
    plain = fast._process_plain
    calls = {"plain": 0}

    def counted(*args):  # noqa: ANN002, ANN202 (a spy on the plain path's hand-over)
        out = plain(*args)
        calls["plain"] += out is not None
        return out

    fast._process_plain = counted  # type: ignore[method-assign]
    batches = _regime_batches(rng)
    if batch_steps == 1:  # one reading per turbine: one per model, the lanes' shape
        batches = [tuple(a[i : i + 6] for a in b) for b in batches for i in range(0, 60, 6)]
    alarms = _same_results(fast, slow, batches)
    assert alarms > 0
    assert calls["plain"] > len(batches) // 3, calls
    _same_states(fast, slow)


def test_every_kernel_is_cached_under_the_digest_of_all_kernel_modules(tmp_path):
    """A kernel compiles in its callees: a change to any kernel module must recompile it."""
    import shutil

    import pipeline.kernels as kernels
    from pipeline.kernels.cache import PACKAGE, kernels_digest

    digest = kernels_digest()
    for name in kernels.__all__:
        locator = getattr(kernels, name)._cache._impl.locator
        assert locator.get_source_stamp() == digest, name
    copy = tmp_path / "kernels"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    assert kernels_digest(copy) == digest
    lanes = copy / "lanes.py"  # a callee of score_then_learn, in another module
    lanes.write_text(lanes.read_text() + "\n# changed\n")
    assert kernels_digest(copy) != digest


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 6), min_size=1, max_size=40))
def test_lane_ranks_are_a_stable_sort_longest_first(per_list):
    """The counting sort of the lanes against a stable argsort of the readings per model."""
    from pipeline.kernels.blocks import lane_ranks

    per = np.array(per_list, dtype=np.int64)
    if per.max() == 0:
        per[0] = 1
    longest = int(per.max())
    by_lane, lane_of, width, offset, n_lanes = lane_ranks(per, longest)
    order = np.argsort(-per, kind="stable")
    expected = order[per[order] > 0]
    np.testing.assert_array_equal(by_lane, expected)
    assert n_lanes == expected.size
    lanes = np.full(per.size, -1)
    lanes[expected] = np.arange(expected.size)
    np.testing.assert_array_equal(lane_of, lanes)
    np.testing.assert_array_equal(width, [(per > r).sum() for r in range(longest)])
    np.testing.assert_array_equal(offset, np.concatenate(([0], np.cumsum(width))))


@settings(max_examples=150, deadline=None)
@given(st.integers(0, 2**32 - 1), st.booleans(), st.booleans())
def test_compiled_states_and_settling_match_the_numpy_path(seed, in_order, with_nan):
    """Range rules (with and without ``where``) and settling, against pipeline.policy's NumPy."""
    from pipeline import policy
    from pipeline.config import LearnRule

    rng = np.random.default_rng(seed)
    n, d, t = int(rng.integers(0, 60)), 3, 4
    raw = rng.integers(-3, 4, size=(n, d)).astype(float)  # ties with the limits
    if with_nan:
        raw[rng.random(raw.shape) < 0.1] = np.nan
    rules, cols, where = [], [], []
    for _ in range(int(rng.integers(1, 4))):
        lo, hi = sorted(rng.integers(-3, 4, size=2).tolist())
        kind = int(rng.integers(0, 3))
        rule = {"sensor": "x", "above": float(lo) if kind != 1 else None}
        rule["below"] = float(hi) + 0.5 if kind != 0 else None
        w = None
        if rng.random() < 0.5:
            w = {"sensor": "y", "above": float(rng.integers(-3, 1)), "below": 3.5}
        rules.append(LearnRule(**rule, where=w))
        cols.append(int(rng.integers(0, d)))
        where.append(int(rng.integers(0, d)) if w else -1)
    arrays = policy.RangeRules.of(rules, cols, where)
    expected = policy.learning_states(raw, rules, cols, where)
    np.testing.assert_array_equal(policy.learning_states(raw, rules, cols, where, arrays), expected)
    turbines = rng.integers(0, t, size=n).astype(np.intp)
    ts = np.cumsum(rng.integers(0, 3, size=n)).astype(float)
    if not in_order:
        ts = rng.permutation(ts)
    last = np.where(rng.random(t) < 0.5, np.nan, -rng.integers(0, 3, size=t).astype(float))
    in_state = expected > 0
    slow = policy.settling(turbines, ts, in_state, last, 2.0)
    fast = policy.settling(turbines, ts, in_state, last, 2.0, compiled=True)
    np.testing.assert_array_equal(fast[0], slow[0])
    np.testing.assert_array_equal(fast[1], slow[1])


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 2**32 - 1))
def test_time_range_by_model_matches_ufunc_at(seed):
    from pipeline.kernels import time_range_by_model

    rng = np.random.default_rng(seed)
    n, m = int(rng.integers(0, 40)), int(rng.integers(1, 6))
    model = rng.integers(0, m, size=n).astype(np.intp)
    ts = rng.integers(0, 9, size=n).astype(float)
    newest, oldest = np.full(m, -np.inf), np.full(m, np.inf)
    np.maximum.at(newest, model, ts)
    np.minimum.at(oldest, model, ts)
    got = time_range_by_model(model, ts, m)
    np.testing.assert_array_equal(got[0], newest)
    np.testing.assert_array_equal(got[1], oldest)


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 2**32 - 1))
def test_compiled_regime_bins_are_searchsorted(seed):
    from pipeline.policy import regime_bins

    rng = np.random.default_rng(seed)
    edges = np.unique(rng.integers(-5, 6, size=int(rng.integers(1, 8))).astype(float))
    values = rng.integers(-7, 8, size=int(rng.integers(0, 50))).astype(float)  # on the edges too
    values[rng.random(values.size) < 0.1] = np.nan
    values[rng.random(values.size) < 0.1] = np.inf
    np.testing.assert_array_equal(
        regime_bins(values, edges, compiled=True), regime_bins(values, edges)
    )
