"""Conditioning sensors, regimes, learning filters and the learning policy, against oracles."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy import stats

from pipeline import Detector, DetectorConfig
from pipeline.config import make_config
from pipeline.detector import FILTERED, FLEET, TURBINE
from pipeline.errors import ConfigError
from tests.reference import hotelling_scale

SENSORS = ("wind", "temp", "power", "pitch")


def correlated(rng, n, d=4, mean=None):
    mix = np.array(
        [[1.0, 0.0, 0.0, 0.0], [0.2, 1.0, 0.0, 0.0], [0.9, 0.1, 0.4, 0.0], [0.5, -0.3, 0.2, 0.3]]
    )[:d, :d]
    x = rng.normal(size=(n, d)) @ mix.T
    return x + (np.zeros(d) if mean is None else mean)


def explicit_conditional(train, x, k):
    """d^2(r | c) from np.cov by the regression of r on c (no Cholesky, no Schur trick)."""
    mu = train.mean(axis=0)
    cov = np.cov(train, rowvar=False)
    scc, scr, srr = cov[:k, :k], cov[:k, k:], cov[k:, k:]
    beta = np.linalg.solve(scc, scr)  # (k, R)
    e = (x[:, k:] - mu[k:]) - (x[:, :k] - mu[:k]) @ beta
    s = srr - scr.T @ beta
    return np.einsum("nr,nr->n", e, np.linalg.solve(s, e.T).T)


def test_conditional_score_is_the_regression_residual_distance(rng):
    config = DetectorConfig(
        sensors=SENSORS, conditions=("wind", "temp"), key_groups=1, min_samples=50, ridge=0.0
    )
    det = Detector(config)
    train = correlated(rng, 2000)
    det.learn(np.arange(2000.0), np.zeros(2000, dtype=int), train)
    x = correlated(rng, 300)
    x[::7, 2] += 3.0  # power off its curve given the wind
    r = det.process(np.full(300, 3000.0), np.zeros(300, dtype=int), x)
    # p = D - k = 2 degrees of freedom in the prediction bound of a model of 2000 readings.
    expected = explicit_conditional(train, x, 2) * hotelling_scale(config, 2000, 2)
    np.testing.assert_allclose(r.distances, expected, rtol=1e-7)
    assert r.threshold == pytest.approx(stats.chi2.isf(1e-4, 2))
    assert r.n_anomalies > 0
    # Contributions: responses only, summing to the score.
    np.testing.assert_array_equal(r.contributions[:, :2], 0.0)
    np.testing.assert_allclose(r.contributions.sum(axis=1), r.distances[r.anomaly_index], rtol=1e-8)


def test_conditions_are_ordered_first_whatever_their_column(rng):
    a = DetectorConfig(sensors=SENSORS, conditions=("wind",), key_groups=1, min_samples=50)
    perm = [2, 0, 3, 1]  # the same sensors, in another column order
    b = DetectorConfig(
        sensors=tuple(SENSORS[j] for j in perm), conditions=("wind",), key_groups=1, min_samples=50
    )
    train, x = correlated(rng, 1000), correlated(rng, 50) + 0.5
    da, db = Detector(a), Detector(b)
    da.learn(np.arange(1000.0), np.zeros(1000, dtype=int), train)
    db.learn(np.arange(1000.0), np.zeros(1000, dtype=int), train[:, perm])
    ra = da.process(np.full(50, 2e3), np.zeros(50, dtype=int), x)
    rb = db.process(np.full(50, 2e3), np.zeros(50, dtype=int), x[:, perm])
    np.testing.assert_allclose(ra.distances, rb.distances, rtol=1e-9)
    np.testing.assert_allclose(ra.contributions[:, perm], rb.contributions, rtol=1e-9, atol=1e-12)


def test_regime_models_match_explicit_per_bin_covariances(rng):
    edges = (-0.5, 0.5)
    config = DetectorConfig(
        sensors=SENSORS,
        regime={"sensor": "wind", "edges": edges},
        key_groups=1,
        min_samples=30,
        ridge=0.0,
    )
    det = Detector(config)
    n = 3000
    train, ids = correlated(rng, n), rng.integers(0, 3, n)
    det.learn(np.arange(float(n)), ids, train)
    x, xid = correlated(rng, 200), rng.integers(0, 3, 200)
    r = det.process(np.full(200, 1e4), xid, x)
    bins = np.searchsorted(edges, train[:, 0], side="right")
    xbins = np.searchsorted(edges, x[:, 0], side="right")
    for i in range(200):
        rows = train[(ids == xid[i]) & (bins == xbins[i])]
        e = x[i] - rows.mean(axis=0)
        expected = e @ np.linalg.solve(np.cov(rows, rowvar=False), e)
        expected *= hotelling_scale(config, len(rows), 4)  # the bin model's own count
        assert r.distances[i] == pytest.approx(expected, rel=1e-7)
    assert (r.scored_by == TURBINE).all()


class PoolingEveryFleetModel(Detector):
    """The reference: every fleet model pooled afresh whenever any is needed."""

    def _fleet_view(self, needed=None):  # noqa: ANN001, ANN202
        self._groups_dirty = True
        return super()._fleet_view(None)


def test_fleet_models_pooled_only_when_needed_score_as_all_pooled(rng):
    # Three turbines, bins rarely visited at the edges: each batch has a few readings
    # of a turbine's cold bin, scored by the fleet model pooled for it alone.
    config = DetectorConfig(
        sensors=SENSORS,
        regime={"sensor": "wind", "edges": (-1.5, -0.5, 0.5, 1.5)},
        key_groups=2,
        min_samples=40,
        warmup_span=3000.0,
        learn_when=[{"sensor": "pitch", "above": -100.0, "state": "stopped"}],
    )
    fast, full = Detector(config), PoolingEveryFleetModel(config)
    fleet_scored = 0
    for b in range(12):
        n = 300
        ts = 1000.0 * b + np.sort(rng.integers(0, 1000, n)).astype(float)
        ids, x = rng.integers(0, 5, n), correlated(rng, n)
        a, r = fast.process(ts, ids, x), full.process(ts, ids, x)
        np.testing.assert_array_equal(a.distances, r.distances)
        np.testing.assert_array_equal(a.scored_by, r.scored_by)
        fleet_scored += int((a.scored_by == FLEET).sum())
    assert fleet_scored > 0
    # A batch that learns nothing (stops, and a gross fault of a new turbine that
    # the fleet scores): the fleet models not pooled for it are still out of date,
    # and pooled when the state is taken.
    x = correlated(rng, 10)
    x[:9, 3] = -1e3
    x[9] = (0.0, 0.0, 1e3, 0.0)
    ids = np.array([0, 1, 2, 3, 4, 0, 1, 2, 3, 7])
    for det in (fast, full):
        r = det.process(np.full(10, 2e4), ids, x)
        assert r.state_counts() == {"stopped": 9} and r.scored_by[9] == FLEET
        assert r.is_anomaly[9]
    for key in ("group_counts", "group_means", "group_m2"):
        np.testing.assert_array_equal(fast.state()[key], full.state()[key])


def test_readings_outside_the_edges_fall_in_the_end_bins_and_nan_is_skipped(rng):
    config = DetectorConfig(
        sensors=SENSORS, regime={"sensor": "wind", "edges": (0.0, 1.0)}, key_groups=1
    )
    det = Detector(config)
    x = correlated(rng, 10)
    x[0, 0] = -1e9
    x[1, 0] = 1e9
    x[2, 0] = np.nan
    r = det.process(np.arange(10.0), np.zeros(10, dtype=int), x)
    assert r.n_skipped == 1 and det.sample_counts().tolist() == [9.0]


@given(
    seed=st.integers(0, 2**32 - 1),
    cut=st.integers(1, 399),
    owner=st.lists(st.booleans(), min_size=4, max_size=4),
)
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_split_and_merge_with_regimes_and_conditions_is_exact(seed, cut, owner):
    rng = np.random.default_rng(seed)
    config = DetectorConfig(
        sensors=SENSORS,
        conditions=("wind",),
        regime={"sensor": "wind", "edges": (-1.0, 0.0, 1.0)},
        key_groups=2,
        min_samples=10,
    )
    n = 400
    ids, x, ts = rng.integers(0, 4, n), correlated(rng, n), np.arange(float(n))
    whole = Detector(config)
    whole.learn(ts[:cut], ids[:cut], x[:cut])
    whole.learn(ts[cut:], ids[cut:], x[cut:])
    mine = np.asarray(owner)[ids]
    a, b = Detector(config), Detector(config)
    a.learn(ts[mine], ids[mine], x[mine])
    b.learn(ts[~mine], ids[~mine], x[~mine])
    merged = a.merge(b)
    for t in np.unique(ids).tolist():
        w, m = whole.turbine_model(t), merged.turbine_model(t)
        assert w.count == m.count
        np.testing.assert_allclose(m.mean, w.mean, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(m.comoment, w.comoment, rtol=1e-9, atol=1e-9)
    sw, sm = whole.state(), merged.state()
    order = [int(np.flatnonzero(merged.turbines.ids == t)[0]) for t in whole.turbines.ids]
    rows = (np.array(order)[:, None] * 4 + np.arange(4)).reshape(-1)
    np.testing.assert_allclose(sm["turbine_counts"][rows], sw["turbine_counts"])
    np.testing.assert_allclose(sm["group_counts"], sw["group_counts"])


def test_learn_when_keeps_stops_out_of_the_models_and_the_anomalies(rng):
    config = make_config(
        {
            "sensors": SENSORS,
            "key_groups": 1,
            "min_samples": 20,
            "learn_when": [{"sensor": "power", "above": -1.0, "state": "stopped"}],
        }
    )
    det = Detector(config)
    x = correlated(rng, 500)
    x[:, 2] = np.abs(x[:, 2])
    det.process(np.arange(500.0), np.zeros(500, dtype=int), x)
    stop = correlated(rng, 40)
    stop[:, 2] = -50.0  # a stop: power far off, would be an enormous anomaly
    r = det.process(np.full(40, 600.0), np.zeros(40, dtype=int), stop)
    assert (r.scored_by == FILTERED).all() and r.n_anomalies == 0 and r.n_filtered == 40
    assert r.state_counts() == {"stopped": 40}
    assert det.turbine_model(0).count == 500
    assert det.filtered == 40


def test_warmup_by_time_span_as_well_as_count(rng):
    config = DetectorConfig(sensors=SENSORS, key_groups=1, min_samples=20, warmup_span="1h")
    det = Detector(config)
    det.process(np.linspace(0, 600, 100), np.zeros(100, dtype=int), correlated(rng, 100))
    # 100 readings (>= min_samples) but over 10 minutes: still warming up, so the
    # fleet model stands in (which has no time span of its own to reach).
    assert det.process([700.0], [0], correlated(rng, 1)).scored_by.tolist() == [FLEET]
    det.process(np.linspace(800, 3700, 100), np.zeros(100, dtype=int), correlated(rng, 100))
    assert det.process([3800.0], [0], correlated(rng, 1)).scored_by.tolist() == [TURBINE]


def test_memory_span_forgets_in_time_but_never_below_warm(rng):
    day = 86400.0
    config = DetectorConfig(sensors=SENSORS, key_groups=1, min_samples=20, memory_span="10d")
    det = Detector(config)
    det.learn(np.zeros(1000), np.zeros(1000, dtype=int), correlated(rng, 1000))
    det.learn(np.full(10, 100 * day), np.zeros(10, dtype=int), correlated(rng, 10) + 2.0)
    model = det.turbine_model(0)
    # exp(-10) of 1000 readings is below 20: the old state keeps 20, the new 10.
    assert model.count == pytest.approx(30.0)
    assert model.mean[0] == pytest.approx(2.0 * 10 / 30, abs=0.25)


def test_learning_gate_learns_readings_between_the_threshold_and_the_gate(rng):
    base = {"sensors": SENSORS, "key_groups": 1, "min_samples": 20}
    gated = Detector(make_config({**base, "learn_gate": 1e-12}))
    strict = Detector(make_config(base))
    train = correlated(rng, 500)
    for det in (gated, strict):
        det.learn(np.arange(500.0), np.zeros(500, dtype=int), train)
    x = np.zeros((1, 4))
    x[0, 3] = 1.6  # pitch: about 5 sd off -> above the 1e-4 threshold, inside the 1e-12 gate
    for det in (gated, strict):
        r = det.process([600.0], [0], x)
        assert r.is_anomaly[0] and det.threshold < r.distances[0] < gated.gate
    assert gated.turbine_model(0).count == 501
    assert strict.turbine_model(0).count == 500


def lockout_stream(rng, days=40, step=600.0, shift_day=10):
    """A turbine steady at one operating point, then for good at another, normal one."""
    n = int(days * 86400 / step)
    ts = np.arange(n) * step
    x = correlated(rng, n)
    x[ts >= shift_day * 86400, 2] += 6.0  # e.g. a new power sensor after maintenance
    return ts, x


def run_daily(det, ts, x):
    flags = np.zeros(ts.size, dtype=bool)
    for start in range(0, ts.size, 144):
        sl = slice(start, start + 144)
        flags[sl] = det.process(ts[sl], np.zeros(ts[sl].size, dtype=int), x[sl]).is_anomaly
    return flags


def test_lock_out_regression_a_new_steady_operating_point_is_learned(rng):
    ts, x = lockout_stream(rng)
    base = {"sensors": SENSORS, "key_groups": 1}
    locked = run_daily(Detector(make_config(base)), ts, x)
    det = Detector(make_config({**base, "rebaseline_after": "3d"}))
    flags = run_daily(det, ts, x)
    late = ts >= 20 * 86400
    assert locked[late].mean() > 0.95, "without re-baselining the model locks out"
    assert flags[late].mean() < 0.01, "re-baselined within the configured span"
    first = ts >= 10 * 86400
    assert flags[first & (ts < 12 * 86400)].mean() > 0.95, "the change itself is flagged"
    assert det.rebaselines == 1


def test_a_drift_is_not_rebaselined_while_it_moves(rng):
    n = 40 * 144
    ts = np.arange(n) * 600.0
    x = correlated(rng, n)
    ramp = np.clip((ts - 10 * 86400) / (30 * 86400), 0, None)
    x[:, 2] += 40.0 * ramp  # still moving at the end of each 3-day window
    det = Detector(make_config({"sensors": SENSORS, "key_groups": 1, "rebaseline_after": "3d"}))
    run_daily(det, ts, x)
    assert det.rebaselines == 0


def test_a_gap_in_the_readings_breaks_a_rebaselining_run(rng):
    """The alarm must be seen to persist: a gap longer than the allowed pause restarts the run.

    A turbine moves for good to a new steady level at t = 600 s; its readings
    stop from 640 s to 700 s.  Without the gap's check the run begun at 600 s
    was accepted at the first batch after the gap, on 40 s of alarms.
    """
    det = Detector(
        make_config(
            {"sensors": SENSORS, "key_groups": 1, "rebaseline_after": "100s",
             "rebaseline_share": 0.9}
        )
    )  # fmt: skip
    det.learn(np.arange(600.0), np.zeros(600, dtype=int), correlated(rng, 600))
    ts = np.concatenate((np.arange(600.0, 640.0), np.arange(700.0, 900.0)))
    x = correlated(rng, ts.size)
    x[:, 2] += 6.0
    accepted = []
    for start in range(0, ts.size, 10):
        sl = slice(start, start + 10)
        r = det.process(ts[sl], np.zeros(ts[sl].size, dtype=int), x[sl])
        if r.rebaselined.size:
            accepted.append(float(ts[sl].max()))
    assert accepted, "the new level is accepted once it has persisted 100 s"
    assert accepted[0] >= 800.0, "not on the 40 s of alarms before the gap"


@pytest.mark.parametrize(("pause", "since"), [(5.0, 0.0), (15.0, 24.0)])
def test_a_pause_in_the_alarms_within_one_batch_restarts_the_run(pause, since):
    """Alarms at 0-9 s, a pause, then alarms again: beyond (1 - share) * after = 10 s the
    run restarts at the alarm after the pause, though the batch ends in alarms."""
    from pipeline.rebaseline import RebaselineRuns

    runs = RebaselineRuns(1, 2, 0, after=100.0, share=0.9, steady=1.0)
    ts = np.concatenate((np.arange(10.0), 9.0 + pause + np.arange(10.0)))
    runs.observe(np.zeros(20, dtype=np.intp), ts, np.zeros((2, 20)), np.ones(20, dtype=bool))
    assert runs.since[0] == since
    assert runs.alarms[0] == (20.0 if pause < 10 else 10.0)


def test_operator_rebaseline_forgets_a_turbine(rng):
    config = DetectorConfig(
        sensors=SENSORS, key_groups=1, regime={"sensor": "wind", "edges": (0.0,)}
    )
    det = Detector(config)
    det.learn(np.arange(400.0), np.repeat([3, 4], 200), correlated(rng, 400))
    assert det.rebaseline([3]) == 1
    assert det.turbine_model(3).count == 0 and det.turbine_model(4).count == 200
    restored = Detector.from_state(det.state())
    assert restored.rebaselines == 1 and restored.turbine_model(3).count == 0


def test_residual_chart_adds_up_a_small_lasting_power_deficit(rng):
    n = 60 * 144
    ts = np.arange(n) * 600.0
    wind = np.abs(rng.normal(8.0, 2.0, n))
    power = 100.0 * wind + rng.normal(0, 40.0, n)
    x = np.column_stack((wind, power))
    faulty = ts >= 45 * 86400
    x[faulty, 1] *= 0.95  # 5 % deficit: about 1 sd of the residual
    base = {"sensors": ("wind", "power"), "conditions": ("wind",), "key_groups": 1}
    point = Detector(make_config(base))
    chart = Detector(make_config({**base, "chart": "residual", "chart_span": "6h"}))
    fp, fc = run_daily(point, ts, x), run_daily(chart, ts, x)
    assert fp[faulty].mean() < 0.01, "one reading at a time, the deficit is noise"
    assert fc[faulty].mean() > 0.5, "the chart adds it up"
    assert fc[(ts > 20 * 86400) & ~faulty].mean() < 0.01
    hours = (ts[faulty][np.argmax(fc[faulty])] - 45 * 86400) / 3600
    assert hours < 48


def test_state_round_trip_with_every_feature(rng):
    config = make_config(
        {
            "sensors": SENSORS,
            "key_groups": 1,
            "conditions": ["wind"],
            "fleet_relative": ["temp"],
            "regime": {"sensor": "wind", "edges": [-0.5, 0.5]},
            "learn_when": [{"sensor": "power", "above": -2.5, "state": "stopped"}],
            "sensor_floor": {"pitch": 0.1},
            "warmup_span": "1h",
            "memory_span": "30d",
            "learn_gate": 1e-9,
            "chart": "residual",
            "chart_span": "2h",
            "rebaseline_after": "1d",
        }
    )
    ids = np.tile(np.arange(3), 1000)
    ts = np.repeat(np.arange(1000) * 600.0, 3)
    x = correlated(rng, ids.size)
    a = Detector(config)
    a.process(ts[:2400], ids[:2400], x[:2400])
    b = Detector.from_state(a.state())
    ra, rb = a.process(ts[2400:], ids[2400:], x[2400:]), b.process(ts[2400:], ids[2400:], x[2400:])
    np.testing.assert_array_equal(ra.distances, rb.distances)
    np.testing.assert_array_equal(ra.scored_by, rb.scored_by)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"conditions": ["wnd"]}, "conditions names sensor 'wnd'"),
        ({"regime": {"sensor": "speed", "edges": [1, 2]}}, "regime names sensor 'speed'"),
        (
            {"learn_when": [{"sensor": "status", "normal": [1]}]},
            "learn_when names sensor 'status'",
        ),
        ({"fleet_relative": ["t"]}, "fleet_relative names sensor 't'"),
        ({"sensor_floor": {"x": 1.0}}, "sensor_floor names sensor 'x'"),
        ({"chart_sensors": ["y"]}, "chart_sensors names sensor 'y'"),
        ({"conditions": ["wind"], "chart_sensors": ["wind"]}, "a condition"),
        ({"regime": {"sensor": "wind", "edges": [3, 2]}}, "strictly increasing: 3.0 is followed"),
        ({"conditions": list(SENSORS)}, "leave no sensor to score"),
        ({"learn_when": [{"sensor": "power"}]}, "either above/below or normal"),
        ({"learn_gate": 0.1}, "the gate must be at or beyond"),
        ({"warmup_span": "soon"}, "not a duration"),
    ],
)
def test_bad_roles_are_one_line_errors_naming_the_sensor(settings, message):
    with pytest.raises(ConfigError, match=message) as info:
        make_config({"sensors": SENSORS, **settings})
    assert "\n" not in str(info.value)


def test_residual_chart_variance_is_floored_at_white_noise(rng):
    n = 30 * 144
    ts = np.arange(n) * 600.0
    x = np.column_stack((rng.normal(8, 1, n), np.full(n, -1.0)))  # a response that never moves
    config = make_config(
        {
            "sensors": ("wind", "pitch"),
            "conditions": ["wind"],
            "key_groups": 1,
            "chart": "residual",
            "chart_span": "12h",
            "chart_floor": 4.0,
        }
    )
    det = Detector(config)
    run_daily(det, ts, x)
    lam = -np.expm1(-600.0 / 43200.0)
    assert det._residuals.chol[0, 0, 0] ** 2 >= 4.0 * lam / (2 - lam)


def test_chart_sensors_leave_the_others_to_the_point_score(rng):
    n = 60 * 144
    ts = np.arange(n) * 600.0
    wind = np.abs(rng.normal(8.0, 2.0, n))
    x = np.column_stack((wind, 100.0 * wind + rng.normal(0, 40.0, n), rng.normal(0, 1.0, n)))
    faulty = ts >= 45 * 86400
    x[faulty, 2] += 2.0  # a lasting 2 sd shift of the third sensor
    base = {
        "sensors": ("wind", "power", "other"),
        "conditions": ("wind",),
        "key_groups": 1,
        "chart": "residual",
        "chart_span": "6h",
    }
    every = run_daily(Detector(make_config(base)), ts, x)
    power_only = run_daily(Detector(make_config({**base, "chart_sensors": ["power"]})), ts, x)
    assert every[faulty].mean() > 0.5
    assert power_only[faulty].mean() < 0.01


@given(
    k=st.integers(1, 5),
    steps=st.integers(1, 8),
    shuffle=st.booleans(),
    drop=st.integers(0, 3),
    seed=st.integers(0, 2**16),
)
@settings(max_examples=60, deadline=None)
def test_fleet_deviation_against_a_per_reading_median(k, steps, shuffle, drop, seed):
    from pipeline.policy import fleet_deviation

    rng = np.random.default_rng(seed)
    ts = np.repeat(np.arange(steps, dtype=float), k)
    v = rng.normal(size=ts.size)
    if shuffle:
        order = rng.permutation(ts.size)
        ts, v = ts[order], v[order]
    if drop and ts.size > drop:
        ts, v = ts[drop:], v[drop:]
    expected = np.array([v[i] - np.median(v[ts == ts[i]]) for i in range(v.size)])
    np.testing.assert_allclose(fleet_deviation(ts, v), expected, atol=1e-12)


def naive_state(row, rules, columns, where_columns):
    for k, rule in enumerate(rules):
        v = row[columns[k]]
        ok = (rule.above is None or v > rule.above) and (rule.below is None or v < rule.below)
        if rule.normal is not None:
            ok = ok and v in rule.normal
        if rule.where is not None:
            w = row[where_columns[k]]
            lo, hi = rule.where.above, rule.where.below
            ok = ok or not ((lo is None or w > lo) and (hi is None or w < hi))
        if not ok:
            return k + 1
    return 0


@given(seed=st.integers(0, 2**32 - 1), n_rules=st.integers(1, 4))
@settings(max_examples=60, deadline=None)
def test_learning_states_against_a_reading_by_reading_reference(seed, n_rules):
    from pipeline.config import LearnRule
    from pipeline.policy import learning_states

    rng = np.random.default_rng(seed)
    raw = rng.integers(-3, 4, (200, 3)).astype(float)
    raw[rng.random(raw.shape) < 0.05] = np.nan
    rules, columns, where_columns = [], [], []

    def bounds():
        lo, hi = sorted(rng.choice(np.arange(-2, 3), 2, replace=False).tolist())
        keep = rng.integers(3)  # both, above only, below only
        return {
            "above": float(lo) if keep != 2 else None,
            "below": float(hi) if keep != 1 else None,
        }

    for k in range(n_rules):
        if rng.integers(3) == 2:
            spec = {"normal": tuple(float(c) for c in rng.choice(np.arange(-3, 4), 2))}
        else:
            spec = bounds()
        where = {"sensor": "w", **bounds()} if rng.random() < 0.5 else None
        rules.append(LearnRule(sensor="s", state=f"s{k}", where=where, **spec))
        columns.append(int(rng.integers(3)))
        where_columns.append(int(rng.integers(3)))
    got = learning_states(raw, rules, columns, where_columns)
    want = [naive_state(row, rules, columns, where_columns) for row in raw]
    assert got.tolist() == want


def test_a_fleet_relative_regime_sensor_bins_its_raw_value(rng):
    # The regime bins the raw wind speed even where the wind is also scored as its
    # deviation from the fleet's (which is near 0): every reading here is in bin 1.
    config = DetectorConfig(
        sensors=("wind", "power"),
        regime={"sensor": "wind", "edges": (0.5,)},
        fleet_relative=("wind",),
        learn_when=[{"sensor": "power", "above": 0.0, "state": "stopped"}],
        key_groups=1,
    )
    det = Detector(config)
    n = 400
    ts = np.repeat(np.arange(n // 4, dtype=float), 4)
    x = np.column_stack([1.0 + 0.01 * rng.normal(size=n), rng.normal(size=n)])
    r = det.process(ts, np.tile(np.arange(4), n // 4), x)
    assert 0 < r.state_counts()["stopped"] < n
    counts = det.state()["turbine_counts"].reshape(4, 2)
    assert counts[:, 0].sum() == 0 and counts[:, 1].sum() == n - r.state_counts()["stopped"]


def test_chart_threshold_counts_the_sensors_it_watches():
    """A chart on one of three scored sensors alarms at its rate: chi-square with 1 dof."""
    base = {
        "sensors": ("wind", "power", "other", "more"),
        "conditions": ("wind",),
        "key_groups": 1,
        "chart": "residual",
        "chart_false_alarm_rate": 1e-6,
        "chart_learn_gate": 0.2,
    }
    for watched in (["power"], ["power", "more"], []):
        cfg = make_config({**base, "chart_sensors": watched})
        det = Detector(cfg)
        dof = len(watched) or 3
        chart = stats.chi2.isf(1e-6, dof)
        assert cfg.chart_threshold(4, cfg.sensors) == pytest.approx(chart, rel=1e-12)
        assert det._residuals.scale == pytest.approx(det.threshold / chart, rel=1e-12)
        gate = stats.chi2.isf(0.2, dof) * det.threshold / chart
        assert det._chart_gate == pytest.approx(gate, rel=1e-12)
