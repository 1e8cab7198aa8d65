"""Squared Mahalanobis distances through Cholesky factors, never an explicit inverse.

For a covariance ``S = L L^T`` the squared distance of ``x`` from ``mu`` is
``|z|^2`` with ``L z = x - mu``, one triangular solve.  Per-turbine models
need a different ``L`` for each reading: the solve is then a forward
substitution over the D sensors, vectorised over the readings (a loop over
sensors, never over readings).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray
from scipy import special
from scipy.linalg import solve_triangular

F64 = NDArray[np.float64]


def chi2_threshold(false_alarm_rate: float, n_features: int) -> float:
    """Squared-distance threshold with tail probability ``false_alarm_rate`` under chi2(D).

    >>> round(chi2_threshold(0.05, 1), 4)
    3.8415
    """
    if not 0.0 < false_alarm_rate < 1.0:
        raise ValueError(f"false_alarm_rate must be in (0, 1), got {false_alarm_rate}")
    # scipy.stats.chi2.isf is this function; scipy.special loads without scipy.stats
    # (about 45 MB of resident memory a detector service would carry for nothing).
    return float(special.chdtri(n_features, false_alarm_rate))


def regularised_cholesky(cov: F64, ridge: float = 1e-6) -> tuple[F64, F64]:
    """Lower Cholesky factors of (stacked) covariances, regularised so they exist.

    Each matrix gets ``ridge * mean(diag) + tiny`` added to its diagonal: a
    stuck sensor (zero variance) or fewer readings than sensors leaves a
    singular matrix, which would otherwise break the factorisation or give
    infinite distances.  A matrix that still is not positive definite (an
    indefinite input) is repaired by clipping its eigenvalues.

    Parameters
    ----------
    cov : ndarray of shape (..., D, D)
        Symmetric covariance matrices.
    ridge : float
        Relative ridge added to each diagonal.

    Returns
    -------
    chol : ndarray of shape (..., D, D)
        Lower-triangular factors.
    added : ndarray of shape (...)
        The ridge added to each matrix's diagonal.
    """
    d = cov.shape[-1]
    scale = np.trace(cov, axis1=-2, axis2=-1) / d
    # Every model needs a strictly positive floor, also an all-zero one.
    added = ridge * np.abs(scale) + np.finfo(np.float64).tiny ** 0.5
    eye = np.eye(d)
    reg = cov + added[..., None, None] * eye
    try:
        return np.linalg.cholesky(reg), added
    except np.linalg.LinAlgError:
        pass
    flat = reg.reshape(-1, d, d)
    out = np.empty_like(flat)
    floors = added.reshape(-1)
    for i in range(flat.shape[0]):  # rare path: loop over models, not readings
        try:
            out[i] = np.linalg.cholesky(flat[i])
        except np.linalg.LinAlgError:
            w, v = np.linalg.eigh(flat[i])
            w = np.maximum(w, floors[i])
            out[i] = np.linalg.cholesky((v * w) @ v.T + floors[i] * 1e-3 * eye)
    return out.reshape(reg.shape), added


def condition_numbers(cov: F64) -> F64:
    """2-norm condition numbers of (stacked) symmetric matrices, inf when singular.

    Parameters
    ----------
    cov : ndarray of shape (..., D, D)
    """
    w = np.linalg.eigvalsh(cov)
    lo, hi = w[..., 0], w[..., -1]
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(lo > 0, hi / np.where(lo > 0, lo, 1.0), np.inf)


def mahalanobis_squared(x: F64, mean: F64, chol: F64) -> F64:
    """Squared distances of rows from one model.

    Parameters
    ----------
    x : ndarray of shape (n, D)
    mean : ndarray of shape (D,)
    chol : ndarray of shape (D, D)
        Lower Cholesky factor of the covariance.

    Returns
    -------
    ndarray of shape (n,)

    >>> import numpy as np
    >>> cov = np.array([[4.0, 0.0], [0.0, 1.0]])
    >>> mahalanobis_squared(np.array([[2.0, 1.0]]), np.zeros(2), np.linalg.cholesky(cov))
    array([2.])
    """
    return squared_norms(solve_triangular(chol, (x - mean).T, lower=True, check_finite=False))


def _gather_factors(chol: F64, groups: NDArray[np.intp]) -> list[list[F64]]:
    """Each reading's factor entries: ``out[j][k] = chol[groups, j, k]`` for k <= j.

    One ``np.take`` of the D(D+1)/2 entries a solve needs (the lower triangle),
    each row of the result a contiguous vector of n values.
    """
    d = chol.shape[-1]
    lower = [j * d + k for j in range(d) for k in range(j + 1)]
    cols = chol.reshape(chol.shape[0], d * d).T[lower]  # (D(D+1)/2, G)
    entries = np.take(cols, groups, axis=1)  # one gather of all the entries: contiguous rows
    return [[entries[j * (j + 1) // 2 + k] for k in range(j + 1)] for j in range(d)]


def squared_norms(z_t: F64) -> F64:
    """Column sums of squares of ``z_t`` of shape (D, n), as a BLAS product: (n,)."""
    return np.ones(z_t.shape[0]) @ (z_t * z_t)


def whiten_grouped(diff_t: F64, groups: NDArray[np.intp], chol: F64) -> F64:
    """Solve ``L_g z = diff`` for every reading with its own model's factor.

    Parameters
    ----------
    diff_t : ndarray of shape (D, n)
        Deviations from the model mean, one reading per column (transposed so
        each sensor's values are contiguous).
    groups : ndarray of shape (n,)
        The model of each reading, an index into ``chol``.
    chol : ndarray of shape (G, D, D)
        Lower Cholesky factors.

    Returns
    -------
    ndarray of shape (D, n)
        The whitened deviations.
    """
    d = diff_t.shape[0]
    lg = _gather_factors(chol, groups)
    z = np.empty_like(diff_t)
    for j in range(d):
        acc = diff_t[j].copy()
        for k in range(j):
            acc -= lg[j][k] * z[k]
        acc /= lg[j][j]
        z[j] = acc
    return z


def unwhiten_transposed_grouped(z_t: F64, groups: NDArray[np.intp], chol: F64) -> F64:
    """Solve ``L_g^T w = z`` for every reading (back substitution).

    Parameters
    ----------
    z_t : ndarray of shape (D, n)
    groups : ndarray of shape (n,)
    chol : ndarray of shape (G, D, D)

    Returns
    -------
    ndarray of shape (D, n)
    """
    d = z_t.shape[0]
    lg = _gather_factors(chol, groups)
    w = np.empty_like(z_t)
    for j in range(d - 1, -1, -1):
        acc = z_t[j].copy()
        for k in range(j + 1, d):
            acc -= lg[k][j] * w[k]  # (L^T)[j, k] = L[k, j]
        acc /= lg[j][j]
        w[j] = acc
    return w


def gather_rows(table: F64, index: NDArray[np.intp]) -> F64:
    """``table[index].T`` as a C-contiguous (D, n) array, one take along the columns.

    Parameters
    ----------
    table : ndarray of shape (G, D)
    index : ndarray of shape (n,)
    """
    return np.take(np.ascontiguousarray(table.T), index, axis=1)


def mahalanobis_squared_grouped(x: F64, groups: NDArray[np.intp], means: F64, chol: F64) -> F64:
    """Squared distance of each row from its own model.

    Parameters
    ----------
    x : ndarray of shape (n, D)
    groups : ndarray of shape (n,)
        Index of each row's model.
    means : ndarray of shape (G, D)
    chol : ndarray of shape (G, D, D)
        Lower Cholesky factors.

    Returns
    -------
    ndarray of shape (n,)

    >>> import numpy as np
    >>> chol = np.stack([np.eye(2), 2 * np.eye(2)])
    >>> mahalanobis_squared_grouped(np.ones((2, 2)), np.array([0, 1]), np.zeros((2, 2)), chol)
    array([2. , 0.5])
    """
    diff_t = x.T - gather_rows(means, groups)
    return squared_norms(whiten_grouped(diff_t, groups, chol))


def contributions_from_whitened(diff_t: F64, z_t: F64, groups: NDArray[np.intp], chol: F64) -> F64:
    """Contributions (k, D) from deviations and whitened deviations (D, k) already solved.

    ``S^-1 diff = L^-T z``: one back substitution on the scores' own ``z``.
    """
    if groups.size and (groups == groups[0]).all():  # one model: one BLAS solve
        w = solve_triangular(chol[groups[0]], z_t, lower=True, trans="T", check_finite=False)
    else:
        w = unwhiten_transposed_grouped(np.ascontiguousarray(z_t), groups, chol)
    return (diff_t * w).T
