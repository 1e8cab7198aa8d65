"""The detector service: a Kafka consumer-group member around the engine.

Per partition it owns, the service keeps one engine (:class:`Detector`), one
anomaly store (``STORE/partition-NNNN``) and the (producer, group) batch
numbers already processed.  Records are decoded (bad ones go to the
dead-letter topic with a reason header), records of the same engine batch are
scored in one call, anomalies are appended to the store and published as
JSON events.  Every ``checkpoint_every_batches`` batches or
``checkpoint_every_seconds`` seconds, on a rebalance and at shutdown it
flushes the producer, writes each partition's checkpoint atomically and only
then commits the offsets: committed offsets never run ahead of a checkpoint.
A new owner of a partition restores its checkpoint and seeks to its offset
before scoring its first record.

Guarantees: the models and the anomaly store see every accepted reading
exactly once (replays after a crash are rolled back to the checkpoint and
redone deterministically); anomaly events and dead letters are at least once,
with deterministic ids (``topic:partition:offset:row``) for de-duplication.
A partition whose checkpoint or store does not load is paused, never consumed
without its state; a lost checkpoint keeps the store and rebuilds the models
from the earliest retained offset (see :meth:`DetectorService.settle_partitions`).
"""

from __future__ import annotations

import json
import logging
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import numpy as np
from kafka.partitioner.default import murmur2
from prometheus_client import CollectorRegistry
from pydantic import Field

from consumers.checkpoint import Checkpoint, CheckpointDir, StateError, one_line
from consumers.deadletter import DEFAULT_MAX_BYTES, dead_letter
from consumers.episode_events import CLOSED, OPENED, render_episode_events
from consumers.events import render_events
from consumers.undecodable import is_data_fault, skip_undecodable
from pipeline.config import DetectorConfig
from pipeline.control import CONTROL_TYPE, ControlError, decode_control
from pipeline.detector import BatchResult, Detector
from pipeline.episodes import EpisodeTracker, EpisodeUpdate
from pipeline.errors import SchemaError, StoreError, TurbineError
from pipeline.metrics import DetectorMetrics, serve_metrics
from pipeline.names import TurbineNames, turbine_id
from pipeline.runner import config_for
from pipeline.store import MANIFEST, AnomalyStore
from pipeline.wire import JSON_TYPE, TIME_RANGE, VERSIONS, SensorBatch, WireError, decode_batch
from producers.kafka_client import (
    ANOMALIES_TOPIC,
    DLQ_TOPIC,
    READINGS_TOPIC,
    CommitError,
    KafkaIOError,
    KafkaSettings,
    ensure_topics,
    make_consumer,
    make_producer,
    retry_broker_call,
)

log = logging.getLogger(__name__)


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


@dataclass
class PartitionState:
    partition: int
    store: AnomalyStore
    detector: Detector | None = None
    next_offset: int | None = None
    last_batch: dict[tuple[str, int], int] = field(default_factory=dict)
    sensors: tuple[str, ...] = ()
    last_flush: float = field(default_factory=time.monotonic)
    episodes: EpisodeTracker | None = None


@dataclass
class Accepted:
    """A decoded record that passed every check, waiting for the engine."""

    record: Any
    batch: SensorBatch

    @property
    def offset(self) -> int:
        return int(self.record.offset)


def _is_control(record: Any) -> bool:
    """Whether a record is a control record (its content type), whatever else it holds."""
    try:
        return _header(record, "content-type") == CONTROL_TYPE
    except WireError:  # a content type that is not UTF-8: a batch's check refuses it
        return False


def _header(record: Any, name: str) -> str | None:
    for key, value in record.headers or []:
        if key == name:
            try:
                return value.decode("utf-8") if isinstance(value, bytes) else str(value)
            except UnicodeDecodeError:
                raise WireError("bad_header", f"header {name!r} is not UTF-8") from None
    return None


