"""What the detector says about one batch: :class:`BatchResult` and the model codes."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

F64 = NDArray[np.float64]

FILTERED, SKIPPED, WARMUP, TURBINE, FLEET = -2, -1, 0, 1, 2


@dataclass(frozen=True)
class BatchResult:
    """What the detector says about one batch.

    Attributes
    ----------
    timestamps : ndarray of shape (n,)
    turbine_ids : ndarray of shape (n,)
    distances : ndarray of shape (n,)
        Squared Mahalanobis distance (or chart statistic) of each reading;
        0 where the reading was not scored (see ``scored_by``).
    is_anomaly : ndarray of shape (n,)
        Alarm flags: ``distances > threshold`` for scored readings.
    scored_by : ndarray of shape (n,)
        -2 not learned nor scored (a ``learn_when`` state, see ``states``),
        -1 skipped (NaN/inf), 0 warming up (learned, not scored),
        1 the turbine's model, 2 the fleet model of its key group.
    threshold : float
        The squared-distance threshold.
    anomaly_index : ndarray of shape (k,)
        Positions of the anomalies in the batch.
    contributions : ndarray of shape (k, D)
        Each sensor's share of each anomaly's statistic (rows sum to it; the
        conditioning sensors' shares are 0).
    states : ndarray of shape (n,)
        0 for a reading in normal operation, j for one that failed
        ``learn_when`` rule j - 1 (its name is ``state_names[j]``).
    state_names : tuple of str
        ``("normal", <each rule's state>...)``.
    rebaselined : ndarray of shape (r,)
        Turbine ids whose model was re-baselined after this batch.
    """

    timestamps: F64
    turbine_ids: NDArray[np.int64]
    distances: F64
    is_anomaly: NDArray[np.bool_]
    scored_by: NDArray[np.int8]
    threshold: float
    anomaly_index: NDArray[np.intp]
    contributions: F64
    sensors: tuple[str, ...] = field(default=())
    states: NDArray[np.int8] | None = None
    state_names: tuple[str, ...] = ("normal",)
    rebaselined: NDArray[np.int64] = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    @property
    def n_readings(self) -> int:
        return int(self.distances.size)

    @property
    def n_skipped(self) -> int:
        return int(np.count_nonzero(self.scored_by == SKIPPED))

    @property
    def n_filtered(self) -> int:
        """Readings outside ``learn_when`` (stops, curtailment...): not anomalies."""
        return int(np.count_nonzero(self.scored_by == FILTERED))

    @property
    def n_anomalies(self) -> int:
        return int(self.anomaly_index.size)

    def state_counts(self) -> dict[str, int]:
        """Readings per non-normal state in this batch."""
        if self.states is None:
            return {}
        counts = np.bincount(self.states, minlength=len(self.state_names))
        return {name: int(counts[j]) for j, name in enumerate(self.state_names) if j and counts[j]}
