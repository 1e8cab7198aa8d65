"""A naive, per-reading reference of the detector's semantics: the test oracle.

Slow on purpose: explicit Python loops, np.cov on the stored accepted
readings, and an explicit inverse. Nothing here is shared with the engine.
"""

from __future__ import annotations

import numpy as np
from scipy import stats

from pipeline.config import DetectorConfig


def hotelling_scale(config: DetectorConfig, n: int, p: int) -> float:
    """chi2 threshold / Hotelling's T^2 prediction bound for a model of n readings (scipy)."""
    if config.prediction_bound != "hotelling" or n >= 1 << 16:
        return 1.0
    rate = config.point_rate()
    t2 = stats.f.isf(rate, p, n - p) * p * (n - 1) * (n + 1) / (n * (n - p))
    return float(stats.chi2.isf(rate, p) / t2)


def _reg_inverse(rows: np.ndarray, ridge: float) -> tuple[np.ndarray, np.ndarray]:
    mean = rows.mean(axis=0)
    d = rows.shape[1]
    cov = np.cov(rows, rowvar=False, ddof=1).reshape(d, d)
    cov = cov + (ridge * abs(np.trace(cov) / d) + np.finfo(float).tiny ** 0.5) * np.eye(d)
    return mean, np.linalg.inv(cov)


def naive_detect(batches, config: DetectorConfig):
    """Per-batch lists of (distances, flags, scored_by) for batches of (ts, ids, values)."""
    d = batches[0][2].shape[1]
    threshold = config.threshold(d)
    min_t, min_f = config.warmup(d)
    off, gain = config.offsets_array(d), config.gains_array(d)
    accepted: dict[int, list[np.ndarray]] = {}
    group_rows: dict[int, list[np.ndarray]] = {}
    ewma: dict[int, np.ndarray] = {}
    lam = config.mewma_lambda
    out = []
    for _, ids, values in batches:
        models = {
            t: _reg_inverse(np.array(r), config.ridge)
            for t, r in accepted.items()
            if len(r) >= min_t
        }
        gmodels = {
            g: _reg_inverse(np.array(r), config.ridge)
            for g, r in group_rows.items()
            if len(r) >= min_f
        }
        dist = np.zeros(len(ids))
        by = np.zeros(len(ids), dtype=np.int8)
        xs = []
        for i, (t, v) in enumerate(zip(ids.tolist(), values, strict=True)):
            if not np.all(np.isfinite(v)):
                by[i] = -1
                xs.append(None)
                continue
            factor = config.factor_of(np.array([t]))[0]
            x = (v - off) * gain * factor
            if config.chart == "mewma":  # the models see each turbine's EWMA
                x = lam * x + (1 - lam) * ewma[t] if t in ewma else x
                ewma[t] = x
            xs.append(x)
            g = t % config.key_groups
            if config.per_turbine and t in models:
                mean, inv = models[t]
                n = len(accepted[t])
                by[i] = 1
            elif g in gmodels:
                mean, inv = gmodels[g]
                n = len(group_rows[g])
                by[i] = 2
            else:
                continue
            e = x - mean
            dist[i] = e @ inv @ e * hotelling_scale(config, n, d)
        flags = (by > 0) & (dist > threshold)
        for i, t in enumerate(ids.tolist()):
            if xs[i] is None or (flags[i] and not config.learn_anomalies):
                continue
            accepted.setdefault(t, []).append(xs[i])
            group_rows.setdefault(t % config.key_groups, []).append(xs[i])
        out.append((dist, flags, by))
    return out
