"""The farm around a turbine: residuals against its peers, start-ups settling, a column
read twice (issue 12: a detector that fits real SCADA)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline import Detector
from pipeline.config import make_config
from pipeline.detector import FILTERED
from pipeline.errors import ConfigError
from pipeline.policy import peer_counts, peer_deviation, settling
from pipeline.recordings import RecordingSpec, read_recording
from tests.test_operating_point import run_daily


@given(
    k=st.integers(1, 20),
    steps=st.integers(1, 6),
    rows=st.integers(1, 3),
    drop=st.integers(0, 3),
    ties=st.booleans(),
    seed=st.integers(0, 2**16),
)
@settings(max_examples=100, deadline=None)
def test_peer_deviation_against_the_median_of_the_others(k, steps, rows, drop, ties, seed):
    rng = np.random.default_rng(seed)
    ts = np.repeat(np.arange(steps, dtype=float), k)
    order = rng.permutation(ts.size)[drop:] if ts.size > drop else rng.permutation(ts.size)
    ts = ts[order]
    v = (
        rng.integers(0, 3, (rows, ts.size)).astype(float)
        if ties
        else rng.normal(size=(rows, ts.size))
    )
    dev, peers = peer_deviation(ts, v)
    np.testing.assert_array_equal(peer_counts(ts), peers)
    for i in range(ts.size):
        same = ts == ts[i]
        assert peers[i] == same.sum()
        others = same & (np.arange(ts.size) != i)
        want = v[:, i] - np.median(v[:, others], axis=1) if others.any() else 0.0
        np.testing.assert_allclose(dev[:, i], want, atol=1e-12)


def naive_settling(turbines, ts, in_state, last, span):
    last = last.copy()
    out = np.zeros(ts.size, dtype=bool)
    for i in np.lexsort((ts, turbines)):
        t = turbines[i]
        if in_state[i]:
            last[t] = ts[i]
        elif not np.isnan(last[t]) and ts[i] - last[t] <= span:
            out[i] = True
    return out, last


@given(
    n=st.integers(0, 60),
    turbines=st.integers(1, 4),
    span=st.sampled_from([600.0, 1200.0, 3000.0]),
    seed=st.integers(0, 2**16),
)
@settings(max_examples=80, deadline=None)
def test_settling_against_a_reading_by_reading_reference(n, turbines, span, seed):
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, turbines, n).astype(np.intp)
    ts = np.zeros(n)
    for t in range(turbines):  # each turbine's readings 10 minutes apart, shuffled
        sel = np.flatnonzero(ids == t)
        ts[sel] = 600.0 * rng.permutation(sel.size)
    in_state = rng.random(n) < 0.3
    carry = np.where(rng.random(turbines) < 0.5, -600.0, np.nan)
    got, last = settling(ids, ts, in_state, carry, span)
    want, want_last = naive_settling(ids, ts, in_state, carry, span)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(last, want_last)


STATES = {
    "sensors": ("wind", "pitch", "power"),
    "key_groups": 1,
    "conditions": ["wind"],
    "min_samples": 10,
    "learn_when": [
        {
            "sensor": "power",
            "above": 10.0,
            "state": "stopped",
            "where": {"sensor": "pitch", "above": 5.0},
        }
    ],
    "settle_span": "20min",
}


def test_readings_after_a_stop_settle_and_the_span_carries_across_batches():
    det = Detector(make_config(STATES))
    ts = np.arange(8) * 600.0
    x = np.column_stack((np.full(8, 8.0), np.full(8, -1.0), np.full(8, 800.0)))
    x[2] = (8.0, 80.0, 0.0)  # a stop, at the end of the first batch
    a = det.process(ts[:3], np.zeros(3, int), x[:3])
    assert a.state_counts() == {"stopped": 1}
    b = Detector.from_state(det.state()).process(ts[3:], np.zeros(5, int), x[3:])
    # 600 s and 1200 s after the stop: settling; then normal again
    assert b.state_counts() == {"settling": 2}
    assert (b.scored_by[:2] == FILTERED).all() and (b.scored_by[2:] != FILTERED).all()
    assert det.state_names[-1] == "settling"


def test_a_power_sensor_stuck_at_zero_while_the_turbine_runs_is_scored_not_stopped(rng):
    """The stop rule looks at the pitch: a stopped turbine feathers its blades. A power
    reading of 0 with the blades at fine pitch in 8 m/s of wind is a fault."""
    det = Detector(make_config({**STATES, "settle_span": None}))
    n = 2000
    wind = rng.uniform(5, 11, n)
    x = np.column_stack((wind, rng.normal(-1, 0.05, n), 20 * wind**2 + rng.normal(0, 30, n)))
    det.process(np.arange(n) * 600.0, np.zeros(n, int), x)
    stuck = np.column_stack((np.full(5, 8.0), np.full(5, -1.0), np.zeros(5)))
    r = det.process(n * 600.0 + np.arange(5) * 600.0, np.zeros(5, int), stuck)
    assert r.state_counts() == {} and r.n_anomalies == 5
    feathered = stuck.copy()
    feathered[:, 1] = 85.0
    r = det.process((n + 10) * 600.0 + np.arange(5) * 600.0, np.zeros(5, int), feathered)
    assert r.state_counts() == {"stopped": 5} and r.n_anomalies == 0


def farm(rng, days=40, turbines=4, step=600.0):
    n = int(days * 86400 / step)
    ts = np.repeat(np.arange(n) * step, turbines)
    ids = np.tile(np.arange(turbines), n)
    wind = np.repeat(rng.uniform(4, 11, n), turbines) + rng.normal(0, 0.2, ts.size)
    weather = np.repeat(np.sin(np.arange(n) * step / (3 * 86400)) * 0.08, turbines)
    power = 20 * wind**2 * (1 + weather) + rng.normal(0, 30, ts.size)
    return ts, ids, np.column_stack((wind, power))


def chart_alarms(det, ts, ids, x, day_steps):
    out = np.zeros(ts.size, dtype=bool)
    for a in range(0, ts.size, day_steps):
        r = det.process(ts[a : a + day_steps], ids[a : a + day_steps], x[a : a + day_steps])
        out[a : a + day_steps] = r.is_anomaly
    return out


def test_chart_peers_cancel_weather_that_moves_the_whole_farm(rng):
    """An 8 % swing of every turbine's power curve over days (air density, stability) is
    weather; 6 % on one turbine is a fault. A turbine's own chart learns the weather's
    swing and the fault hides in it; against its peers the weather cancels and the
    fault stands out."""
    ts, ids, x = farm(rng)
    faulty = (ids == 2) & (ts >= 30 * 86400)
    x[faulty, 1] *= 0.94
    base = {
        "sensors": ("wind", "power"),
        "conditions": ["wind"],
        "key_groups": 1,
        "regime": {"sensor": "wind", "edges": [6, 8, 10]},
        "chart": "residual",
        "chart_span": "12h",
        "memory_span": "60d",
    }
    steps = 4 * 144
    own = chart_alarms(Detector(make_config(base)), ts, ids, x, steps)
    peers = chart_alarms(Detector(make_config({**base, "chart_peers": 3})), ts, ids, x, steps)
    warm = (ts > 12 * 86400) & ~faulty
    assert own[faulty].mean() < 0.02, "the own chart learned the weather: the fault hides in it"
    assert peers[faulty].mean() > 0.2
    assert (ts[faulty & peers].min() - 30 * 86400) / 86400 < 4, "found within days"
    assert peers[warm].mean() < 0.002


def test_chart_peers_need_enough_turbines_at_a_time(rng):
    ts, ids, x = farm(rng, days=20, turbines=2)
    base = {"sensors": ("wind", "power"), "conditions": ["wind"], "key_groups": 1}
    det = Detector(make_config({**base, "chart": "residual", "chart_peers": 3}))
    chart_alarms(det, ts, ids, x, 144)
    assert det._residuals.models.counts.sum() == 0, "two turbines: no peer median to trust"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"settle_span": "10min"}, "settle_span follows the learn_when states"),
        ({"chart_peers": 3}, 'chart_peers is an option of chart = "residual"'),
        ({"chart": "residual", "chart_peers": 1}, "greater than or equal to 2"),
    ],
)
def test_bad_farm_settings_are_one_line_errors(extra, message):
    with pytest.raises((ConfigError, ValueError), match=message) as info:
        make_config({"sensors": ("wind", "power"), **extra})
    assert "\n" not in str(info.value)


def test_a_column_read_twice_under_two_names(tmp_path):
    path = tmp_path / "f.csv"
    path.write_text("id,t,ws,p\n" + "".join(f"1,{600 * i},{i % 9},{i}\n" for i in range(50)))
    twice = ["ws=wind", "p=power", "ws=wind_vs_fleet"]
    spec = RecordingSpec(id_col="id", time_col="t", sensors=twice)
    with read_recording(path, spec) as rec:
        assert rec.sensors == ("wind", "power", "wind_vs_fleet")
        chunk = next(iter(rec))
    np.testing.assert_array_equal(chunk.values[:, 0], chunk.values[:, 2])
    with pytest.raises(ValueError, match="name 'wind' given twice"):
        RecordingSpec(sensors=["ws=wind", "p=wind"])


def test_chart_learn_gate_keeps_a_fault_building_below_the_alarm_out_of_the_chart(rng):
    """A deficit growing slowly stays under the alarm for days: without a warning
    limit the chart learns it as normal (its variance widens and the alarm comes late
    or never); with one the chart stops learning once it leaves the warning limit."""
    n = 60 * 144
    ts = np.arange(n) * 600.0
    wind = np.abs(rng.normal(8.0, 2.0, n))
    x = np.column_stack((wind, 100.0 * wind + rng.normal(0, 40.0, n)))
    start = 40 * 86400
    ramp = np.clip((ts - start) / (10 * 86400), 0, 1)
    x[:, 1] *= 1 - 0.05 * ramp  # 0 to 5 % over ten days, then 5 %
    base = {
        "sensors": ("wind", "power"),
        "conditions": ("wind",),
        "key_groups": 1,
        "chart": "residual",
        "chart_span": "6h",
    }
    plain, gated = (
        Detector(make_config(base)),
        Detector(make_config({**base, "chart_learn_gate": 0.1})),
    )
    fp, fg = run_daily(plain, ts, x), run_daily(gated, ts, x)
    faulty = ts >= start
    assert fp[faulty].mean() < 0.05, "the plain chart learned the deficit as normal"
    assert fg[faulty].mean() > 0.4
    assert fg[(ts > 20 * 86400) & ~faulty].mean() < 0.01
    learned_p = plain._residuals.models.counts[0]
    learned_g = gated._residuals.models.counts[0]
    assert learned_g < learned_p, "the gated chart did not learn the fault"


def test_chart_learn_gate_must_lie_outside_the_alarm_limit():
    with pytest.raises(ConfigError, match="a warning limit lies inside the alarm limit"):
        make_config(
            {
                "sensors": ("wind", "power"),
                "chart": "residual",
                "chart_false_alarm_rate": 1e-3,
                "chart_learn_gate": 1e-4,
            }
        )
    with pytest.raises(ConfigError, match='chart_learn_gate is an option of chart = "residual"'):
        make_config({"sensors": ("wind", "power"), "chart_learn_gate": 0.1})


@given(
    k=st.integers(1, 20),
    steps=st.integers(1, 6),
    rows=st.integers(1, 3),
    shuffle=st.booleans(),
    seed=st.integers(0, 2**16),
)
@settings(max_examples=60, deadline=None)
def test_fleet_deviations_of_many_rows_are_each_rows_fleet_deviation(k, steps, rows, shuffle, seed):
    """fleet_relative sensors: the turbine's deviation from the median of the whole fleet
    at its time, itself included (unlike the chart's peers, which leave it out)."""
    from pipeline.policy import fleet_deviation, fleet_deviations

    rng = np.random.default_rng(seed)
    ts = np.repeat(np.arange(steps, dtype=float), k)
    if shuffle:
        ts = ts[rng.permutation(ts.size)]
    v = rng.normal(size=(rows, ts.size))
    got = fleet_deviations(ts, v)
    for r in range(rows):
        np.testing.assert_allclose(got[r], fleet_deviation(ts, v[r]), atol=1e-12)
        same = [v[r, i] - np.median(v[r, ts == ts[i]]) for i in range(ts.size)]
        np.testing.assert_allclose(got[r], same, atol=1e-12)
