"""Squared Mahalanobis distances against SciPy's (explicit inverse) as the oracle."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial.distance import mahalanobis

from pipeline.mahalanobis import (
    chi2_threshold,
    contributions_from_whitened,
    mahalanobis_squared,
    mahalanobis_squared_grouped,
    regularised_cholesky,
    whiten_grouped,
)


def random_spd(rng, d):
    a = rng.normal(size=(d, d))
    return a @ a.T + d * np.eye(d)


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 8), st.integers(1, 40), st.integers(0, 2**32 - 1))
def test_single_model_matches_scipy(d, n, seed):
    rng = np.random.default_rng(seed)
    cov, mean = random_spd(rng, d), rng.normal(size=d)
    x = rng.normal(size=(n, d)) * 3
    inv = np.linalg.inv(cov)
    expected = np.array([mahalanobis(row, mean, inv) ** 2 for row in x])
    got = mahalanobis_squared(x, mean, np.linalg.cholesky(cov))
    np.testing.assert_allclose(got, expected, rtol=1e-9)


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 6), st.integers(1, 5), st.integers(0, 2**32 - 1))
def test_per_model_distances_and_contributions(d, g, seed):
    rng = np.random.default_rng(seed)
    covs = np.stack([random_spd(rng, d) for _ in range(g)])
    means = rng.normal(size=(g, d))
    n = 30
    groups = rng.integers(0, g, size=n).astype(np.intp)
    x = rng.normal(size=(n, d)) * 2
    chol = np.linalg.cholesky(covs)
    expected = np.array(
        [mahalanobis(x[i], means[groups[i]], np.linalg.inv(covs[groups[i]])) ** 2 for i in range(n)]
    )
    np.testing.assert_allclose(
        mahalanobis_squared_grouped(x, groups, means, chol), expected, rtol=1e-9
    )
    diff_t = np.ascontiguousarray((x - means[groups]).T)
    contrib = contributions_from_whitened(
        diff_t, whiten_grouped(diff_t, groups, chol), groups, chol
    )
    naive = np.array(
        [
            (x[i] - means[groups[i]]) * (np.linalg.inv(covs[groups[i]]) @ (x[i] - means[groups[i]]))
            for i in range(n)
        ]
    )
    np.testing.assert_allclose(contrib, naive, rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(contrib.sum(axis=1), expected, rtol=1e-9)


def test_regularised_cholesky_handles_singular_and_indefinite():
    singular = np.array([[1.0, 1.0], [1.0, 1.0]])
    zero = np.zeros((2, 2))
    indefinite = np.array([[1.0, 2.0], [2.0, 1.0]])
    chol, added = regularised_cholesky(np.stack([singular, zero, indefinite]))
    assert np.isfinite(chol).all() and (added > 0).all()
    assert (np.diagonal(chol, axis1=1, axis2=2) > 0).all()


@pytest.mark.parametrize(
    ("alpha", "d", "expected"), [(0.05, 1, 3.841458820694124), (1e-4, 4, 23.512742444990838)]
)
def test_chi2_threshold(alpha, d, expected):
    assert chi2_threshold(alpha, d) == pytest.approx(expected, rel=1e-12)
