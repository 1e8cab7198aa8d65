"""A thin layer over kafka-python: settings, client construction, topics, errors.

(The detector's event producer is librdkafka's: ``producers/rdkafka_producer.py``,
with the same settings.)

Clients are created lazily by the services, closed in context managers, and
every Kafka error that reaches our code is turned into :class:`KafkaIOError`
with the topic, partition and offset it concerns.  Security settings (TLS,
SASL) pass straight through from configuration; secrets are ``SecretStr`` and
never logged.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from pipeline.errors import TurbineError

log = logging.getLogger(__name__)

READINGS_TOPIC = "turbine.readings"
ANOMALIES_TOPIC = "turbine.anomalies"
DLQ_TOPIC = "turbine.readings.dlq"


class KafkaIOError(TurbineError):
    """A Kafka operation that failed, with where it failed."""

    def __init__(
        self,
        message: str,
        topic: str | None = None,
        partition: int | None = None,
        offset: int | None = None,
    ) -> None:
        self.topic, self.partition, self.offset = topic, partition, offset
        where = ", ".join(
            f"{k}={v}"
            for k, v in (("topic", topic), ("partition", partition), ("offset", offset))
            if v is not None
        )
        super().__init__(f"{message} ({where})" if where else message)


class BrokerWaitError(KafkaIOError):
    """A call that waits on the broker (queue full, no metadata): retried like a timeout."""


class CommitError(KafkaIOError):
    """Offsets could not be committed (the checkpoint behind them is written)."""


class KafkaSettings(BaseSettings):
    """Connection settings, from ``TURBINE_*`` environment variables or options."""

    model_config = SettingsConfigDict(env_prefix="TURBINE_", extra="ignore")

    bootstrap_servers: str = Field("127.0.0.1:9092", description="HOST:PORT[,HOST:PORT]")
    client_id: str = "turbine-watch"
    security_protocol: str = Field(
        "PLAINTEXT", description="PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL"
    )
    sasl_mechanism: str | None = Field(None, description="PLAIN, SCRAM-SHA-256, SCRAM-SHA-512")
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    ssl_password: SecretStr | None = None
    connect_timeout_s: float = Field(60.0, description="How long to wait for a broker at start.")
    compression_type: Literal["none", "gzip", "lz4", "zstd", "snappy"] = Field(
        "none",
        description="Codec of the records this client produces; every codec is read whatever "
        "this says (their Python packages are dependencies).",
    )

    def client_config(self) -> dict[str, Any]:
        """Keyword arguments for kafka-python clients (secrets revealed only here)."""
        cfg: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap_servers.split(","),
            "client_id": self.client_id,
            "security_protocol": self.security_protocol,
            # Short attempts: retry_until_connected loops (and logs) until connect_timeout_s.
            "bootstrap_timeout_ms": int(min(5.0, self.connect_timeout_s) * 1000),
        }
        if self.sasl_mechanism:
            cfg["sasl_mechanism"] = self.sasl_mechanism
            cfg["sasl_plain_username"] = self.sasl_username
            if self.sasl_password is not None:
                cfg["sasl_plain_password"] = self.sasl_password.get_secret_value()
        for key in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
            if getattr(self, key):
                cfg[key] = getattr(self, key)
        if self.ssl_password is not None:
            cfg["ssl_password"] = self.ssl_password.get_secret_value()
        return cfg


def retry_until_connected(
    factory: Any, settings: KafkaSettings, what: str, deadline_s: float | None = None
) -> Any:
    """Build a client, retrying with backoff while no broker answers."""
    from kafka.errors import KafkaError

    limit = settings.connect_timeout_s if deadline_s is None else deadline_s
    start = time.monotonic()
    delay = 0.5
    while True:
        try:
            return factory()
        except (KafkaError, OSError) as exc:
            waited = time.monotonic() - start
            if waited >= limit:
                raise KafkaIOError(
                    f"no Kafka broker answered at {settings.bootstrap_servers} for the {what} "
                    f"after {waited:.0f} s: {exc.__class__.__name__}"
                ) from None
            log.warning(
                "broker_unreachable what=%s servers=%s retry_in=%.1fs error=%s",
                what,
                settings.bootstrap_servers,
                delay,
                exc.__class__.__name__,
            )
            time.sleep(delay)
            delay = min(delay * 2, 10.0)


def retry_broker_call(what: str, call: Any, stopped: Any = None) -> Any:
    """``call()``, retried with backoff while the broker does not answer.

    Only retriable errors (kafka-python's ``RetriableError``: timeouts, lost
    connections, stale metadata; :class:`BrokerWaitError`; and ``OSError``) are retried, until
    ``stopped()`` says so; any other error is logged and gives up at once.
    Returns ``call()``'s result, or None when it gave up.
    """
    from kafka.errors import RetriableError

    delay = 0.5
    while True:
        try:
            return call()
        except Exception as exc:  # kafka-python's errors
            retriable = isinstance(exc, RetriableError | BrokerWaitError | OSError)
            if not retriable or (stopped is not None and stopped()):
                log.error("broker_call_failed what=%s error=%r giving_up", what, exc)
                return None
            log.warning(
                "broker_unreachable what=%s error=%s retry_in=%.1fs",
                what,
                exc.__class__.__name__,
                delay,
            )
            time.sleep(delay)
            delay = min(delay * 2, 10.0)


def make_producer(settings: KafkaSettings, **overrides: Any) -> Any:
    """An idempotent producer (acks=all, retries) for large batch records."""
    from kafka import KafkaProducer

    cfg = {
        **settings.client_config(),
        "acks": "all",
        "enable_idempotence": True,
        "retries": 2**31 - 1,
        "max_in_flight_requests_per_connection": 5,
        "linger_ms": 5,
        "batch_size": 1 << 20,
        "max_request_size": 16 << 20,
        "request_timeout_ms": 30_000,
        "delivery_timeout_ms": 300_000,  # rides out a broker restart
        "compression_type": None
        if settings.compression_type == "none"
        else settings.compression_type,
        **overrides,
    }
    return retry_until_connected(lambda: KafkaProducer(**cfg), settings, "producer")


def make_consumer(settings: KafkaSettings, **overrides: Any) -> Any:
    """A consumer with manual commits, reading from the earliest offset by default."""
    from kafka import KafkaConsumer

    cfg = {
        **settings.client_config(),
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "max_partition_fetch_bytes": 16 << 20,
        "fetch_max_bytes": 64 << 20,
        **overrides,
    }
    return retry_until_connected(lambda: KafkaConsumer(**cfg), settings, "consumer")


def ensure_topics(settings: KafkaSettings, topics: dict[str, int]) -> None:
    """Create the topics (name -> partitions) that do not exist yet.

    Every admin call is retried with backoff while the broker does not answer,
    up to ``connect_timeout_s``.
    """
    from kafka.admin import KafkaAdminClient, NewTopic
    from kafka.errors import TopicAlreadyExistsError

    def attempt() -> None:
        admin = KafkaAdminClient(**settings.client_config())
        try:
            existing = set(admin.list_topics())
            new = [
                NewTopic(name, num_partitions=p, replication_factor=1)
                for name, p in topics.items()
                if name not in existing
            ]
            if new:
                try:
                    admin.create_topics(new)
                except TopicAlreadyExistsError:
                    pass
                log.info("topics_created names=%s", ",".join(t.name for t in new))
        finally:
            admin.close()

    retry_until_connected(attempt, settings, "admin client")
