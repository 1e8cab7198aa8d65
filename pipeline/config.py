"""The detector's configuration: validated once, loaded from JSON or TOML."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from pipeline.calibration import check_calibration_shapes
from pipeline.errors import ConfigError


class DetectorConfig(BaseModel):
    """Everything the engine needs to score a stream; the same for every transport.

    >>> DetectorConfig(sensors=("a", "b"), false_alarm_rate=1e-3).threshold()
    13.815510557964274
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    sensors: tuple[str, ...] | None = Field(
        None, description="Sensor names, in column order; D = their number."
    )
    turbines: tuple[int, ...] | None = Field(
        None, description="The fleet's turbine ids; when given, any other id is an error."
    )
    offsets: tuple[float, ...] | None = Field(None, description="Per-sensor offsets, shape (D,).")
    gains: tuple[float, ...] | None = Field(None, description="Per-sensor gains, shape (D,).")
    region_factors: tuple[float, ...] | dict[int, float] | None = Field(
        None,
        description="Per-turbine factors, shape (T,) in the order of `turbines` (or ids "
        "0..T-1), or a mapping from turbine id to factor (others get 1).",
    )
    false_alarm_rate: float = Field(
        1e-4, gt=0, lt=1, description="Chi-square tail probability of the alarm threshold."
    )
    min_samples: int | None = Field(
        None, ge=2, description="Readings a turbine model learns before it scores (20*D)."
    )
    fleet_min_samples: int | None = Field(
        None, ge=2, description="Readings the fleet model learns before it scores (20*D)."
    )
    per_turbine: bool = Field(True, description="Keep one model per turbine (else fleet only).")
    key_groups: int = Field(
        12,
        ge=1,
        le=65536,
        description="Turbine groups (turbine id mod key_groups): the Kafka key, and the unit "
        "of the fleet model that scores turbines still warming up.",
    )
    learn_anomalies: bool = Field(False, description="Also learn readings flagged anomalous.")
    memory: float | None = Field(
        None, gt=1, description="Exponential forgetting: effective readings remembered."
    )
    ridge: float = Field(1e-6, ge=0, description="Relative ridge that regularises covariances.")
    chart: Literal["none", "mewma"] = Field(
        "none",
        description="'mewma': learn and score a per-turbine EWMA of the calibrated readings "
        "(a MEWMA chart with its covariance estimated from data), for persistent shifts.",
    )
    mewma_lambda: float = Field(0.2, gt=0, le=1, description="EWMA weight of the newest reading.")
    nan_policy: Literal["skip", "error"] = Field(
        "skip", description="NaN/inf readings: skip and count them, or raise."
    )
    max_turbines: int = Field(100_000, ge=1, description="Bound on distinct turbines.")
    # 30 minutes: three 10-minute SCADA averages, so a fault that dips under the threshold
    # for one or two readings stays one episode; at 1 s data it still separates false
    # alarms, which come about once per 1/false_alarm_rate readings (~3 h at 1e-4).
    episode_gap: float = Field(
        1800.0,
        gt=0,
        description="Seconds: alarms of one turbine less than this apart form one episode.",
    )

    @model_validator(mode="after")
    def _shapes(self) -> DetectorConfig:
        d = self._declared_features()
        t = len(self.turbines) if self.turbines is not None else None
        if isinstance(self.region_factors, tuple) and t is None:
            t = len(self.region_factors)
        if d is not None:
            check_calibration_shapes(
                self.offsets_array(d), self.gains_array(d), self._factor_vector(), d, t
            )
        if self.turbines is not None and len(set(self.turbines)) != len(self.turbines):
            raise ConfigError("turbines lists the same id twice")
        return self

    def _declared_features(self) -> int | None:
        for vec in (self.sensors, self.offsets, self.gains):
            if vec is not None:
                return len(vec)
        return None

    def _factor_vector(self) -> np.ndarray | None:
        if isinstance(self.region_factors, tuple):
            return np.asarray(self.region_factors, dtype=np.float64)
        return None

    def offsets_array(self, n_features: int) -> np.ndarray:
        """Offsets as shape (D,) (zeros when not configured)."""
        if self.offsets is None:
            return np.zeros(n_features)
        return np.asarray(self.offsets, dtype=np.float64)

    def gains_array(self, n_features: int) -> np.ndarray:
        """Gains as shape (D,) (ones when not configured)."""
        if self.gains is None:
            return np.ones(n_features)
        return np.asarray(self.gains, dtype=np.float64)

    def factor_of(self, turbine_ids: np.ndarray) -> np.ndarray:
        """Region factor of each turbine id, shape (k,) for ids of shape (k,)."""
        rf = self.region_factors
        if rf is None:
            return np.ones(turbine_ids.shape)
        if isinstance(rf, dict):
            return np.array([rf.get(int(t), 1.0) for t in turbine_ids], dtype=np.float64)
        ids = np.asarray(self.turbines if self.turbines is not None else range(len(rf)))
        lookup = dict(zip(ids.tolist(), rf, strict=True))
        return np.array([lookup.get(int(t), 1.0) for t in turbine_ids], dtype=np.float64)

    def check_features(self, n_features: int) -> None:
        """Raise when readings of D = ``n_features`` sensors cannot use this configuration."""
        if self.sensors is not None and len(self.sensors) != n_features:
            raise ConfigError(
                f"the configuration names {len(self.sensors)} sensors but readings have shape "
                f"(n, {n_features})"
            )
        check_calibration_shapes(
            self.offsets_array(n_features),
            self.gains_array(n_features),
            self._factor_vector(),
            n_features,
            None,
        )

    def warmup(self, n_features: int) -> tuple[int, int]:
        """Readings needed before a turbine model and a fleet model score."""
        default = max(20 * n_features, n_features + 2)
        turbine = self.min_samples if self.min_samples is not None else default
        fleet = self.fleet_min_samples if self.fleet_min_samples is not None else default
        return max(turbine, n_features + 1), max(fleet, n_features + 1)

    def threshold(self, n_features: int | None = None) -> float:
        """The alarm threshold on squared distances for D sensors."""
        from pipeline.mahalanobis import chi2_threshold

        d = n_features if n_features is not None else self._declared_features()
        if d is None:
            raise ConfigError("the number of sensors is not known yet")
        return chi2_threshold(self.false_alarm_rate, d)


