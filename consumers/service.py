"""The detector service: a Kafka consumer-group member around the engine.

Per partition it owns, the service keeps, per site (``pipeline/sites.py``),
one engine (:class:`Detector`) and one anomaly store (``STORE/partition-NNNN``
for the default site, ``STORE/sites/NAME/partition-NNNN`` for the others),
and the (producer, group) batch numbers already processed.  Records are decoded (bad ones go to the
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

import logging
import signal
import time
from types import FrameType
from typing import Any

from prometheus_client import CollectorRegistry

from consumers.assignment import Assignments
from consumers.checkpoint import CheckpointDir
from consumers.checkpointing import Checkpointer
from consumers.controls import apply_control
from consumers.gauges import LagMonitor, update_model_gauges
from consumers.partition_state import PartitionState, new_site
from consumers.publishing import EventPublisher
from consumers.records import Accepted, DeadLetters, RecordChecker, is_control
from consumers.scoring import Scorer
from consumers.settings import ServiceSettings
from consumers.undecodable import is_data_fault, skip_undecodable
from pipeline.batch_math import warm_kernels
from pipeline.config import DetectorConfig
from pipeline.errors import StoreError
from pipeline.metrics import DetectorMetrics, serve_metrics
from pipeline.sites import SiteConfigs
from pipeline.wire import WireError
from producers.kafka_client import (
    CommitError,
    KafkaIOError,
    ensure_topics,
    make_consumer,
    retry_broker_call,
)
from producers.rdkafka_producer import RdKafkaProducer

log = logging.getLogger(__name__)


class DetectorService:
    """Consume, score, store, publish; checkpoint and commit.

    Parameters
    ----------
    settings : ServiceSettings
    config : DetectorConfig or SiteConfigs
        The engine's configuration: one for every site, or one per site.
    registry : CollectorRegistry, optional
        Metrics go here (a fresh one per test).
    """

    def __init__(
        self,
        settings: ServiceSettings,
        config: DetectorConfig | SiteConfigs,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.settings = settings
        self.sites = config if isinstance(config, SiteConfigs) else SiteConfigs(config)
        self.config = self.sites.default
        self.registry = registry if registry is not None else CollectorRegistry()
        self.metrics = DetectorMetrics(
            self.registry, sites=self.sites.known, max_site_labels=self.sites.max_sites
        )
        self.metrics.up_since.set(time.time())
        self.checkpoints = CheckpointDir(
            settings.checkpoint_dir or settings.store / "checkpoints", settings.topic
        )
        self.assignments = Assignments(
            settings.store,
            self.checkpoints,
            self.sites,
            self.metrics,
            consumer=lambda: self._consumer,
            checkpoint=self.checkpoint,
        )
        self.checker = RecordChecker(settings, self.sites)
        self.dead_letters = DeadLetters(settings, self.metrics, lambda: self.producer, self._retry)
        self.events = EventPublisher(settings, self.metrics, lambda: self.producer, self._retry)
        self.scorer = Scorer(settings, self.metrics, self.events, self.dead_letters.record)
        self._consumer: Any = None
        self._producer: RdKafkaProducer | None = None
        self._stop = False
        self.checkpointer = Checkpointer(
            settings,
            self.checkpoints,
            self.metrics,
            states=lambda: self.states,
            consumer=lambda: self._consumer,
            producer=lambda: self._producer,
            batches=lambda: self.scorer.batches,
        )
        self.lag = LagMonitor(self.metrics, lambda: self._consumer, lambda: self.unrestored)
        self._idle_since: float | None = None

    @property
    def states(self) -> dict[int, PartitionState]:
        return self.assignments.states

    @property
    def unrestored(self) -> dict[int, str]:
        return self.assignments.unrestored

    @property
    def processed_readings(self) -> int:
        return self.scorer.readings

    def settle_partitions(self) -> None:
        """Decide the partitions assigned without a checkpoint (see :meth:`Assignments.settle`)."""
        self.assignments.settle()

    # ------------------------------------------------------------------ clients
    @property
    def producer(self) -> RdKafkaProducer:
        if self._producer is None:
            # Events and dead letters wait out a broker outage of any length (the
            # checkpoint's flush fails meanwhile and is retried): never dropped.
            self._producer = RdKafkaProducer(
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
                service.assignments.revoke([tp.partition for tp in revoked])

            def on_partitions_assigned(self, assigned: Any) -> None:
                service.assignments.assign(list(assigned))

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

    # ------------------------------------------------------------------ records
    def _retry(self, what: str, call: Any) -> Any:
        """``call()`` retried while the broker does not answer (None: gave up)."""
        return retry_broker_call(what, call, stopped=lambda: self._stop)

    def handle(self, partition: int, records: list[Any]) -> None:
        """Process the records polled from one partition, in offset order.

        Every record is scored or dead-lettered: an unexpected exception while
        checking one is its dead letter (``internal_error``).  The partition's
        next offset moves past a record only once its fate is final, so a
        checkpoint never claims a record of a batch not yet scored.  A run
        scored in one engine call is one batch number of one site.
        """
        state = self.states.get(partition)
        if state is None:
            self._without_state(partition, records)
            return
        if records:
            self.checkpointer.moved = True
        run: list[Accepted] = []
        seen: dict[tuple[str, int], int] = {}  # batch numbers of `run`, not yet scored
        dead_letter = self.dead_letters.record
        for record in records:
            if is_control(record):
                # An operator's action, in order with the readings: what came
                # before it is scored against the old models, what follows
                # against the new ones (pipeline/control.py).
                if run:
                    self.scorer.score_run(state, run, seen)
                    run, seen = [], {}
                apply_control(state, record, self.dead_letters, self.metrics, self.events)
                state.next_offset = record.offset + 1
                continue
            try:
                batch = self.checker.check(state, record, seen)
                site = batch.meta.site
                if site not in state.sites:
                    state.sites[site] = new_site(self.settings.store, partition, site, self.sites)
            except WireError as exc:
                dead_letter(record, exc.reason, str(exc))
                if not run:
                    state.next_offset = record.offset + 1
                continue
            except Exception as exc:  # a bug, or an input no check foresaw: never a crash
                dead_letter(record, "internal_error", f"{type(exc).__name__}: {exc}")
                if not run:
                    state.next_offset = record.offset + 1
                continue
            if run and (run[-1].batch.meta.batch != batch.meta.batch or run[-1].site != site):
                self.scorer.score_run(state, run, seen)
                run, seen = [], {}
                state.next_offset = record.offset  # everything before it is final
            seen[(batch.meta.producer_id, batch.meta.group)] = batch.meta.batch
            if not state.sites[site].sensors:
                state.sites[site].sensors = tuple(batch.meta.sensors)
            run.append(Accepted(record, batch))
        if run:
            self.scorer.score_run(state, run, seen)
        if records:
            state.next_offset = int(records[-1].offset) + 1
        state.advance()

    def _without_state(self, partition: int, records: list[Any]) -> None:
        """Records of a partition with no state: read again later, never dropped silently."""
        from kafka import TopicPartition

        tp = TopicPartition(self.settings.topic, partition)
        if not records or tp not in self._consumer.assignment():
            return  # revoked while polling: its next owner reads them from its checkpoint
        self._consumer.seek(tp, records[0].offset)  # rewound: nothing is skipped
        if partition in self.unrestored or partition in self.assignments.undecided:
            return  # paused; these were fetched before the pause took effect
        log.warning("partition_without_state partition=%d offset=%d", partition, records[0].offset)
        self.assignments.assign([tp])

    # ------------------------------------------------------------------ checkpoints
    def checkpoint(self, partitions: list[int] | None = None, commit: bool = True) -> None:
        """Make events durable, write checkpoints, then commit offsets (see Checkpointer)."""
        self.checkpointer.write(partitions, commit)
        update_model_gauges(self.metrics, self.states.values())

    def _maybe_checkpoint(self) -> None:
        if self.checkpointer.due():
            try:
                self.checkpoint()
            except KafkaIOError as exc:
                log.error("checkpoint_failed error=%s (will retry)", exc)

    def _flush_idle(self) -> None:
        """No traffic: pending anomalies still reach the store within store_flush_seconds.

        Safe without a checkpoint: a restore truncates the store to the
        checkpoint's position and puts its pending anomalies back.
        """
        now = time.monotonic()
        for state in list(self.states.values()):
            if now - state.last_flush >= self.settings.store_flush_seconds:
                state.flush()

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
        self.dead_letters.send(tp.topic, tp.partition, offset, None, None, "undecodable", message)
        state = self.states.get(tp.partition)
        if state is not None and (state.next_offset is None or state.next_offset <= offset):
            state.next_offset = offset + 1
            state.advance()
            self.checkpointer.moved = True
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
        loaded = warm_kernels()  # before joining the group: not in the first batch's time
        if loaded is not None:
            log.info("engine_kernels_loaded seconds=%.2f", loaded)
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
                self.assignments.settle()
                if polled:
                    self._idle_since = None
                    for tp, records in polled.items():
                        self.handle(tp.partition, records)
                    self._maybe_checkpoint()
                    self.lag.update()
                    continue
                self._maybe_checkpoint()
                self._flush_idle()
                caught_up = self.lag.update(force=s.stop_after_idle is not None)
                if s.stop_after_idle is None:
                    continue
                undecided = self.assignments.undecided
                if caught_up and (self.states or self.unrestored) and not undecided:
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
                state.flush()  # after the checkpoint: a restore truncates this chunk
            self.states.clear()  # nothing left for the revoke callback of consumer.close()
        finally:
            if self._consumer is not None:
                self._consumer.close()
                self._consumer = None
            if self._producer is not None:
                self._producer.close(timeout=10)
                self._producer = None


def run_service(settings: ServiceSettings, config: DetectorConfig | SiteConfigs) -> int:
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
