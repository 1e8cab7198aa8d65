"""pipeline/distinct.py against its oracle, ``np.unique(..., return_inverse=True)``."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.distinct import DENSE_SPAN_MIN, HEAD_ROWS, distinct_ids, distinct_sorted


def assert_unique(got: tuple[np.ndarray, np.ndarray], values: np.ndarray) -> None:
    want_uniq, want_inv = np.unique(values, return_inverse=True)
    uniq, inv = got
    assert uniq.dtype == want_uniq.dtype and inv.dtype == want_inv.dtype
    np.testing.assert_array_equal(uniq, want_uniq)
    np.testing.assert_array_equal(inv, want_inv.ravel())


@given(
    n=st.integers(1, 3000),
    k=st.integers(1, 6),
    late=st.integers(0, 3),
    seed=st.integers(0, 2**16),
)
@settings(max_examples=60, deadline=None)
def test_distinct_ids_even_with_turbines_after_the_head(n, k, late, seed):
    """Ids far apart (the search among the head's turbines), some first seen late."""
    rng = np.random.default_rng(seed)
    ids = rng.choice(np.array([-(2**62), -7, 3, 2**40, 2**62, 11], dtype=np.int64)[:k], n)
    if late and n > HEAD_ROWS + 76:  # turbines first seen after the rows looked at first
        ids[HEAD_ROWS + 76 + rng.integers(0, n - HEAD_ROWS - 76, late)] = 99 + np.arange(late)
    assert_unique(distinct_ids(ids), ids)


@given(
    n=st.integers(0, 5000),
    span=st.sampled_from([1, 7, 100, DENSE_SPAN_MIN - 1, DENSE_SPAN_MIN + 5, 10**9]),
    seed=st.integers(0, 2**16),
)
@settings(max_examples=80, deadline=None)
def test_distinct_ids_of_small_non_negative_ids(n, span, seed):
    """The count per id (small spans), and the other paths just past it."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, span, n).astype(np.int64)
    assert_unique(distinct_ids(ids), ids)


@given(
    n=st.integers(0, 3000),
    repeats=st.integers(1, 5),
    ordered=st.booleans(),
    seed=st.integers(0, 2**16),
)
@settings(max_examples=80, deadline=None)
def test_distinct_sorted(n, repeats, ordered, seed):
    rng = np.random.default_rng(seed)
    steps = 1.7e9 + np.cumsum(rng.integers(0, 3, n)).astype(float)  # ties (step 0) too
    values = np.repeat(steps, rng.integers(1, repeats + 1, n))
    if not ordered and values.size > 1:
        rng.shuffle(values)
    assert_unique(distinct_sorted(values), values)


def test_distinct_sorted_of_nan_falls_back_to_numpy():
    values = np.array([1.0, np.nan, 2.0])
    assert_unique(distinct_sorted(values), values)


def test_distinct_ids_of_other_integer_types():
    for dtype in (np.int32, np.uint8, np.uint32, np.uint64):
        ids = np.array([5, 1, 5, 200, 1], dtype=dtype)
        assert_unique(distinct_ids(ids), ids)
