"""The detector against a naive per-reading reference, and its stated semantics."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline import Detector, DetectorConfig, SchemaError
from pipeline.detector import FLEET, SKIPPED, TURBINE, WARMUP
from pipeline.errors import InputError
from tests.reference import hotelling_scale, naive_detect


def fleet_batches(rng, n_turbines=6, steps=120, per_batch=10, d=3, fault_rate=0.02):
    """Correlated readings for a few turbines, in batches of whole time steps."""
    mix = rng.normal(size=(d, d))
    offsets = rng.normal(scale=5.0, size=(n_turbines, d))
    batches = []
    for start in range(0, steps, per_batch):
        k = min(per_batch, steps - start)
        ids = np.tile(np.arange(n_turbines), k)
        ts = np.repeat(np.arange(start, start + k, dtype=float), n_turbines)
        x = rng.normal(size=(ids.size, d)) @ mix + offsets[ids]
        faulty = rng.random(ids.size) < fault_rate
        x[faulty] += rng.choice([-1, 1], size=(faulty.sum(), d)) * 6.0
        batches.append((ts, ids, x))
    return batches


CONFIGS = {
    "per-turbine": DetectorConfig(min_samples=30, fleet_min_samples=12, key_groups=2),
    "fleet-only": DetectorConfig(per_turbine=False, key_groups=1, fleet_min_samples=12),
    "fleet-groups": DetectorConfig(per_turbine=False, key_groups=3, fleet_min_samples=12),
    "mewma": DetectorConfig(min_samples=30, fleet_min_samples=12, key_groups=2, chart="mewma"),
    "calibrated": DetectorConfig(
        min_samples=30,
        key_groups=2,
        offsets=(1.0, -2.0, 0.5),
        gains=(2.0, 0.5, 1.0),
        region_factors=(1.0, 1.1, 0.9, 1.2, 0.8, 1.0),
    ),
    "learn-anomalies": DetectorConfig(min_samples=30, key_groups=1, learn_anomalies=True),
    "chi-square": DetectorConfig(
        min_samples=30, fleet_min_samples=12, key_groups=2, prediction_bound="chi2"
    ),
}


@pytest.mark.parametrize("name", CONFIGS)
def test_matches_naive_reference(rng, name):
    config = CONFIGS[name]
    batches = fleet_batches(rng)
    expected = naive_detect(batches, config)
    det = Detector(config)
    n_alarms = 0
    for (ts, ids, x), (dist, flags, by) in zip(batches, expected, strict=True):
        result = det.process(ts, ids, x)
        np.testing.assert_array_equal(result.scored_by, by)
        np.testing.assert_allclose(result.distances, dist, rtol=1e-8, atol=1e-10)
        np.testing.assert_array_equal(result.is_anomaly, flags)
        n_alarms += int(flags.sum())
    assert n_alarms > 0, "the reference data must exercise alarms"


def test_splitting_a_batch_by_key_group_changes_nothing(rng):
    """The Kafka producers split by key group; the result must be bit-identical."""
    config = DetectorConfig(min_samples=30, fleet_min_samples=12, key_groups=3)
    batches = fleet_batches(rng, n_turbines=9)
    whole, split = Detector(config), Detector(config)
    for ts, ids, x in batches:
        a = whole.process(ts, ids, x)
        groups = ids % 3
        for g in (2, 0, 1):  # any order of the groups' records
            sel = groups == g
            b = split.process(ts[sel], ids[sel], x[sel])
            np.testing.assert_array_equal(b.distances, a.distances[sel])
            np.testing.assert_array_equal(b.is_anomaly, a.is_anomaly[sel])
    np.testing.assert_array_equal(
        whole.state()["turbine_m2"].shape, split.state()["turbine_m2"].shape
    )
    for t in range(9):
        np.testing.assert_array_equal(
            whole.turbine_model(t).covariance, split.turbine_model(t).covariance
        )


def test_score_then_learn_reading_never_scores_itself(rng):
    config = DetectorConfig(min_samples=20, key_groups=1)
    det = Detector(config)
    det.learn(np.zeros(50), np.zeros(50, dtype=int), rng.normal(size=(50, 2)))
    before = det.turbine_model(0)
    outlier = np.array([[50.0, -50.0]])
    r = det.process([1.0], [0], outlier)
    diff = outlier[0] - before.mean
    expected = diff @ np.linalg.solve(
        before.covariance + 1e-6 * np.trace(before.covariance) / 2 * np.eye(2), diff
    )
    # Scaled by the prediction bound of a model of 50 readings, 2 degrees of freedom.
    expected *= hotelling_scale(config, 50, 2)
    assert r.distances[0] == pytest.approx(expected, rel=1e-6)
    assert r.is_anomaly[0]
    after = det.turbine_model(0)
    assert after.count == before.count, "an anomaly is not learned by default"


def test_warmup_falls_back_to_the_fleet_model_then_to_no_alarm(rng):
    config = DetectorConfig(min_samples=40, fleet_min_samples=30, key_groups=1)
    det = Detector(config)
    r = det.process(np.zeros(20), np.zeros(20, dtype=int), rng.normal(size=(20, 2)) + 100)
    assert (r.scored_by == WARMUP).all() and not r.is_anomaly.any()
    det.process(np.zeros(20), np.ones(20, dtype=int), rng.normal(size=(20, 2)))
    r = det.process([1.0, 1.0], [7, 0], [[0.0, 0.0], [0.0, 0.0]])
    assert r.scored_by.tolist() == [FLEET, FLEET]
    det.process(np.zeros(30), np.zeros(30, dtype=int), rng.normal(size=(30, 2)) + 100)
    assert det.process([2.0], [0], [[100.0, 100.0]]).scored_by.tolist() == [TURBINE]
    assert det.warming_up() == 2  # turbines 1 and 7


def test_contributions_sum_to_the_distance(rng):
    det = Detector(DetectorConfig(min_samples=30, key_groups=1))
    for ts, ids, x in fleet_batches(rng, fault_rate=0.05):
        r = det.process(ts, ids, x)
        if r.n_anomalies:
            np.testing.assert_allclose(
                r.contributions.sum(axis=1), r.distances[r.anomaly_index], rtol=1e-8
            )
    assert det.anomalies > 0


def test_nan_and_inf_readings_are_skipped_and_counted(rng):
    det = Detector(DetectorConfig(key_groups=1, min_samples=10))
    x = rng.normal(size=(40, 2))
    x[3, 0] = np.nan
    x[7, 1] = np.inf
    r = det.process(np.arange(40.0), np.zeros(40, dtype=int), x)
    assert r.n_skipped == 2 and det.skipped == 2
    assert r.scored_by[3] == SKIPPED and r.scored_by[7] == SKIPPED
    assert det.turbine_model(0).count == 38
    strict = Detector(DetectorConfig(nan_policy="error"))
    with pytest.raises(InputError, match="NaN or infinite reading at row 3"):
        strict.process(np.arange(40.0), np.zeros(40, dtype=int), x)


def test_stuck_sensor_and_too_few_samples_give_finite_scores(rng):
    det = Detector(DetectorConfig(min_samples=3, key_groups=1, fleet_min_samples=3))
    x = rng.normal(size=(200, 4))
    x[:, 2] = 7.0  # stuck during learning: a singular covariance
    det.learn(np.zeros(3), np.zeros(3, dtype=int), x[:3])  # 3 readings < 4 sensors
    r = det.process(np.zeros(197), np.zeros(197, dtype=int), x[3:])
    assert np.isfinite(r.distances).all()
    assert det.worst_condition() > 1e5  # reported as ill-conditioned
    r = det.process([0.0], [0], [[0.0, 0.0, 7.5, 0.0]])
    assert np.isfinite(r.distances).all() and r.is_anomaly[0]


def test_state_round_trip_continues_identically(tmp_path, rng):
    config = DetectorConfig(min_samples=30, key_groups=2, chart="mewma")
    batches = fleet_batches(rng)
    straight = Detector(config)
    expected = [straight.process(*b) for b in batches]
    first = Detector(config)
    for b in batches[:5]:
        first.process(*b)
    np.savez(tmp_path / "state.npz", **first.state())
    with np.load(tmp_path / "state.npz", allow_pickle=False) as f:
        resumed = Detector.from_state(dict(f))
    for b, e in zip(batches[5:], expected[5:], strict=True):
        r = resumed.process(*b)
        np.testing.assert_array_equal(r.distances, e.distances)
    assert resumed.readings == straight.readings


def test_merged_partial_detectors_equal_one_detector(rng):
    config = DetectorConfig(min_samples=30, key_groups=3)
    batches = fleet_batches(rng, n_turbines=9)
    one = Detector(config)
    parts = [Detector(config), Detector(config)]
    for ts, ids, x in batches:
        one.process(ts, ids, x)
        owner = (ids % 3 == 0).astype(int)  # group 0 to one part, groups 1-2 to the other
        for p in (0, 1):
            sel = owner == p
            parts[p].process(ts[sel], ids[sel], x[sel])
    merged = parts[0].merge(parts[1])
    fleet_one, fleet_merged = one.fleet_model, merged.fleet_model
    assert fleet_merged.count == fleet_one.count
    np.testing.assert_allclose(fleet_merged.covariance, fleet_one.covariance, rtol=1e-9)
    for t in range(9):
        np.testing.assert_allclose(
            merged.turbine_model(t).covariance, one.turbine_model(t).covariance, rtol=1e-12
        )


@pytest.mark.parametrize(
    ("ts", "ids", "values", "message"),
    [
        (np.zeros(3), np.zeros(3), np.zeros((3, 2, 1)), "shape"),
        (np.zeros(2), np.zeros(3), np.zeros((3, 2)), "same n readings"),
        (np.zeros(3), np.array([0.5, 1, 2]), np.zeros((3, 2)), "integers"),
    ],
)
def test_bad_shapes_are_schema_errors(ts, ids, values, message):
    with pytest.raises(SchemaError, match=message):
        Detector().process(ts, ids, values)


def test_sensor_count_and_unknown_turbines_are_checked(rng):
    det = Detector(DetectorConfig(sensors=("a", "b"), turbines=(1, 2)))
    with pytest.raises(SchemaError, match="3 sensors, the model has 2"):
        det.process(np.zeros(2), [1, 2], np.zeros((2, 3)))
    with pytest.raises(SchemaError, match="unknown turbine 5"):
        det.process(np.zeros(2), [1, 5], np.zeros((2, 2)))
    capped = Detector(DetectorConfig(max_turbines=3))
    with pytest.raises(SchemaError, match="max_turbines=3"):
        capped.process(np.zeros(4), [1, 2, 3, 4], np.zeros((4, 2)))
