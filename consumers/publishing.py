"""Anomaly, episode and re-baseline events: JSON records keyed by turbine.

At least once (a crash between publishing and the checkpoint republishes),
with deterministic ids so a consumer can drop duplicates.  A send refused
while the broker is away is retried, then counted as a failed event.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from kafka.partitioner.default import murmur2

from consumers.episode_events import CLOSED, OPENED, render_episode_events
from consumers.events import batched, render_events
from consumers.partition_state import SiteState
from pipeline.detector import BatchResult
from pipeline.episodes import EpisodeUpdate
from pipeline.metrics import DetectorMetrics
from pipeline.names import TurbineNames
from pipeline.wire import JSON_TYPE, SensorBatch
from producers.kafka_client import KafkaIOError

log = logging.getLogger(__name__)
PARTITIONS_TTL_S = 10.0  # the anomalies topic's partitions are read again after this


class EventPublisher:
    """Sends the service's events (``producer`` returns the Kafka producer)."""

    def __init__(
        self,
        settings: Any,
        metrics: DetectorMetrics,
        producer: Callable[[], Any],
        retry: Callable[[str, Any], Any],
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self._producer = producer
        self._retry = retry
        self._partition_memo: dict[bytes, int] = {}  # event key -> partition
        self._memo_partitions = 0  # the anomalies topic's partition count behind the memo
        self._partitions: list[int] | None = None  # the anomalies topic's, read at _partitions_at
        self._partitions_at = 0.0

    @property
    def producer(self) -> Any:
        return self._producer()

    def anomalies(
        self,
        partition: int,
        site: SiteState,
        result: BatchResult,
        offsets: np.ndarray,
        rows: np.ndarray,
        produced: np.ndarray,
        kinds: np.ndarray | None,
        first: SensorBatch,
    ) -> None:
        """One JSON event per anomaly, keyed by turbine, with a deterministic id."""
        if not self.settings.publish_events or result.n_anomalies == 0:
            return
        keys, values, ids = render_events(
            result,
            sensors=site.sensors,
            topic=self.settings.topic,
            partition=partition,
            offsets=offsets,
            rows=rows,
            produced=produced,
            kinds=kinds,
            producer_id=first.meta.producer_id,
            site=first.meta.site,
            detected_at=time.time(),
            names=site.detector.names if site.detector is not None else None,
        )
        topic = self.settings.anomalies_topic
        partitions = self._retry("event_partitions", lambda: self._event_partitions(keys))
        if partitions is None:
            raise KafkaIOError("no partitions for the events", topic=self.settings.anomalies_topic)
        if self.settings.event_records == "batch":
            self._send_batched(batched(values, ids, partitions))
            self.metrics.events_published.inc(result.n_anomalies)
            return
        content_type = ("content-type", JSON_TYPE.encode())
        send, failed = self.producer.send, self.failed
        for key, value, event_id, part in zip(keys, values, ids, partitions, strict=True):
            # One record per anomaly (the wire contract); a refused one waits in _send.
            headers = [("event-id", event_id), content_type]
            try:
                send(topic, key=key, value=value, headers=headers, partition=part, on_error=failed)
            except Exception:
                self._send(
                    topic, "event_send", "event not sent",
                    key=key, value=value, headers=headers, partition=part,
                )  # fmt: skip
        self.metrics.events_published.inc(result.n_anomalies)

    def _send(self, topic: str, what: str, lost: str, **record: Any) -> None:
        """Send one record; a send refused (buffer full, metadata gone) waits for the broker.

        ``what`` names the retried call, ``lost`` the failure counted when it gives up.
        """
        send = self.producer.send
        try:
            send(topic, on_error=self.failed, **record)
        except Exception:  # the queue stays full or metadata is gone: wait for the broker
            # (send returns None: `or True` tells the retry loop it went through)
            if (
                self._retry(what, lambda: send(topic, on_error=self.failed, **record) or True)
                is None
            ):
                self.failed(KafkaIOError(lost, topic=topic))

    def _send_batched(self, records: list[tuple[int, bytes, list[tuple[str, bytes]]]]) -> None:
        """Send one record of many events per partition (``event_records = "batch"``)."""
        topic = self.settings.anomalies_topic
        for part, value, headers in records:
            self._send(
                topic, "event_send", "events not sent", value=value, headers=headers, partition=part
            )

    def episodes(
        self, update: EpisodeUpdate, first: SensorBatch, names: TurbineNames | None
    ) -> None:
        """One JSON event per episode opened and per episode closed, keyed by turbine."""
        now = time.time()
        topic = self.settings.episodes_topic
        headers = [("content-type", JSON_TYPE.encode())]
        for kind, table in ((OPENED, update.opened), (CLOSED, update.closed)):
            keys, values, ids = render_episode_events(
                table,
                kind,
                producer_id=first.meta.producer_id,
                site=first.meta.site,
                detected_at=now,
                names=names,
            )
            for key, value, event_id in zip(keys, values, ids, strict=True):
                h = [("event-id", event_id), *headers]
                self._send(
                    topic, "episode_event_send", "episode event not sent",
                    key=key, value=value, headers=h,
                )  # fmt: skip

    def rebaselines(
        self,
        partition: int,
        site: SiteState,
        turbines: np.ndarray,
        reason: str,
        offset: int,
        note: str = "",
    ) -> None:
        """One JSON event per turbine re-baselined, on the episodes topic, keyed by turbine."""
        if not self.settings.publish_events or site.detector is None:
            return
        names = site.detector.names
        now = time.time()
        for t in turbines.tolist():
            event = {
                "type": "rebaseline",
                "turbine": names.name_of(t) if t in names else int(t),
                "reason": reason,
                "note": note,
                "site": site.site,
                "partition": partition,
                "offset": int(offset),
                "detected_at": now,
                "event_id": f"{self.settings.topic}:{partition}:{offset}:rebaseline:{t}",
            }
            key = f"turbine-{names.name_of(t)}".encode()
            self._send(
                self.settings.episodes_topic, "rebaseline_event_send", "rebaseline event not sent",
                key=key, value=json.dumps(event).encode(),
                headers=[("content-type", JSON_TYPE.encode())],
            )  # fmt: skip

    def _event_partitions(self, keys: list[bytes]) -> list[int]:
        """The anomalies topic's partition of each key, as kafka-python's default partitioner.

        Memoised per key: its pure-Python murmur2 on every send was a fifth of
        what a send costs.  The topic's partitions are read every
        ``PARTITIONS_TTL_S`` seconds; the memo is recomputed when their count changes.
        """
        now = time.monotonic()
        if self._partitions is None or now - self._partitions_at > PARTITIONS_TTL_S:
            # kafka-python's partitions_for waits on the metadata: a millisecond a batch
            self._partitions = sorted(self.producer.partitions_for(self.settings.anomalies_topic))
            self._partitions_at = now
        partitions = self._partitions
        memo = self._partition_memo
        if self._memo_partitions != len(partitions):
            memo.clear()
            self._memo_partitions = len(partitions)
        out = []
        for key in keys:
            p = memo.get(key)
            if p is None:
                p = memo[key] = partitions[(murmur2(key) & 0x7FFFFFFF) % len(partitions)]
            out.append(p)
        return out

    def failed(self, exc: BaseException) -> None:
        self.metrics.publish_errors.inc()
        log.error("event_send_failed topic=%s error=%s", self.settings.anomalies_topic, exc)
