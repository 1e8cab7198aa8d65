"""Dead letters: a refused record's bytes and why, for the dead-letter topic.

A record the detector refuses goes to the dead-letter topic with its original
key and value and the headers ``reason``, ``error``, ``source-topic``,
``source-partition`` and ``source-offset``.  A value too large for the
dead-letter topic (a gzip record that inflates to hundreds of megabytes, say)
is cut to ``max_bytes`` and the headers say so: ``truncated`` (``true``),
``original-size`` (bytes) and ``original-blake2b`` (hex digest of the whole
original value), so an operator can still tell which record it was.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

# Below the broker's default message.max.bytes (1 MiB), with room for headers.
DEFAULT_MAX_BYTES = 1_000_000


@dataclass(frozen=True)
class DeadLetter:
    """What goes to the dead-letter topic for one refused record."""

    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]]


def dead_letter(
    *,
    topic: str,
    partition: int,
    offset: int,
    key: object,
    value: object,
    reason: str,
    message: str,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> DeadLetter:
    """The dead letter of the record at ``topic:partition:offset``.

    >>> d = dead_letter(topic="t", partition=0, offset=5, key=None, value=b"x" * 10,
    ...                 reason="too_large", message="big", max_bytes=4)
    >>> d.value, dict(d.headers)["original-size"], dict(d.headers)["truncated"]
    (b'xxxx', b'10', b'true')
    """
    raw = value if isinstance(value, bytes) else b""
    headers = [
        ("reason", reason.encode()),
        ("error", message[:1000].encode("utf-8", "replace")),
        ("source-topic", topic.encode("utf-8", "replace")),
        ("source-partition", str(partition).encode()),
        ("source-offset", str(offset).encode()),
    ]
    if len(raw) > max_bytes:
        headers += [
            ("truncated", b"true"),
            ("original-size", str(len(raw)).encode()),
            ("original-blake2b", hashlib.blake2b(raw, digest_size=32).hexdigest().encode()),
        ]
        raw = raw[:max_bytes]
    return DeadLetter(key if isinstance(key, bytes) else None, raw, headers)
