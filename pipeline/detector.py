"""The detector: calibrate, score, then learn, one whole batch at a time.

Semantics (the same for the embedded run and the Kafka service):

* a batch is scored against the models as they were before the batch
  (score, then learn), so no reading ever influences its own score;
* a turbine whose model has learned fewer than ``min_samples`` readings is
  scored against the fleet model of its key group (turbine id mod
  ``key_groups``); before that model is warm too, the reading is learned but
  not scored (no alarm);
* readings flagged anomalous are not learned (``learn_anomalies=False``);
* NaN/inf readings are skipped and counted (``nan_policy='skip'``).

All state depends only on each turbine's own readings and on its key
group's readings, in their order; so splitting a batch by key group (as the
Kafka producers do) or merging the batches of several groups gives the same
anomalies, bit for bit.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.linalg import blas

from pipeline.calibration import calibrate
from pipeline.config import DetectorConfig
from pipeline.covariance import (
    F64,
    GroupedCovariance,
    WelfordCovariance,
    batch_moments,
    combine,
    covariance_of,
    grouped_moments,
)
from pipeline.errors import InputError, SchemaError
from pipeline.mahalanobis import (
    condition_numbers,
    contributions_from_whitened,
    gather_rows,
    regularised_cholesky,
    squared_norms,
    whiten_grouped,
)
from pipeline.names import TurbineNames
from pipeline.turbines import TurbineIndex

SKIPPED, WARMUP, TURBINE, FLEET = -1, 0, 1, 2


@dataclass(frozen=True)
class BatchResult:
    """What the detector says about one batch.

    Attributes
    ----------
    timestamps : ndarray of shape (n,)
    turbine_ids : ndarray of shape (n,)
    distances : ndarray of shape (n,)
        Squared Mahalanobis distance (or MEWMA statistic) of each reading;
        0 where the reading was not scored (see ``scored_by``).
    is_anomaly : ndarray of shape (n,)
        Alarm flags: ``distances > threshold`` for scored readings.
    scored_by : ndarray of shape (n,)
        -1 skipped (NaN/inf), 0 warming up (learned, not scored),
        1 the turbine's model, 2 the fleet model of its key group.
    threshold : float
        The squared-distance threshold.
    anomaly_index : ndarray of shape (k,)
        Positions of the anomalies in the batch.
    contributions : ndarray of shape (k, D)
        Each sensor's share of each anomaly's squared distance (rows sum to
        the distance).
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

    @property
    def n_readings(self) -> int:
        return int(self.distances.size)

    @property
    def n_skipped(self) -> int:
        return int(np.count_nonzero(self.scored_by == SKIPPED))

    @property
    def n_anomalies(self) -> int:
        return int(self.anomaly_index.size)


