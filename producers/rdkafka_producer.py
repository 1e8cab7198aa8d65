"""A producer on librdkafka (confluent-kafka): network I/O in C threads, outside the GIL.

kafka-python's producer runs its sender in a Python thread and builds each
record in Python: in the detector, one anomaly event cost about 18 us of
the interpreter plus its share of that thread, which competed with the
engine for the GIL.  librdkafka batches, compresses and sends in its own
threads; a ``produce`` call is a copy into its queue.

:class:`RdKafkaProducer` keeps the shape the services use (``send``,
``flush``, ``partitions_for``, ``close``) and the settings of
:func:`producers.kafka_client.make_producer`: idempotent, ``acks=all``,
records placed by key with the Java client's murmur2 partitioner (as
kafka-python's), so a turbine's events and episodes land on the partition
kafka-python put them on.  Delivery failures reach the ``on_error`` given to
``send``, as :class:`KafkaIOError`, from ``send`` or ``flush`` (on
the calling thread: librdkafka serves its callbacks only there).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, cast

from producers.kafka_client import BrokerWaitError, KafkaIOError, KafkaSettings

log = logging.getLogger(__name__)

ErrorCallback = Callable[[KafkaIOError], None]

# How long a send waits for room in a full queue (the broker is away) before it
# raises BrokerWaitError, which the services' retry loops wait out.
MAX_BLOCK_S = 60.0


def rdkafka_config(settings: KafkaSettings) -> dict[str, Any]:
    """librdkafka properties of the connection settings (secrets revealed only here).

    >>> cfg = rdkafka_config(KafkaSettings(bootstrap_servers="a:1,b:2", sasl_mechanism="PLAIN"))
    >>> cfg["bootstrap.servers"], cfg["sasl.mechanism"], cfg["security.protocol"]
    ('a:1,b:2', 'PLAIN', 'PLAINTEXT')
    """
    cfg: dict[str, Any] = {
        "bootstrap.servers": settings.bootstrap_servers,
        "client.id": settings.client_id,
        "security.protocol": settings.security_protocol,
    }
    if settings.sasl_mechanism:
        cfg["sasl.mechanism"] = settings.sasl_mechanism
        if settings.sasl_username is not None:
            cfg["sasl.username"] = settings.sasl_username
        if settings.sasl_password is not None:
            cfg["sasl.password"] = settings.sasl_password.get_secret_value()
    for ours, theirs in (
        ("ssl_cafile", "ssl.ca.location"),
        ("ssl_certfile", "ssl.certificate.location"),
        ("ssl_keyfile", "ssl.key.location"),
    ):
        if getattr(settings, ours):
            cfg[theirs] = getattr(settings, ours)
    if settings.ssl_password is not None:
        cfg["ssl.key.password"] = settings.ssl_password.get_secret_value()
    return cfg


class RdKafkaProducer:
    """An idempotent librdkafka producer with the services' ``send``/``flush`` shape.

    Parameters
    ----------
    settings : KafkaSettings
    linger_ms : int
        How long a record waits for others to share its batch.
    delivery_timeout_ms : int
        How long a record may wait for the broker (outages included) before
        its delivery fails.
    """

    def __init__(
        self,
        settings: KafkaSettings,
        *,
        linger_ms: int = 5,
        delivery_timeout_ms: int = 300_000,
    ) -> None:
        from confluent_kafka import Producer

        self.settings = settings
        config = {
            **rdkafka_config(settings),
            "acks": "all",
            "enable.idempotence": True,
            "max.in.flight.requests.per.connection": 5,
            "linger.ms": linger_ms,
            "batch.size": 1 << 20,
            "message.max.bytes": 16 << 20,
            "request.timeout.ms": 30_000,
            "delivery.timeout.ms": delivery_timeout_ms,
            "compression.type": settings.compression_type,
            "partitioner": "murmur2_random",  # the Java client's, and kafka-python's
            "logger": logging.getLogger("rdkafka"),
            "error_cb": self._broker_error,
        }
        self._producer = Producer(config)
        self._callbacks: dict[ErrorCallback, Callable[[Any, Any], None]] = {}

    def send(
        self,
        topic: str,
        *,
        value: bytes,
        key: bytes | None = None,
        headers: list[tuple[str, bytes]] | None = None,
        partition: int | None = None,
        on_error: ErrorCallback | None = None,
    ) -> None:
        """Queue one record; ``on_error`` hears of its delivery failing.

        A full queue (the broker away for long) is waited on for up to
        ``MAX_BLOCK_S``, then :class:`BrokerWaitError` is raised (retriable).
        """
        produce = self._producer.produce
        callback = None if on_error is None else self._callback(on_error)
        deadline = None
        while True:
            try:
                produce(
                    topic,
                    value=value,
                    key=key,
                    headers=cast(Any, headers),  # the stub's list of str | bytes | None
                    partition=-1 if partition is None else partition,
                    on_delivery=callback,
                )
                break
            except BufferError:  # queue full: let deliveries drain it
                deadline = deadline or time.monotonic() + MAX_BLOCK_S
                if time.monotonic() > deadline:
                    raise BrokerWaitError("producer queue full", topic=topic) from None
                self._producer.poll(0.1)
        self._producer.poll(0)

    def flush(self, timeout: float = 30.0) -> None:
        """Wait until every queued record is delivered or failed; KafkaIOError on timeout."""
        left = self._producer.flush(timeout)
        if left:
            raise KafkaIOError(f"{left} record(s) not delivered within {timeout:g} s")

    def partitions_for(self, topic: str) -> set[int]:
        """The topic's partitions (from the broker's metadata); BrokerWaitError if it is away."""
        from confluent_kafka import KafkaException

        try:
            metadata = self._producer.list_topics(topic, timeout=10)
        except KafkaException as exc:
            raise BrokerWaitError(f"no metadata: {exc}", topic=topic) from None
        found = metadata.topics.get(topic)
        if found is None or found.error is not None or not found.partitions:
            raise BrokerWaitError(f"no partitions known: {found and found.error}", topic=topic)
        return set(found.partitions)

    def close(self, timeout: float = 10.0) -> None:
        """Deliver what is queued (up to ``timeout``); what is left is logged, not lost silently."""
        left = self._producer.flush(timeout)
        if left:
            log.error("producer_closed_undelivered records=%d timeout=%.0fs", left, timeout)

    def __len__(self) -> int:
        """Records queued and not yet delivered."""
        return len(self._producer)

    def _callback(self, on_error: ErrorCallback) -> Callable[[Any, Any], None]:
        """One librdkafka delivery callback per error callback (none made per record)."""
        callback = self._callbacks.get(on_error)
        if callback is None:

            def callback(err: Any, msg: Any) -> None:
                if err is not None:
                    on_error(
                        KafkaIOError(
                            f"delivery failed: {err.str()}",
                            topic=msg.topic(),
                            partition=msg.partition(),
                        )
                    )

            self._callbacks[on_error] = callback
        return callback

    @staticmethod
    def _broker_error(err: Any) -> None:
        log.warning("broker_error client=producer error=%s", err.str())
