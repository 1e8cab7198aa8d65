"""The per-batch maths of stacked models, compiled or in NumPy.

The detector keeps its models as stacks (counts (M,), means (M, D),
co-moments (M, D, D), lower Cholesky factors (M, D, D)).  Each function here
does one step of a batch over such a stack either with the compiled kernels
of :mod:`pipeline.kernels` (one call) or with the NumPy functions of
:mod:`pipeline.covariance` and :mod:`pipeline.mahalanobis` (the oracle the
kernels are tested against), chosen by ``compiled``.  Both paths give the
same moments, merges, deviations and whitened deviations bit for bit; the
factors (and so the statistics) agree to rounding (tests/test_kernels.py).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType

import numpy as np
from numpy.typing import NDArray

from pipeline.covariance import (
    F64,
    GroupedCovariance,
    batch_moments,
    covariance_of,
    grouped_moments,
)
from pipeline.mahalanobis import (
    contributions_from_whitened,
    gather_rows,
    regularised_cholesky,
    squared_norms,
    whiten_grouped,
)

_NONE = np.zeros(0)
NONE = _NONE  # an empty float array: "none" for the kernels' optional arrays
_NO_SKIP = np.zeros(0, dtype=np.bool_)


def compiled_kernels() -> ModuleType | None:
    """:mod:`pipeline.kernels`, imported on first use (numba with it), or None without numba.

    Imported lazily so that a NumPy-only detector (``compiled=False``) never
    loads numba and LLVM (about 150 MB of resident memory).
    """
    try:
        return importlib.import_module("pipeline.kernels")
    except ImportError:  # pragma: no cover - numba is a dependency
        return None


def warm_kernels() -> float | None:
    """Compile, or load from the disk cache, every kernel a detector uses, now.

    A service calls it before it takes partitions, so that its first batch
    does not pay for it.  Returns the seconds it took (None without numba).
    """
    if compiled_kernels() is None:  # pragma: no cover - numba is a dependency
        return None
    from pipeline.kernels.warmup import warm_cache

    return warm_cache()


def kernels_available() -> bool:
    """Whether the compiled kernels can run here (numba importable)."""
    return compiled_kernels() is not None


def factors(counts: F64, m2: F64, floor: F64 | None, ridge: float, compiled: bool) -> F64:
    """Regularised lower Cholesky factors (G, D, D) of the models' covariances plus floors.

    Parameters
    ----------
    counts : ndarray of shape (G,)
    m2 : ndarray of shape (G, D, D)
    floor : ndarray of shape (D,), optional
        Variance floors added to every covariance's diagonal.
    ridge : float
    compiled : bool
    """
    kernels = compiled_kernels() if compiled and counts.size else None
    if kernels is not None:
        counts = np.ascontiguousarray(counts, dtype=np.float64)
        m2 = np.ascontiguousarray(m2, dtype=np.float64)
        out = np.empty_like(m2)
        rows = np.arange(counts.size, dtype=np.int64)
        failed = kernels.refactor(counts, m2, rows, _NONE if floor is None else floor, ridge, out)
        if failed.size:  # not positive definite: the eigenvalue repair of the NumPy path
            out[failed] = factors(counts[failed], m2[failed], floor, ridge, compiled=False)
        return out
    cov = covariance_of(counts, m2)
    if floor is not None:
        cov = cov + np.diag(floor)
    return regularised_cholesky(cov, ridge)[0]


@dataclass(frozen=True)
class Blocks:
    """A batch's readings sorted by model (the compiled path): see ``sort_by_model``.

    Attributes
    ----------
    model : ndarray of shape (n,)
        The model index array the blocks were made from.
    starts : ndarray of shape (M + 1,)
    order : ndarray of shape (n,)
    xs : ndarray of shape (D, n)
    """

    model: NDArray[np.intp]
    starts: NDArray[np.int64]
    order: NDArray[np.int64]
    xs: F64


@dataclass(frozen=True)
class Whitened:
    """Scores of a batch against its readings' models.

    Attributes
    ----------
    stat : ndarray of shape (n,)
        ``|z[k:]|^2`` times the scale.
    scale : ndarray of shape (n,) or None
        Each reading's prediction-bound scale (None without a table).
    diff_t, z_t : ndarray of shape (D, n) or None
        Deviations and whitened deviations: always from the NumPy path, from
        the compiled one only when asked for (``full``).
    blocks : Blocks or None
        The compiled path's readings by model, for :func:`learn` to reuse.
    """

    stat: F64
    scale: F64 | None
    diff_t: F64 | None
    z_t: F64 | None
    blocks: Blocks | None


def whiten(
    x_t: F64,
    model: NDArray[np.intp],
    means: F64,
    chol: F64,
    k: int,
    counts: F64,
    table: F64 | None,
    compiled: bool,
    full: bool = True,
) -> Whitened:
    """Deviations, whitened deviations, statistics and scales of readings of their models.

    Parameters
    ----------
    x_t : ndarray of shape (D, n)
        Model-ready readings, one per column.
    model : ndarray of shape (n,)
        Each reading's model, an index into the stack, in ``[0, M)``.
    means : ndarray of shape (M, D)
    chol : ndarray of shape (M, D, D)
    k : int
        Conditioning sensors (first), left out of the statistic.
    counts : ndarray of shape (M,)
        Readings each model learned (for the prediction bound's scale).
    table : ndarray of shape (N + 1,), optional
        The prediction bound's scale by count (``PredictionBound.table``).
    compiled : bool
    full : bool
        The compiled path returns ``diff_t`` and ``z_t`` only when asked.
    """
    kernels = compiled_kernels() if compiled else None
    if kernels is not None:
        x_t = np.ascontiguousarray(x_t)
        starts, order, xs = kernels.sort_by_model(x_t, model, means.shape[0])
        stat, scale, diff_t, z_t = kernels.whiten_sorted(
            xs, starts, order, means, chol, k, counts, _NONE if table is None else table, full
        )
        return Whitened(
            stat,
            None if table is None else scale,
            diff_t if full else None,
            z_t if full else None,
            Blocks(model, starts, order, xs),
        )
    diff_t = x_t - gather_rows(means, model)
    z_t = whiten_grouped(diff_t, model, chol)
    stat = squared_norms(z_t[k:] if k else z_t)
    scale_n = None
    if table is not None:
        # One scale per model (M,), then per reading: no per-reading table look-up.
        scale_m = np.take(table, np.minimum(counts, table.size - 1).astype(np.intp))
        scale_n = np.take(scale_m, model)
        stat *= scale_n
    return Whitened(stat, scale_n, diff_t, z_t, None)


def learn(
    stack: GroupedCovariance,
    chol: F64,
    x_t: F64,
    model: NDArray[np.intp],
    skip: NDArray[np.bool_] | None,
    decay: F64 | None,
    floor: F64 | None,
    ridge: float,
    compiled: bool,
    blocks: Blocks | None = None,
) -> NDArray[np.intp]:
    """Learn readings into their models and refresh the changed models' factors, in place.

    Returns the models that changed (ascending).

    Parameters
    ----------
    stack : GroupedCovariance
        The models (M of them), updated in place.
    chol : ndarray of shape (M, D, D)
        Their factors, refreshed in place for the models that learned.
    x_t : ndarray of shape (D, n)
    model : ndarray of shape (n,)
        Each reading's model, in ``[0, M)``.
    skip : ndarray of shape (n,), optional
        Readings not to learn.
    decay : ndarray of shape (M,), optional
        Weight each model's old state keeps (else ``stack.memory`` decides).
    floor : ndarray of shape (D,), optional
    ridge : float
    compiled : bool
    blocks : Blocks, optional
        The scores' readings by model, reused when made from this ``model``.
    """
    kernels = compiled_kernels() if compiled else None
    if kernels is not None:
        if blocks is None or blocks.model is not model:
            x_t = np.ascontiguousarray(x_t)
            starts, order, xs = kernels.sort_by_model(x_t, model, stack.n_groups)
        else:
            starts, order, xs = blocks.starts, blocks.order, blocks.xs
        changed, failed = kernels.learn_sorted(
            xs,
            starts,
            order,
            _NO_SKIP if skip is None else skip,
            stack.counts,
            stack.means,
            stack.m2,
            0.0 if stack.memory is None else float(stack.memory),
            _NONE if decay is None else decay,
            chol,
            _NONE if floor is None else floor,
            ridge,
        )
        if failed.size:
            chol[failed] = factors(stack.counts[failed], stack.m2[failed], floor, ridge, False)
        return changed.astype(np.intp, copy=False)
    if skip is not None:
        keep = np.flatnonzero(~skip)
        x_t, model = np.take(x_t, keep, axis=1), model[keep]
    if x_t.shape[1] == 0:
        return np.zeros(0, dtype=np.intp)
    if stack.n_groups == 1:
        n_b, mean_b, m2_b = batch_moments(x_t.T)
        counts, means, m2 = np.array([n_b]), mean_b[None], m2_b[None]
    else:
        counts, means, m2 = grouped_moments(x_t.T, model, stack.n_groups)
    changed = stack.merge_moments(counts, means, m2, decay)
    chol[changed] = factors(stack.counts[changed], stack.m2[changed], floor, ridge, False)
    return changed


def contributions(
    x_t: F64,
    w: Whitened,
    hit: NDArray[np.intp],
    model: NDArray[np.intp],
    means: F64,
    chol: F64,
    k: int,
    compiled: bool,
) -> tuple[F64, F64]:
    """Each scored sensor's share (h, D - k) of the statistics of readings ``hit``, and their z.

    Parameters
    ----------
    x_t : ndarray of shape (D, n)
    w : Whitened
        The batch's scores (the NumPy path reads its deviations).
    hit : ndarray of shape (h,)
    model : ndarray of shape (n,)
    means : ndarray of shape (M, D)
    chol : ndarray of shape (M, D, D)
    k : int
        Conditioning sensors (first): the shares are the Schur complement's.
    compiled : bool

    Returns
    -------
    shares : ndarray of shape (h, D - k)
    z_hit : ndarray of shape (D, h)
        The readings' whitened deviations.
    """
    kernels = compiled_kernels() if compiled else None
    if kernels is not None:
        return kernels.contributions_grouped(np.ascontiguousarray(x_t), hit, model, means, chol, k)
    assert w.diff_t is not None and w.z_t is not None  # noqa: S101 (the NumPy path keeps them)
    dz, zz, mh = np.take(w.diff_t, hit, axis=1), np.take(w.z_t, hit, axis=1), model[hit]
    if k:
        # Responses given conditions: L22 z_r = diff_r - L21 z_c, a residual of
        # the regression on the conditions, and S_(r|c)^-1 e = L22^-T z_r.
        l21 = chol[mh][:, k:, :k]
        e = dz[k:] - np.einsum("hrk,kh->rh", l21, zz[:k])
        shares = contributions_from_whitened(e, zz[k:], mh, np.ascontiguousarray(chol[:, k:, k:]))
        return shares, zz
    return contributions_from_whitened(dz, zz, mh, chol), zz
