"""The detection engine: calibration, online covariance, Mahalanobis scoring, anomaly store.

Nothing in this package imports Kafka: transports live in ``producers`` and
``consumers`` and call this engine on whole batches.
"""

from pipeline.calibration import calibrate
from pipeline.config import DetectorConfig, load_config
from pipeline.covariance import GroupedCovariance, WelfordCovariance
from pipeline.detector import BatchResult, Detector
from pipeline.errors import ConfigError, InputError, SchemaError, StoreError, TurbineError
from pipeline.mahalanobis import chi2_threshold, mahalanobis_squared

__all__ = [
    "BatchResult",
    "ConfigError",
    "Detector",
    "DetectorConfig",
    "GroupedCovariance",
    "InputError",
    "SchemaError",
    "StoreError",
    "TurbineError",
    "WelfordCovariance",
    "calibrate",
    "chi2_threshold",
    "load_config",
    "mahalanobis_squared",
]
