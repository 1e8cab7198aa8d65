"""BulkHistogram (a whole array per call) against prometheus_client's Histogram (one by one)."""

from __future__ import annotations

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, Histogram

from pipeline.metrics import DISTANCE_BUCKETS, LATENCY_BUCKETS, BulkHistogram


def _samples(registry: CollectorRegistry, name: str) -> dict[str, float]:
    return {
        (s.labels.get("le") or s.name.rsplit("_", 1)[-1]): s.value
        for m in registry.collect()
        for s in m.samples
        if m.name == name and not s.name.endswith("_created")
    }


@pytest.mark.parametrize("buckets", [DISTANCE_BUCKETS, LATENCY_BUCKETS])
@pytest.mark.parametrize("weighted", [False, True])
def test_bulk_histogram_counts_as_prometheus_client_does(buckets, weighted):
    rng = np.random.default_rng(3)
    values = np.concatenate(
        (
            rng.lognormal(0.0, 2.0, 500),
            np.asarray(buckets, dtype=float),  # exactly on the bounds: le is inclusive
            [0.0, -1.0, np.nan, np.inf, -np.inf],  # non-finite values are not observed
        )
    )
    times = rng.integers(1, 9, values.size) if weighted else np.ones(values.size, dtype=int)
    bulk_reg, ref_reg = CollectorRegistry(), CollectorRegistry()
    bulk = BulkHistogram("x_seconds", "x", buckets, bulk_reg)
    ref = Histogram("x_seconds", "x", buckets=buckets, registry=ref_reg)
    half = values.size // 2  # two calls add up
    for part in (slice(0, half), slice(half, None)):
        bulk.observe_many(values[part], times=times[part] if weighted else None)
    for v, k in zip(values.tolist(), times.tolist(), strict=True):
        if np.isfinite(v):
            for _ in range(k):
                ref.observe(v)
    got, want = _samples(bulk_reg, "x_seconds"), _samples(ref_reg, "x_seconds")
    assert got.keys() == want.keys()
    for key, value in want.items():
        assert got[key] == pytest.approx(value, rel=1e-12), key