class DetectorService:
    """Consume, score, store, publish; checkpoint and commit.

    Parameters
    ----------
    settings : ServiceSettings
    config : DetectorConfig
        The engine's configuration, the same for every partition.
    registry : CollectorRegistry, optional
        Metrics go here (a fresh one per test).
    """

    def __init__(
        self,
        settings: ServiceSettings,
        config: DetectorConfig,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.settings = settings
        self.config = config
        self.registry = registry if registry is not None else CollectorRegistry()
        self.metrics = DetectorMetrics(self.registry)
        self.metrics.up_since.set(time.time())
        self.checkpoints = CheckpointDir(
            settings.checkpoint_dir or settings.store / "checkpoints", settings.topic
        )
        self.states: dict[int, PartitionState] = {}
        # Partitions owned but paused: their state does not load (partition -> error).
        self.unrestored: dict[int, str] = {}
        # Partitions assigned without a checkpoint, paused until settle_partitions().
        self._undecided: dict[int, tuple[Any, PartitionState]] = {}
        self._consumer: Any = None
        self._producer: Any = None
        self._partition_memo: dict[bytes, int] = {}  # event key -> partition
        self._memo_partitions = 0  # the anomalies topic's partition count behind the memo
        self._stop = False
        self._batches_since_checkpoint = 0
        # A poll that only dead-letters moves a position too: it is checkpointed
        # on time like a scored batch, or a stream ending in dead letters would
        # never see its checkpoint reach its end.
        self._moved_since_checkpoint = False
        self._last_checkpoint = time.monotonic()
        self._last_lag_update = 0.0
        self._idle_since: float | None = None
        self.processed_readings = 0

    # ------------------------------------------------------------------ clients
    @property
    def producer(self) -> Any:
        if self._producer is None:
            # Events and dead letters wait out a broker outage of any length (the
            # checkpoint's flush fails meanwhile and is retried): never dropped.
            self._producer = make_producer(
                self.settings,
                linger_ms=self.settings.events_linger_ms,
                delivery_timeout_ms=24 * 3600 * 1000,
            )
        return self._producer

    def _make_consumer(self) -> Any:
        from kafka import ConsumerRebalanceListener

        service = self

        class Listener(ConsumerRebalanceListener):
            def on_partitions_revoked(self, revoked: Any) -> None:
                service._revoke([tp.partition for tp in revoked])

            def on_partitions_assigned(self, assigned: Any) -> None:
                service._assign(list(assigned))

        consumer = make_consumer(
            self.settings,
            group_id=self.settings.group,
            max_poll_records=self.settings.max_poll_records,
            session_timeout_ms=self.settings.session_timeout_ms,
            heartbeat_interval_ms=max(1000, self.settings.session_timeout_ms // 4),
            max_poll_interval_ms=300_000,
            group_instance_id=self.settings.instance_id,
        )
        # Subscribe only once the topic's partitions are known: a group joined
        # before that can be assigned nothing and stay so.
        deadline = time.monotonic() + self.settings.connect_timeout_s
        while not self._partitions_known(consumer) and not self._stop:
            if time.monotonic() > deadline:
                consumer.close()
                raise KafkaIOError("no partition metadata", topic=self.settings.topic)
            time.sleep(0.5)
        consumer.subscribe([self.settings.topic], listener=Listener())
        # A metadata refresh before the first poll: kafka-python 3.0 otherwise
        # joins with an empty metadata snapshot and, once the topic's metadata
        # arrives, rebalances a second time (revoke, checkpoint, assign again);
        # once, under load, that second join never completed.
        self._retry("metadata", consumer.topics)
        return consumer

    def _partitions_known(self, consumer: Any) -> bool:
        try:
            return bool(consumer.partitions_for_topic(self.settings.topic))
        except Exception as exc:  # the broker went away between two attempts
            log.warning("broker_unreachable what=metadata error=%s", exc.__class__.__name__)
            return False

    # ------------------------------------------------------------------ partitions
    def _state_for(self, partition: int) -> PartitionState:
        return PartitionState(
            partition=partition, store=AnomalyStore(self._store_dir(partition), config=self.config)
        )

    def _assign(self, assigned: list[Any]) -> None:
        """Restore each newly assigned partition, each on its own.

        Runs inside kafka-python's rebalance callback, where no broker call can
        be made (the consumer's IO thread is blocked) and an exception would be
        swallowed: so every partition's failure is caught here, and that
        partition alone is paused (see :meth:`_not_restored`).  A partition
        without a checkpoint is paused too until :meth:`settle_partitions`,
        outside the callback, has asked the broker for its committed offset.
        """
        self.metrics.rebalances.inc()
        for tp in assigned:
            if tp.partition in self.states:
                continue
            self.unrestored.pop(tp.partition, None)  # tried again on every assignment
            try:
                self._restore(tp)
            except StateError as exc:
                self._not_restored(tp, exc.path, exc)
            except StoreError as exc:
                self._not_restored(tp, self._store_dir(tp.partition) / MANIFEST, exc)
            except Exception as exc:  # one partition must never stop the others
                self._not_restored(tp, self.checkpoints.path(tp.partition), exc)
        self._update_partition_gauges()

    def _store_dir(self, partition: int) -> Path:
        return self.settings.store / f"partition-{partition:04d}"

    def _restore(self, tp: Any) -> None:
        cp = self.checkpoints.load(tp.partition)  # StateError naming a damaged file
        state = self._state_for(tp.partition)  # StoreError naming a damaged manifest
        if cp is None:
            # Never checkpointed, or the checkpoint was lost: only the committed
            # offset tells which, and the broker cannot be asked from here.
            self._undecided[tp.partition] = (tp, state)
            self._consumer.pause(tp)
            return
        self._apply_checkpoint(tp, state, cp)
        self.states[tp.partition] = state
        log.info("partition_restored partition=%d offset=%d", tp.partition, cp.offset)

    def _apply_checkpoint(self, tp: Any, state: PartitionState, cp: Checkpoint) -> None:
        path = self.checkpoints.path(tp.partition)
        try:
            stored = len(state.store.chunks)
            expected = int(cp.store_position["chunks"])
        except (KeyError, TypeError, ValueError) as exc:
            raise StateError(path, f"unreadable store position ({one_line(exc)})") from None
        if expected > stored:
            # The manifest lost chunks the checkpoint counts: truncating to the
            # checkpoint would write that loss down for good.
            raise StateError(
                state.store.directory / MANIFEST,
                f"lists {stored} chunks but the checkpoint {path} was taken with {expected}",
            )
        try:
            detector = None
            if "turbine_means" in cp.detector_state or cp.sensors:
                detector = Detector.from_state(
                    cp.detector_state, config_for(self.config, cp.sensors, "checkpoint")
                )
            state.store.truncate(cp.store_position)
            state.store.restore_pending(cp.pending)
            state.store.restore_pending_episodes(cp.pending_episodes)
            episodes = (
                EpisodeTracker.from_state(cp.episode_state, gap=self.config.episode_gap)
                if cp.episode_state
                else None
            )
        except StoreError:
            raise
        except Exception as exc:  # arrays of the wrong shape, dtype, keys...
            raise StateError(path, f"checkpoint does not restore ({one_line(exc)})") from None
        state.detector = detector
        if episodes is not None:
            state.episodes = episodes
        state.sensors = cp.sensors
        state.next_offset = cp.offset
        state.last_batch = dict(cp.last_batch)
        self._consumer.seek(tp, cp.offset)

    def _not_restored(self, tp: Any, path: Path, exc: BaseException) -> None:
        """Pause a partition whose state does not load: never consume it without its state."""
        self._undecided.pop(tp.partition, None)
        self.unrestored[tp.partition] = str(exc) if str(path) in str(exc) else f"{path}: {exc}"
        self.metrics.state_errors.inc()
        log.error(
            "partition_state_error partition=%d file=%s error=%s "
            "(partition paused: repair the file, then restart the detector)",
            tp.partition,
            path,
            one_line(exc),
        )
        try:
            self._consumer.pause(tp)
        except Exception as pause_exc:  # still safe: handle() rewinds what it cannot score
            log.error("pause_failed partition=%d error=%s", tp.partition, one_line(pause_exc))

    def settle_partitions(self) -> None:
        """Decide the partitions assigned without a checkpoint (outside the callback).

        No committed offset: nothing of the partition was ever checkpointed, its
        store (if any) is from a run that died before its first checkpoint and
        the records behind it are consumed again: the store starts afresh.

        A committed offset: the checkpoint was lost.  The store is kept whole,
        its floor raised past every stored anomaly, and the partition is read
        again from the earliest retained offset with fresh models: the models
        are rebuilt from the retained records (exactly, when the topic still
        holds the whole partition), replayed anomalies already stored are
        dropped by the store, and the batch numbers seen (duplicate detection)
        come back with them.
        """
        if not self._undecided:
            return
        for p, (tp, state) in list(self._undecided.items()):
            try:
                committed = self._consumer.committed(tp)
            except Exception as exc:  # broker away: stay paused, try again next poll
                log.warning("committed_offset_failed partition=%d error=%s", p, one_line(exc))
                continue
            del self._undecided[p]
            try:
                if committed is None:
                    self._start_afresh(state)
                else:
                    self._rebuild(tp, state, int(committed))
            except StoreError as exc:
                self._not_restored(tp, getattr(exc, "path", state.store.directory / MANIFEST), exc)
                continue
            self.states[p] = state
            self._consumer.resume(tp)
        self._update_partition_gauges()

    def _start_afresh(self, state: PartitionState) -> None:
        if state.store.chunks or state.store.readings:
            log.warning(
                "store_reset partition=%d reason=never_checkpointed chunks=%d",
                state.partition,
                len(state.store.chunks),
            )
            state.store.truncate({"chunks": 0, "positions": {}, "readings": 0, "turbines": 0})
        log.info("partition_assigned partition=%d checkpoint=none", state.partition)

    def _rebuild(self, tp: Any, state: PartitionState, committed: int) -> None:
        store = state.store
        floor = max(store.positions.get(state.partition, 0), _after_last_stored(store))
        store.advance({state.partition: floor})
        store.skip_stored_episodes()
        self._consumer.seek_to_beginning(tp)
        self.metrics.partition_rebuilds.inc()
        log.warning(
            "state_rebuild partition=%d reason=checkpoint_lost file=%s committed=%d "
            "store_floor=%d from=earliest (store kept: %d chunks; models rebuilt from the "
            "earliest retained offset)",
            state.partition,
            self.checkpoints.path(state.partition),
            committed,
            floor,
            len(store.chunks),
        )

    def _update_partition_gauges(self) -> None:
        self.metrics.partitions.set(len(self.states))
        self.metrics.partitions_paused.set(len(self.unrestored))

    def _revoke(self, partitions: list[int]) -> None:
        for p in partitions:
            self._undecided.pop(p, None)
            self.unrestored.pop(p, None)
        owned = [p for p in partitions if p in self.states]
        if owned:
            # Inside kafka-python's IO thread a commit would block it: write the
            # checkpoints only; the next owner seeks to them (commits may lag,
            # never lead).
            try:
                self.checkpoint(owned, commit=False)
            except Exception as exc:  # a listener must not raise into kafka-python
                log.error("checkpoint_on_revoke_failed partitions=%s error=%s", owned, exc)
        for p in owned:
            self.states.pop(p).store.flush()
            try:
                self.metrics.consumer_lag.remove(str(p))
            except KeyError:
                pass
        self._update_partition_gauges()

    # ------------------------------------------------------------------ records
    def _check(
        self, state: PartitionState, record: Any, seen: dict[tuple[str, int], int]
    ) -> SensorBatch:
        """Decode and validate one record; raises WireError with the dead-letter reason.

        ``seen`` holds the batch numbers of this poll's records not yet scored.
        """
        ctype = _header(record, "content-type")
        version = _header(record, "schema-version")
        if version is not None and version not in {str(v) for v in VERSIONS}:
            raise WireError("unknown_schema_version", f"header schema-version {version[:40]!r}")
        s = self.settings
        batch = decode_batch(
            record.value, ctype, s.max_record_bytes, (s.min_timestamp, s.max_timestamp)
        )
        sensors = tuple(batch.meta.sensors)
        expected = state.sensors or tuple(self.config.sensors or ())
        if expected and sensors != expected:
            raise WireError(
                "sensor_mismatch", f"sensors {list(sensors)}, the model has {list(expected)}"
            )
        if len(batch):
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
        return batch

    def _dead_letter(self, record: Any, reason: str, message: str) -> None:
        self._send_dead_letter(
            record.topic, record.partition, record.offset, record.key, record.value, reason, message
        )

    def _send_dead_letter(
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
        future = self._retry(
            "dead_letter",
            lambda: self.producer.send(
                self.settings.dlq_topic, key=letter.key, value=letter.value, headers=letter.headers
            ),
        )
        if future is not None:
            future.add_errback(self._dead_letter_failed)

    def _dead_letter_failed(self, exc: BaseException) -> None:
        self.metrics.publish_errors.inc()
        log.error("dead_letter_send_failed topic=%s error=%s", self.settings.dlq_topic, exc)

    def _retry(self, what: str, call: Any) -> Any:
        """``call()`` retried while the broker does not answer (None: gave up)."""
        return retry_broker_call(what, call, stopped=lambda: self._stop)

    def handle(self, partition: int, records: list[Any]) -> None:
        """Process the records polled from one partition, in offset order.

        Every record is scored or dead-lettered: an unexpected exception while
        checking one is its dead letter (``internal_error``).  The partition's
        next offset moves past a record only once its fate is final, so a
        checkpoint never claims a record of a batch not yet scored.
        """
        state = self.states.get(partition)
        if state is None:
            self._without_state(partition, records)
            return
        if records:
            self._moved_since_checkpoint = True
        run: list[Accepted] = []
        seen: dict[tuple[str, int], int] = {}  # batch numbers of `run`, not yet scored
        for record in records:
            if _is_control(record):
                # An operator's action, in order with the readings: what came
                # before it is scored against the old models, what follows
                # against the new ones (pipeline/control.py).
                if run:
                    self._score_run(state, run, seen)
                    run, seen = [], {}
                self._control(state, record)
                state.next_offset = record.offset + 1
                continue
            try:
                batch = self._check(state, record, seen)
            except WireError as exc:
                self._dead_letter(record, exc.reason, str(exc))
                if not run:
                    state.next_offset = record.offset + 1
                continue
            except Exception as exc:  # a bug, or an input no check foresaw: never a crash
                self._dead_letter(record, "internal_error", f"{type(exc).__name__}: {exc}")
                if not run:
                    state.next_offset = record.offset + 1
                continue
            if run and run[-1].batch.meta.batch != batch.meta.batch:
                self._score_run(state, run, seen)
                run, seen = [], {}
                state.next_offset = record.offset  # everything before it is final
            seen[(batch.meta.producer_id, batch.meta.group)] = batch.meta.batch
            if not state.sensors:
                state.sensors = tuple(batch.meta.sensors)
            run.append(Accepted(record, batch))
        if run:
            self._score_run(state, run, seen)
        if records:
            state.next_offset = int(records[-1].offset) + 1
        state.store.advance({partition: state.next_offset or 0})

    def _control(self, state: PartitionState, record: Any) -> None:
        """Apply one control record to the partition's models, or dead-letter it."""
        try:
            msg = decode_control(record.value)
        except ControlError as exc:
            self._dead_letter(record, "bad_control", str(exc))
            return
        det = state.detector
        ids = np.array([turbine_id(t) for t in msg.turbines], dtype=np.int64)
        known = ids[det.turbines.find(ids) >= 0] if det is not None else ids[:0]
        if known.size < ids.size:
            missing = [t for t, i in zip(msg.turbines, ids.tolist(), strict=True) if i not in known]
            self._dead_letter(
                record,
                "bad_control",
                f"partition {state.partition} has no model of turbine {missing[0]!r} (sent "
                "with the key of its key group?)",
            )
        if det is None or known.size == 0:
            return
        det.rebaseline(known)
        self.metrics.rebaselines.labels(reason="operator").inc(int(known.size))
        log.warning(
            "rebaseline partition=%d offset=%d turbines=%s reason=operator note=%s",
            state.partition,
            record.offset,
            ",".join(det.names.labels(known)),
            msg.reason[:200],
        )
        self._publish_rebaselines(state, known, "operator", record.offset, msg.reason)

    def _publish_rebaselines(
        self, state: PartitionState, turbines: np.ndarray, reason: str, offset: int, note: str = ""
    ) -> None:
        """One JSON event per turbine re-baselined, on the episodes topic, keyed by turbine."""
        if not self.settings.publish_events or state.detector is None:
            return
        names = state.detector.names
        now = time.time()
        for t in turbines.tolist():
            event = {
                "type": "rebaseline",
                "turbine": names.name_of(t) if t in names else int(t),
                "reason": reason,
                "note": note,
                "partition": state.partition,
                "offset": int(offset),
                "detected_at": now,
                "event_id": f"{self.settings.topic}:{state.partition}:{offset}:rebaseline:{t}",
            }
            key = f"turbine-{names.name_of(t)}".encode()
            self.producer.send(
                self.settings.episodes_topic,
                key=key,
                value=json.dumps(event).encode(),
                headers=[("content-type", JSON_TYPE.encode())],
            ).add_errback(self._event_failed)

    def _without_state(self, partition: int, records: list[Any]) -> None:
        """Records of a partition with no state: read again later, never dropped silently."""
        from kafka import TopicPartition

        tp = TopicPartition(self.settings.topic, partition)
        if not records or tp not in self._consumer.assignment():
            return  # revoked while polling: its next owner reads them from its checkpoint
        self._consumer.seek(tp, records[0].offset)  # rewound: nothing is skipped
        if partition in self.unrestored or partition in self._undecided:
            return  # paused; these were fetched before the pause took effect
        log.warning("partition_without_state partition=%d offset=%d", partition, records[0].offset)
        self._assign([tp])

    def _score_run(
        self, state: PartitionState, run: list[Accepted], seen: dict[tuple[str, int], int]
    ) -> None:
        """Score a run, then record its batch numbers as processed."""
        try:
            self._score(state, run)
        except Exception as exc:  # e.g. the store refuses the anomalies: never a crash loop
            for one in run:
                self._dead_letter(one.record, "internal_error", f"{type(exc).__name__}: {exc}")
        state.last_batch.update(seen)

    def _score(self, state: PartitionState, run: list[Accepted]) -> None:
        """Score records of one engine batch together (one engine call)."""
        start = time.perf_counter()
        if state.detector is None:
            state.detector = Detector(
                config_for(self.config, state.sensors, f"partition {state.partition}")
            )
        batches = [a.batch for a in run]
        ts = np.concatenate([b.timestamps for b in batches])
        ids = np.concatenate([b.turbine_ids for b in batches])
        values = np.concatenate([b.values for b in batches])
        try:
            for b in batches:
                state.detector.names.merge(b.names)
            result = state.detector.process(ts, ids, values)
        except Exception as exc:  # SchemaError and friends; anything else is a bug
            if len(run) > 1:  # find the offending record(s): score one by one
                for one in run:
                    self._score(state, [one])
                return
            known = isinstance(exc, SchemaError | TurbineError)
            reason = "schema" if known else "internal_error"
            self._dead_letter(run[0].record, reason, f"{type(exc).__name__}: {exc}")
            return
        offsets = np.repeat([a.offset for a in run], [len(b) for b in batches])
        produced = np.repeat([a.record.timestamp / 1000.0 for a in run], [len(b) for b in batches])
        rows = np.concatenate([np.arange(len(b)) for b in batches])
        state.store.append(result, partitions=state.partition, offsets=offsets, rows=rows)
        self._track_episodes(state, result, batches[0])
        if result.rebaselined.size:
            self.metrics.rebaselines.labels(reason="persistent_alarm").inc(
                int(result.rebaselined.size)
            )
            self._publish_rebaselines(state, result.rebaselined, "persistent_alarm", run[-1].offset)
        for name, count in result.state_counts().items():
            self.metrics.readings_in_state.labels(state=name).inc(count)
        kinds = None
        labelled = all(b.kinds is not None for b in batches)
        if labelled:
            kinds = np.concatenate([b.kinds for b in batches])
        try:
            self._publish(state, result, offsets, rows, produced, kinds, batches[0])
        except Exception as exc:  # the batch is scored and stored; its events are lost
            self._event_failed(exc)
        m = self.metrics
        m.readings.inc(result.n_readings)
        m.readings_skipped.inc(result.n_skipped)
        m.batches.inc()
        if result.n_readings:
            now = time.time()
            scored = result.scored_by > 0
            m.lag_seconds.observe_many(now - ts)
            m.latency_seconds.observe_many(now - produced)  # Kafka record time to scored
            m.distance.observe_many(result.distances[scored])
            m.last_reading.set(float(np.max(ts)))
        hit = result.anomaly_index
        m.count_anomalies(
            ids[hit], None if kinds is None else kinds[hit], labelled, state.detector.names
        )
        m.batch_seconds.observe(time.perf_counter() - start)
        self._batches_since_checkpoint += 1
        self.processed_readings += result.n_readings

    def _publish(
        self,
        state: PartitionState,
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
            sensors=state.sensors,
            topic=self.settings.topic,
            partition=state.partition,
            offsets=offsets,
            rows=rows,
            produced=produced,
            kinds=kinds,
            producer_id=first.meta.producer_id,
            site=first.meta.site,
            detected_at=time.time(),
            names=state.detector.names if state.detector is not None else None,
        )
        send = self.producer.send
        topic = self.settings.anomalies_topic
        partitions = self._retry("event_partitions", lambda: self._event_partitions(keys))
        if partitions is None:
            raise KafkaIOError("no partitions for the events", topic=self.settings.anomalies_topic)
        content_type = ("content-type", JSON_TYPE.encode())
        on_error = self._event_failed
        for key, value, event_id, partition in zip(keys, values, ids, partitions, strict=True):
            # One record per anomaly (the wire contract): kafka-python's send is
            # most of what an event costs.
            headers = [("event-id", event_id), content_type]
            try:
                future = send(topic, key=key, value=value, headers=headers, partition=partition)
            except Exception:  # the buffer is full or metadata is gone: wait for the broker
                future = self._retry(
                    "event_send",
                    lambda k=key, v=value, h=headers, p=partition: send(
                        topic, key=k, value=v, headers=h, partition=p
                    ),
                )
                if future is None:
                    on_error(KafkaIOError("event not sent", topic=topic))
                    continue
            future.add_errback(on_error)
        self.metrics.events_published.inc(result.n_anomalies)

    def _track_episodes(
        self, state: PartitionState, result: BatchResult, first: SensorBatch
    ) -> None:
        """Group the batch's alarms into episodes: store the closed ones, publish both kinds."""
        if state.episodes is None:
            state.episodes = EpisodeTracker(state.sensors, self.config.episode_gap)
        update = state.episodes.update_result(result)
        state.store.append_episodes(update.closed)
        if self.settings.publish_events:
            names = state.detector.names if state.detector is not None else None
            self._publish_episodes(update, first, names)

    def _publish_episodes(
        self, update: EpisodeUpdate, first: SensorBatch, names: TurbineNames | None
    ) -> None:
        """One JSON event per episode opened and per episode closed, keyed by turbine.

        Sent like the anomaly events: a send refused while the broker is away
        is retried, then counted as a failed event (at least once, as they are).
        """
        now = time.time()
        send = self.producer.send
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
                try:
                    future = send(topic, key=key, value=value, headers=h)
                except Exception:  # the buffer is full or metadata is gone: wait for the broker
                    future = self._retry(
                        "episode_event_send",
                        lambda k=key, v=value, h=h: send(topic, key=k, value=v, headers=h),
                    )
                    if future is None:
                        self._event_failed(KafkaIOError("episode event not sent", topic=topic))
                        continue
                future.add_errback(self._event_failed)

    def _event_partitions(self, keys: list[bytes]) -> list[int]:
        """The anomalies topic's partition of each key, as kafka-python's default partitioner.

        Memoised per key: its pure-Python murmur2 on every send was a fifth of
        what a send costs.  Recomputed when the topic's partition count changes.
        """
        partitions = sorted(self.producer.partitions_for(self.settings.anomalies_topic))
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

    def _event_failed(self, exc: BaseException) -> None:
        self.metrics.publish_errors.inc()
        log.error("event_send_failed topic=%s error=%s", self.settings.anomalies_topic, exc)

    # ------------------------------------------------------------------ checkpoints
    def checkpoint(self, partitions: list[int] | None = None, commit: bool = True) -> None:
        """Make events durable, write checkpoints, then commit offsets (in that order)."""
        from kafka import TopicPartition
        from kafka.structs import OffsetAndMetadata

        if self._producer is not None:
            try:
                self._producer.flush(timeout=30)
            except Exception as exc:  # kafka-python's KafkaTimeoutError and friends
                raise KafkaIOError(f"flushing events before a checkpoint failed: {exc}") from None
        owned = sorted(self.states if partitions is None else partitions)
        offsets = {}
        for p in owned:
            state = self.states[p]
            if state.next_offset is None:
                continue
            if time.monotonic() - state.last_flush >= self.settings.store_flush_seconds:
                # Memory and checkpoints stay small; the store grows as anomalies come.
                state.store.flush()
                state.last_flush = time.monotonic()
            cp = Checkpoint(
                partition=p,
                offset=state.next_offset,
                detector_state=state.detector.state() if state.detector is not None else {},
                store_position=state.store.position(),
                pending=state.store.pending(),
                last_batch=state.last_batch,
                sensors=state.sensors,
                episode_state=state.episodes.state() if state.episodes is not None else {},
                pending_episodes=state.store.pending_episodes(),
            )
            self.checkpoints.save(cp)
            offsets[TopicPartition(self.settings.topic, p)] = OffsetAndMetadata(
                state.next_offset, "", -1
            )
        if commit and offsets and self._consumer is not None:
            try:
                self._consumer.commit(offsets)
            except Exception as exc:  # kafka-python's CommitFailedError, timeouts...
                # The checkpoints are written: a restart resumes from them anyway.
                raise CommitError(f"commit failed after the checkpoint: {exc}") from None
        self.metrics.checkpoints.inc()
        self._batches_since_checkpoint = 0
        self._moved_since_checkpoint = False
        self._last_checkpoint = time.monotonic()
        self._update_gauges()

    def _maybe_checkpoint(self) -> None:
        s = self.settings
        due = self._batches_since_checkpoint >= s.checkpoint_every_batches or (
            (self._batches_since_checkpoint > 0 or self._moved_since_checkpoint)
            and time.monotonic() - self._last_checkpoint >= s.checkpoint_every_seconds
        )
        if due:
            try:
                self.checkpoint()
            except KafkaIOError as exc:
                log.error("checkpoint_failed error=%s (will retry)", exc)

    def _update_gauges(self) -> None:
        m = self.metrics
        counts, known, warming, worst, fleet = [], 0, 0, 1.0, 0.0
        store_bytes = store_anoms = 0
        for state in self.states.values():
            st = state.store.stats()
            store_bytes += st["bytes"]
            store_anoms += st["total"]
            det = state.detector
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

    def _update_lag(self, force: bool = False) -> bool:
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
        if not force and now - self._last_lag_update < 2.0:
            return False
        self._last_lag_update = now
        assignment = list(self._consumer.assignment())
        if not assignment:
            return False
        ends = {tp: self._consumer.highwater(tp) for tp in assignment}
        unknown = [tp for tp, hw in ends.items() if hw is None]
        if unknown and force:
            try:
                ends.update(self._consumer.end_offsets(unknown))
            except Exception as exc:  # broker away: keep going, report later
                log.warning("end_offsets_failed error=%s", exc.__class__.__name__)
                return False
        caught_up = True
        for tp, end in ends.items():
            if end is None:
                caught_up = False
                continue
            lag = max(0, end - self._consumer.position(tp))
            self.metrics.consumer_lag.labels(partition=str(tp.partition)).set(lag)
            caught_up &= lag == 0 or tp.partition in self.unrestored  # paused: not consumed
        return caught_up

    def _flush_idle(self) -> None:
        """No traffic: pending anomalies still reach the store within store_flush_seconds.

        Safe without a checkpoint: a restore truncates the store to the
        checkpoint's position and puts its pending anomalies back.
        """
        now = time.monotonic()
        for state in list(self.states.values()):
            if now - state.last_flush >= self.settings.store_flush_seconds:
                state.store.flush()
                state.last_flush = now

    def _skip_undecodable(self, exc: BaseException) -> bool:
        """Find the record kafka-python cannot decode, dead-letter it and seek past it."""
        log.warning("poll_undecodable error=%s: %s", exc.__class__.__name__, str(exc)[:200])
        try:
            found = skip_undecodable(self._consumer, self.settings)
        except Exception as probe_exc:  # the broker went away meanwhile: poll again later
            log.warning("undecodable_probe_failed error=%s", probe_exc.__class__.__name__)
            return False
        if found is None:
            return False
        tp, offset, error = found
        message = f"{type(error).__name__}: {error}"
        self._send_dead_letter(tp.topic, tp.partition, offset, None, None, "undecodable", message)
        state = self.states.get(tp.partition)
        if state is not None and (state.next_offset is None or state.next_offset <= offset):
            state.next_offset = offset + 1
            state.store.advance({tp.partition: offset + 1})
            self._moved_since_checkpoint = True
        return True

    # ------------------------------------------------------------------ main loop
    def stop(self, *_args: object) -> None:
        self._stop = True

    def run(self) -> int:
        s = self.settings
        ensure_topics(
            s,
            {
                s.topic: s.partitions,
                s.anomalies_topic: s.partitions,
                s.episodes_topic: s.partitions,
                s.dlq_topic: 1,
            },
        )
        self._consumer = self._make_consumer()
        log.info("detector_started group=%s topic=%s store=%s", s.group, s.topic, s.store)
        try:
            backoff = 0.5
            while not self._stop:
                try:
                    polled = self._consumer.poll(timeout_ms=s.poll_timeout_ms)
                    backoff = 0.5
                except Exception as exc:  # kafka-python errors while the broker is away
                    if is_data_fault(exc) and self._skip_undecodable(exc):
                        continue
                    log.warning(
                        "poll_failed error=%s retry_in=%.1fs", exc.__class__.__name__, backoff
                    )
                    time.sleep(backoff)
                    backoff = min(backoff * 2, 10.0)
                    continue
                self.settle_partitions()
                if polled:
                    self._idle_since = None
                    for tp, records in polled.items():
                        self.handle(tp.partition, records)
                    self._maybe_checkpoint()
                    self._update_lag()
                    continue
                self._maybe_checkpoint()
                self._flush_idle()
                caught_up = self._update_lag(force=s.stop_after_idle is not None)
                if s.stop_after_idle is None:
                    continue
                if caught_up and (self.states or self.unrestored) and not self._undecided:
                    self._idle_since = self._idle_since or time.monotonic()
                    if time.monotonic() - self._idle_since >= s.stop_after_idle:
                        log.info("idle_stop seconds=%.1f", s.stop_after_idle)
                        break
                else:
                    self._idle_since = None
        finally:
            unrestored = dict(self.unrestored)
            self.close()
        if unrestored and not self._stop:
            # Idle stop with partitions never consumed: not a success (exit 2).
            raise StoreError(
                f"{len(unrestored)} partition(s) not consumed, their state does not load: "
                + "; ".join(f"partition {p}: {e}" for p, e in sorted(unrestored.items()))
            )
        return 0

    def close(self) -> None:
        try:
            if self.states:
                try:
                    self.checkpoint()
                except CommitError as exc:
                    # The checkpoints are on disk; the next start seeks to them.
                    log.warning("commit_failed_on_close error=%s", exc)
            for state in self.states.values():
                state.store.flush()  # after the checkpoint: a restore truncates this chunk
            self.states.clear()  # nothing left for the revoke callback of consumer.close()
        finally:
            if self._consumer is not None:
                self._consumer.close()
                self._consumer = None
            if self._producer is not None:
                self._producer.close(timeout=10)
                self._producer = None


def _after_last_stored(store: AnomalyStore) -> int:
    """One past the highest source offset of the store's last chunk (0 when empty).

    A chunk can be written in the middle of a poll, before the store's floor
    is raised: a store's floor alone may be below anomalies it holds.
    """
    if not store.chunks:
        return 0
    offsets = store.load_chunk(store.chunks[-1]).offsets
    return int(offsets.max()) + 1 if offsets.size else 0


def run_service(settings: ServiceSettings, config: DetectorConfig) -> int:
    """Run until SIGTERM/SIGINT (or idle, with --stop-after-idle); exit code 0."""
    service = DetectorService(settings, config)
    serve_metrics(service.registry, settings.metrics_address, settings.metrics_port)
    previous = {
        sig: signal.signal(sig, _stopper(service)) for sig in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        code = service.run()
    finally:
        for sig, h in previous.items():
            signal.signal(sig, h)
    log.info("detector_stopped readings=%d", service.processed_readings)
    return code


def _stopper(service: DetectorService) -> Any:
    def handler(signum: int, _frame: FrameType | None) -> None:
        log.warning("signal=%s finishing the batch in hand, then checkpoint and exit", signum)
        service.stop()

    return handler
