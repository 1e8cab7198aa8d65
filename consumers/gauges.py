"""The service's gauges: models and stores (after each checkpoint), and consumer lag."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from consumers.partition_state import PartitionState
from pipeline.metrics import DetectorMetrics

log = logging.getLogger(__name__)


def update_model_gauges(metrics: DetectorMetrics, states: Iterable[PartitionState]) -> None:
    """Turbines known and warming up, worst condition, samples, store size: every site's."""
    m = metrics
    counts, known, warming, worst, fleet = [], 0, 0, 1.0, 0.0
    store_bytes = store_anoms = 0
    for site in (site for state in states for site in state.sites.values()):
        st = site.store.stats()
        store_bytes += st["bytes"]
        store_anoms += st["total"]
        det = site.detector
        if det is None or det.n_features is None:
            continue
        c = det.sample_counts()
        counts.append(c)
        known += c.size
        warming += det.warming_up()
        worst = max(worst, det.worst_condition())
        fleet += det.fleet_model.count
    m.turbines.set(known)
    m.warming_up.set(warming)
    m.condition.set(worst)
    m.model_samples.labels(model="fleet").set(fleet)
    if counts:
        allc = np.concatenate(counts)
        if allc.size:
            m.model_samples.labels(model="turbine_min").set(float(allc.min()))
            m.model_samples.labels(model="turbine_median").set(float(np.median(allc)))
    m.store_bytes.set(store_bytes)
    m.store_anomalies.set(store_anoms)


class LagMonitor:
    """Consumer lag per partition (``consumer`` returns the consumer; ``paused`` the
    partitions owned but not consumed)."""

    def __init__(
        self,
        metrics: DetectorMetrics,
        consumer: Callable[[], Any],
        paused: Callable[[], Iterable[int]],
    ) -> None:
        self.metrics = metrics
        self._consumer = consumer
        self._paused = paused
        self._last_update = 0.0

    def update(self, force: bool = False) -> bool:
        """Consumer lag per partition (see :meth:`_lag`); a broker away means not caught up."""
        try:
            return self._lag(force)
        except Exception as exc:  # position() and friends while the broker is away
            log.warning("lag_update_failed error=%s", exc.__class__.__name__)
            return False

    def _lag(self, force: bool) -> bool:
        """Consumer lag per partition; returns True when caught up everywhere.

        Uses the high-water marks that come with every fetch response (no
        broker round trip); only when ``force`` (idle) and a partition has had
        no fetch yet does it ask the broker for the end offsets.
        """
        now = time.monotonic()
        if not force and now - self._last_update < 2.0:
            return False
        self._last_update = now
        consumer = self._consumer()
        assignment = list(consumer.assignment())
        if not assignment:
            return False
        ends = {tp: consumer.highwater(tp) for tp in assignment}
        unknown = [tp for tp, hw in ends.items() if hw is None]
        if unknown and force:
            try:
                ends.update(consumer.end_offsets(unknown))
            except Exception as exc:  # broker away: keep going, report later
                log.warning("end_offsets_failed error=%s", exc.__class__.__name__)
                return False
        caught_up = True
        paused = set(self._paused())
        for tp, end in ends.items():
            if end is None:
                caught_up = False
                continue
            lag = max(0, end - consumer.position(tp))
            self.metrics.consumer_lag.labels(partition=str(tp.partition)).set(lag)
            caught_up &= lag == 0 or tp.partition in paused  # paused: not consumed
        return caught_up