def load_config(path: str | Path, **overrides: object) -> DetectorConfig:
    """Read a JSON or TOML configuration file (by extension), with keyword overrides.

    Every problem, from a syntax error to a shape that cannot broadcast, becomes
    one :class:`ConfigError` line naming the file.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read configuration: {exc.strerror}") from None
    try:
        if p.suffix.lower() == ".toml":
            raw = tomllib.loads(text)
        else:
            raw = json.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{p}: not valid {p.suffix.lstrip('.') or 'JSON'}: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{p}: the configuration must be a table/object of settings")
    if isinstance(raw.get("region_factors"), dict):
        try:
            raw["region_factors"] = {int(k): v for k, v in raw["region_factors"].items()}
        except ValueError:
            raise ConfigError(f"{p}: region_factors keys must be turbine ids") from None
    raw.update({k: v for k, v in overrides.items() if v is not None})
    return make_config(raw, source=str(p))


def make_config(raw: dict[str, object], source: str = "configuration") -> DetectorConfig:
    """Validate settings into a :class:`DetectorConfig`, errors as one ConfigError line."""
    try:
        return DetectorConfig.model_validate(raw)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(x) for x in first["loc"]) or "configuration"
        ctx = first.get("ctx", {})
        if isinstance(ctx.get("error"), ConfigError):
            raise ConfigError(f"{source}: {ctx['error']}") from None
        raise ConfigError(f"{source}: {loc}: {first['msg']}") from None
