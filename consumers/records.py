"""Record checking and dead letters: every record is scored or dead-lettered with a reason.

:class:`RecordChecker` decodes and validates one record against its
partition's state (its site's sensor schema, the site bound, NaN floods,
batch numbers already processed) and raises :class:`WireError` carrying the
dead-letter reason; :class:`DeadLetters` counts, logs and publishes a dead
letter (``consumers/deadletter.py`` cuts one too large).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from consumers.deadletter import dead_letter
from consumers.partition_state import PartitionState
from pipeline.control import CONTROL_TYPE
from pipeline.metrics import DetectorMetrics
from pipeline.sites import SiteConfigs, valid_site
from pipeline.wire import VERSIONS, SensorBatch, WireError, decode_batch
from producers.kafka_client import KafkaIOError

log = logging.getLogger(__name__)


@dataclass
class Accepted:
    """A decoded record that passed every check, waiting for the engine."""

    record: Any
    batch: SensorBatch

    @property
    def offset(self) -> int:
        return int(self.record.offset)

    @property
    def site(self) -> str:
        return self.batch.meta.site


def header(record: Any, name: str) -> str | None:
    for key, value in record.headers or []:
        if key == name:
            try:
                return value.decode("utf-8") if isinstance(value, bytes) else str(value)
            except UnicodeDecodeError:
                raise WireError("bad_header", f"header {name!r} is not UTF-8") from None
    return None


def is_control(record: Any) -> bool:
    """Whether a record is a control record (its content type), whatever else it holds."""
    try:
        return header(record, "content-type") == CONTROL_TYPE
    except WireError:  # a content type that is not UTF-8: a batch's check refuses it
        return False


class RecordChecker:
    """Decode and validate records (``settings``: the service's size, time and NaN limits)."""

    def __init__(self, settings: Any, sites: SiteConfigs) -> None:
        self.settings = settings
        self.sites = sites
        self._split_warned: set[tuple[str, str]] = set()  # (site, producer) told once

    def check(
        self, state: PartitionState, record: Any, seen: dict[tuple[str, int], int]
    ) -> SensorBatch:
        """Decode and validate one record; raises WireError with the dead-letter reason.

        ``seen`` holds the batch numbers of this poll's records not yet scored.
        """
        ctype = header(record, "content-type")
        version = header(record, "schema-version")
        if version is not None and version not in {str(v) for v in VERSIONS}:
            raise WireError("unknown_schema_version", f"header schema-version {version[:40]!r}")
        s = self.settings
        batch = decode_batch(
            record.value, ctype, s.max_record_bytes, (s.min_timestamp, s.max_timestamp)
        )
        site = batch.meta.site
        if site not in state.sites:
            if not valid_site(site):
                raise WireError(
                    "bad_site",
                    f"site {site[:80]!r}: letters, digits, '_', '-', '.' (at most 64)",
                )
            if not self.sites.admits(site, state.sites):
                raise WireError(
                    "too_many_sites",
                    f"site {site!r}: partition {state.partition} already holds "
                    f"{self.sites.max_sites} sites (max_sites), {sorted(state.sites)}",
                )
        sensors = tuple(batch.meta.sensors)
        known = state.sites.get(site)
        expected = (
            known.expected_sensors() if known else tuple(self.sites.config_of(site).sensors or ())
        )
        if expected and sensors != expected:
            where = "" if site == "default" else f" of site {site!r}"
            raise WireError(
                "sensor_mismatch", f"sensors {list(sensors)}, the model{where} has {list(expected)}"
            )
        # The sum is finite when every value is (one pass); else count the rows.
        if len(batch) and not np.isfinite(batch.values.sum()):
            bad = ~np.isfinite(batch.values).all(axis=1)
            if bad.mean() > self.settings.nan_flood_fraction:
                raise WireError(
                    "nan_flood", f"{int(bad.sum())} of {len(batch)} readings are NaN/inf"
                )
        key = (batch.meta.producer_id, batch.meta.group)
        last = seen.get(key, state.last_batch.get(key))
        if last is not None and batch.meta.batch <= last:
            raise WireError(
                "duplicate",
                f"batch {batch.meta.batch} of {key[0]} group {key[1]} already processed",
            )
        self._warn_split_fleet(state.partition, site, batch)
        return batch

    def _warn_split_fleet(self, partition: int, site: str, batch: SensorBatch) -> None:
        """Say once per (site, producer) that a fleet-relative site's batch came split.

        A fleet-relative sensor is scored against the median of the readings at
        the same time in one engine call: a producer that splits its batches by
        key group (group > 0) spreads a time step over partitions, so each median
        is over part of the fleet.  Still scored (the medians are of the readings
        at hand), but the operator is told what to change.
        """
        config = self.sites.config_of(site)
        if not config.fleet_relative or batch.meta.group == 0:
            return
        told = (site, batch.meta.producer_id)
        if told in self._split_warned:
            return
        self._split_warned.add(told)
        log.warning(
            "fleet_relative_split partition=%d site=%s producer=%s group=%d: the producer "
            "splits its batches by key group, so this site's fleet medians are over part of "
            "the fleet; send each batch in one record (--key-groups 1)",
            partition,
            site,
            batch.meta.producer_id,
            batch.meta.group,
        )


class DeadLetters:
    """Count, log and publish dead letters to ``settings.dlq_topic``.

    ``producer`` returns the Kafka producer; ``retry(what, call)`` retries a
    call while the broker does not answer (None: gave up).
    """

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

    def record(self, record: Any, reason: str, message: str) -> None:
        self.send(
            record.topic, record.partition, record.offset, record.key, record.value, reason, message
        )

    def send(
        self,
        topic: str,
        partition: int,
        offset: int,
        key: object,
        value: object,
        reason: str,
        message: str,
    ) -> None:
        """Count, log and publish one dead letter (a value too large is cut, see deadletter)."""
        self.metrics.dead_letters.labels(reason=reason).inc()
        log.warning(
            "dead_letter topic=%s partition=%d offset=%d reason=%s detail=%s",
            topic,
            partition,
            offset,
            reason,
            message[:200],
        )
        letter = dead_letter(
            topic=topic,
            partition=partition,
            offset=offset,
            key=key,
            value=value,
            reason=reason,
            message=message,
            max_bytes=self.settings.dlq_max_bytes,
        )
        sent = self._retry(
            "dead_letter",
            lambda: (
                self._producer().send(
                    self.settings.dlq_topic,
                    key=letter.key,
                    value=letter.value,
                    headers=letter.headers,
                    on_error=self._failed,
                )
                or True
            ),  # send returns None: True tells the retry loop it went through
        )
        if sent is None:
            self._failed(KafkaIOError("dead letter not sent", topic=self.settings.dlq_topic))

    def _failed(self, exc: BaseException) -> None:
        self.metrics.publish_errors.inc()
        log.error("dead_letter_send_failed topic=%s error=%s", self.settings.dlq_topic, exc)
