"""``turbine record``: a topic back to a recorded file that replay and detect accept.

Reads every partition up to the end offsets it finds at start (or until idle),
then writes the readings engine batch by engine batch, each batch sorted by
(timestamp, turbine id): the canonical order of recorded files, so record,
replay and record again gives the same file.  Bad records are counted and
reported, never written.  The records are held in memory until written (the
topic's size in bytes); ``max_bytes`` bounds it.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from pipeline.errors import InputError
from pipeline.recordings import Chunk, RecordingWriter
from pipeline.wire import SensorBatch, WireError, decode_batch
from producers.kafka_client import KafkaSettings, make_consumer

log = logging.getLogger(__name__)


def _content_type(record) -> str | None:
    for key, value in record.headers or []:
        if key == "content-type":
            return value.decode("utf-8", "replace")
    return None


def record_topic(
    settings: KafkaSettings,
    topic: str,
    output: Path,
    idle_seconds: float = 5.0,
    max_bytes: int = 4 << 30,
) -> tuple[int, int]:
    """Write ``topic`` to ``output``; returns (readings written, records refused)."""
    from kafka import TopicPartition

    consumer = make_consumer(settings, group_id=None, consumer_timeout_ms=1000)
    try:
        parts = consumer.partitions_for_topic(topic)
        deadline = time.monotonic() + settings.connect_timeout_s
        while not parts and time.monotonic() < deadline:
            time.sleep(0.5)
            parts = consumer.partitions_for_topic(topic)
        if not parts:
            raise InputError(f"topic {topic!r} does not exist", path=settings.bootstrap_servers)
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        ends = consumer.end_offsets(tps)
        by_batch: dict[tuple[str, int], list[SensorBatch]] = defaultdict(list)
        refused = 0
        held = 0
        last_progress = time.monotonic()
        while any(consumer.position(tp) < ends[tp] for tp in tps):
            polled = consumer.poll(timeout_ms=500)
            if not polled:
                if time.monotonic() - last_progress > idle_seconds:
                    log.warning("record_idle topic=%s stopping before the end offsets", topic)
                    break
                continue
            last_progress = time.monotonic()
            for records in polled.values():
                for rec in records:
                    try:
                        batch = decode_batch(rec.value, _content_type(rec))
                    except WireError as exc:
                        refused += 1
                        log.warning(
                            "record_refused partition=%d offset=%d %s",
                            rec.partition,
                            rec.offset,
                            exc,
                        )
                        continue
                    held += len(rec.value or b"")
                    if held > max_bytes:
                        raise InputError(f"topic larger than max_bytes={max_bytes}", path=topic)
                    by_batch[(batch.meta.producer_id, batch.meta.batch)].append(batch)
    finally:
        consumer.close()
    if not by_batch:
        raise InputError("no readings in the topic", path=topic)
    first = next(iter(by_batch.values()))[0]
    sensors = tuple(first.meta.sensors)
    labelled = all(b.kinds is not None for bs in by_batch.values() for b in bs)
    written = 0
    with RecordingWriter(output, sensors, labels=labelled, kinds=labelled) as writer:
        for key in sorted(by_batch, key=lambda k: (k[1], k[0])):
            parts_ = by_batch[key]
            ts = np.concatenate([b.timestamps for b in parts_])
            ids = np.concatenate([b.turbine_ids for b in parts_])
            order = np.lexsort((ids, ts))
            vals = np.concatenate([b.values for b in parts_])[order]
            kinds = np.concatenate([b.kinds for b in parts_])[order] if labelled else None
            labels = (kinds != "").astype(np.int8) if kinds is not None else None
            writer.write(Chunk(ts[order], ids[order], vals, labels, kinds, np.arange(order.size)))
            written += order.size
    return written, refused
