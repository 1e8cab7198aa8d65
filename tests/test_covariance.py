"""Online covariance against np.cov: any batch split, any merge order, saved and restored."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from pipeline import GroupedCovariance, WelfordCovariance
from pipeline.covariance import batch_moments, combine, grouped_moments
from pipeline.errors import SchemaError

finite = st.floats(-1e3, 1e3, allow_nan=False, allow_infinity=False)


@st.composite
def data_and_splits(draw):
    d = draw(st.integers(1, 6))
    n = draw(st.integers(2, 60))
    data = draw(arrays(np.float64, (n, d), elements=finite))
    cuts = sorted(draw(st.lists(st.integers(0, n), max_size=6)))
    return data, [0, *cuts, n]


def assert_cov_close(actual, expected):
    scale = max(float(np.max(np.abs(expected))), 1e-12)
    np.testing.assert_allclose(actual, expected, rtol=1e-9, atol=1e-9 * scale)


@settings(max_examples=300, deadline=None)
@given(data_and_splits())
def test_any_batch_split_matches_np_cov(case):
    data, bounds = case
    model = WelfordCovariance(data.shape[1])
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        model.update(data[a:b])
    assert model.count == data.shape[0]
    np.testing.assert_allclose(model.mean, data.mean(axis=0), rtol=1e-9, atol=1e-9)
    assert_cov_close(model.covariance, np.atleast_2d(np.cov(data, rowvar=False)))


@settings(max_examples=200, deadline=None)
@given(data_and_splits())
def test_merge_of_parts_equals_sequential_updates(case):
    data, bounds = case
    d = data.shape[1]
    parts = []
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        part = WelfordCovariance(d)
        part.update(data[a:b])
        parts.append(part)
    merged = WelfordCovariance(d)
    for part in reversed(parts):  # order does not matter
        merged += part
    sequential = WelfordCovariance(d)
    sequential.update(data)
    assert merged.count == sequential.count
    assert_cov_close(merged.covariance, sequential.covariance)
    assert_cov_close(merged.covariance, np.atleast_2d(np.cov(data, rowvar=False)))


def test_state_round_trip_and_savez(tmp_path, rng):
    model = WelfordCovariance(3)
    model.update(rng.normal(size=(100, 3)))
    np.savez(tmp_path / "s.npz", **model.state())
    with np.load(tmp_path / "s.npz", allow_pickle=False) as f:
        restored = WelfordCovariance.from_state(dict(f))
    more = rng.normal(size=(50, 3))
    model.update(more)
    restored.update(more)
    np.testing.assert_array_equal(model.covariance, restored.covariance)


@pytest.mark.parametrize(
    ("shape", "n_features"),
    [((5, 3), 4), ((5,), 4), ((2, 2, 2), 2)],
)
def test_wrong_shapes_are_schema_errors(shape, n_features):
    with pytest.raises(SchemaError, match="expected a batch of shape"):
        WelfordCovariance(n_features).update(np.zeros(shape))


def test_edge_shapes_one_sample_one_feature_integers():
    model = WelfordCovariance(1)
    model.update(np.array([[3]]))  # integer dtype, one reading
    assert model.count == 1 and model.covariance.shape == (1, 1)
    assert model.covariance[0, 0] == 0.0  # undefined below two readings: reported as zero
    model.update(np.array([5]))
    assert model.covariance[0, 0] == pytest.approx(2.0)


def test_empty_batch_leaves_state_unchanged(rng):
    model = WelfordCovariance(2)
    model.update(rng.normal(size=(10, 2)))
    before = model.state()
    model.update(np.zeros((0, 2)))
    for key, value in before.items():
        np.testing.assert_array_equal(value, model.state()[key])


def test_forgetting_tracks_a_shift(rng):
    model = WelfordCovariance(2, memory=200)
    for _ in range(20):
        model.update(rng.normal(size=(100, 2)))
    for _ in range(20):
        model.update(rng.normal(loc=10.0, size=(100, 2)))
    assert np.all(np.abs(model.mean - 10.0) < 0.5)
    assert model.count < 400  # effective memory, not everything seen


def test_wide_batch_uses_chunked_path(rng):
    x = rng.normal(size=(300, 80)) + 50.0
    n, mean, m2 = batch_moments(x)
    assert_cov_close(m2 / (n - 1), np.cov(x, rowvar=False))


@settings(max_examples=150, deadline=None)
@given(
    st.integers(1, 5),
    st.integers(1, 8),
    st.integers(0, 2**32 - 1),
)
def test_grouped_moments_match_per_group_np_cov(d, g, seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(g, 12 * g + 1))
    x = rng.normal(size=(n, d)) * rng.uniform(0.1, 100, size=d) + rng.uniform(-100, 100, d)
    groups = rng.integers(0, g, size=n).astype(np.intp)
    counts, means, m2 = grouped_moments(x, groups, g)
    for k in range(g):
        rows = x[groups == k]
        assert counts[k] == rows.shape[0]
        if rows.shape[0] >= 2:
            assert_cov_close(m2[k] / (counts[k] - 1), np.atleast_2d(np.cov(rows, rowvar=False)))


def test_grouped_covariance_wide_and_narrow_agree(rng):
    x = rng.normal(size=(500, 12))
    groups = rng.integers(0, 5, size=500).astype(np.intp)
    model = GroupedCovariance(5, 12)
    model.update(groups[:250], x[:250])
    model.update(groups[250:], x[250:])
    for k in range(5):
        assert_cov_close(model.covariance[k], np.cov(x[groups == k], rowvar=False))
    assert_cov_close(model.total().covariance, np.cov(x, rowvar=False))


def test_grouped_merge_equals_single_stack(rng):
    x = rng.normal(size=(400, 3))
    groups = rng.integers(0, 4, size=400).astype(np.intp)
    whole = GroupedCovariance(4, 3)
    whole.update(groups, x)
    a, b = GroupedCovariance(4, 3), GroupedCovariance(2, 3)
    a.update(groups[:200], x[:200])
    low = groups[200:] < 2
    b.update(groups[200:][low], x[200:][low])
    rest = GroupedCovariance(4, 3)
    rest.update(groups[200:][~low], x[200:][~low])
    a.merge(b).merge(rest)
    assert_cov_close(a.covariance, whole.covariance)
    restored = GroupedCovariance.from_state(a.state())
    np.testing.assert_array_equal(restored.m2, a.m2)


def test_combine_with_empty_side_is_exact(rng):
    mean, m2 = rng.normal(size=3), rng.normal(size=(3, 3))
    n, mean2, m22 = combine(5.0, mean, m2, 0.0, np.zeros(3), np.zeros((3, 3)))
    assert n == 5.0
    np.testing.assert_array_equal(mean2, mean)
    np.testing.assert_array_equal(m22, m2)


def test_grouped_update_rejects_mismatched_lengths(rng):
    model = GroupedCovariance(2, 3)
    with pytest.raises(SchemaError, match="same n"):
        model.update(np.zeros(4, dtype=np.intp), rng.normal(size=(5, 3)))
    with pytest.raises(SchemaError, match=r"in \[0, 2\)"):
        model.update(np.array([0, 2]), rng.normal(size=(2, 3)))
