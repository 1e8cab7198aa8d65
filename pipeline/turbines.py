"""Dense indices for turbine ids, so per-turbine state can live in stacked arrays."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

from pipeline.errors import SchemaError

I64 = NDArray[np.int64]

# Ids below this use a direct lookup table (one np.take per batch);
# larger or negative ids fall back to a binary search.
_TABLE_LIMIT = 1 << 22


class TurbineIndex:
    """Maps turbine ids to indices 0..T-1 in order of first appearance.

    Parameters
    ----------
    known : array-like of shape (T,), optional
        A declared fleet; then any other id is an error.
    max_turbines : int
        Bound on the number of distinct turbines (a guard against absurd input).

    Examples
    --------
    >>> index = TurbineIndex()
    >>> index.lookup(np.array([7, 3, 7, 9]))
    array([0, 1, 0, 2])
    >>> index.ids
    array([7, 3, 9])
    """

    def __init__(self, known: ArrayLike | None = None, max_turbines: int = 100_000) -> None:
        self.max_turbines = max_turbines
        self.fixed = known is not None
        self._ids = np.zeros(0, dtype=np.int64)
        self._table = np.full(0, -1, dtype=np.intp)
        self._sorted: tuple[NDArray[np.intp], I64] | None = None
        if known is not None:
            self._register(np.asarray(known, dtype=np.int64))

    @property
    def ids(self) -> I64:
        """The turbine ids, shape (T,), position = dense index."""
        return self._ids

    @property
    def table(self) -> NDArray[np.intp]:
        """Dense index by id for ids in ``[0, table.size)`` (-1: unknown); empty when ids
        fall outside (negative or huge ids use a binary search instead)."""
        return self._table

    def __len__(self) -> int:
        return int(self._ids.size)

    def lookup(self, turbine_ids: I64) -> NDArray[np.intp]:
        """Dense index of each id, registering new ids unless the fleet is fixed.

        Parameters
        ----------
        turbine_ids : ndarray of shape (n,)

        Returns
        -------
        ndarray of shape (n,)
        """
        idx = self.find(turbine_ids)
        missing = idx < 0
        if missing.any():
            new = turbine_ids[missing]
            if self.fixed:
                raise SchemaError(f"unknown turbine {int(new[0])} (not in the configured fleet)")
            _, first = np.unique(new, return_index=True)
            self._register(new[np.sort(first)])
            idx = self.find(turbine_ids)
        return idx

    def find(self, turbine_ids: I64) -> NDArray[np.intp]:
        """Dense index of each id, -1 for an id not registered (shape (n,))."""
        if turbine_ids.size == 0:
            return np.zeros(0, dtype=np.intp)
        lo, hi = int(turbine_ids.min()), int(turbine_ids.max())
        if lo >= 0 and hi < self._table.size:
            return np.take(self._table, turbine_ids)
        if self._ids.size == 0:
            return np.full(turbine_ids.shape, -1, dtype=np.intp)
        if self._sorted is None:  # ids outside the table (negative: named turbines)
            order = np.argsort(self._ids)
            self._sorted = (order, self._ids[order])
        order, sorted_ids = self._sorted
        pos = np.minimum(np.searchsorted(sorted_ids, turbine_ids), sorted_ids.size - 1)
        found = sorted_ids[pos] == turbine_ids
        return np.where(found, order[pos], -1).astype(np.intp)

    def _register(self, new_ids: I64) -> None:
        if self._ids.size + new_ids.size > self.max_turbines:
            raise SchemaError(
                f"more than max_turbines={self.max_turbines} distinct turbines "
                f"(next new id {int(new_ids[0])})"
            )
        start = self._ids.size
        self._ids = np.concatenate((self._ids, new_ids))
        self._sorted = None
        if self._ids.size and self._ids.min() >= 0 and self._ids.max() < _TABLE_LIMIT:
            size = max(int(self._ids.max()) + 1, self._table.size)
            if size > self._table.size:
                table = np.full(size, -1, dtype=np.intp)
                table[: self._table.size] = self._table
                self._table = table
            self._table[new_ids] = np.arange(start, self._ids.size)
        else:
            self._table = np.full(0, -1, dtype=np.intp)
