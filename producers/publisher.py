"""Send engine batches to Kafka: one record per key group, paced, flushed on exit."""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from types import FrameType, TracebackType
from typing import Any

import numpy as np

from pipeline.metrics import ProducerMetrics
from pipeline.names import TurbineNames
from pipeline.recordings import Chunk
from pipeline.wire import BINARY_TYPE, BatchMeta, encode_batch, version_for
from producers.kafka_client import KafkaIOError, KafkaSettings, make_producer

log = logging.getLogger(__name__)


def group_key(group: int) -> bytes:
    """The record key of a key group: all its turbines share a partition."""
    return f"group-{group}".encode()


class BatchPublisher:
    """Publishes batches of readings; a context manager that flushes and closes.

    Parameters
    ----------
    settings : KafkaSettings
    topic : str
    sensors : tuple of str
    key_groups : int
        Must match the detectors' ``key_groups``.
    producer_id : str
        Stable across restarts of the same stream: the detectors drop batches
        they already processed from this producer (no reading doubled).
    names : TurbineNames, optional
        The names of the stream's turbines: with any, records are schema
        version 2 and carry them (a chunk's own ``names`` attribute, when it
        has one, takes precedence); without, version 1.
    """

    def __init__(
        self,
        settings: KafkaSettings,
        topic: str,
        sensors: tuple[str, ...],
        key_groups: int,
        producer_id: str,
        site: str = "default",
        metrics: ProducerMetrics | None = None,
        producer: Any | None = None,
        names: TurbineNames | None = None,
    ) -> None:
        self.settings = settings
        self.topic = topic
        self.sensors = sensors
        self.key_groups = key_groups
        self.producer_id = producer_id
        self.site = site
        self.metrics = metrics
        self._producer = producer
        self.names = names
        self.sent_readings = 0
        self.sent_records = 0
        self.delivered = 0
        self.errors = 0
        self._lock = threading.Lock()

    @property
    def producer(self) -> Any:
        if self._producer is None:
            self._producer = make_producer(self.settings)
        return self._producer

    def publish(self, number: int, batch: Chunk) -> int:
        """Send one engine batch (readings of shape (n, D)), split by key group."""
        names = getattr(batch, "names", None) or self.names
        version = version_for(names)
        headers = [
            ("content-type", BINARY_TYPE.encode()),
            ("schema-version", str(version).encode()),
        ]
        groups = np.mod(batch.turbine_ids, self.key_groups)
        order = np.argsort(groups, kind="stable")
        cuts = np.flatnonzero(np.diff(groups[order])) + 1
        for part in np.split(order, cuts):  # a loop over key groups, not readings
            g = int(groups[part[0]])
            meta = BatchMeta(
                site=self.site,
                sensors=list(self.sensors),
                producer_id=self.producer_id,
                sequence=number,
                batch=number,
                group=g,
                n=part.size,
            )
            kinds = batch.kinds[part] if batch.kinds is not None else None
            value = encode_batch(
                meta,
                batch.timestamps[part],
                batch.turbine_ids[part],
                batch.values[part],
                kinds,
                names,
            )
            future = self.producer.send(self.topic, key=group_key(g), value=value, headers=headers)
            future.add_callback(self._delivered)
            future.add_errback(self._failed, number, g)
            self.sent_records += 1
            if self.metrics is not None:
                self.metrics.records.inc()
                self.metrics.bytes.inc(len(value))
        self.sent_readings += len(batch)
        if self.metrics is not None:
            self.metrics.readings.inc(len(batch))
            self.metrics.last_reading.set(float(batch.timestamps[-1]))
        return len(batch)

    def _delivered(self, _meta: Any) -> None:
        with self._lock:
            self.delivered += 1
        if self.metrics is not None:
            self.metrics.delivered.inc()

    def _failed(self, exc: BaseException, number: int, group: int) -> None:
        with self._lock:
            self.errors += 1
        if self.metrics is not None:
            self.metrics.errors.inc()
        log.error(
            "delivery_failed topic=%s batch=%d group=%d error=%s", self.topic, number, group, exc
        )

    def flush(self, timeout: float | None = 60.0) -> None:
        if self._producer is None:
            return
        try:
            self._producer.flush(timeout=timeout)
        except Exception as exc:  # kafka-python raises its own timeout errors here
            raise KafkaIOError(f"flush failed: {exc}", topic=self.topic) from None

    def close(self) -> None:
        if self._producer is not None:
            try:
                self.flush()
            finally:
                self._producer.close(timeout=10)
                self._producer = None

    def __enter__(self) -> BatchPublisher:
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class Pacer:
    """Sleeps so batches go out at their recorded pace times ``speed`` (0: no pacing)."""

    def __init__(self, speed: float) -> None:
        self.speed = speed
        self._t0_data: float | None = None
        self._t0_wall = 0.0

    def wait(self, data_time: float, stop: threading.Event) -> None:
        if self.speed <= 0:
            return
        if self._t0_data is None:
            self._t0_data, self._t0_wall = data_time, time.monotonic()
            return
        due = self._t0_wall + (data_time - self._t0_data) / self.speed
        delay = due - time.monotonic()
        if delay > 0:
            stop.wait(delay)


@contextmanager
def stop_on_signals() -> Iterator[threading.Event]:
    """An event set by SIGINT or SIGTERM (so the sender can flush and exit cleanly)."""
    stop = threading.Event()

    def handler(signum: int, _frame: FrameType | None) -> None:
        log.warning("signal=%s stopping after the current batch", signal.Signals(signum).name)
        stop.set()

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def send_batches(
    publisher: BatchPublisher,
    batches: Iterable[tuple[int, Chunk]],
    speed: float,
    progress: Any | None = None,
) -> tuple[int, bool]:
    """Publish numbered batches at ``speed``; returns (readings sent, stopped early)."""
    pacer = Pacer(speed)
    sent = 0
    with stop_on_signals() as stop:
        for number, batch in batches:
            if stop.is_set():
                break
            pacer.wait(float(batch.timestamps[0]), stop)
            if stop.is_set():
                break
            sent += publisher.publish(number, batch)
            if progress is not None:
                progress.update(len(batch))
        publisher.flush()
        return sent, stop.is_set()
