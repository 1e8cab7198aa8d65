"""Cutting a stream of readings into the engine's batches: whole time steps.

A time step is a run of consecutive readings with the same timestamp (a fleet
snapshot).  A batch is ``steps`` consecutive time steps.  The embedded run,
the replayer and the simulator all cut with this function, so the Kafka
detector sees the very batches the embedded run scores (split by key group,
which the engine's semantics make irrelevant).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np

from pipeline.recordings.spec import Chunk


def iter_batches(chunks: Iterable[Chunk], steps: int) -> Iterator[tuple[int, Chunk]]:
    """Yield ``(batch_number, batch)`` with ``steps`` time steps per batch.

    Parameters
    ----------
    chunks : iterable of Chunk
        Readings in stream order, in chunks of any size.
    steps : int
        Time steps per batch.

    >>> import numpy as np
    >>> from pipeline.recordings.spec import Chunk
    >>> ts = np.array([0.0, 0.0, 1.0, 1.0, 2.0, 3.0, 3.0])
    >>> c = Chunk(ts, np.arange(7), np.zeros((7, 1)), None, None, np.arange(7))
    >>> [(k, b.timestamps.tolist()) for k, b in iter_batches([c.take(slice(0, 3)),
    ...                                                       c.take(slice(3, 7))], 2)]
    [(0, [0.0, 0.0, 1.0, 1.0]), (1, [2.0, 3.0, 3.0])]
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    pending: list[Chunk] = []
    pending_batch = 0
    step_base = -1  # global index of the last step seen
    last_ts: float | None = None
    for chunk in chunks:
        n = len(chunk)
        if n == 0:
            continue
        ts = chunk.timestamps
        new_step = np.empty(n, dtype=bool)
        new_step[0] = last_ts is None or ts[0] != last_ts
        np.not_equal(ts[1:], ts[:-1], out=new_step[1:])
        step = step_base + np.cumsum(new_step)
        batch = step // steps
        step_base = int(step[-1])
        last_ts = float(ts[-1])
        cuts = np.flatnonzero(batch[1:] != batch[:-1]) + 1
        bounds = [0, *cuts.tolist(), n]
        for a, b in zip(bounds[:-1], bounds[1:], strict=True):
            k = int(batch[a])
            if pending and k != pending_batch:
                yield pending_batch, Chunk.concat(pending)
                pending = []
            pending.append(chunk.take(slice(a, b)))
            pending_batch = k
    if pending:
        yield pending_batch, Chunk.concat(pending)
