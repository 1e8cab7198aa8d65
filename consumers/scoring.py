"""Scoring a run of accepted records: one engine call per (engine batch, site).

The same engine as the embedded run (``pipeline.detector.Detector``) on the
same batches: the records of one batch number and one site are concatenated
and scored together; anomalies go to the site's store and out as events,
alarm episodes to the store and the episodes topic.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

from consumers.partition_state import PartitionState, SiteState
from consumers.publishing import EventPublisher
from consumers.records import Accepted
from pipeline.detector import BatchResult, Detector
from pipeline.episodes import EpisodeTracker
from pipeline.errors import SchemaError, TurbineError
from pipeline.metrics import DetectorMetrics
from pipeline.runner import config_for
from pipeline.sites import DEFAULT_SITE


class Scorer:
    """Scores runs; ``dead_letter(record, reason, message)`` takes what cannot be scored."""

    def __init__(
        self,
        settings: Any,
        metrics: DetectorMetrics,
        events: EventPublisher,
        dead_letter: Callable[[Any, str, str], None],
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.events = events
        self._dead_letter = dead_letter
        self.batches = 0  # engine batches scored (the service's checkpoint cadence)
        self.readings = 0

    def score_run(
        self,
        state: PartitionState,
        run: list[Accepted],
        seen: dict[tuple[str, int], int],
    ) -> None:
        """Score a run (one batch number, one site), then record its batch numbers."""
        site = state.sites[run[0].site]
        try:
            self._score(state, site, run)
        except Exception as exc:  # e.g. the store refuses the anomalies: never a crash loop
            for one in run:
                self._dead_letter(one.record, "internal_error", f"{type(exc).__name__}: {exc}")
        state.last_batch.update(seen)

    def _score(self, state: PartitionState, site: SiteState, run: list[Accepted]) -> None:
        """Score records of one engine batch together (one engine call)."""
        start = time.perf_counter()
        if site.detector is None:
            where = f"partition {state.partition}"
            if site.site != DEFAULT_SITE:
                where += f" site {site.site}"
            site.detector = Detector(config_for(site.config, site.sensors, where))
        batches = [a.batch for a in run]
        ts = np.concatenate([b.timestamps for b in batches])
        ids = np.concatenate([b.turbine_ids for b in batches])
        values = np.concatenate([b.values for b in batches])
        try:
            for b in batches:
                site.detector.names.merge(b.names)
            result = site.detector.process(ts, ids, values)
        except Exception as exc:  # SchemaError and friends; anything else is a bug
            if len(run) > 1:  # find the offending record(s): score one by one
                for one in run:
                    self._score(state, site, [one])
                return
            known = isinstance(exc, SchemaError | TurbineError)
            reason = "schema" if known else "internal_error"
            self._dead_letter(run[0].record, reason, f"{type(exc).__name__}: {exc}")
            return
        lengths = [len(b) for b in batches]
        offsets = np.repeat([a.offset for a in run], lengths)
        record_times = np.array([a.record.timestamp / 1000.0 for a in run])
        produced = np.repeat(record_times, lengths)
        rows = np.concatenate([np.arange(len(b)) for b in batches])
        site.store.append(result, partitions=state.partition, offsets=offsets, rows=rows)
        self._track_episodes(site, result, batches[0])
        if result.rebaselined.size:
            self.metrics.rebaselines.labels(reason="persistent_alarm").inc(
                int(result.rebaselined.size)
            )
            self.events.rebaselines(
                state.partition, site, result.rebaselined, "persistent_alarm", run[-1].offset
            )
        for name, count in result.state_counts().items():
            self.metrics.readings_in_state.labels(state=name).inc(count)
        kinds = None
        labelled = all(b.kinds is not None for b in batches)
        if labelled:
            kinds = np.concatenate([b.kinds for b in batches])
        try:
            self.events.anomalies(
                state.partition, site, result, offsets, rows, produced, kinds, batches[0]
            )
        except Exception as exc:  # the batch is scored and stored; its events are lost
            self.events.failed(exc)
        self._count(site, result, ts, ids, kinds, labelled, record_times, lengths)
        self.metrics.batch_seconds.observe(time.perf_counter() - start)
        self.batches += 1
        self.readings += result.n_readings

    def _count(
        self,
        site: SiteState,
        result: BatchResult,
        ts: np.ndarray,
        ids: np.ndarray,
        kinds: np.ndarray | None,
        labelled: bool,
        record_times: np.ndarray,
        lengths: list[int],
    ) -> None:
        """Count a scored batch.

        ``record_times`` (m,) are its Kafka records' times, ``lengths`` their readings.
        """
        m = self.metrics
        label = m.site_label(site.site)
        m.readings.labels(site=label).inc(result.n_readings)
        m.readings_skipped.inc(result.n_skipped)
        m.batches.inc()
        if result.n_readings:
            now = time.time()
            scored = result.scored_by > 0
            m.lag_seconds.observe_many(now - ts)
            # Kafka record time to scored: one value per record, counted per reading
            m.latency_seconds.observe_many(now - record_times, times=lengths)
            m.distance.observe_many(result.distances[scored])
            m.last_reading.set(float(np.max(ts)))
        hit = result.anomaly_index
        m.count_anomalies(
            ids[hit],
            None if kinds is None else kinds[hit],
            labelled,
            site.detector.names if site.detector is not None else None,
            site=site.site,
        )

    def _track_episodes(self, site: SiteState, result: BatchResult, first: Any) -> None:
        """Group the batch's alarms into episodes: store the closed ones, publish both kinds."""
        if site.episodes is None:
            site.episodes = EpisodeTracker(site.sensors, site.config.episode_gap)
        # compiled as its detector (a tracker restored from a checkpoint included)
        site.episodes.compiled = site.detector is not None and site.detector.compiled
        update = site.episodes.update_result(result)
        site.store.append_episodes(update.closed)
        if self.settings.publish_events:
            names = site.detector.names if site.detector is not None else None
            self.events.episodes(update, first, names)
