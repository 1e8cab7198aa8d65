"""Control records: an operator's action, applied in order with the readings."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from consumers.partition_state import PartitionState
from consumers.publishing import EventPublisher
from consumers.records import DeadLetters
from pipeline.control import ControlError, decode_control
from pipeline.metrics import DetectorMetrics
from pipeline.names import turbine_id

log = logging.getLogger(__name__)


def apply_control(
    state: PartitionState,
    record: Any,
    dead_letters: DeadLetters,
    metrics: DetectorMetrics,
    events: EventPublisher,
) -> None:
    """Re-baseline the turbines a control record names, in every site that knows them.

    A record that does not parse, or names a turbine no site of the partition
    has a model of, is a dead letter ``bad_control`` (the known ones are still
    re-baselined).
    """
    try:
        msg = decode_control(record.value)
    except ControlError as exc:
        dead_letters.record(record, "bad_control", str(exc))
        return
    ids = np.array([turbine_id(t) for t in msg.turbines], dtype=np.int64)
    found = np.zeros(ids.size, dtype=bool)
    per_site = []
    for site in state.sites.values():
        if site.detector is not None:
            mine = site.detector.turbines.find(ids) >= 0
            found |= mine
            if mine.any():
                per_site.append((site, site.detector, ids[mine]))
    if not found.all():
        missing = msg.turbines[int(np.flatnonzero(~found)[0])]
        dead_letters.record(
            record,
            "bad_control",
            f"partition {state.partition} has no model of turbine {missing!r} (sent "
            "with the key of its key group?)",
        )
    for site, det, known in per_site:
        det.rebaseline(known)
        metrics.rebaselines.labels(reason="operator").inc(int(known.size))
        log.warning(
            "rebaseline partition=%d offset=%d turbines=%s reason=operator note=%s site=%s",
            state.partition,
            record.offset,
            ",".join(det.names.labels(known)),
            msg.reason[:200],
            site.site,
        )
        events.rebaselines(state.partition, site, known, "operator", record.offset, msg.reason)
