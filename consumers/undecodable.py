"""Records the Kafka client cannot decode: find them, so the service can skip past them.

kafka-python raises inside ``poll`` when a fetched record batch cannot be
unpacked (a codec it cannot decompress, a corrupt batch, a header key that is
not UTF-8), and raises again on every later ``poll``: the position never moves,
and the exception does not say which partition it came from.  The service
therefore probes each partition that has records left, at its position, with a
throwaway consumer outside the group; the one whose poll raises the same kind
of error is the culprit, and the service dead-letters that offset and seeks one
past it.  A batch kafka-python cannot unpack at all is thus skipped offset by
offset, each offset with its own dead letter.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from producers.kafka_client import KafkaSettings, make_consumer

log = logging.getLogger(__name__)
Found = tuple[Any, int, BaseException]  # (topic partition, offset, error)


def is_data_fault(exc: BaseException) -> bool:
    """Whether a ``poll`` error comes from the records themselves (not the broker)."""
    from kafka import errors

    if isinstance(exc, errors.CorruptRecordError | errors.UnsupportedCodecError):
        return True
    if isinstance(exc, errors.KafkaError | OSError):
        return False  # connection trouble, timeouts, rebalances: retried with backoff
    # UnicodeDecodeError (a header key), struct.error, ValueError... from unpacking
    return isinstance(exc, Exception)


def find_undecodable(
    settings: KafkaSettings, positions: dict[Any, int], timeout_s: float = 5.0
) -> Found | None:
    """The first (topic partition, offset, error) among ``positions`` whose records raise.

    Parameters
    ----------
    settings : KafkaSettings
    positions : dict of TopicPartition to int
        The consumer's position (next offset) of each partition that has records left.
    """
    for tp, offset in sorted(positions.items(), key=lambda kv: (kv[0].topic, kv[0].partition)):
        probe = make_consumer(settings, group_id=None, max_poll_records=1, enable_auto_commit=False)
        try:
            probe.assign([tp])
            probe.seek(tp, offset)
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline:
                try:
                    if probe.poll(timeout_ms=500, max_records=1):
                        break  # this partition decodes
                except Exception as exc:  # the records' fault, or the broker's
                    if is_data_fault(exc):
                        return tp, offset, exc
                    log.warning("probe_failed partition=%d error=%s", tp.partition, exc)
                    break
        finally:
            probe.close()
    return None


def skip_undecodable(consumer: Any, settings: KafkaSettings) -> Found | None:
    """Probe ``consumer``'s partitions that have records left; seek one past the culprit.

    Returns (topic partition, offset skipped, error), or None when every
    partition decodes (the error was not the records').
    """
    positions = {}
    for tp in list(consumer.assignment()):
        pos = consumer.position(tp)
        end = consumer.highwater(tp)
        if end is None or pos < end:
            positions[tp] = pos
    found = find_undecodable(settings, positions)
    if found is not None:
        consumer.seek(found[0], found[1] + 1)
    return found