class Detector:
    """Streaming Mahalanobis anomaly detector over a fleet of turbines.

    Parameters
    ----------
    config : DetectorConfig, optional
        Defaults to ``DetectorConfig()``.
    n_features : int, optional
        D; taken from the configuration's sensors or from the first batch.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> det = Detector(DetectorConfig(min_samples=50, key_groups=1))
    >>> ids = np.repeat(np.arange(3), 100)
    >>> _ = det.process(np.arange(300.0), ids, rng.normal(size=(300, 2)))
    >>> x = np.array([[0.1, -0.2], [8.0, 8.0]])
    >>> r = det.process(np.array([300.0, 300.0]), np.array([0, 1]), x)
    >>> r.is_anomaly.tolist()
    [False, True]
    """

    def __init__(self, config: DetectorConfig | None = None, n_features: int | None = None) -> None:
        self.config = config if config is not None else DetectorConfig()
        self.turbines = TurbineIndex(self.config.turbines, self.config.max_turbines)
        # The names behind hashed turbine ids (pipeline/names.py), kept for display.
        self.names = TurbineNames()
        self.n_features: int | None = None
        self.readings = 0
        self.skipped = 0
        self.anomalies = 0
        self.batches = 0
        d = n_features or (len(self.config.sensors) if self.config.sensors else None)
        if d is not None:
            self._init_models(d)

    # ------------------------------------------------------------------ set-up
    def _init_models(self, d: int) -> None:
        cfg = self.config
        cfg.check_features(d)
        self.n_features = d
        self.threshold = cfg.threshold(d)
        self.min_samples, self.fleet_min_samples = cfg.warmup(d)
        self._offsets = cfg.offsets_array(d)
        self._gains = cfg.gains_array(d)
        # No calibration configured: the readings only need transposing.
        self._identity = (
            cfg.region_factors is None
            and not self._offsets.any()
            and bool(np.all(self._gains == 1.0))
        )
        g = cfg.key_groups
        self._groups = GroupedCovariance(g, d, memory=cfg.memory)
        self._group_chol = np.broadcast_to(np.eye(d), (g, d, d)).copy()
        self._groups_dirty = False
        t = len(self.turbines)
        self._models = GroupedCovariance(t, d, memory=cfg.memory)
        self._chol = np.broadcast_to(np.eye(d), (t, d, d)).copy()
        self._factor = np.ones(0)
        self._group_of = np.zeros(0, dtype=np.intp)
        self._ewma = np.zeros((t, d))
        self._ewma_started = np.zeros(t, dtype=bool)
        self._sync_turbines()

    def _sync_turbines(self) -> None:
        """Grow the per-turbine arrays after new turbines were registered."""
        t, known = len(self.turbines), self._factor.size
        if t == known:
            return
        d = self._features()
        new_ids = self.turbines.ids[known:]
        self._factor = np.concatenate((self._factor, self.config.factor_of(new_ids)))
        groups = np.mod(new_ids, self.config.key_groups).astype(np.intp)
        self._group_of = np.concatenate((self._group_of, groups))
        self._models.grow(t)
        extra = t - self._chol.shape[0]
        if extra > 0:
            self._chol = np.concatenate((self._chol, np.broadcast_to(np.eye(d), (extra, d, d))))
            self._ewma = np.concatenate((self._ewma, np.zeros((extra, d))))
            self._ewma_started = np.concatenate((self._ewma_started, np.zeros(extra, bool)))

    # ------------------------------------------------------------------ input
    def _prepare(
        self, timestamps: ArrayLike, turbine_ids: ArrayLike, values: ArrayLike
    ) -> tuple[F64, NDArray[np.int64], F64, NDArray[np.bool_]]:
        ts = np.asarray(timestamps, dtype=np.float64).reshape(-1)
        ids = np.asarray(turbine_ids)
        if ids.dtype.kind not in "iu":
            if ids.size and not np.all(np.equal(np.mod(ids, 1), 0)):
                raise SchemaError("turbine ids must be integers")
        ids = ids.astype(np.int64, copy=False).reshape(-1)
        x = np.asarray(values, dtype=np.float64)
        if x.ndim != 2:
            raise SchemaError(f"values must have shape (n, D), got {x.shape}")
        n = x.shape[0]
        if ts.shape != (n,) or ids.shape != (n,):
            raise SchemaError(
                f"timestamps {ts.shape}, turbine_ids {ids.shape} and values {x.shape} "
                "must describe the same n readings"
            )
        if self.n_features is None:
            self._init_models(x.shape[1])
        if x.shape[1] != self.n_features:
            raise SchemaError(
                f"readings have {x.shape[1]} sensors, the model has {self.n_features}"
            )
        x = np.ascontiguousarray(x)
        # One contiguous sum is finite exactly when no value is NaN/inf (or the
        # finite values overflow it: then the exact per-row check decides).
        if np.isfinite(x.sum()) and np.isfinite(ts.sum()):
            valid = np.ones(n, dtype=bool)
        else:
            valid = np.isfinite(x).all(axis=1) & np.isfinite(ts)
            if self.config.nan_policy == "error":
                bad = int(np.flatnonzero(~valid)[0])
                raise InputError(f"NaN or infinite reading at row {bad} of the batch")
        return ts, ids, x, valid

    def _features(self) -> int:
        if self.n_features is None:
            raise SchemaError("the detector has seen no data yet")
        return self.n_features

    def _calibrated(self, ids: NDArray[np.int64], x: F64) -> tuple[NDArray[np.intp], F64]:
        """Dense turbine indices (n,) and calibrated readings, transposed: (D, n)."""
        idx = self.turbines.lookup(ids)
        self._sync_turbines()
        if self._identity:
            x_t = np.ascontiguousarray(x.T)  # (D, n): what calibrate() would return, unscaled
        else:
            x_t = calibrate(x, self._offsets, self._gains, np.take(self._factor, idx)).T
        if self.config.chart == "mewma" and idx.size:
            x_t = self._smooth(idx, x_t)
        return idx, x_t

    # ------------------------------------------------------------------ public API
    def process(
        self, timestamps: ArrayLike, turbine_ids: ArrayLike, values: ArrayLike
    ) -> BatchResult:
        """Score a batch against the current models, then learn it.

        Parameters
        ----------
        timestamps : array-like of shape (n,)
            Seconds since the epoch (passed through to the result).
        turbine_ids : array-like of shape (n,)
            Integer turbine id of each reading.
        values : array-like of shape (n, D)
            Raw sensor readings.
        """
        ts, ids, raw, valid = self._prepare(timestamps, turbine_ids, values)
        n = raw.shape[0]
        all_valid = bool(valid.all())
        pos = np.flatnonzero(valid)
        if all_valid:
            idx, x_t = self._calibrated(ids, raw)
        else:
            idx, x_t = self._calibrated(ids[pos], raw[pos])
        stat, scored_by, diff_t, z_t, model, chol = self._score(idx, x_t)
        flags = stat > self.threshold
        hit = np.flatnonzero(flags)
        contrib = self._contributions(diff_t[:, hit], z_t[:, hit], model[hit], chol)
        if self.config.learn_anomalies or hit.size == 0:
            self._learn(idx, x_t)
        else:
            keep = np.flatnonzero(~flags)
            self._learn(idx[keep], np.take(x_t, keep, axis=1))

        if all_valid:
            distances, is_anomaly, by, where = stat, flags, scored_by, hit
        else:
            distances = np.zeros(n)
            distances[pos] = stat
            is_anomaly = np.zeros(n, dtype=bool)
            is_anomaly[pos] = flags
            by = np.full(n, SKIPPED, dtype=np.int8)
            by[pos] = scored_by
            where = pos[hit]
        self.readings += n
        self.skipped += n - pos.size
        self.anomalies += int(hit.size)
        self.batches += 1
        return BatchResult(
            timestamps=ts,
            turbine_ids=ids,
            distances=distances,
            is_anomaly=is_anomaly,
            scored_by=by,
            threshold=self.threshold,
            anomaly_index=where,
            contributions=contrib,
            sensors=self.config.sensors or (),
        )

    def learn(self, timestamps: ArrayLike, turbine_ids: ArrayLike, values: ArrayLike) -> int:
        """Learn a batch without scoring it (a training period); returns readings learned."""
        _, ids, raw, valid = self._prepare(timestamps, turbine_ids, values)
        if not valid.all():
            ids, raw = ids[valid], raw[valid]
        idx, x_t = self._calibrated(ids, raw)
        self._learn(idx, x_t)
        self.skipped += int(valid.size - ids.size)
        return int(ids.size)

    # ------------------------------------------------------------------ scoring
    def _score(
        self, idx: NDArray[np.intp], x_t: F64
    ) -> tuple[F64, NDArray[np.int8], F64, F64, NDArray[np.intp], F64]:
        """Score readings ``x_t`` (D, n) against the models as they are.

        Returns the statistic (n,), the model kind (n,), the deviations and
        whitened deviations (D, n), and each reading's model as an index into
        the returned stack of Cholesky factors: turbine factors first, then
        the key groups' fleet factors (the fleet's alone for the fleet-only
        model).
        """
        d, n = x_t.shape
        stat = np.zeros(n)
        if self.config.per_turbine:
            warm = np.take(self._models.counts, idx) >= self.min_samples
        else:
            warm = np.zeros(n, dtype=bool)
        fleet_only = not self.config.per_turbine and self.config.key_groups == 1
        if n and warm.all():
            by = np.full(n, TURBINE, dtype=np.int8)
            model, chol = idx, self._chol
            diff_t = x_t - gather_rows(self._models.means, idx)
        else:
            groups, group_chol = self._fleet_view()
            if fleet_only:  # one model: the factors are just the fleet's
                chol = group_chol
                ok = groups.counts[0] >= self.fleet_min_samples
                by = np.full(n, FLEET if ok else WARMUP, dtype=np.int8)
                model = np.zeros(n, dtype=np.intp)
                diff_t = x_t - groups.means[0][:, None]
            else:
                chol = np.concatenate((self._chol, group_chol))
                g = np.take(self._group_of, idx)
                fleet = ~warm & (np.take(groups.counts, g) >= self.fleet_min_samples)
                by = np.where(warm, TURBINE, np.where(fleet, FLEET, WARMUP)).astype(np.int8)
                model = np.where(warm, idx, g + self._chol.shape[0])
                diff_t = x_t - gather_rows(
                    np.concatenate((self._models.means, groups.means)), model
                )
        scored = by > 0
        # One triangular solve per model, vectorised over readings.
        if fleet_only and n and scored.all():
            # X L^T = diff^T with BLAS trsm on the (n, D) F-ordered view: no copy.
            z_t = blas.dtrsm(1.0, chol[-1], diff_t.T, side=1, lower=1, trans_a=1).T
            stat = squared_norms(z_t)
        elif n and scored.all():
            z_t = whiten_grouped(diff_t, model, chol)
            stat = squared_norms(z_t)
        else:
            z_t = np.zeros_like(diff_t)
            if scored.any():
                s = np.flatnonzero(scored)
                z_s = whiten_grouped(np.take(diff_t, s, axis=1), model[s], chol)
                z_t[:, s] = z_s
                stat[s] = squared_norms(z_s)
        return stat, by, diff_t, z_t, model, chol

    def _smooth(self, idx: NDArray[np.intp], x_t: F64) -> F64:
        """Per-turbine EWMA of calibrated readings (D, n), in arrival order.

        ``s_i = lambda * x_i + (1 - lambda) * s_(i-1)``, starting at a turbine's
        first reading.  The models then learn and score the smoothed readings,
        so the covariance of the EWMA is estimated from data (the textbook
        ``lambda / (2 - lambda) * Sigma`` holds only for independent readings,
        and sensor data are autocorrelated).  Loops over the position of a
        reading within its turbine's run in the batch, vectorised across
        turbines: never over readings.
        """
        lam = self.config.mewma_lambda
        out = np.empty_like(x_t)
        order = np.argsort(idx, kind="stable")
        sorted_idx = idx[order]
        starts = np.flatnonzero(np.r_[True, sorted_idx[1:] != sorted_idx[:-1]])
        lengths = np.diff(np.r_[starts, sorted_idx.size])
        turb = sorted_idx[starts]
        fresh = ~self._ewma_started[turb]
        self._ewma[turb[fresh]] = x_t[:, order[starts[fresh]]].T
        self._ewma_started[turb] = True
        for k in range(int(lengths.max()) if lengths.size else 0):
            live = lengths > k
            rows = order[starts[live] + k]
            t = turb[live]
            z = lam * x_t[:, rows].T + (1.0 - lam) * self._ewma[t]
            out[:, rows] = z.T
            self._ewma[t] = z
        return out

    def _fleet_view(self) -> tuple[GroupedCovariance, F64]:
        """The key groups' fleet models and their Cholesky factors, up to date.

        With per-turbine models a group's fleet model is, exactly, the merge
        of its turbines' models (every learned reading is in both), so it is
        pooled from them only when a batch needs it (a turbine warming up,
        the fleet metrics), never on the hot path.
        """
        if self.config.per_turbine and self._groups_dirty:
            m = self._models
            gc, gm, gm2 = _pool_groups(
                m.counts, m.means, m.m2, self._group_of, self.config.key_groups
            )
            self._groups.counts, self._groups.means, self._groups.m2 = gc, gm, gm2
            self._group_chol, _ = regularised_cholesky(covariance_of(gc, gm2), self.config.ridge)
            self._groups_dirty = False
        return self._groups, self._group_chol

    def _contributions(self, diff_t: F64, z_t: F64, model: NDArray[np.intp], chol: F64) -> F64:
        """Per-sensor shares (k, D) of the anomalies' statistics, before the models learn.

        Parameters
        ----------
        diff_t, z_t : ndarray of shape (D, k)
            Deviations and whitened deviations of the anomalies.
        model : ndarray of shape (k,)
        chol : ndarray of shape (G, D, D)
        """
        d = self._features()
        if model.size == 0:
            return np.zeros((0, d))
        return contributions_from_whitened(diff_t, z_t, model, chol)

    # ------------------------------------------------------------------ learning
    def _learn(self, idx: NDArray[np.intp], x_t: F64) -> None:
        """Learn calibrated readings ``x_t`` of shape (D, n)."""
        if x_t.shape[1] == 0:
            return
        x = x_t.T  # (n, D) view; the moment functions read it column by column
        ridge = self.config.ridge
        n_groups = self.config.key_groups
        if self.config.per_turbine:
            counts, means, m2 = grouped_moments(x, idx, len(self.turbines))
            changed = self._models.merge_moments(counts, means, m2)
            self._chol[changed], _ = regularised_cholesky(
                covariance_of(self._models.counts[changed], self._models.m2[changed]), ridge
            )
            self._groups_dirty = True
            return
        if n_groups == 1:
            n_b, mean_b, m2_b = batch_moments(x)
            gc, gm, gm2 = np.array([n_b]), mean_b[None], m2_b[None]
        else:
            gc, gm, gm2 = grouped_moments(x, np.take(self._group_of, idx), n_groups)
        changed_g = self._groups.merge_moments(gc, gm, gm2)
        self._group_chol[changed_g], _ = regularised_cholesky(
            covariance_of(self._groups.counts[changed_g], self._groups.m2[changed_g]), ridge
        )

    # ------------------------------------------------------------------ views
    @property
    def fleet_model(self) -> WelfordCovariance:
        """The whole fleet's covariance: the exact merge of the key groups' models."""
        if self.n_features is None:
            raise SchemaError("the detector has seen no data yet")
        return self._fleet_view()[0].total()

    def turbine_model(self, turbine_id: int) -> WelfordCovariance:
        """One turbine's covariance model (a copy)."""
        if self.n_features is None:
            raise SchemaError("the detector has seen no data yet")
        i = int(self.turbines.find(np.array([turbine_id], dtype=np.int64))[0])
        if i < 0:
            raise SchemaError(f"unknown turbine {turbine_id}")
        return WelfordCovariance.from_state(
            {"n": self._models.counts[i], "mean": self._models.means[i], "m2": self._models.m2[i]}
        )

    def sample_counts(self) -> NDArray[np.float64]:
        """Readings learned by each turbine's model, shape (T,) in ``turbines.ids`` order."""
        return self._models.counts.copy() if self.n_features is not None else np.zeros(0)

    def warming_up(self) -> int:
        """How many known turbines have not yet learned ``min_samples`` readings."""
        if self.n_features is None:
            return 0
        return int(np.count_nonzero(self._models.counts < self.min_samples))

    def worst_condition(self) -> float:
        """Largest condition number over the warm turbine models (1 when none)."""
        if self.n_features is None:
            return 1.0
        warm = self._models.counts >= self.min_samples
        if not warm.any():
            return 1.0
        cov = covariance_of(self._models.counts[warm], self._models.m2[warm])
        return float(np.max(condition_numbers(cov)))

    # ------------------------------------------------------------------ state
    def state(self) -> dict[str, np.ndarray]:
        """All learned state as plain arrays (``np.savez``-able, no pickle)."""
        if self.n_features is None:
            return {"config": np.asarray(self.config.model_dump_json()), **self.names.state()}
        return {
            "config": np.asarray(self.config.model_dump_json()),
            **self.names.state(),
            "turbine_ids": self.turbines.ids.copy(),
            "turbine_counts": self._models.counts.copy(),
            "turbine_means": self._models.means.copy(),
            "turbine_m2": self._models.m2.copy(),
            "group_counts": self._fleet_view()[0].counts.copy(),
            "group_means": self._groups.means.copy(),
            "group_m2": self._groups.m2.copy(),
            "ewma": self._ewma.copy(),
            "ewma_started": self._ewma_started.copy(),
            "counters": np.array(
                [self.readings, self.skipped, self.anomalies, self.batches], dtype=np.int64
            ),
        }

    @classmethod
    def from_state(
        cls, state: Mapping[str, np.ndarray], config: DetectorConfig | None = None
    ) -> Detector:
        """Rebuild a detector from :meth:`state` (with its own config unless one is given)."""
        if config is None:
            config = DetectorConfig.model_validate(json.loads(str(state["config"])))
        det = cls(config)
        det.names = TurbineNames.from_state(state)
        if "turbine_means" not in state:
            return det
        means = np.asarray(state["turbine_means"], dtype=np.float64)
        group_means = np.asarray(state["group_means"], dtype=np.float64)
        d = group_means.shape[1]
        if det.n_features is None:
            det._init_models(d)
        elif det.n_features != d:
            raise SchemaError(f"state has {d} sensors, the configuration {det.n_features}")
        if group_means.shape[0] != config.key_groups:
            raise SchemaError(
                f"state has {group_means.shape[0]} key groups, the configuration "
                f"{config.key_groups}"
            )
        ids = np.asarray(state["turbine_ids"], dtype=np.int64)
        if ids.size:
            det.turbines.lookup(ids)
            det._sync_turbines()
        pos = det.turbines.lookup(ids)
        det._models.counts[pos] = state["turbine_counts"]
        det._models.means[pos] = means
        det._models.m2[pos] = state["turbine_m2"]
        det._ewma[pos] = state["ewma"]
        det._ewma_started[pos] = state["ewma_started"]
        det._groups.counts[:] = state["group_counts"]
        det._groups.means[:] = group_means
        det._groups.m2[:] = state["group_m2"]
        det.readings, det.skipped, det.anomalies, det.batches = (
            int(v) for v in np.asarray(state["counters"])
        )
        det._refactor()
        return det

    def _refactor(self) -> None:
        ridge = self.config.ridge
        if self._models.n_groups:
            self._chol, _ = regularised_cholesky(self._models.covariance, ridge)
        if self.config.per_turbine:
            self._groups_dirty = True
        else:
            self._group_chol, _ = regularised_cholesky(self._groups.covariance, ridge)

    def merge(self, other: Detector) -> Detector:
        """Combine another detector's learned state into this one, exactly (Chan)."""
        self.names.merge(other.names)
        if other.n_features is None:
            return self
        if self.n_features is None:
            self._init_models(other.n_features)
        if other.n_features != self.n_features or other.config.key_groups != self.config.key_groups:
            raise SchemaError("cannot merge detectors with different sensors or key groups")
        pos = self.turbines.lookup(other.turbines.ids)
        self._sync_turbines()
        n, mean, m2 = combine(
            self._models.counts[pos],
            self._models.means[pos],
            self._models.m2[pos],
            other._models.counts,
            other._models.means,
            other._models.m2,
        )
        self._models.counts[pos], self._models.means[pos], self._models.m2[pos] = n, mean, m2
        if not self.config.per_turbine:
            self._groups.merge(other._groups)
        self.readings += other.readings
        self.skipped += other.skipped
        self.anomalies += other.anomalies
        self.batches += other.batches
        self._refactor()
        return self


