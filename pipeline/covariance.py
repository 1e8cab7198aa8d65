"""Online covariance by Welford's algorithm over whole batches, with exact merges.

The state of a covariance estimate is three numbers-in-arrays: the (possibly
weighted) count ``n``, the mean ``mean`` of shape (D,) and the co-moment
``m2 = sum((x - mean) outer (x - mean))`` of shape (D, D).  A batch is reduced
to the same three quantities (two passes: mean, then centred products) and
combined with the running state by Chan, Golub and LeVeque's pairwise formula,
which is exact in real arithmetic and numerically stable.  Because two states
combine the same way, partial states from different consumers merge exactly.

Per-turbine models are the same maths on stacked arrays: counts (G,), means
(G, D), co-moments (G, D, D), updated from one batch with ``np.bincount`` (no
Python loop over readings).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.linalg import blas

from pipeline.errors import SchemaError

F64 = NDArray[np.float64]

# Above this many sensors the co-moment of a batch is accumulated in row
# chunks with a symmetric rank-k update (BLAS syrk): half the flops of a full
# matrix product and no centred copy of the whole batch in memory.
_WIDE = 64
_CHUNK_BYTES = 8 * 2**20


def as_batch(values: ArrayLike, n_features: int) -> F64:
    """Return ``values`` as a C-contiguous float64 batch of shape (n, D).

    Parameters
    ----------
    values : array-like of shape (n, D) or (D,)
        One reading per row; a 1-D array is one reading.
    n_features : int
        The number of sensors D the caller expects.
    """
    x = np.asarray(values, dtype=np.float64)
    if x.ndim == 1:
        x = x[None, :]
    if x.ndim != 2 or x.shape[1] != n_features:
        raise SchemaError(f"expected a batch of shape (n, {n_features}), got {x.shape}")
    return np.ascontiguousarray(x)


def batch_moments(x: F64) -> tuple[float, F64, F64]:
    """Count, mean and co-moment of one batch, by two passes.

    Parameters
    ----------
    x : ndarray of shape (n, D)
        The batch.

    Returns
    -------
    n : float
    mean : ndarray of shape (D,)
    m2 : ndarray of shape (D, D)
    """
    n, d = x.shape
    if n == 0:
        return 0.0, np.zeros(d), np.zeros((d, d))
    if d <= _WIDE:
        mean = (np.ones(n) @ x) / n  # a BLAS product: axis-0 sums of narrow rows are slow
        xc = x - mean
        return float(n), mean, xc.T @ xc
    # Wide: NumPy's own sum, not NumPy's BLAS: its idle threads would spin against
    # SciPy's BLAS threads doing the syrk below (measured: 186 ms instead of 138 ms).
    mean = x.mean(axis=0)
    rows = max(1, _CHUNK_BYTES // (8 * d))
    acc = np.zeros((d, d), order="F")
    for start in range(0, n, rows):
        # chunk.T is F-contiguous (D, rows): syrk with trans=0 adds chunk.T @ chunk
        # to the upper triangle of acc, in place.
        chunk = x[start : start + rows] - mean
        acc = blas.dsyrk(1.0, chunk.T, beta=1.0, c=acc, overwrite_c=1)
    m2 = np.triu(acc)
    m2 += np.triu(acc, 1).T
    return float(n), mean, np.ascontiguousarray(m2)


def grouped_moments(x: F64, groups: NDArray[np.intp], n_groups: int) -> tuple[F64, F64, F64]:
    """Count, mean and co-moment of each group's rows in one batch.

    Parameters
    ----------
    x : ndarray of shape (n, D)
        The batch.
    groups : ndarray of shape (n,)
        Group index of each row, in ``[0, n_groups)``.
    n_groups : int
        G, the number of groups.

    Returns
    -------
    counts : ndarray of shape (G,)
    means : ndarray of shape (G, D)
        Zero for a group with no rows.
    m2 : ndarray of shape (G, D, D)
    """
    n, d = x.shape
    counts = np.bincount(groups, minlength=n_groups).astype(np.float64)
    safe = np.where(counts > 0, counts, 1.0)
    m2 = np.zeros((n_groups, d, d))
    if d > 8:
        # Wide sensor sets: sort once and reduce each present group with BLAS,
        # a loop over groups (not readings).
        order = np.argsort(groups, kind="stable")
        bounds = np.concatenate(([0], np.cumsum(counts.astype(np.intp))))
        means = np.zeros((n_groups, d))
        xs = np.take(x, order, axis=0)
        for g in np.flatnonzero(counts):
            _, means[g], m2[g] = batch_moments(xs[bounds[g] : bounds[g + 1]])
        return counts, means, m2
    xt = np.ascontiguousarray(x.T)
    sums = np.empty((n_groups, d))
    for j in range(d):
        sums[:, j] = np.bincount(groups, weights=xt[j], minlength=n_groups)
    means = sums / safe[:, None]
    xc = np.empty_like(xt)
    for j in range(d):
        np.subtract(xt[j], np.take(means[:, j], groups), out=xc[j])
    for a in range(d):
        for b in range(a, d):
            v = np.bincount(groups, weights=xc[a] * xc[b], minlength=n_groups)
            m2[:, a, b] = v
            m2[:, b, a] = v
    return counts, means, m2


def combine(
    n_a: F64 | float,
    mean_a: F64,
    m2_a: F64,
    n_b: F64 | float,
    mean_b: F64,
    m2_b: F64,
) -> tuple[F64, F64, F64]:
    """Chan et al.'s exact combination of two (stacks of) moment states.

    Shapes broadcast over leading axes: counts (...), means (..., D),
    co-moments (..., D, D).  A side with count zero leaves the other unchanged
    (bit for bit).
    """
    n_a = np.asarray(n_a, dtype=np.float64)
    n_b = np.asarray(n_b, dtype=np.float64)
    n = n_a + n_b
    safe = np.where(n > 0, n, 1.0)
    w_b = n_b / safe
    delta = mean_b - mean_a
    mean = mean_a + delta * w_b[..., None]
    scale = (n_a * w_b)[..., None, None]
    m2 = m2_a + m2_b + delta[..., :, None] * delta[..., None, :] * scale
    return n, mean, m2


def covariance_of(n: F64 | float, m2: F64, ddof: int = 1) -> F64:
    """Covariance ``m2 / (n - ddof)``; zero where fewer than ``ddof + 1`` samples.

    Parameters
    ----------
    n : float or ndarray of shape (...)
    m2 : ndarray of shape (..., D, D)
    """
    n = np.asarray(n, dtype=np.float64)
    denom = n - ddof
    ok = denom > 0
    return m2 / np.where(ok, denom, 1.0)[..., None, None] * ok[..., None, None]


def decay_weight(n_new: F64 | float, memory: float | None) -> F64 | float:
    """Weight kept by old data when ``n_new`` readings arrive (exponential forgetting).

    ``memory`` is the effective number of readings remembered (the time
    constant, in readings); ``None`` keeps everything.
    """
    if memory is None:
        return 1.0
    return np.exp(-np.asarray(n_new, dtype=np.float64) / memory)


class WelfordCovariance:
    """Running mean and covariance of a stream of D-dimensional readings.

    Parameters
    ----------
    n_features : int
        D, the number of sensors.
    memory : float, optional
        Exponential forgetting: the effective number of past readings kept.
        ``None`` (default) weighs every reading equally.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> data = rng.normal(size=(1000, 3))
    >>> a, b = WelfordCovariance(3), WelfordCovariance(3)
    >>> a.update(data[:300]); b.update(data[300:])
    >>> a.merge(b).count
    1000.0
    >>> bool(np.allclose(a.covariance, np.cov(data, rowvar=False), rtol=1e-12))
    True
    """

    def __init__(self, n_features: int, memory: float | None = None) -> None:
        if n_features < 1:
            raise ValueError(f"n_features must be >= 1, got {n_features}")
        self.n_features = n_features
        self.memory = memory
        self._n = 0.0
        self._mean = np.zeros(n_features)
        self._m2 = np.zeros((n_features, n_features))

    def update(self, batch: ArrayLike) -> None:
        """Learn a batch.

        Parameters
        ----------
        batch : array-like of shape (n, D) or (D,)
        """
        x = as_batch(batch, self.n_features)
        n_b, mean_b, m2_b = batch_moments(x)
        if n_b == 0:
            return
        w = float(decay_weight(n_b, self.memory))
        n, mean, m2 = combine(self._n * w, self._mean, self._m2 * w, n_b, mean_b, m2_b)
        self._n, self._mean, self._m2 = float(n), mean, m2

    def merge(self, other: WelfordCovariance) -> WelfordCovariance:
        """Combine ``other``'s state into this one (exactly) and return self."""
        if other.n_features != self.n_features:
            raise SchemaError(
                f"cannot merge a {other.n_features}-sensor state "
                f"into a {self.n_features}-sensor one"
            )
        n, mean, m2 = combine(self._n, self._mean, self._m2, other._n, other._mean, other._m2)
        self._n, self._mean, self._m2 = float(n), mean, m2
        return self

    def __iadd__(self, other: WelfordCovariance) -> WelfordCovariance:
        return self.merge(other)

    @property
    def count(self) -> float:
        """Number of readings learned (a weighted count under forgetting)."""
        return self._n

    @property
    def mean(self) -> F64:
        """Mean, shape (D,)."""
        return self._mean.copy()

    @property
    def comoment(self) -> F64:
        """Sum of centred outer products, shape (D, D)."""
        return self._m2.copy()

    @property
    def covariance(self) -> F64:
        """Sample covariance (ddof=1), shape (D, D); zeros before two readings."""
        return covariance_of(self._n, self._m2)

    def state(self) -> dict[str, NDArray[np.float64]]:
        """The state as plain arrays, for checkpoints (``np.savez``, no pickle)."""
        return {
            "n": np.asarray(self._n),
            "mean": self._mean.copy(),
            "m2": self._m2.copy(),
        }

    @classmethod
    def from_state(
        cls, state: Mapping[str, ArrayLike], memory: float | None = None
    ) -> WelfordCovariance:
        """Rebuild an estimator saved by :meth:`state`."""
        mean = np.asarray(state["mean"], dtype=np.float64)
        m2 = np.asarray(state["m2"], dtype=np.float64)
        if mean.ndim != 1 or m2.shape != (mean.size, mean.size):
            raise SchemaError(f"inconsistent state shapes: mean {mean.shape}, m2 {m2.shape}")
        out = cls(mean.size, memory=memory)
        out._n = float(np.asarray(state["n"]))
        out._mean = mean.copy()
        out._m2 = m2.copy()
        return out


