"""Hotelling's prediction bound: the table against scipy, and the false-alarm rate it gives."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from pipeline import Detector, DetectorConfig
from pipeline.prediction import N_MAX, PredictionBound


@pytest.mark.parametrize(
    ("rate", "p", "n"),
    [(1e-4, 4, 80), (1e-4, 4, 81), (1e-2, 4, 80), (1e-8, 2, 40), (5e-5, 3, 1000), (1e-4, 8, 5)],
)
def test_scale_is_chi2_over_the_f_bound(rate, p, n):
    scale = PredictionBound(rate, p).scale(np.array([float(n), n + 0.9]))
    m = max(n, p + 1)  # no bound for n <= p: the first one's
    t2 = stats.f.isf(rate, p, m - p) * p * (m - 1) * (m + 1) / (m * (m - p))
    expected = stats.chi2.isf(rate, p) / t2
    np.testing.assert_allclose(scale, expected, rtol=1e-10)  # a decayed count: the one below


def test_scale_rises_to_one():
    table = PredictionBound(1e-4, 4).table
    assert (np.diff(table[5:]) > 0).all()
    assert 1 - 3e-4 < table[N_MAX - 1] < 1.0 and table[N_MAX] == 1.0
    assert PredictionBound(1e-4, 4).scale(np.array([1e12]))[0] == 1.0


@pytest.mark.parametrize(("bound", "lo", "hi"), [("hotelling", 0.009, 0.011), ("chi2", 0.017, 1)])
def test_young_models_alarm_at_the_configured_rate(bound, lo, hi):
    """4000 independent turbines of n = 80 Gaussian readings, p = 4, at rate 1e-2.

    The chi-square threshold assumes the covariance known: its true tail at
    n = 80 is 1.87e-2 (scipy); Hotelling's bound gives the configured 1e-2.
    """
    rng = np.random.default_rng(14)
    t, n, m, d = 4000, 80, 25, 4
    config = DetectorConfig(false_alarm_rate=1e-2, key_groups=1, prediction_bound=bound)
    det = Detector(config)
    mix = rng.normal(size=(d, d)) + 2 * np.eye(d)
    ids = np.repeat(np.arange(t), n)
    det.learn(np.zeros(t * n), ids, rng.normal(size=(t * n, d)) @ mix)
    assert det.warming_up() == 0
    # One batch: every reading is scored against its model of exactly 80 readings.
    new = np.tile(np.arange(t), m)
    r = det.process(np.ones(t * m), new, rng.normal(size=(t * m, d)) @ mix)
    share = r.is_anomaly.mean()
    assert lo < share < hi, share
    # Contributions are scaled with the statistic: they still sum to it.
    np.testing.assert_allclose(r.contributions.sum(axis=1), r.distances[r.anomaly_index], rtol=1e-9)
