"""Sensor calibration by broadcasting: per-sensor offsets and gains, per-turbine factors."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from pipeline.errors import ConfigError

F64 = NDArray[np.float64]


def calibrate(values: F64, offsets: F64, gains: F64, factors: F64) -> F64:
    """Calibrated readings ``(values - offsets) * gains * factors[:, None]``.

    Parameters
    ----------
    values : ndarray of shape (n, D)
        Raw readings, one row per reading.
    offsets : ndarray of shape (D,)
        Per-sensor zero offsets, broadcast along rows.
    gains : ndarray of shape (D,)
        Per-sensor gains, broadcast along rows.
    factors : ndarray of shape (n,)
        Each reading's turbine region factor, applied as a column.

    Returns
    -------
    ndarray of shape (n, D)
        A transposed view of a C-contiguous (D, n) array: each sensor's values
        are contiguous, so every step is a long vectorised loop (broadcasting a
        column over rows of 4 values would run 4-element inner loops).

    >>> import numpy as np
    >>> calibrate(np.array([[1.0, 2.0], [3.0, 4.0]]), np.array([1.0, 0.0]),
    ...           np.array([1.0, 0.5]), np.array([1.0, 2.0]))
    array([[0., 1.],
           [4., 4.]])
    """
    out_t = np.array(values.T, dtype=np.float64, order="C")  # (D, n), a copy
    out_t -= offsets[:, None]
    out_t *= gains[:, None]
    out_t *= factors  # the (n,) column of factors, as a row of the transpose
    return out_t.T


def check_calibration_shapes(
    offsets: F64, gains: F64, region_factors: F64 | None, n_features: int, n_turbines: int | None
) -> None:
    """Raise a :class:`ConfigError` naming both shapes when a vector cannot broadcast.

    Parameters
    ----------
    offsets, gains : ndarray of shape (D,)
    region_factors : ndarray of shape (T,), optional
    n_features : int
        D, the number of sensors of the readings.
    n_turbines : int, optional
        T, the number of turbines, when the fleet is declared.

    >>> import numpy as np
    >>> check_calibration_shapes(np.zeros(100), np.ones(4), None, 4, None)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    pipeline.errors.ConfigError: offsets has shape (100,) but readings have shape (n, 4): ...
    """
    for name, vec in (("offsets", offsets), ("gains", gains)):
        if vec.shape != (n_features,):
            raise ConfigError(
                f"{name} has shape {vec.shape} but readings have shape (n, {n_features}): "
                f"it must be ({n_features},)"
            )
    if region_factors is not None:
        if region_factors.ndim != 1:
            raise ConfigError(
                f"region_factors has shape {region_factors.shape}: it must be (T,), "
                "one factor per turbine, applied as a column to (n, D) readings"
            )
        if n_turbines is not None and region_factors.shape != (n_turbines,):
            raise ConfigError(
                f"region_factors has shape {region_factors.shape} but the fleet has "
                f"{n_turbines} turbines: it must be ({n_turbines},)"
            )
