"""Checkpoints in order: events made durable, every partition's checkpoint written,
then the offsets committed, so committed offsets never run ahead of a checkpoint."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from consumers.checkpoint import CheckpointDir
from consumers.partition_state import PartitionState, checkpoint_of
from pipeline.metrics import DetectorMetrics
from producers.kafka_client import CommitError, KafkaIOError


class Checkpointer:
    """Writes the owned partitions' checkpoints and commits their offsets; knows when.

    ``states``, ``consumer``, ``producer`` and ``batches`` return the
    service's partition states, its consumer and event producer (None before
    they exist) and the engine batches scored so far.
    """

    def __init__(
        self,
        settings: Any,
        checkpoints: CheckpointDir,
        metrics: DetectorMetrics,
        states: Callable[[], dict[int, PartitionState]],
        consumer: Callable[[], Any],
        producer: Callable[[], Any],
        batches: Callable[[], int],
    ) -> None:
        self.settings = settings
        self.checkpoints = checkpoints
        self.metrics = metrics
        self._states = states
        self._consumer = consumer
        self._producer = producer
        self._batches = batches
        self._batches_at_last = 0
        # A poll that only dead-letters moves a position too: it is checkpointed
        # on time like a scored batch, or a stream ending in dead letters would
        # never see its checkpoint reach its end.
        self.moved = False
        self._last = time.monotonic()

    def due(self) -> bool:
        s = self.settings
        since = self._batches() - self._batches_at_last
        return since >= s.checkpoint_every_batches or (
            (since > 0 or self.moved)
            and time.monotonic() - self._last >= s.checkpoint_every_seconds
        )

    def write(self, partitions: list[int] | None = None, commit: bool = True) -> None:
        """Make events durable, write checkpoints, then commit offsets (in that order)."""
        from kafka import TopicPartition
        from kafka.structs import OffsetAndMetadata

        producer = self._producer()
        if producer is not None:
            try:
                producer.flush(timeout=30)
            except Exception as exc:  # records not delivered in time (KafkaIOError) and friends
                raise KafkaIOError(f"flushing events before a checkpoint failed: {exc}") from None
        states = self._states()
        owned = sorted(states if partitions is None else partitions)
        offsets = {}
        for p in owned:
            state = states[p]
            if state.next_offset is None:
                continue
            if time.monotonic() - state.last_flush >= self.settings.store_flush_seconds:
                # Memory and checkpoints stay small; the store grows as anomalies come.
                state.flush()
            self.checkpoints.save(checkpoint_of(state, state.next_offset))
            offsets[TopicPartition(self.settings.topic, p)] = OffsetAndMetadata(
                state.next_offset, "", -1
            )
        consumer = self._consumer()
        if commit and offsets and consumer is not None:
            try:
                consumer.commit(offsets)
            except Exception as exc:  # kafka-python's CommitFailedError, timeouts...
                # The checkpoints are written: a restart resumes from them anyway.
                raise CommitError(f"commit failed after the checkpoint: {exc}") from None
        self.metrics.checkpoints.inc()
        self._batches_at_last = self._batches()
        self.moved = False
        self._last = time.monotonic()
