"""The detector: calibrate, score, then learn, one whole batch at a time.

Semantics (the same for the embedded run and the Kafka service):

* a batch is scored against the models as they were before the batch
  (score, then learn), so no reading ever influences its own score;
* a model is kept per turbine and, with ``regime``, per (turbine, bin of
  the regime sensor); fleet models per (key group, bin) are the exact
  merges of their turbines' models;
* a model that has learned fewer than ``min_samples`` readings (or over
  less than ``warmup_span``) is stood in for by its fleet model; before
  that model is warm too, the reading is learned but not scored (no alarm);
* with ``conditions`` the score is the squared distance of the other
  sensors given the conditioning ones (a Schur complement: the lower block
  of the Cholesky factor with the conditions ordered first);
* readings above the learning gate (the alarm threshold unless
  ``learn_gate`` is set) are not learned (``learn_anomalies=False``);
* readings failing a ``learn_when`` rule are neither learned nor scored and
  are reported with the rule's state (e.g. ``stopped``);
* NaN/inf readings are skipped and counted (``nan_policy='skip'``).

All state depends only on each turbine's own readings and on its key
group's readings, in their order; so splitting a batch by key group (as the
Kafka producers do) or merging the batches of several groups gives the same
anomalies, bit for bit.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.linalg import blas

from pipeline import batch_math
from pipeline.calibration import calibrate
from pipeline.charts import ewma_by_count
from pipeline.config import DetectorConfig
from pipeline.covariance import (
    F64,
    GroupedCovariance,
    WelfordCovariance,
    combine,
    covariance_of,
)
from pipeline.errors import InputError, SchemaError
from pipeline.mahalanobis import (
    condition_numbers,
    gather_rows,
    squared_norms,
    whiten_grouped,
)
from pipeline.names import TurbineNames
from pipeline.policy import (
    RangeRules,
    fleet_deviations,
    learning_states,
    peer_counts,
    peer_deviation,
    regime_bins,
    settling,
    time_decay,
)
from pipeline.prediction import PredictionBound
from pipeline.rebaseline import RebaselineRuns
from pipeline.residual_chart import ChartScores, ResidualChart
from pipeline.results import FILTERED, FLEET, SKIPPED, TURBINE, WARMUP, BatchResult
from pipeline.turbines import TurbineIndex


@dataclass(frozen=True)
class _Scores:
    """A batch scored: statistics, the model kind and the stack each reading was scored by.

    ``model`` (n,) indexes ``chol`` (M, D, D) and ``means`` (M, D).
    """

    whitened: batch_math.Whitened
    scored_by: NDArray[np.int8]
    model: NDArray[np.intp]
    chol: F64
    means: F64


_NO_INDEX = np.zeros(0, dtype=np.intp)
_NO_VALUES = np.zeros(0)
# The plain path re-baselines nothing: one shared empty array, read-only.
_NONE_REBASELINED = np.zeros(0, dtype=np.int64)
_NONE_REBASELINED.flags.writeable = False


class Detector:
    """Streaming Mahalanobis anomaly detector over a fleet of turbines.

    Parameters
    ----------
    config : DetectorConfig, optional
        Defaults to ``DetectorConfig()``.
    n_features : int, optional
        D; taken from the configuration's sensors or from the first batch.
    compiled : bool, optional
        Run the per-batch maths with the compiled kernels (:mod:`pipeline.kernels`,
        the default where numba imports) or with NumPy (``False``: the oracle).

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

    def __init__(
        self,
        config: DetectorConfig | None = None,
        n_features: int | None = None,
        compiled: bool | None = None,
    ) -> None:
        self.config = config if config is not None else DetectorConfig()
        # The compiled kernels (pipeline/kernels) unless told otherwise or numba is absent;
        # compiled=False runs the NumPy path, the kernels' oracle.
        self._kernels = batch_math.compiled_kernels() if compiled is not False else None
        self.compiled = self._kernels is not None
        self.turbines = TurbineIndex(self.config.turbines, self.config.max_turbines)
        # The names behind hashed turbine ids (pipeline/names.py), kept for display.
        self.names = TurbineNames()
        self.n_features: int | None = None
        self.readings = 0
        self.skipped = 0
        self.anomalies = 0
        self.batches = 0
        self.filtered = 0
        self.rebaselines = 0
        self.state_names: tuple[str, ...] = (
            "normal",
            *(r.state for r in self.config.learn_when),
            *(("settling",) if self.config.settle_span is not None else ()),
        )
        d = n_features or (len(self.config.sensors) if self.config.sensors else None)
        if d is not None:
            self._init_models(d)

    # ------------------------------------------------------------------ set-up
    def _init_models(self, d: int) -> None:
        cfg = self.config
        cfg.check_features(d)
        roles = bool(
            cfg.conditions
            or cfg.regime
            or cfg.learn_when
            or cfg.fleet_relative
            or cfg.sensor_floor
            or cfg.chart_sensors
        )
        if roles:
            if cfg.sensors is None:
                raise SchemaError(
                    "conditions, regime, learn_when and fleet_relative name sensors: "
                    "the configuration needs the sensor names"
                )
            cfg.check_sensor_roles(cfg.sensors)
        sensors = tuple(cfg.sensors or ())
        self.n_features = d
        self.threshold = cfg.threshold(d)
        self.gate = cfg.gate(d)
        # Point statistics scaled to the threshold by the models' ages (pipeline/prediction.py).
        # The scale is the alarm rate's; a learn_gate compares the same scaled statistic
        # (at a rarer gate rate the exact scale is a little smaller: the gate is slightly stricter).
        self._bound = (
            PredictionBound(cfg.point_rate(), cfg.degrees_of_freedom(d))
            if cfg.prediction_bound == "hotelling"
            else None
        )
        self.min_samples, self.fleet_min_samples = cfg.warmup(d)
        self._offsets = cfg.offsets_array(d)
        self._gains = cfg.gains_array(d)
        # No calibration configured: the readings only need transposing.
        self._identity = (
            cfg.region_factors is None
            and not self._offsets.any()
            and bool(np.all(self._gains == 1.0))
        )
        self._k = len(cfg.conditions)
        if self._k:
            first = [sensors.index(c) for c in cfg.conditions]
            self._perm: NDArray[np.intp] | None = np.array(
                first + [j for j in range(d) if j not in first], dtype=np.intp
            )
        else:
            self._perm = None
        if cfg.sensor_floor:
            floor = np.array([cfg.sensor_floor.get(name, 0.0) for name in sensors]) ** 2
            self._floor: F64 | None = floor[self._perm] if self._perm is not None else floor
        else:
            self._floor = None
        self._bins = cfg.regime.n_bins if cfg.regime is not None else 1
        self._edges = np.asarray(cfg.regime.edges if cfg.regime is not None else (), np.float64)
        self._regime_col = sensors.index(cfg.regime.sensor) if cfg.regime is not None else -1
        self._rule_cols = [sensors.index(r.sensor) for r in cfg.learn_when]
        self._where_cols = [
            sensors.index(r.where.sensor) if r.where is not None else -1 for r in cfg.learn_when
        ]
        # The range rules as arrays for the compiled states (None: NumPy's, or normal codes).
        self._range_rules = (
            RangeRules.of(cfg.learn_when, self._rule_cols, self._where_cols)
            if self.compiled and self._rule_cols
            else None
        )
        # Each once: a deviation from the median is its own deviation from the median.
        self._relative_cols = list(dict.fromkeys(sensors.index(s) for s in cfg.fleet_relative))
        self._track_time = (
            cfg.warmup_span is not None
            or cfg.memory_span is not None
            or cfg.rebaseline_after is not None
        )
        g, b = cfg.key_groups, self._bins
        self._groups = GroupedCovariance(g * b, d, memory=cfg.memory)
        self._group_chol = np.broadcast_to(np.eye(d), (g * b, d, d)).copy()
        self._groups_dirty = False
        # Fleet models not pooled since their turbine models last learned (per_turbine);
        # _groups_dirty: every fleet model may be (a re-baseline, a restored state).
        self._groups_stale = np.zeros(g * b, dtype=bool)
        self._fleet_map = np.zeros(0, dtype=np.intp)  # _model_fleet()
        m = len(self.turbines) * b
        self._models = GroupedCovariance(m, d, memory=cfg.memory)
        self._chol = np.broadcast_to(np.eye(d), (m, d, d)).copy()
        self._first_time = np.full(m, np.nan)
        self._last_time = np.full(m, np.nan)
        self._factor = np.ones(0)
        self._group_of = np.zeros(0, dtype=np.intp)
        t = len(self.turbines)
        self._ewma = np.zeros((t, d))
        self._ewma_started = np.zeros(t, dtype=bool)
        self._last_state_time = np.full(t, np.nan)  # settle_span: last time in a state
        r = d - self._k
        # The scored sensors the residual chart watches (1) or leaves to the point score (0).
        mask = np.ones(r)
        if cfg.chart_sensors:
            order = self._perm[self._k :] if self._perm is not None else np.arange(d)
            mask = np.asarray([sensors[j] in cfg.chart_sensors for j in order], dtype=np.float64)
        # The chart's statistic is reported scaled to the alarm threshold; so is its gate.
        # Its threshold counts the sensors it watches (chart_sensors), not all scored ones.
        chart_threshold = cfg.chart_threshold(d, sensors)
        self._chart_gate = self.threshold * cfg.chart_gate(d, sensors) / chart_threshold
        self._residuals = ResidualChart(
            t,
            r,
            span=cfg.chart_span or 86400.0,
            floor=cfg.chart_floor,
            min_samples=self.min_samples,
            scale=self.threshold / chart_threshold,
            ridge=cfg.ridge,
            mask=mask,
            compiled=self.compiled,
        )
        self._runs = (
            RebaselineRuns(
                m, d, self._k, cfg.rebaseline_after, cfg.rebaseline_share, cfg.rebaseline_steady
            )
            if cfg.rebaseline_after is not None
            else None
        )
        # The plain configuration: one compiled call scores and learns a batch whose
        # readings are all valid and of warm models (see _process_plain).
        self._plain_model_of = np.zeros(0, dtype=np.intp)
        self._work_hit = np.zeros(0, dtype=np.int64)
        self._work_shares = np.zeros((0, d))
        self._work_failed = np.zeros(0, dtype=np.int64)
        # Conditions and regime bins are the plain path's too: a permutation of the
        # sensors and a bin per reading in the kernel, no pass of their own.
        self._plain = (
            not self._rule_cols
            and cfg.settle_span is None
            and not self._relative_cols
            and cfg.chart == "none"
            and self._runs is None
            and not self._track_time
        )
        self._sync_turbines()

    def _sync_turbines(self) -> None:
        """Grow the per-turbine and per-model arrays after new turbines were registered."""
        t, known = len(self.turbines), self._factor.size
        if t == known:
            return
        d = self._features()
        new_ids = self.turbines.ids[known:]
        self._factor = np.concatenate((self._factor, self.config.factor_of(new_ids)))
        groups = np.mod(new_ids, self.config.key_groups).astype(np.intp)
        self._group_of = np.concatenate((self._group_of, groups))
        m = t * self._bins
        self._models.grow(m)
        extra = m - self._chol.shape[0]
        if extra > 0:
            self._chol = np.concatenate((self._chol, np.broadcast_to(np.eye(d), (extra, d, d))))
            self._first_time = np.concatenate((self._first_time, np.full(extra, np.nan)))
            self._last_time = np.concatenate((self._last_time, np.full(extra, np.nan)))
        extra_t = t - self._ewma.shape[0]
        if extra_t > 0:
            self._ewma = np.concatenate((self._ewma, np.zeros((extra_t, d))))
            self._ewma_started = np.concatenate((self._ewma_started, np.zeros(extra_t, bool)))
            self._last_state_time = np.concatenate(
                (self._last_state_time, np.full(extra_t, np.nan))
            )
            self._residuals.grow(t)
        if self._runs is not None:
            self._runs.grow(m)

    # ------------------------------------------------------------------ input
    def _prepare(
        self, timestamps: ArrayLike, turbine_ids: ArrayLike, values: ArrayLike
    ) -> tuple[F64, NDArray[np.int64], F64, NDArray[np.bool_]]:
        ts, ids, x = self._arrays(timestamps, turbine_ids, values)
        return ts, ids, x, self._valid(ts, x)

    def _arrays(
        self, timestamps: ArrayLike, turbine_ids: ArrayLike, values: ArrayLike
    ) -> tuple[F64, NDArray[np.int64], F64]:
        """The batch as arrays (n,), (n,), (n, D) C-contiguous, its shapes checked."""
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
        return ts, ids, np.ascontiguousarray(x)

    def _valid(self, ts: F64, x: F64) -> NDArray[np.bool_]:
        """The readings (n,) with finite values and timestamp (``nan_policy='error'``: all)."""
        # One contiguous sum is finite exactly when no value is NaN/inf (or the
        # finite values overflow it: then the exact per-row check decides).
        if np.isfinite(x.sum()) and np.isfinite(ts.sum()):
            return np.ones(x.shape[0], dtype=bool)
        valid = np.isfinite(x).all(axis=1) & np.isfinite(ts)
        if self.config.nan_policy == "error":
            bad = int(np.flatnonzero(~valid)[0])
            raise InputError(f"NaN or infinite reading at row {bad} of the batch")
        return valid

    def _features(self) -> int:
        if self.n_features is None:
            raise SchemaError("the detector has seen no data yet")
        return self.n_features

    def _calibrated(
        self, ids: NDArray[np.int64], x: F64, ts: F64, idx: NDArray[np.intp] | None = None
    ) -> tuple[NDArray[np.intp], NDArray[np.intp], F64]:
        """Dense turbine indices (n,), model indices (n,) and model-ready readings (D, n).

        Model-ready: calibrated, fleet-relative sensors as deviations from the
        fleet median, smoothed (``chart = "mewma"``), conditions first.  ``idx``:
        the turbine indices of ``ids`` when already looked up.
        """
        if idx is None:
            idx = self.turbines.lookup(ids)
            self._sync_turbines()
        regime = self.config.regime  # the raw regime sensor, read before anything is written
        if regime is not None and self._bins > 1:
            bins = regime_bins(x[:, self._regime_col], self._edges, self.compiled)
            model = idx * self._bins + bins
        else:
            model = idx
        if self._identity:
            x_t = np.ascontiguousarray(x.T)  # (D, n): what calibrate() would return, unscaled
        else:
            x_t = calibrate(x, self._offsets, self._gains, np.take(self._factor, idx)).T
        cols = self._relative_cols
        if cols:
            if not x_t.flags.writeable or x_t.base is x:
                x_t = np.array(x_t)
            x_t[cols] = fleet_deviations(ts, x_t[cols], self.compiled)  # times grouped once
        if self.config.chart == "mewma" and idx.size:
            x_t = ewma_by_count(idx, x_t, self.config.mewma_lambda, self._ewma, self._ewma_started)
        if self._perm is not None:
            x_t = np.ascontiguousarray(x_t[self._perm])
        return idx, model, x_t

    def _live(
        self, raw: F64, valid: NDArray[np.bool_], ids: NDArray[np.int64], ts: F64
    ) -> tuple[NDArray[np.intp], NDArray[np.int8] | None, NDArray[np.intp] | None]:
        """Positions of the readings to score and learn, each reading's state code (n,),
        and the turbine indices of those readings when they were looked up here."""
        if not self._rule_cols:
            return (np.arange(valid.size) if valid.all() else np.flatnonzero(valid)), None, None
        rules, cols, where = self.config.learn_when, self._rule_cols, self._where_cols
        ranges = self._range_rules
        everything = bool(valid.all())
        if everything:  # the usual batch: no copies of the valid readings
            pos = np.arange(valid.size)
            states = learning_states(raw, rules, cols, where, ranges)
            codes, ids_v, ts_v = states, ids, ts
        else:
            states = np.zeros(valid.size, dtype=np.int8)
            pos = np.flatnonzero(valid)
            states[pos] = learning_states(raw[pos], rules, cols, where, ranges)
            codes, ids_v, ts_v = states[pos], ids[pos], ts[pos]
        span = self.config.settle_span
        if span is None:
            return pos[codes == 0], states, None
        idx = self.turbines.lookup(ids_v)
        self._sync_turbines()
        settle, self._last_state_time = settling(
            idx, ts_v, codes > 0, self._last_state_time, span, self.compiled
        )
        if everything:
            states[settle] = len(self.state_names) - 1
            keep = states == 0
        else:
            states[pos[settle]] = len(self.state_names) - 1
            keep = states[pos] == 0
        return pos[keep], states, idx[keep]

    # ------------------------------------------------------------------ public API
    def process(
        self, timestamps: ArrayLike, turbine_ids: ArrayLike, values: ArrayLike
    ) -> BatchResult:
        """Score a batch against the current models, then learn it.

        Parameters
        ----------
        timestamps : array-like of shape (n,)
            Seconds since the epoch (non-decreasing per turbine).
        turbine_ids : array-like of shape (n,)
            Integer turbine id of each reading (names: :mod:`pipeline.names`).
        values : array-like of shape (n, D)
            Raw sensor readings.
        """
        ts, ids, raw = self._arrays(timestamps, turbine_ids, values)
        if self._plain and self.compiled:
            plain = self._process_plain(ts, ids, raw)
            if plain is not None:
                return plain
        valid = self._valid(ts, raw)
        n = raw.shape[0]
        live, states, idx_live = self._live(raw, valid, ids, ts)
        everything = live.size == n
        if everything:
            idx, model_of, x_t = self._calibrated(ids, raw, ts, idx_live)
            ts_l = ts
        else:
            ts_l = ts[live]
            # The live readings gathered sensor by sensor: (D, n_live) C-contiguous, so
            # its transpose (n_live, D) needs no second copy to become the model layout.
            raw_l = np.take(raw.T, live, axis=1).T
            idx, model_of, x_t = self._calibrated(ids[live], raw_l, ts_l, idx_live)
        sc = self._score(model_of, x_t)
        stat, scored_by = sc.whitened.stat, sc.scored_by
        chart = None
        if self.config.chart == "residual":
            z_t = sc.whitened.z_t
            assert z_t is not None  # noqa: S101 (scored with full=True for the chart)
            chart = self._chart_scores(idx, ts_l, z_t, scored_by)
        point = stat
        if chart is not None:
            stat = np.maximum(stat, chart.statistic)
        flags = stat > self.threshold
        hit = np.flatnonzero(flags)
        contrib = self._contributions(x_t, sc, hit, chart, idx)
        # The learning gate applies to each reading's own score: a reading that is
        # normal on its own is learned even while the residual chart alarms (else
        # the chart would lock its turbine out until a re-baseline).
        if self.config.learn_anomalies:
            skip = None
        elif self.gate > self.threshold or chart is not None:
            skip = point > self.gate
        else:
            skip = None if hit.size == 0 else flags
        if self._runs is not None:
            s = scored_by > 0
            self._runs.observe(
                model_of[s], ts_l[s], np.take(x_t, np.flatnonzero(s), axis=1), flags[s]
            )
        # The scores' readings by model serve the learning when the models are the same.
        blocks = sc.whitened.blocks if sc.model is model_of else None
        self._learn(model_of, x_t, ts_l, skip, blocks)
        if chart is not None:
            learned = np.ones(idx.size, dtype=bool) if skip is None else ~skip
            calm = learned & chart.charted & (scored_by > 0) & (chart.statistic <= self._chart_gate)
            self._residuals.learn(idx, chart, calm)
        rebaselined = self._settle_runs(ts_l) if self._runs is not None else np.zeros(0, np.int64)

        if everything:
            distances, is_anomaly, by, where = stat, flags, scored_by, hit
        else:
            distances = np.zeros(n)
            distances[live] = stat
            is_anomaly = np.zeros(n, dtype=bool)
            is_anomaly[live] = flags
            by = np.full(n, SKIPPED, dtype=np.int8)
            if states is not None:
                by[valid & (states > 0)] = FILTERED
            by[live] = scored_by
            where = live[hit]
        n_filtered = 0 if states is None else int(np.count_nonzero(valid & (states > 0)))
        self.readings += n
        self.skipped += int(np.count_nonzero(~valid))
        self.filtered += n_filtered
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
            states=states,
            state_names=self.state_names,
            rebaselined=rebaselined,
        )

    def _process_plain(self, ts: F64, ids: NDArray[np.int64], raw: F64) -> BatchResult | None:
        """:meth:`process` of the plain configuration in one compiled call (None: not here).

        Only when every reading is finite, of a known turbine, and its model
        (the turbine's, or its key group's with ``per_turbine=False``) is warm;
        otherwise nothing has changed and the general path takes the batch.
        """
        n = raw.shape[0]
        if n == 0:
            return None
        cfg = self.config
        table = self.turbines.table
        perm = self._perm
        if self._identity and table.size:
            # The kernel looks the ids up and checks the values are finite.
            # (D, n) F-ordered: read in place, or the conditions first (one copy).
            x_t = raw.T if perm is None else np.take(raw, perm, axis=1).T
            idx, lookup = _NO_INDEX, table
        else:
            if not self._valid(ts, raw).all():
                return None
            idx = self.turbines.lookup(ids)
            self._sync_turbines()
            x = (
                raw
                if self._identity
                else calibrate(raw, self._offsets, self._gains, np.take(self._factor, idx))
            )
            x_t = (x if perm is None else np.take(x, perm, axis=1)).T
            lookup = _NO_INDEX
        # The regime bins of the raw sensor, in the kernel (after its finite check).
        regime = np.ascontiguousarray(raw[:, self._regime_col]) if self._bins > 1 else _NO_VALUES
        if cfg.per_turbine:
            stack, chol = self._models, self._chol
            min_count, code = self.min_samples, TURBINE
        else:
            stack, chol = self._groups, self._group_chol
            min_count, code = self.fleet_min_samples, FLEET
        model_of = self._plain_models()
        assert self._kernels is not None  # noqa: S101 (the plain path is compiled)
        d = raw.shape[1]
        if self._work_hit.size < n:  # work arrays, reused while batches are no larger
            self._work_hit = np.empty(n, dtype=np.int64)
            self._work_shares = np.empty((n, d))
        if self._work_failed.size < stack.n_groups:
            self._work_failed = np.empty(stack.n_groups, dtype=np.int64)
        stat, flags = np.empty(n), np.empty(n, dtype=bool)
        done, n_hit, n_failed = self._kernels.score_then_learn(
            x_t,
            ts,
            ids,
            lookup,
            idx,
            model_of,
            regime,
            self._edges,
            self._k,
            stack.counts,
            stack.means,
            stack.m2,
            chol,
            self._bound.table if self._bound is not None else batch_math.NONE,
            float(min_count),
            self.threshold,
            self.gate,
            cfg.learn_anomalies,
            0.0 if cfg.memory is None else float(cfg.memory),
            batch_math.NONE if self._floor is None else self._floor,
            cfg.ridge,
            stat,
            flags,
            self._work_hit,
            self._work_shares,
            self._work_failed,
        )
        if not done:
            return None
        if n_failed:  # not positive definite: the NumPy path's eigenvalue repair
            failed = self._work_failed[:n_failed].copy()
            chol[failed] = self._factors(stack.counts[failed], stack.m2[failed])
        hit = self._work_hit[:n_hit].copy()
        if perm is None:
            shares = self._work_shares[:n_hit].copy()
        else:  # the sensors' shares in the configuration's order, 0 for the conditions
            shares = np.zeros((n_hit, d))
            shares[:, perm[self._k :]] = self._work_shares[:n_hit, : d - self._k]
        if cfg.per_turbine:
            self._groups_dirty = True
        self.readings += n
        self.anomalies += int(hit.size)
        self.batches += 1
        by = np.empty(n, dtype=np.int8)  # np.full, without its overhead per batch
        by.fill(code)
        return BatchResult(
            timestamps=ts,
            turbine_ids=ids,
            distances=stat,
            is_anomaly=flags,
            scored_by=by,
            threshold=self.threshold,
            anomaly_index=hit,
            contributions=shares,
            sensors=cfg.sensors or (),
            states=None,
            state_names=self.state_names,
            rebaselined=_NONE_REBASELINED,
        )

    def _plain_models(self) -> NDArray[np.intp]:
        """The model of each turbine (T,) for the plain path: its key group's (empty: its own)."""
        if self.config.per_turbine:
            return _NO_INDEX  # each turbine's own model
        t = len(self.turbines)
        if self._plain_model_of.size != t:
            if self._groups.n_groups == 1:
                self._plain_model_of = np.zeros(t, dtype=np.intp)
            else:
                self._plain_model_of = self._group_of.copy()
        return self._plain_model_of

    def learn(self, timestamps: ArrayLike, turbine_ids: ArrayLike, values: ArrayLike) -> int:
        """Learn a batch without scoring it (a training period); returns readings learned."""
        ts, ids, raw, valid = self._prepare(timestamps, turbine_ids, values)
        live, states, idx_live = self._live(raw, valid, ids, ts)
        _, model_of, x_t = self._calibrated(ids[live], raw[live], ts[live], idx_live)
        self._learn(model_of, x_t, ts[live])
        self.skipped += int(np.count_nonzero(~valid))
        if states is not None:
            self.filtered += int(np.count_nonzero(valid & (states > 0)))
        return int(live.size)

    def rebaseline(self, turbine_ids: ArrayLike) -> int:
        """Forget the models of these turbines (all regime bins): they warm up afresh.

        What an operator does after maintenance.  The turbines' fleet models
        stand in while they warm up.  Returns the number of turbines reset.
        """
        ids = np.unique(np.asarray(turbine_ids, dtype=np.int64).reshape(-1))
        if self.n_features is None or ids.size == 0:
            return 0
        pos = self.turbines.find(ids)
        if (pos < 0).any():
            raise SchemaError(f"unknown turbine {self.names.name_of(int(ids[pos < 0][0]))}")
        d = self._features()
        rows = (pos[:, None] * self._bins + np.arange(self._bins)[None, :]).reshape(-1)
        self._models.counts[rows] = 0.0
        self._models.means[rows] = 0.0
        self._models.m2[rows] = 0.0
        self._chol[rows] = np.eye(d)
        self._first_time[rows] = np.nan
        self._last_time[rows] = np.nan
        self._ewma_started[pos] = False
        self._residuals.reset(pos)
        if self._runs is not None:
            self._runs.reset(rows)
        self._groups_dirty = True
        if not self.config.per_turbine:
            self._groups_dirty = False  # fleet-only: the fleet model keeps what it learned
        self.rebaselines += int(ids.size)
        return int(ids.size)

    # ------------------------------------------------------------------ scoring
    def _score(self, idx: NDArray[np.intp], x_t: F64) -> _Scores:
        """Score readings ``x_t`` (D, n) of models ``idx`` (n,) against the models as they are.

        Each reading's model is an index into the stack of the returned
        factors and means: turbine models first, then the key groups' fleet
        models (the fleet's alone for the fleet-only model).  Statistics are
        scaled by the prediction bound's scale (when configured); readings
        not scored (``WARMUP``) have statistic 0.
        """
        d, n = x_t.shape
        k = self._k
        if self.config.per_turbine:
            warm = np.take(self._models.counts, idx) >= self.min_samples
            span = self.config.warmup_span
            if span is not None:
                learned = np.take(self._last_time, idx) - np.take(self._first_time, idx)
                warm &= learned >= span  # NaN (nothing learned yet) compares False
            all_warm = bool(n and warm.all())
        else:
            all_warm = False
        fleet_only = not self.config.per_turbine and self.config.key_groups == 1 and self._bins == 1
        if all_warm:
            by = np.full(n, TURBINE, dtype=np.int8)
            model, chol, counts, means = idx, self._chol, self._models.counts, self._models.means
        else:
            if not self.config.per_turbine:
                warm = np.zeros(n, dtype=bool)
            g = self._fleet_of(idx)
            # Only the fleet models that stand in for a turbine model are needed.
            needed = None if fleet_only else np.bincount(g[~warm], minlength=self._groups.n_groups)
            groups, group_chol = self._fleet_view(needed)
            if fleet_only:  # one model: the factors are just the fleet's
                chol = group_chol
                ok = groups.counts[0] >= self.fleet_min_samples
                by = np.full(n, FLEET if ok else WARMUP, dtype=np.int8)
                model = np.zeros(n, dtype=np.intp)
                counts, means = groups.counts[:1], groups.means[:1]
            else:
                chol = np.concatenate((self._chol, group_chol))
                fleet = ~warm & (np.take(groups.counts, g) >= self.fleet_min_samples)
                by = np.where(warm, TURBINE, np.where(fleet, FLEET, WARMUP)).astype(np.int8)
                model = np.where(warm, idx, g + self._chol.shape[0])
                counts = np.concatenate((self._models.counts, groups.counts))
                means = np.concatenate((self._models.means, groups.means))
        table = self._bound.table if self._bound is not None else None
        if self.compiled:
            w = batch_math.whiten(
                x_t, model, means, chol, k, counts, table, True, self.config.chart == "residual"
            )
            unscored = by <= 0
            if unscored.any():
                w.stat[unscored] = 0.0
                if w.z_t is not None:
                    w.z_t[:, unscored] = 0.0
            return _Scores(w, by, model, chol, means)
        stat = np.zeros(n)
        diff_t = x_t - (means[0][:, None] if fleet_only else gather_rows(means, model))
        scored = by > 0
        # One triangular solve per model, vectorised over readings.
        if fleet_only and n and scored.all():
            # X L^T = diff^T with BLAS trsm on the (n, D) F-ordered view: no copy.
            z_t = blas.dtrsm(1.0, chol[-1], diff_t.T, side=1, lower=1, trans_a=1).T
            stat = squared_norms(z_t[k:] if k else z_t)
        elif n and scored.all():
            z_t = whiten_grouped(diff_t, model, chol)
            stat = squared_norms(z_t[k:] if k else z_t)
        else:
            z_t = np.zeros_like(diff_t)
            if scored.any():
                s = np.flatnonzero(scored)
                z_s = whiten_grouped(np.take(diff_t, s, axis=1), model[s], chol)
                z_t[:, s] = z_s
                stat[s] = squared_norms(z_s[k:] if k else z_s)
        scale = None
        if self._bound is not None:
            # One scale per model (M,), then per reading: no per-reading table look-up.
            scale = np.take(self._bound.scale(counts), model)
            stat *= scale
        return _Scores(batch_math.Whitened(stat, scale, diff_t, z_t, None), by, model, chol, means)

    def _fleet_of(self, model: NDArray[np.intp]) -> NDArray[np.intp]:
        """Fleet model (key group, bin) of each turbine model index (n,)."""
        b = self._bins
        if b == 1:
            return np.take(self._group_of, model)
        return np.take(self._group_of, model // b) * b + model % b

    def _chart_scores(
        self, idx: NDArray[np.intp], ts: F64, z_t: F64, scored_by: NDArray[np.int8]
    ) -> ChartScores:
        """The residual chart (:mod:`pipeline.residual_chart`) over the scored readings.

        Returns arrays over all n readings (0 where not scored).
        """
        scored = np.flatnonzero(scored_by > 0)
        n, r = idx.size, z_t.shape[0] - self._k
        peers = self.config.chart_peers
        ts_s = ts[scored]
        if peers is not None:
            # Against the turbines beside it: only where enough of them are scored
            # (a time's readings are all kept or all left out: the same medians).
            enough = peer_counts(ts_s) >= peers
            if not enough.all():
                scored, ts_s = scored[enough], ts_s[enough]
            resid, _ = peer_deviation(ts_s, np.take(z_t[self._k :], scored, axis=1), self.compiled)
        else:
            resid = np.take(z_t[self._k :], scored, axis=1)
        sub = self._residuals.score(idx[scored], ts_s, resid)
        if scored.size == n:
            return sub
        stat, dev, white = np.zeros(n), np.zeros((r, n)), np.zeros((r, n))
        stat[scored], dev[:, scored], white[:, scored] = sub.statistic, sub.deviations, sub.whitened
        charted = np.zeros(n, dtype=bool)
        charted[scored] = True
        return ChartScores(stat, dev, white, charted)

    def _factors(self, counts: F64, m2: F64) -> F64:
        """Cholesky factors (G, D, D) of the models' covariances plus the sensor floors."""
        return batch_math.factors(counts, m2, self._floor, self.config.ridge, self.compiled)

    def _model_fleet(self) -> NDArray[np.intp]:
        """The fleet model of every turbine model (M,), kept until turbines are added."""
        m = self._models.n_groups
        if self._fleet_map.size != m:
            self._fleet_map = self._fleet_of(np.arange(m))
        return self._fleet_map

    def _fleet_view(self, needed: NDArray[np.intp] | None = None) -> tuple[GroupedCovariance, F64]:
        """The key groups' fleet models and their Cholesky factors, up to date.

        With per-turbine models a group's fleet model is, exactly, the merge
        of its turbines' models (every learned reading is in both), so it is
        pooled from them only when a batch needs it (a turbine warming up,
        the fleet metrics), never on the hot path.  ``needed`` (shape (G,),
        nonzero for the fleet models a batch scores with) limits the pooling
        to those: the others may be out of date until a call needs them (a
        group is pooled from its own turbines alone, so pooling fewer groups
        gives each the same moments, bit for bit).
        """
        if not self.config.per_turbine:
            return self._groups, self._group_chol
        if self._groups_dirty:  # the turbine models changed wholesale since the last pooling
            self._groups_stale[:] = True
            self._groups_dirty = False
        pool = self._groups_stale if needed is None else self._groups_stale & (needed > 0)
        if pool.any():
            m = self._models
            group_of = self._model_fleet()
            rows = np.flatnonzero(pool[group_of])
            local = np.cumsum(pool) - 1  # group -> its position among those pooled
            which = np.flatnonzero(pool)
            gc, gm, gm2 = _pool_groups(
                m.counts[rows], m.means[rows], m.m2[rows], local[group_of[rows]], which.size
            )
            self._groups.counts[which], self._groups.means[which] = gc, gm
            self._groups.m2[which] = gm2
            self._group_chol[which] = self._factors(gc, gm2)
            self._groups_stale[which] = False
        return self._groups, self._group_chol

    def _contributions(
        self,
        x_t: F64,
        sc: _Scores,
        hit: NDArray[np.intp],
        chart: ChartScores | None,
        idx: NDArray[np.intp],
    ) -> F64:
        """Per-sensor shares (k, D) of the anomalies' statistics, before the models learn.

        Parameters
        ----------
        x_t : ndarray of shape (D, n)
            Model-ready readings.
        sc : _Scores
            Their scores.
        hit : ndarray of shape (h,)
            The anomalies among the n readings.
        chart : ChartScores, optional
            The residual chart's scores of the n readings.
        idx : ndarray of shape (n,)
            The turbine of each reading.
        """
        d, k = self._features(), self._k
        if hit.size == 0:
            return np.zeros((0, d))
        scale = sc.whitened.scale
        shares, zz = batch_math.contributions(
            x_t, sc.whitened, hit, sc.model, sc.means, sc.chol, k, self.compiled
        )
        if scale is not None:
            shares *= scale[hit][:, None]
        if chart is not None:
            point = np.einsum("rh,rh->h", zz[k:], zz[k:])
            if scale is not None:
                point *= scale[hit]
            use = chart.statistic[hit] > point
            if use.any():
                u = np.flatnonzero(use)
                shares[u] = self._residuals.contributions(idx, chart, hit[u])
        if self._perm is None:
            return shares
        out = np.zeros((hit.size, d))
        out[:, self._perm[k:]] = shares
        return out

    # ------------------------------------------------------------------ learning
    def _learn(
        self,
        model: NDArray[np.intp],
        x_t: F64,
        ts: F64,
        skip: NDArray[np.bool_] | None = None,
        blocks: batch_math.Blocks | None = None,
    ) -> None:
        """Learn model-ready readings ``x_t`` of shape (D, n), of models ``model`` (n,).

        ``skip`` (n,): readings not to learn (the anomalies, by default);
        ``blocks``: the scores' readings by model, when scored by these models.
        """
        if x_t.shape[1] == 0:
            return
        cfg = self.config
        if cfg.per_turbine:
            decay = None
            if self._track_time:
                sel = slice(None) if skip is None else ~skip
                decay = self._decay(model[sel], ts[sel], self._models.counts)
            changed = batch_math.learn(
                self._models,
                self._chol,
                x_t,
                model,
                skip,
                decay,
                self._floor,
                cfg.ridge,
                self.compiled,
                blocks,
            )
            # Only the fleet models of the turbine models that learned are out of date.
            self._groups_stale[self._model_fleet()[changed]] = True
            return
        one = self._groups.n_groups == 1
        fleet = np.zeros(model.size, np.intp) if one else self._fleet_of(model)
        batch_math.learn(
            self._groups,
            self._group_chol,
            x_t,
            fleet,
            skip,
            None,
            self._floor,
            cfg.ridge,
            self.compiled,
            blocks if one else None,
        )

    def _decay(self, model: NDArray[np.intp], ts: F64, counts: F64) -> F64 | None:
        """Forgetting weights per model (M,) for this batch, and the models' learned times."""
        n_models = counts.size
        if self._kernels is not None:
            newest, oldest = self._kernels.time_range_by_model(model, ts, n_models)
        else:
            newest = np.full(n_models, -np.inf)
            np.maximum.at(newest, model, ts)
            oldest = np.full(n_models, np.inf)
            np.minimum.at(oldest, model, ts)
        seen = np.isfinite(newest)
        fresh = seen & np.isnan(self._first_time)
        self._first_time[fresh] = oldest[fresh]
        decay = None
        span = self.config.memory_span
        if span is not None:
            elapsed = np.where(seen, newest - self._last_time, 0.0)
            decay = time_decay(elapsed, span, counts, float(self.min_samples))
        self._last_time[seen] = np.fmax(self._last_time[seen], newest[seen])
        return decay

    def _settle_runs(self, ts: F64) -> NDArray[np.int64]:
        """Accept the re-baselining runs that are due; the turbine ids re-baselined."""
        if self._runs is None or ts.size == 0:
            return np.zeros(0, dtype=np.int64)
        now = np.full(self._models.n_groups, float(ts.max()))
        accepted = self._runs.settle(now, self._chol)
        if accepted.size == 0:
            return np.zeros(0, dtype=np.int64)
        n, mean, m2, since = self._runs.take(accepted)
        self._models.counts[accepted] = n
        self._models.means[accepted] = mean
        self._models.m2[accepted] = m2
        self._first_time[accepted] = since
        self._last_time[accepted] = now[accepted]
        self._chol[accepted] = self._factors(n, m2)
        turbines = np.unique(accepted // self._bins)
        self._residuals.smoothed[turbines] = 0.0
        self._groups_dirty = True
        self.rebaselines += int(turbines.size)
        return self.turbines.ids[turbines].copy()

    # ------------------------------------------------------------------ views
    @property
    def fleet_model(self) -> WelfordCovariance:
        """The whole fleet's covariance: the exact merge of the key groups' models."""
        if self.n_features is None:
            raise SchemaError("the detector has seen no data yet")
        return self._fleet_view()[0].total()

    def turbine_model(self, turbine_id: int) -> WelfordCovariance:
        """One turbine's covariance model (a copy; the merge of its regime bins)."""
        if self.n_features is None:
            raise SchemaError("the detector has seen no data yet")
        i = int(self.turbines.find(np.array([turbine_id], dtype=np.int64))[0])
        if i < 0:
            raise SchemaError(f"unknown turbine {turbine_id}")
        if self._bins > 1:
            return self._models.total(np.arange(i * self._bins, (i + 1) * self._bins))
        return WelfordCovariance.from_state(
            {"n": self._models.counts[i], "mean": self._models.means[i], "m2": self._models.m2[i]}
        )

    def sample_counts(self) -> NDArray[np.float64]:
        """Readings learned by each turbine's models, shape (T,) in ``turbines.ids`` order."""
        if self.n_features is None:
            return np.zeros(0)
        return self._models.counts.reshape(-1, self._bins).sum(axis=1)

    def warming_up(self) -> int:
        """How many known turbines have no model that has learned ``min_samples`` readings."""
        if self.n_features is None:
            return 0
        warm = (self._models.counts >= self.min_samples).reshape(-1, self._bins).any(axis=1)
        return int(np.count_nonzero(~warm))

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
        """All learned state as plain arrays (``np.savez``-able, no pickle).

        Per-model arrays have T * B rows (turbine-major, then regime bin).
        """
        if self.n_features is None:
            return {"config": np.asarray(self.config.model_dump_json()), **self.names.state()}
        out = {
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
            "last_state_time": self._last_state_time.copy(),
            "model_first_time": self._first_time.copy(),
            "model_last_time": self._last_time.copy(),
            **self._residuals.state(),
            "counters": np.array(
                [
                    self.readings,
                    self.skipped,
                    self.anomalies,
                    self.batches,
                    self.filtered,
                    self.rebaselines,
                ],
                dtype=np.int64,
            ),
        }
        if self._runs is not None:
            out.update(self._runs.state())
        return out

    @classmethod
    def from_state(
        cls,
        state: Mapping[str, np.ndarray],
        config: DetectorConfig | None = None,
        compiled: bool | None = None,
    ) -> Detector:
        """Rebuild a detector from :meth:`state` (with its own config unless one is given)."""
        if config is None:
            config = DetectorConfig.model_validate(json.loads(str(state["config"])))
        det = cls(config, compiled=compiled)
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
        b = det._bins
        if group_means.shape[0] != config.key_groups * b:
            raise SchemaError(
                f"state has {group_means.shape[0]} fleet models, the configuration "
                f"{config.key_groups} key groups x {b} regime bins"
            )
        ids = np.asarray(state["turbine_ids"], dtype=np.int64)
        if means.shape[0] != ids.size * b:
            raise SchemaError(
                f"state has {means.shape[0]} models for {ids.size} turbines, the configuration "
                f"{b} regime bins"
            )
        if ids.size:
            det.turbines.lookup(ids)
            det._sync_turbines()
        pos = det.turbines.lookup(ids)
        rows = (pos[:, None] * b + np.arange(b)[None, :]).reshape(-1)
        det._models.counts[rows] = state["turbine_counts"]
        det._models.means[rows] = means
        det._models.m2[rows] = state["turbine_m2"]
        det._ewma[pos] = state["ewma"]
        det._ewma_started[pos] = state["ewma_started"]
        if "last_state_time" in state:
            det._last_state_time[pos] = state["last_state_time"]
        if "model_first_time" in state:
            det._first_time[rows] = state["model_first_time"]
            det._last_time[rows] = state["model_last_time"]
        det._residuals.restore(state, pos)
        if det._runs is not None:
            det._runs.restore(state, rows)
        det._groups.counts[:] = state["group_counts"]
        det._groups.means[:] = group_means
        det._groups.m2[:] = state["group_m2"]
        counters = [int(v) for v in np.asarray(state["counters"])] + [0, 0]
        (det.readings, det.skipped, det.anomalies, det.batches, det.filtered, det.rebaselines) = (
            counters[:6]
        )
        det._refactor()
        return det

    def _refactor(self) -> None:
        if self._models.n_groups:
            self._chol = self._factors(self._models.counts, self._models.m2)
        if self.config.per_turbine:
            self._groups_dirty = True
        else:
            self._group_chol = self._factors(self._groups.counts, self._groups.m2)

    def merge(self, other: Detector) -> Detector:
        """Combine another detector's learned state into this one, exactly (Chan).

        Models and the residual chart's models merge exactly; learned time
        spans take the union.  Open re-baselining runs and chart positions
        are taken from ``other`` for turbines this detector has not seen.
        """
        self.names.merge(other.names)
        if other.n_features is None:
            return self
        if self.n_features is None:
            self._init_models(other.n_features)
        if other.n_features != self.n_features or other.config.key_groups != self.config.key_groups:
            raise SchemaError("cannot merge detectors with different sensors or key groups")
        if other._bins != self._bins or other._k != self._k:
            raise SchemaError("cannot merge detectors with different regimes or conditions")
        known = self.turbines.find(other.turbines.ids) >= 0
        pos = self.turbines.lookup(other.turbines.ids)
        self._sync_turbines()
        b = self._bins
        rows = (pos[:, None] * b + np.arange(b)[None, :]).reshape(-1)
        n, mean, m2 = combine(
            self._models.counts[rows],
            self._models.means[rows],
            self._models.m2[rows],
            other._models.counts,
            other._models.means,
            other._models.m2,
        )
        self._models.counts[rows], self._models.means[rows], self._models.m2[rows] = n, mean, m2
        self._first_time[rows] = np.fmin(self._first_time[rows], other._first_time)
        self._last_time[rows] = np.fmax(self._last_time[rows], other._last_time)
        self._residuals.merge(other._residuals, pos, known)
        self._last_state_time[pos] = np.fmax(self._last_state_time[pos], other._last_state_time)
        new = pos[~known]
        if self._runs is not None and other._runs is not None:
            new_rows = (new[:, None] * b + np.arange(b)[None, :]).reshape(-1)
            other_rows = (np.flatnonzero(~known)[:, None] * b + np.arange(b)[None, :]).reshape(-1)
            self._runs.restore({k: v[other_rows] for k, v in other._runs.state().items()}, new_rows)
        if not self.config.per_turbine:
            self._groups.merge(other._groups)
        self.readings += other.readings
        self.skipped += other.skipped
        self.anomalies += other.anomalies
        self.batches += other.batches
        self.filtered += other.filtered
        self.rebaselines += other.rebaselines
        self._refactor()
        return self


@lru_cache(maxsize=8)
def _upper(d: int) -> tuple[NDArray[np.intp], NDArray[np.intp]]:
    """``np.triu_indices(d)``, once per D (read-only)."""
    a, b = np.triu_indices(d)
    a.setflags(write=False)
    b.setflags(write=False)
    return a, b


def _pool_groups(
    counts: F64, means: F64, m2: F64, group_of: NDArray[np.intp], n_groups: int
) -> tuple[F64, F64, F64]:
    """Moments of each key group from its turbines' moments (exact, Chan).

    Each group sums only its own turbines, in turbine order (``np.bincount``,
    ``np.add.at``): the result does not depend on other groups' data.

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
    # np.add.at adds the turbines' rows in turbine order, as a bincount per entry would.
    sums = np.zeros((n_groups, d))
    np.add.at(sums, group_of, means * counts[:, None])
    gm = sums / safe[:, None]
    dev = means - gm[group_of]
    a, b = _upper(d)
    w = m2[:, a, b] + counts[:, None] * dev[:, a] * dev[:, b]  # the upper triangle, (T, P)
    upper = np.zeros((n_groups, a.size))
    np.add.at(upper, group_of, w)
    gm2 = np.empty((n_groups, d, d))
    gm2[:, a, b] = upper
    gm2[:, b, a] = upper
    return gc, gm, gm2
