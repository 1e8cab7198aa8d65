"""The partitions a detector owns: restored on assignment, checkpointed on revocation.

A partition's state is restored on its own (one partition's damaged file
never stops the others); one that does not load is paused, never consumed
without its state; one without a checkpoint waits, paused, until
:meth:`Assignments.settle` has asked the broker for its committed offset
(never from inside kafka-python's rebalance callback).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from consumers.checkpoint import CheckpointDir, StateError, one_line
from consumers.partition_state import (
    PartitionState,
    apply_checkpoint,
    keep_for_rebuild,
    new_partition,
    start_afresh,
    store_dir,
)
from pipeline.errors import StoreError
from pipeline.metrics import DetectorMetrics
from pipeline.sites import SiteConfigs
from pipeline.store import MANIFEST

log = logging.getLogger(__name__)


class Assignments:
    """The partition states of one detector, and those it owns but cannot consume.

    Parameters
    ----------
    root : Path
        The store directory (``STORE``).
    checkpoints : CheckpointDir
    sites : SiteConfigs
    metrics : DetectorMetrics
    consumer : callable
        Returns the Kafka consumer (created after this object).
    checkpoint : callable
        ``checkpoint(partitions, commit=False)``: writes the partitions' checkpoints.
    """

    def __init__(
        self,
        root: Path,
        checkpoints: CheckpointDir,
        sites: SiteConfigs,
        metrics: DetectorMetrics,
        consumer: Callable[[], Any],
        checkpoint: Callable[..., None],
    ) -> None:
        self.root = root
        self.checkpoints = checkpoints
        self.sites = sites
        self.metrics = metrics
        self._consumer = consumer
        self._checkpoint = checkpoint
        self.states: dict[int, PartitionState] = {}
        # Partitions owned but paused: their state does not load (partition -> error).
        self.unrestored: dict[int, str] = {}
        # Partitions assigned without a checkpoint, paused until settle().
        self.undecided: dict[int, tuple[Any, PartitionState]] = {}

    @property
    def consumer(self) -> Any:
        return self._consumer()

    def assign(self, assigned: list[Any]) -> None:
        """Restore each newly assigned partition, each on its own.

        Runs inside kafka-python's rebalance callback, where no broker call can
        be made (the consumer's IO thread is blocked) and an exception would be
        swallowed: so every partition's failure is caught here, and that
        partition alone is paused (see :meth:`not_restored`).  A partition
        without a checkpoint is paused too until :meth:`settle`, outside the
        callback, has asked the broker for its committed offset.
        """
        self.metrics.rebalances.inc()
        for tp in assigned:
            if tp.partition in self.states:
                continue
            self.unrestored.pop(tp.partition, None)  # tried again on every assignment
            try:
                self._restore(tp)
            except StateError as exc:
                self.not_restored(tp, exc.path, exc)
            except StoreError as exc:
                path = getattr(exc, "path", store_dir(self.root, tp.partition) / MANIFEST)
                self.not_restored(tp, path, exc)
            except Exception as exc:  # one partition must never stop the others
                self.not_restored(tp, self.checkpoints.path(tp.partition), exc)
        self.update_gauges()

    def _restore(self, tp: Any) -> None:
        cp = self.checkpoints.load(tp.partition)  # StateError naming a damaged file
        state = new_partition(self.root, tp.partition, self.sites)  # StoreError: bad manifest
        if cp is None:
            # Never checkpointed, or the checkpoint was lost: only the committed
            # offset tells which, and the broker cannot be asked from here.
            self.undecided[tp.partition] = (tp, state)
            self.consumer.pause(tp)
            return
        apply_checkpoint(state, cp, self.checkpoints.path(tp.partition), self.root, self.sites)
        self.consumer.seek(tp, cp.offset)
        self.states[tp.partition] = state
        log.info("partition_restored partition=%d offset=%d", tp.partition, cp.offset)

    def not_restored(self, tp: Any, path: Path, exc: BaseException) -> None:
        """Pause a partition whose state does not load: never consume it without its state."""
        self.undecided.pop(tp.partition, None)
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
            self.consumer.pause(tp)
        except Exception as pause_exc:  # still safe: handle() rewinds what it cannot score
            log.error("pause_failed partition=%d error=%s", tp.partition, one_line(pause_exc))

    def settle(self) -> None:
        """Decide the partitions assigned without a checkpoint (outside the callback).

        No committed offset: nothing of the partition was ever checkpointed, its
        stores (if any) are from a run that died before its first checkpoint and
        the records behind them are consumed again: the stores start afresh.

        A committed offset: the checkpoint was lost.  The stores are kept whole,
        their floors raised past every stored anomaly, and the partition is read
        again from the earliest retained offset with fresh models: the models
        are rebuilt from the retained records (exactly, when the topic still
        holds the whole partition), replayed anomalies already stored are
        dropped by the stores, and the batch numbers seen (duplicate detection)
        come back with them.
        """
        if not self.undecided:
            return
        for p, (tp, state) in list(self.undecided.items()):
            try:
                committed = self.consumer.committed(tp)
            except Exception as exc:  # broker away: stay paused, try again next poll
                log.warning("committed_offset_failed partition=%d error=%s", p, one_line(exc))
                continue
            del self.undecided[p]
            try:
                if committed is None:
                    start_afresh(state, self.root, self.sites)
                else:
                    self._rebuild(tp, state, int(committed))
            except StoreError as exc:
                path = getattr(exc, "path", state.default.store.directory / MANIFEST)
                self.not_restored(tp, path, exc)
                continue
            self.states[p] = state
            self.consumer.resume(tp)
        self.update_gauges()

    def _rebuild(self, tp: Any, state: PartitionState, committed: int) -> None:
        floors = keep_for_rebuild(state, self.root, self.sites)
        self.consumer.seek_to_beginning(tp)
        self.metrics.partition_rebuilds.inc()
        log.warning(
            "state_rebuild partition=%d reason=checkpoint_lost file=%s committed=%d "
            "store_floor=%d from=earliest (store kept: %d chunks; models rebuilt from the "
            "earliest retained offset; sites=%s)",
            state.partition,
            self.checkpoints.path(state.partition),
            committed,
            floors[0],
            len(state.default.store.chunks),
            ",".join(state.sites),
        )

    def update_gauges(self) -> None:
        self.metrics.partitions.set(len(self.states))
        self.metrics.partitions_paused.set(len(self.unrestored))

    def revoke(self, partitions: list[int]) -> None:
        for p in partitions:
            self.undecided.pop(p, None)
            self.unrestored.pop(p, None)
        owned = [p for p in partitions if p in self.states]
        if owned:
            # Inside kafka-python's IO thread a commit would block it: write the
            # checkpoints only; the next owner seeks to them (commits may lag,
            # never lead).
            try:
                self._checkpoint(owned, commit=False)
            except Exception as exc:  # a listener must not raise into kafka-python
                log.error("checkpoint_on_revoke_failed partitions=%s error=%s", owned, exc)
        for p in owned:
            self.states.pop(p).flush()
            try:
                self.metrics.consumer_lag.remove(str(p))
            except KeyError:
                pass
        self.update_gauges()
