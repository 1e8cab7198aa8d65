"""The IEC 61400-12-1 binned power-curve baseline: a z-score of power per wind-speed bin.

Per turbine and per 0.5 m/s bin of wind speed, the mean and standard deviation
of power are learned on a set of readings; a reading is scored by the
absolute z-score of its power in its bin.  This is the industry's simplest
normal-behaviour model of a wind turbine, the baseline ``bench/scada.py``
compares the engine with at the same false-episode budget.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

F64 = NDArray[np.float64]
BIN_WIDTH = 0.5  # m/s, IEC 61400-12-1


def _keys(turbines: NDArray[np.int64], wind: F64, width: float) -> NDArray[np.int64]:
    bins = np.floor(np.nan_to_num(wind, nan=-1.0) / width).astype(np.int64)
    return turbines.astype(np.int64) * 1024 + np.clip(bins, 0, 1023)


def fit_power_curve(
    turbines: NDArray[np.int64], wind: F64, power: F64, width: float = BIN_WIDTH
) -> dict[int, tuple[float, float]]:
    """Mean and standard deviation of power per (turbine, wind bin).

    Parameters
    ----------
    turbines, wind, power : ndarray of shape (n,)
        The learning readings (finite).
    """
    keys = _keys(turbines, wind, width)
    uniq, inverse = np.unique(keys, return_inverse=True)
    n = np.bincount(inverse).astype(np.float64)
    s1 = np.bincount(inverse, weights=power)
    s2 = np.bincount(inverse, weights=power * power)
    mean = s1 / n
    var = np.maximum(s2 / n - mean * mean, 0.0) * n / np.maximum(n - 1, 1)
    return {
        int(k): (float(m), float(np.sqrt(v)))
        for k, m, v, c in zip(uniq, mean, var, n, strict=True)
        if c >= 10
    }


def power_curve_scores(
    curve: dict[int, tuple[float, float]],
    turbines: NDArray[np.int64],
    wind: F64,
    power: F64,
    width: float = BIN_WIDTH,
) -> F64:
    """|z| of each reading's power in its (turbine, bin), shape (n,); 0 for a bin never learned.

    >>> curve = fit_power_curve(np.zeros(20, np.int64), np.full(20, 5.2), np.arange(20.0))
    >>> power_curve_scores(curve, np.zeros(2, np.int64), np.array([5.1, 9.0]),
    ...                    np.array([9.5 + 2 * 5.9161, 3.0])).round(3).tolist()
    [2.0, 0.0]
    """
    keys = _keys(turbines, wind, width)
    uniq, inverse = np.unique(keys, return_inverse=True)
    mean = np.array([curve.get(int(k), (np.nan, np.nan))[0] for k in uniq])
    sd = np.array([curve.get(int(k), (np.nan, np.nan))[1] for k in uniq])
    z = np.abs(power - mean[inverse]) / np.where(sd[inverse] > 0, sd[inverse], np.nan)
    return np.nan_to_num(z, nan=0.0, posinf=0.0)


def fortnight_wander(
    curve: dict[int, tuple[float, float]],
    turbines: NDArray[np.int64],
    timestamps: F64,
    wind: F64,
    power: F64,
    width: float = BIN_WIDTH,
    least_power: float = 50.0,
) -> dict[int, tuple[float, float]]:
    """How far each turbine's fortnightly mean power residual wanders, alone and against peers.

    The residual is relative, ``(power - bin mean) / bin mean`` (bins whose mean
    is below ``least_power`` left out); against peers it is minus the median of
    the other turbines' residuals at the same time (at least two of them).

    Parameters
    ----------
    curve : the output of :func:`fit_power_curve`
    turbines, timestamps, wind, power : ndarray of shape (n,)

    Returns
    -------
    dict
        Per turbine: (standard deviation of its fortnightly means alone, against peers).
    """
    from pipeline.policy import peer_deviation

    keys = _keys(turbines, wind, width)
    mean = np.array([curve.get(int(k), (np.nan, np.nan))[0] for k in keys])
    ok = np.isfinite(mean) & (mean >= least_power) & np.isfinite(power)
    rel = (power[ok] - mean[ok]) / mean[ok]
    ts, ids = timestamps[ok], turbines[ok]
    peers, count = peer_deviation(ts, rel[None, :])
    fortnight = np.floor((ts - ts.min()) / (14 * 86400.0)).astype(np.int64)
    out: dict[int, tuple[float, float]] = {}
    for t in np.unique(ids):
        spreads = []
        for values, mask in ((rel, ids == t), (peers[0], (ids == t) & (count >= 3))):
            f = fortnight[mask]
            n = np.bincount(f)
            means = np.bincount(f, weights=values[mask])[n >= 200] / n[n >= 200]
            spreads.append(float(np.std(means)) if means.size > 1 else float("nan"))
        out[int(t)] = (spreads[0], spreads[1])
    return out
