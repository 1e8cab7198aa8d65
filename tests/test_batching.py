"""Batches are whole time steps, whatever the chunking of the input."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.batching import iter_batches
from pipeline.recordings import Chunk


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.integers(1, 4), min_size=1, max_size=40),
    st.lists(st.integers(1, 30), min_size=1, max_size=10),
    st.integers(1, 7),
)
def test_batches_do_not_depend_on_chunking(step_sizes, chunk_sizes, steps):
    ts = np.repeat(np.arange(len(step_sizes), dtype=float), step_sizes)
    n = ts.size
    whole = Chunk(ts, np.arange(n), np.arange(n, dtype=float)[:, None], None, None, np.arange(n))
    bounds = np.minimum(np.cumsum([0, *chunk_sizes * (n // len(chunk_sizes) + 1)]), n)
    pieces = [
        whole.take(slice(a, b)) for a, b in zip(bounds[:-1], bounds[1:], strict=False) if b > a
    ]
    got = list(iter_batches(pieces, steps))
    expected = list(iter_batches([whole], steps))
    assert [k for k, _ in got] == list(range(len(got)))
    assert [b.timestamps.tolist() for _, b in got] == [b.timestamps.tolist() for _, b in expected]
    for _, b in got:
        assert np.unique(b.timestamps).size <= steps
    assert np.concatenate([b.lines for _, b in got]).tolist() == list(range(n))
