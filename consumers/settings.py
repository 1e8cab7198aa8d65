"""The detector service's settings (options or ``TURBINE_*`` environment variables)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from consumers.deadletter import DEFAULT_MAX_BYTES
from pipeline.wire import TIME_RANGE
from producers.kafka_client import ANOMALIES_TOPIC, DLQ_TOPIC, READINGS_TOPIC, KafkaSettings


class ServiceSettings(KafkaSettings):
    """The detector service's settings (options or ``TURBINE_*`` environment variables)."""

    topic: str = READINGS_TOPIC
    anomalies_topic: str = ANOMALIES_TOPIC
    episodes_topic: str = Field(
        "turbine.episodes", description="Episode events (opened, closed); see episode_events."
    )
    dlq_topic: str = DLQ_TOPIC
    group: str = "turbine-detectors"
    store: Path = Path("store")
    checkpoint_dir: Path | None = Field(
        None, description="Shared by the group (default STORE/checkpoints)."
    )
    checkpoint_every_batches: int = Field(
        100_000, ge=1, description="Also checkpoint after this many engine batches."
    )
    checkpoint_every_seconds: float = Field(10.0, gt=0)
    max_record_bytes: int = Field(8 << 20, ge=1024)
    dlq_max_bytes: int = Field(
        DEFAULT_MAX_BYTES,
        ge=1024,
        description="A dead letter's value is cut to this size (headers keep the original "
        "size and hash): the dead-letter topic must accept it.",
    )
    min_timestamp: float = Field(TIME_RANGE[0], description="Earliest valid reading time (s).")
    max_timestamp: float = Field(TIME_RANGE[1], description="Valid reading times are below it.")
    nan_flood_fraction: float = Field(0.5, gt=0, le=1)
    stop_after_idle: float | None = Field(None, gt=0)
    metrics_address: str = "127.0.0.1"
    metrics_port: int | None = None
    poll_timeout_ms: int = Field(200, ge=1)
    max_poll_records: int = Field(2000, ge=1)
    partitions: int = Field(6, ge=1, description="Partitions of topics this service creates.")
    publish_events: bool = True
    event_records: Literal["anomaly", "batch"] = Field(
        "anomaly",
        description="One anomalies-topic record per anomaly (the JSON event), or per engine "
        "batch and partition (the same JSON events, one per line: application/x-ndjson).",
    )
    events_linger_ms: int = Field(
        10,
        ge=0,
        le=1000,
        description="The event producer's linger: fewer, fuller produce requests; "
        "it adds at most this much to the event latency.",
    )
    store_flush_seconds: float = Field(
        60.0, gt=0, description="Write pending anomalies as a store chunk at least this often."
    )
    session_timeout_ms: int = Field(10_000, ge=1000)
    instance_id: str | None = Field(
        None,
        description="Static group membership: a detector restarted with the same id takes "
        "its partitions back at once, without a rebalance.",
    )
