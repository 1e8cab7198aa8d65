"""Sending control records (``turbine rebaseline --bootstrap-servers``) to the readings topic."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from pipeline.control import CONTROL_TYPE, control_key, encode_control
from pipeline.names import turbine_id
from producers.kafka_client import KafkaIOError, KafkaSettings, make_producer

log = logging.getLogger(__name__)


def send_control(
    settings: KafkaSettings,
    topic: str,
    action: str,
    turbines: Sequence[str],
    key_groups: int,
    reason: str = "",
) -> int:
    """One control record per key group of ``turbines``, in their partitions; returns records.

    The detectors apply each in order with the turbines' readings and
    checkpoint it with them (see ``pipeline/control.py``).
    """
    by_group: dict[int, list[str]] = {}
    for name in turbines:
        by_group.setdefault(turbine_id(name) % key_groups, []).append(name)
    producer = make_producer(settings)
    try:
        futures = [
            producer.send(
                topic,
                key=control_key(names[0], key_groups),
                value=encode_control(action, list(names), reason),
                headers=[("content-type", CONTROL_TYPE.encode())],
            )
            for names in by_group.values()
        ]
        producer.flush()
        for f in futures:
            try:
                f.get(timeout=30)
            except Exception as exc:
                raise KafkaIOError(f"control record not acknowledged: {exc}", topic=topic) from None
    finally:
        producer.close()
    log.info("control_sent topic=%s action=%s records=%d", topic, action, len(futures))
    return len(futures)