def _pool_groups(
    counts: F64, means: F64, m2: F64, group_of: NDArray[np.intp], n_groups: int
) -> tuple[F64, F64, F64]:
    """Moments of each key group from its turbines' moments (exact, Chan).

    Uses ``np.bincount`` so each group sums only its own turbines, in turbine
    order: the result does not depend on other groups' data.

    Parameters
    ----------
    counts : ndarray of shape (T,)
    means : ndarray of shape (T, D)
    m2 : ndarray of shape (T, D, D)
    group_of : ndarray of shape (T,)
    n_groups : int
    """
    d = means.shape[1]
    gc = np.bincount(group_of, weights=counts, minlength=n_groups).astype(np.float64)
    safe = np.where(gc > 0, gc, 1.0)
    weighted = means * counts[:, None]
    gm = np.empty((n_groups, d))
    for j in range(d):
        gm[:, j] = np.bincount(group_of, weights=weighted[:, j], minlength=n_groups) / safe
    dev = means - gm[group_of]
    gm2 = np.empty((n_groups, d, d))
    for a in range(d):
        for b in range(a, d):
            w = m2[:, a, b] + counts * dev[:, a] * dev[:, b]
            v = np.bincount(group_of, weights=w, minlength=n_groups)
            gm2[:, a, b] = v
            gm2[:, b, a] = v
    return gc, gm, gm2
