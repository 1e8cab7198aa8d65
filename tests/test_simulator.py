"""The simulator: deterministic, correlated, labelled faults that behave as documented."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline import Detector, DetectorConfig
from pipeline.batching import iter_batches
from pipeline.recordings import Chunk
from pipeline.simulator import FleetSimulator, SimulationParams


def simulate(**kw):
    sim = FleetSimulator(SimulationParams(**kw))
    return sim, Chunk.concat(list(sim.chunks()))


def test_same_seed_same_data():
    _, a = simulate(turbines=7, steps=2100, seed=3)
    _, b = simulate(turbines=7, steps=2100, seed=3)
    _, c = simulate(turbines=7, steps=2100, seed=4)
    np.testing.assert_array_equal(a.values, b.values)
    np.testing.assert_array_equal(a.kinds, b.kinds)
    assert not np.array_equal(a.values, c.values)


def test_sensors_are_correlated_through_the_wind():
    sim, data = simulate(turbines=3, steps=5000, seed=1, fault_fraction=0)
    x = data.values[data.turbine_ids == 0]
    corr = np.corrcoef(x, rowvar=False)
    assert corr[np.triu_indices(4, 1)].min() > 0.8
    assert sim.fleet.sensors == ("temperature", "rotor_speed", "pressure", "vibration")


def test_calibration_recovers_shared_physics():
    sim, data = simulate(turbines=4, steps=200, seed=2, fault_fraction=0)
    cal = sim.fleet.calibration()
    det = Detector(DetectorConfig(**cal))
    _, _, x_t = det._calibrated(data.turbine_ids, data.values, data.timestamps)
    expected = (
        (data.values - sim.fleet.offsets)
        * sim.fleet.gains
        * sim.fleet.region_factors[data.turbine_ids][:, None]
    )
    np.testing.assert_allclose(x_t.T, expected, rtol=1e-12)


def test_correlation_breaks_stay_inside_the_normal_range():
    sim, data = simulate(
        turbines=20, steps=4000, seed=5, kinds=("correlation_break",), fault_fraction=0.05
    )
    broken = data.kinds == "correlation_break"
    assert broken.sum() > 200
    phys = (
        (data.values - sim.fleet.offsets)
        * sim.fleet.gains
        * sim.fleet.region_factors[data.turbine_ids][:, None]
    )
    lo, hi = sim.fleet.site - 3 * sim.fleet.sigma, sim.fleet.site + 3 * sim.fleet.sigma
    ids = data.turbine_ids[broken]
    assert ((phys[broken] >= lo[ids]) & (phys[broken] <= hi[ids])).all()  # mean +- 3 sigma
    # and, per turbine, almost always inside the range its own normal readings span
    inside = []
    for t in range(20):
        normal = phys[(data.turbine_ids == t) & (data.labels == 0)]
        faulty = phys[(data.turbine_ids == t) & broken]
        inside.append(((faulty >= normal.min(0)) & (faulty <= normal.max(0))).all(axis=1))
    assert np.concatenate(inside).mean() > 0.99


@pytest.mark.parametrize("kind", ["spike", "drift", "stuck", "correlation_break"])
def test_each_fault_kind_is_caught_by_the_covariance_model(kind):
    sim, data = simulate(turbines=50, steps=3000, seed=11, kinds=(kind,), magnitude=4.0)
    det = Detector(DetectorConfig(**sim.fleet.calibration()))
    flags = []
    for _, b in iter_batches([data], 10):
        flags.append(det.process(b.timestamps, b.turbine_ids, b.values).is_anomaly)
    flags = np.concatenate(flags)
    labels = data.labels.astype(bool)
    recall = (flags & labels).sum() / labels.sum()
    precision = (flags & labels).sum() / flags.sum()
    assert recall >= 0.95 and precision >= 0.9, (recall, precision)