class GroupedCovariance:
    """One running covariance per group (turbine), held as stacked arrays.

    Parameters
    ----------
    n_groups : int
        G, the number of groups; :meth:`grow` adds more.
    n_features : int
        D, the number of sensors.
    memory : float, optional
        Exponential forgetting per group, as in :class:`WelfordCovariance`.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(1)
    >>> x, g = rng.normal(size=(600, 2)), np.repeat([0, 1, 2], 200)
    >>> model = GroupedCovariance(3, 2)
    >>> model.update(g, x)  # the groups that changed
    array([0, 1, 2])
    >>> bool(np.allclose(model.covariance[1], np.cov(x[200:400], rowvar=False)))
    True
    >>> bool(np.allclose(model.total().covariance, np.cov(x, rowvar=False)))
    True
    """

    def __init__(self, n_groups: int, n_features: int, memory: float | None = None) -> None:
        self.n_features = n_features
        self.memory = memory
        self.counts = np.zeros(n_groups)
        self.means = np.zeros((n_groups, n_features))
        self.m2 = np.zeros((n_groups, n_features, n_features))

    @property
    def n_groups(self) -> int:
        return int(self.counts.size)

    def grow(self, n_groups: int) -> None:
        """Make room for ``n_groups`` groups (new ones empty)."""
        extra = n_groups - self.n_groups
        if extra <= 0:
            return
        d = self.n_features
        self.counts = np.concatenate((self.counts, np.zeros(extra)))
        self.means = np.concatenate((self.means, np.zeros((extra, d))))
        self.m2 = np.concatenate((self.m2, np.zeros((extra, d, d))))

    def update(self, groups: NDArray[np.intp], batch: F64) -> NDArray[np.intp]:
        """Learn each group's rows of one batch.

        Parameters
        ----------
        groups : ndarray of shape (n,)
            Group index of each row, in ``[0, G)``.
        batch : ndarray of shape (n, D)

        Returns
        -------
        ndarray of shape (k,)
            The groups that changed.
        """
        x = as_batch(batch, self.n_features)
        groups = np.asarray(groups)
        if groups.shape != (x.shape[0],):
            raise SchemaError(
                f"groups {groups.shape} and batch {x.shape} must describe the same n rows"
            )
        if groups.size and (groups.min() < 0 or groups.max() >= self.n_groups):
            raise SchemaError(f"group indices must be in [0, {self.n_groups})")
        counts, means, m2 = grouped_moments(x, groups.astype(np.intp, copy=False), self.n_groups)
        return self.merge_moments(counts, means, m2)

    def merge_moments(
        self, counts: F64, means: F64, m2: F64, decay: F64 | None = None
    ) -> NDArray[np.intp]:
        """Combine per-group moments (shapes (G,), (G, D), (G, D, D)) into the state.

        ``decay`` (shape (G,)), when given, is the weight each group's old state
        keeps (forgetting in time); otherwise ``memory`` (in readings) decides.
        """
        changed = np.flatnonzero(counts)
        if changed.size == 0:
            return changed
        n_b = counts[changed]
        w = decay_weight(n_b, self.memory) if decay is None else decay[changed]
        n, mean, c2 = combine(
            self.counts[changed] * w,
            self.means[changed],
            self.m2[changed] * np.asarray(w)[..., None, None],
            n_b,
            means[changed],
            m2[changed],
        )
        self.counts[changed] = n
        self.means[changed] = mean
        self.m2[changed] = c2
        return changed

    def merge(self, other: GroupedCovariance) -> GroupedCovariance:
        """Combine another stack with the same groups into this one and return self."""
        if other.n_features != self.n_features:
            raise SchemaError(
                f"cannot merge {other.n_features}-sensor states into {self.n_features}-sensor ones"
            )
        self.grow(other.n_groups)
        g = other.n_groups
        n, mean, m2 = combine(
            self.counts[:g], self.means[:g], self.m2[:g], other.counts, other.means, other.m2
        )
        self.counts[:g], self.means[:g], self.m2[:g] = n, mean, m2
        return self

    @property
    def covariance(self) -> F64:
        """Per-group sample covariances (ddof=1), shape (G, D, D)."""
        return covariance_of(self.counts, self.m2)

    def total(self, groups: NDArray[np.intp] | None = None) -> WelfordCovariance:
        """The exact merge of the chosen groups' states (all by default)."""
        idx = np.arange(self.n_groups) if groups is None else np.asarray(groups)
        counts, means, m2 = self.counts[idx], self.means[idx], self.m2[idx]
        out = WelfordCovariance(self.n_features, memory=self.memory)
        n = float(counts.sum())
        if n == 0:
            return out
        mean = (counts @ means) / n
        dev = means - mean
        out._n = n
        out._mean = mean
        out._m2 = m2.sum(axis=0) + (dev * counts[:, None]).T @ dev
        return out

    def state(self) -> dict[str, F64]:
        """The state as plain arrays (for ``np.savez``)."""
        return {"counts": self.counts.copy(), "means": self.means.copy(), "m2": self.m2.copy()}

    @classmethod
    def from_state(
        cls, state: Mapping[str, ArrayLike], memory: float | None = None
    ) -> GroupedCovariance:
        """Rebuild a stack saved by :meth:`state`."""
        counts = np.asarray(state["counts"], dtype=np.float64)
        means = np.asarray(state["means"], dtype=np.float64)
        m2 = np.asarray(state["m2"], dtype=np.float64)
        g = counts.size
        if counts.ndim != 1 or means.ndim != 2 or means.shape[0] != g:
            raise SchemaError(f"inconsistent state shapes: {counts.shape}, {means.shape}")
        d = means.shape[1]
        if m2.shape != (g, d, d):
            raise SchemaError(f"co-moments of shape {m2.shape}, expected {(g, d, d)}")
        out = cls(g, d, memory=memory)
        out.counts, out.means, out.m2 = counts.copy(), means.copy(), m2.copy()
        return out
