"""Compile the kernels into numba's on-disk cache, or load them from it.

:func:`warm_cache` runs small detectors in the configurations the engine
meets (per-turbine and fleet-only, calibrated or not, conditions, regimes,
the residual chart with peers and fleet-relative sensors, operating states,
settling and forgetting in time; their alarms grouped into episodes), so every kernel
signature a service uses is compiled and cached, then loaded.  The Docker
image runs it at build time (``python -m pipeline.kernels``), so a
container's first batch loads cached code instead of compiling (see
bench/results/engine.md, start-up); the detector service runs it before it
joins its consumer group, so its first batch does not load them either.
"""

from __future__ import annotations

import time

import numpy as np

from pipeline.config import DetectorConfig
from pipeline.detector import Detector
from pipeline.episodes import EpisodeTracker


def warm_cache() -> float:
    """Run every configuration once; returns the seconds it took."""
    start = time.perf_counter()
    rng = np.random.default_rng(0)
    sensors = ("a", "b", "c", "d")
    configs = [
        DetectorConfig(sensors=sensors),
        DetectorConfig(sensors=sensors, per_turbine=False, key_groups=1),
        DetectorConfig(sensors=sensors, per_turbine=False),
        DetectorConfig(sensors=sensors, gains=(2.0, 1.0, 1.0, 0.5), memory=500.0),
        DetectorConfig(
            sensors=sensors,
            conditions=("a",),
            regime={"sensor": "a", "edges": (0.0,)},
            chart="residual",
            chart_peers=2,
            fleet_relative=("c",),
            sensor_floor={"b": 0.1},
            learn_when=({"sensor": "d", "above": -2.0, "where": {"sensor": "a", "below": 1.0}},),
            settle_span="2s",
            memory_span="1d",
        ),
    ]
    for config in configs:
        det = Detector(config)
        episodes = EpisodeTracker(sensors, config.episode_gap, compiled=det.compiled)
        for step in range(12):
            ids = np.tile(np.arange(20), 20)
            x = rng.normal(size=(ids.size, len(sensors)))
            x[::97] += 8.0
            episodes.update_result(det.process(np.full(ids.size, float(step)), ids, x))
    return time.perf_counter() - start
