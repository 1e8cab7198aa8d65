"""Seen before: the past anomalies most like a given one.

Two anomalies look alike when the same sensors carry their squared distance
in the same proportions: the cosine similarity of their per-sensor
contribution vectors.  The rows are L2-normalised and each stored chunk is
compared with all the queries in one sparse matrix product (queries x
chunk), so a store of any size is searched one chunk at a time, with no loop
over anomalies; a running top-k per query is merged chunk by chunk.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import sparse

from pipeline.store import Anomalies, ChunkMatrices


def normalise_rows(matrix: ArrayLike | sparse.sparray | sparse.spmatrix) -> sparse.csr_array:
    """Rows scaled to unit L2 norm, as CSR; an all-zero row stays zero.

    Parameters
    ----------
    matrix : array-like or sparse matrix of shape (n, D)

    Returns
    -------
    csr_array of shape (n, D)

    Examples
    --------
    >>> normalise_rows([[3.0, 4.0], [0.0, 0.0]]).toarray().round(3).tolist()
    [[0.6, 0.8], [0.0, 0.0]]
    """
    m = sparse.csr_array(matrix, dtype=np.float64)
    norms = np.sqrt(np.asarray(m.multiply(m).sum(axis=1), dtype=np.float64).reshape(-1))
    scale = np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)
    return sparse.csr_array(sparse.diags_array(scale) @ m)


def cosine_similarities(
    queries: ArrayLike | sparse.sparray | sparse.spmatrix,
    candidates: ArrayLike | sparse.sparray | sparse.spmatrix,
) -> NDArray[np.float64]:
    """Cosine similarity of every query with every candidate (0 against a zero vector).

    Parameters
    ----------
    queries : array-like or sparse matrix of shape (q, D)
    candidates : array-like or sparse matrix of shape (n, D)

    Returns
    -------
    ndarray of shape (q, n)

    Examples
    --------
    >>> cosine_similarities([[1.0, 0.0]], [[2.0, 0.0], [0.0, 5.0], [1.0, 1.0]]).round(3)
    array([[1.   , 0.   , 0.707]])
    """
    product = normalise_rows(queries) @ normalise_rows(candidates).T
    return np.asarray(sparse.csr_array(product).toarray(), dtype=np.float64)


def top_k(scores: NDArray[np.float64], k: int) -> NDArray[np.intp]:
    """Column indices of the ``k`` largest scores of each row, best first.

    Ties go to the lower column.  Fewer than ``k`` columns: all of them.

    Parameters
    ----------
    scores : ndarray of shape (q, n)
    k : int

    Returns
    -------
    ndarray of shape (q, min(k, n))

    Examples
    --------
    >>> top_k(np.array([[0.1, 0.9, 0.5], [0.3, 0.3, -1.0]]), 2).tolist()
    [[1, 2], [0, 1]]
    """
    q, n = scores.shape
    kk = min(k, n)
    if kk == 0:
        return np.zeros((q, 0), dtype=np.intp)
    if kk < n:
        part = np.argpartition(-scores, kk - 1, axis=1)[:, :kk]
    else:
        part = np.broadcast_to(np.arange(n), (q, n))
    vals = np.take_along_axis(scores, part, axis=1)
    order = np.lexsort((part, -vals), axis=-1)
    return np.take_along_axis(part, order, axis=1).astype(np.intp)


class SeenBefore:
    """The ``k`` stored anomalies most similar to each query, fed chunk by chunk.

    Parameters
    ----------
    queries : ndarray of shape (q, D)
        The query anomalies' contribution vectors.
    k : int
        Matches kept per query.
    before : ndarray of shape (q,), optional
        Only candidates strictly earlier than the query's time count (which
        also leaves the query itself out).  None: any time.
    own : (ndarray of shape (q,), ndarray of shape (q,)), optional
        Each query's turbine and the start of its own episode: that
        turbine's candidates from then on are the same episode (the fault
        seconds earlier), not something seen before, and are left out.

    Examples
    --------
    >>> import tempfile
    >>> from pipeline.store import AnomalyStore
    >>> from pipeline.detector import BatchResult
    >>> c = np.array([[4.0, 0.0], [3.0, 3.0], [5.0, 0.5]])
    >>> r = BatchResult(np.arange(3.0), np.zeros(3, np.int64), c.sum(1), np.ones(3, bool),
    ...                 np.ones(3, np.int8), 1.0, np.arange(3), c)
    >>> store = AnomalyStore(tempfile.mkdtemp(), sensors=("a", "b"))
    >>> _ = store.append(r); store.flush()
    >>> seen = SeenBefore(c[2:], k=2, before=np.array([2.0]))
    >>> for chunk in store.iter_matrices():
    ...     seen.update(chunk)
    >>> matches, similarity = seen.matches(0)
    >>> matches.timestamps.tolist(), similarity.round(3).tolist()
    ([0.0, 1.0], [0.995, 0.774])
    """

    def __init__(
        self,
        queries: ArrayLike,
        k: int = 5,
        before: ArrayLike | None = None,
        own: tuple[ArrayLike, ArrayLike] | None = None,
    ) -> None:
        q = np.atleast_2d(np.asarray(queries, dtype=np.float64))
        self.k = int(k)
        self.n_queries = q.shape[0]
        self._queries = normalise_rows(q)
        self._before = None if before is None else np.asarray(before, dtype=np.float64)
        if self._before is not None and self._before.shape != (self.n_queries,):
            raise ValueError(f"before has shape {self._before.shape}, queries {q.shape}")
        self._own: tuple[NDArray[np.int64], NDArray[np.float64]] | None = None
        if own is not None:
            turbines = np.asarray(own[0], dtype=np.int64).reshape(-1)
            since = np.asarray(own[1], dtype=np.float64).reshape(-1)
            if turbines.shape != (self.n_queries,) or since.shape != (self.n_queries,):
                raise ValueError(
                    f"own has shapes {turbines.shape}, {since.shape}, queries {q.shape}"
                )
            self._own = (turbines, since)
        self._scores = np.zeros((self.n_queries, 0))
        self._table: Anomalies | None = None
        self._sensors: tuple[str, ...] = ()

    def update(self, chunk: ChunkMatrices, candidates: NDArray[np.bool_] | None = None) -> None:
        """Merge one chunk's best matches into the running top-k.

        Parameters
        ----------
        chunk : ChunkMatrices
            A stored chunk (k_c anomalies); only its contribution matrix is
            compared, in one sparse product.
        candidates : ndarray of shape (k_c,), optional
            Which of the chunk's anomalies may match (default all).
        """
        n = len(chunk)
        self._sensors = chunk.sensors
        if n == 0:
            return
        product = self._queries @ normalise_rows(chunk.contributions).T
        scores = np.asarray(sparse.csr_array(product).toarray(), dtype=np.float64)
        allowed = np.ones((self.n_queries, n), dtype=bool)
        if self._before is not None:
            allowed &= chunk.timestamps[None, :] < self._before[:, None]
        if self._own is not None:
            turbines, since = self._own
            allowed &= ~(
                (chunk.turbine_ids[None, :] == turbines[:, None])
                & (chunk.timestamps[None, :] >= since[:, None])
            )
        if candidates is not None:
            allowed &= np.asarray(candidates, dtype=bool)[None, :]
        scores[~allowed] = -np.inf
        best = top_k(scores, self.k)
        new = chunk.take(best.ravel())
        width = best.shape[1]
        old_width = self._scores.shape[1]
        merged = np.hstack((self._scores, np.take_along_axis(scores, best, axis=1)))
        # Row i of the merged table of query j: old rows first, then the chunk's.
        refs = np.hstack(
            (
                np.arange(self.n_queries * old_width).reshape(self.n_queries, old_width),
                self.n_queries * old_width
                + np.arange(self.n_queries * width).reshape(self.n_queries, width),
            )
        )
        table = new if self._table is None else Anomalies.concat([self._table, new], new.sensors)
        keep = top_k(merged, self.k)
        self._scores = np.take_along_axis(merged, keep, axis=1)
        self._table = table.select(np.take_along_axis(refs, keep, axis=1).ravel())

    def matches(self, query: int) -> tuple[Anomalies, NDArray[np.float64]]:
        """The matches of query ``query``, best first, and their similarities (m,), m <= k."""
        if self._table is None:
            return Anomalies.concat([], self._sensors), np.zeros(0)
        width = self._scores.shape[1]
        sim = self._scores[query]
        ok = np.flatnonzero(np.isfinite(sim))
        return self._table.select(query * width + ok), sim[ok]


def most_similar(
    queries: ArrayLike,
    chunks: Iterable[ChunkMatrices],
    k: int = 5,
    before: ArrayLike | None = None,
) -> list[tuple[Anomalies, NDArray[np.float64]]]:
    """Each query's ``k`` most similar anomalies among ``chunks`` (see :class:`SeenBefore`).

    Parameters
    ----------
    queries : array-like of shape (q, D)
    chunks : iterable of ChunkMatrices
    k : int
    before : array-like of shape (q,), optional

    Returns
    -------
    list of q (matches, similarities) pairs, best first
    """
    seen = SeenBefore(queries, k, before)
    for chunk in chunks:
        seen.update(chunk)
    return [seen.matches(i) for i in range(seen.n_queries)]
