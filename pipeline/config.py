"""The detector's configuration: validated once, loaded from JSON or TOML."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from pipeline.calibration import check_calibration_shapes
from pipeline.durations import Duration
from pipeline.errors import ConfigError
from pipeline.recordings.spec import RecordingSpec

if TYPE_CHECKING:
    from pipeline.sites import SiteConfigs


class Regime(BaseModel):
    """Operating regimes: models keyed by (turbine, bin of one sensor's raw value).

    ``edges`` (strictly increasing) cut the sensor's range into
    ``len(edges) + 1`` bins; readings below the first edge or above the last
    fall into the end bins.

    >>> Regime(sensor="wind_speed", edges=(3.0, 5.0)).n_bins
    3
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    sensor: str = Field(description="The sensor whose raw value picks the bin.")
    edges: tuple[float, ...] = Field(min_length=1, max_length=1000)

    @model_validator(mode="after")
    def _increasing(self) -> Regime:
        e = np.asarray(self.edges, dtype=np.float64)
        if not np.isfinite(e).all():
            raise ConfigError(f"regime edges must be finite numbers, got {list(self.edges)}")
        if e.size > 1 and not (np.diff(e) > 0).all():
            bad = int(np.flatnonzero(np.diff(e) <= 0)[0])
            raise ConfigError(
                f"regime edges must be strictly increasing: {self.edges[bad]} is followed by "
                f"{self.edges[bad + 1]}"
            )
        return self

    @property
    def n_bins(self) -> int:
        return len(self.edges) + 1


class SensorRange(BaseModel):
    """A range on one sensor's raw value (``above`` < value < ``below``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    sensor: str
    above: float | None = None
    below: float | None = None


class LearnRule(BaseModel):
    """One condition a reading must meet to be learned (``learn_when``).

    Either a range on a sensor's raw value (``above`` and/or ``below``) or a
    status sensor whose value must be one of the ``normal`` codes.  A reading
    that fails the rule is neither learned nor scored; it is reported with
    the rule's ``state`` (e.g. ``"stopped"``).

    >>> LearnRule(sensor="power", above=20.0, state="stopped").state
    'stopped'
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    sensor: str
    above: float | None = Field(None, description="Learn only readings above this value.")
    below: float | None = Field(None, description="Learn only readings below this value.")
    normal: tuple[float, ...] | None = Field(
        None, min_length=1, description="Status codes that mean normal operation."
    )
    state: str = Field("not_learning", min_length=1, max_length=40, pattern=r"^[a-z0-9_]+$")
    where: SensorRange | None = Field(
        None,
        description="The rule applies only to readings in this range of another sensor "
        "(e.g. pitch below 5 deg only where the wind is below rated: curtailment).",
    )

    @model_validator(mode="after")
    def _one_kind(self) -> LearnRule:
        ranged = self.above is not None or self.below is not None
        if ranged == (self.normal is not None):
            raise ConfigError(
                f"learn_when rule on {self.sensor!r}: give either above/below or normal codes"
            )
        if self.above is not None and self.below is not None and self.above >= self.below:
            raise ConfigError(
                f"learn_when rule on {self.sensor!r}: above={self.above} is not below "
                f"below={self.below}"
            )
        return self


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
    prediction_bound: Literal["hotelling", "chi2"] = Field(
        "hotelling",
        description="'hotelling': point statistics are scaled so the chi-square threshold "
        "is Hotelling's T^2 prediction bound (F distribution) for a model of n learned "
        "readings, so a young model alarms at the configured rate too; 'chi2': the "
        "chi-square threshold as if the covariance were known.",
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
    chart: Literal["none", "mewma", "residual"] = Field(
        "none",
        description="'mewma': learn and score a per-turbine EWMA of the calibrated readings "
        "(a MEWMA chart with its covariance estimated from data), for persistent shifts. "
        "'residual': also a per-turbine EWMA of the whitened conditional residuals with "
        "time constant chart_span (slow faults), each statistic at half the alarm rate.",
    )
    mewma_lambda: float = Field(0.2, gt=0, le=1, description="EWMA weight of the newest reading.")
    conditions: tuple[str, ...] = Field(
        (),
        description="Exogenous sensors that define the operating point: conditioned on, "
        "not scored. The score is the squared distance of the other sensors given them, "
        "chi-square with D - k degrees of freedom.",
    )
    fleet_relative: tuple[str, ...] = Field(
        (),
        description="Sensors scored as their deviation from the fleet's median at the same "
        "time (in the same batch), e.g. an outdoor temperature that all turbines share.",
    )
    sensor_floor: dict[str, float] = Field(
        default_factory=dict,
        description="Per-sensor noise floor (a standard deviation in the sensor's units) "
        "added to every model's variance: deviations below a sensor's meaningful tolerance "
        "are not anomalies (a pitch of -1 deg +- 0.01 would otherwise make 0.2 deg a fault).",
    )
    regime: Regime | None = Field(None, description="Models per (turbine, bin of a sensor).")
    learn_when: tuple[LearnRule, ...] = Field(
        (), description="Conditions (all of them) a reading must meet to be learned."
    )
    settle_span: Duration | None = Field(
        None,
        description="After a reading in an operating state (a learn_when rule failed), the "
        "turbine's readings within this span are in the state 'settling', neither learned "
        "nor scored: a 10-minute average spanning a start-up mixes two states.",
    )
    learn_gate: float | None = Field(
        None,
        gt=0,
        lt=1,
        description="Tail probability of the learning gate: readings above the alarm "
        "threshold but inside the gate are still learned. None: the alarm threshold.",
    )
    warmup_span: Duration | None = Field(
        None, description="Time a model must have learned over before it scores."
    )
    memory_span: Duration | None = Field(
        None, description="Exponential forgetting with this time constant (seasonal drift)."
    )
    chart_span: Duration | None = Field(
        None,
        description="MEWMA with a time constant instead of a fixed lambda (irregular steps).",
    )
    chart_floor: float = Field(
        1.0,
        ge=0,
        description="The residual chart's variance floor, in units of the EWMA variance of "
        "white noise (lambda / (2 - lambda)), added to every chart model.",
    )
    chart_sensors: tuple[str, ...] = Field(
        (),
        description="The scored sensors the residual chart watches (default all); the others "
        "are left to the point score (a pitch that sits at -1 deg and jumps at start-ups "
        "makes a poor chart).",
    )
    chart_peers: int | None = Field(
        None,
        ge=2,
        description="Common-mode rejection: the residual chart watches each turbine's "
        "residuals minus the median of the residuals of the turbines scored at the same "
        "time, where at least this many are (weather moving the whole farm's power curve "
        "cancels, one turbine's fault stands out). None: each turbine's own residuals.",
    )
    chart_false_alarm_rate: float | None = Field(
        None,
        gt=0,
        lt=1,
        description="Tail probability of the residual chart's threshold (default: half the "
        "false_alarm_rate); the chart statistic is reported scaled to the alarm threshold.",
    )
    chart_learn_gate: float | None = Field(
        None,
        gt=0,
        lt=1,
        description="Tail probability of the residual chart's learning gate (a warning "
        "limit, as in statistical process control): the chart models learn only while the "
        "chart is inside it, so a fault building up below the alarm is never learned as "
        "normal. None: the chart's alarm threshold.",
    )
    rebaseline_after: Duration | None = Field(
        None,
        description="An alarm persisting at a steady level this long is accepted as the new "
        "normal: the model restarts from the readings since it began.",
    )
    rebaseline_share: float = Field(
        0.8,
        gt=0,
        le=1,
        description="Share of alarms over the span for re-baselining. The alarms may pause "
        "for at most (1 - share) of the span: a longer pause (a gap in the readings too, in "
        "which no alarm was seen) restarts the run at the next alarm.",
    )
    rebaseline_steady: float = Field(
        1.0,
        gt=0,
        description="Steadiness: the two halves of the span differ by at most this many "
        "standard deviations (Mahalanobis distance of their means).",
    )
    nan_policy: Literal["skip", "error"] = Field(
        "skip", description="NaN/inf readings: skip and count them, or raise."
    )
    max_turbines: int = Field(100_000, ge=1, description="Bound on distinct turbines.")
    recording: RecordingSpec | None = Field(
        None,
        description="How to read recorded files (the [recording] table: columns, sensors "
        "and their names, sentinels); command-line options override it.",
    )
    # 30 minutes: three 10-minute SCADA averages, so a fault that dips under the threshold
    # for one or two readings stays one episode; at 1 s data it still separates false
    # alarms, which come about once per 1/false_alarm_rate readings (~3 h at 1e-4).
    episode_gap: Duration = Field(
        1800.0,
        description="Alarms of one turbine less than this apart form one episode.",
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
        rf = self.region_factors
        if isinstance(rf, tuple) and self.turbines is not None and len(rf) != len(self.turbines):
            raise ConfigError(
                f"region_factors has shape ({len(rf)},) but turbines has shape "
                f"({len(self.turbines)},): one factor per turbine, or a {{id: factor}} map "
                "for some of them"
            )
        if self.learn_gate is not None and self.learn_gate > self.false_alarm_rate:
            raise ConfigError(
                f"learn_gate {self.learn_gate} is above false_alarm_rate "
                f"{self.false_alarm_rate}: the gate must be at or beyond the alarm threshold"
            )
        if any(not (v >= 0 and np.isfinite(v)) for v in self.sensor_floor.values()):
            raise ConfigError("sensor_floor values must be finite and >= 0")
        if len(set(self.conditions)) != len(self.conditions):
            raise ConfigError("conditions lists the same sensor twice")
        if set(self.conditions) & set(self.fleet_relative):
            raise ConfigError("a sensor cannot be both a condition and fleet-relative")
        if self.settle_span is not None and not self.learn_when:
            raise ConfigError("settle_span follows the learn_when states: give learn_when rules")
        if self.chart_peers is not None and self.chart != "residual":
            raise ConfigError('chart_peers is an option of chart = "residual"')
        if self.chart_learn_gate is not None:
            if self.chart != "residual":
                raise ConfigError('chart_learn_gate is an option of chart = "residual"')
            rate = self.chart_false_alarm_rate or self.false_alarm_rate / 2.0
            if self.chart_learn_gate < rate:
                raise ConfigError(
                    f"chart_learn_gate {self.chart_learn_gate} is below the chart's alarm rate "
                    f"{rate}: a warning limit lies inside the alarm limit"
                )
        if self.sensors is not None:
            self.check_sensor_roles(self.sensors)
        return self

    def check_sensor_roles(self, sensors: tuple[str, ...]) -> None:
        """Raise a ConfigError naming any sensor a role names that is not in ``sensors``."""
        named = [("conditions", c) for c in self.conditions]
        named += [("fleet_relative", c) for c in self.fleet_relative]
        if self.regime is not None:
            named.append(("regime", self.regime.sensor))
        named += [("learn_when", r.sensor) for r in self.learn_when]
        named += [("learn_when", r.where.sensor) for r in self.learn_when if r.where]
        named += [("sensor_floor", name) for name in self.sensor_floor]
        named += [("chart_sensors", name) for name in self.chart_sensors]
        for role, name in named:
            if name not in sensors:
                raise ConfigError(
                    f"{role} names sensor {name!r}, which is not one of the sensors {list(sensors)}"
                )
        for name in self.chart_sensors:
            if name in self.conditions:
                raise ConfigError(f"chart_sensors names {name!r}, a condition (never scored)")
        if len(self.conditions) >= len(sensors):
            raise ConfigError(
                f"conditions {list(self.conditions)} leave no sensor to score of {list(sensors)}"
            )

    def degrees_of_freedom(self, n_features: int) -> int:
        """Degrees of freedom of the score: D minus the conditioning sensors."""
        return n_features - len(self.conditions)

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
        unknown = [int(t) for t in turbine_ids if int(t) not in lookup]
        if unknown:
            # A (T,) vector is the whole fleet: a turbine it does not cover is the
            # broadcasting mistake, not a turbine of factor 1.
            if self.turbines is not None:
                fleet = f"it is not in turbines, shape ({len(self.turbines)},)"
            else:
                fleet = f"ids 0..{len(rf) - 1}; the fleet needs shape ({max(unknown) + 1},) or more"
            raise ConfigError(
                f"region_factors has shape ({len(rf)},) but turbine {unknown[0]} was seen "
                f"({fleet}): give one factor per turbine, or a {{id: factor}} map for some"
            )
        return np.array([lookup[int(t)] for t in turbine_ids], dtype=np.float64)

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
        return chi2_threshold(self.point_rate(), self.degrees_of_freedom(d))

    def point_rate(self) -> float:
        """Tail probability of the point score's threshold."""
        # The residual chart and the point score each get half the false-alarm rate.
        return self.false_alarm_rate / (2.0 if self.chart == "residual" else 1.0)

    def chart_degrees_of_freedom(self, n_features: int, sensors: Sequence[str]) -> int:
        """Degrees of freedom of the residual chart: the scored sensors it watches.

        ``sensors`` (length ``n_features``) are the detector's; with
        ``chart_sensors`` set the chart watches those alone, the others' residuals
        are zero in its statistic.
        """
        if not self.chart_sensors:
            return self.degrees_of_freedom(n_features)
        return sum(1 for s in sensors if s in self.chart_sensors and s not in self.conditions)

    def chart_threshold(self, n_features: int, sensors: Sequence[str] = ()) -> float:
        """The residual chart's own threshold on its squared distance."""
        from pipeline.mahalanobis import chi2_threshold

        rate = self.chart_false_alarm_rate or self.false_alarm_rate / 2.0
        return chi2_threshold(rate, self._chart_df(n_features, sensors))

    def chart_gate(self, n_features: int, sensors: Sequence[str] = ()) -> float:
        """The residual chart's learning gate on its own squared distance."""
        from pipeline.mahalanobis import chi2_threshold

        if self.chart_learn_gate is None:
            return self.chart_threshold(n_features, sensors)
        return chi2_threshold(self.chart_learn_gate, self._chart_df(n_features, sensors))

    def _chart_df(self, n_features: int, sensors: Sequence[str]) -> int:
        if sensors:
            return self.chart_degrees_of_freedom(n_features, sensors)
        return self.degrees_of_freedom(n_features)

    def gate(self, n_features: int) -> float:
        """The learning gate on squared distances (the alarm threshold when not set)."""
        from pipeline.mahalanobis import chi2_threshold

        if self.learn_gate is None:
            return self.threshold(n_features)
        return chi2_threshold(self.learn_gate, self.degrees_of_freedom(n_features))


def load_config(path: str | Path, site: str | None = None, **overrides: object) -> DetectorConfig:
    """Read a JSON or TOML configuration file (by extension), with keyword overrides.

    ``site`` picks a ``[sites.NAME]`` table's configuration (``pipeline/sites.py``);
    without it, or for a site not named, the top-level settings.  Every problem,
    from a syntax error to a shape that cannot broadcast, becomes one
    :class:`ConfigError` line naming the file.
    """
    sites = load_site_configs(path, **overrides)
    return sites.config_of(site) if site is not None else sites.default


def load_site_configs(path: str | Path, **overrides: object) -> SiteConfigs:
    """Every site's configuration of a file (see ``pipeline/sites.py``)."""
    from pipeline.sites import _read, load_sites

    p = Path(path)
    return load_sites(_read(p), p.parent, str(p), **overrides)


def normalise_raw(raw: dict, source: str) -> dict:
    """Raw settings as the model takes them: ``region_factors`` keys as turbine ids."""
    if isinstance(raw.get("region_factors"), dict):
        try:
            raw = {**raw, "region_factors": {int(k): v for k, v in raw["region_factors"].items()}}
        except ValueError:
            raise ConfigError(f"{source}: region_factors keys must be turbine ids") from None
    return raw


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
