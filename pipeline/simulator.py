"""A wind-farm simulator with labelled, injected faults.

Physics, kept linear so the covariance model is the right model of normal
operation: a fleet-wide wind speed (an AR(1) process) plus each turbine's
local turbulence (a faster AR(1)) drives every sensor through a per-sensor
loading, plus independent sensor noise.  Turbines differ by a site operating
point and by a region factor and the sensors by an offset and a gain: the raw
values written are ``physical / (gain * region_factor) + offset``, so the
calibration written beside them recovers the physical values exactly.

Faults (magnitude ``m`` in each sensor's marginal standard deviation sigma,
the unit of its normal range mean +- 3 sigma):

* ``spike``: one reading of one sensor is off by +-m sigma;
* ``drift``: one sensor's offset grows linearly from m to 2m sigma;
* ``stuck``: one sensor freezes at its value at onset moved m sigma towards
  its nearer rail (the truth keeps moving underneath);
* ``correlation_break``: two sensors move m/2 sigma in opposite directions:
  each stays inside its normal range (readings where it would not are left
  normal and unlabelled), but their shared-wind relationship breaks, which a
  per-sensor threshold cannot see and a covariance model can.

The first ``clean_fraction`` of the steps has no faults (commissioning).
Same seed, same output: every random draw comes from one seeded generator, in
a fixed order, block by block.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field

from pipeline.recordings.spec import Chunk

FAULT_KINDS = ("spike", "drift", "stuck", "correlation_break")

# name, operating point, loading per m/s of wind, noise sigma
_BASE_SENSORS = (
    ("temperature", 45.0, 2.5, 0.8),
    ("rotor_speed", 12.0, 1.4, 0.3),
    ("pressure", 160.0, 6.0, 2.0),
    ("vibration", 2.0, 0.25, 0.1),
)
_WIND_MEAN, _WIND_SD, _WIND_PHI = 8.0, 2.0, 0.95
_LOCAL_SD, _LOCAL_PHI = 0.6, 0.9
BLOCK_STEPS = 1000
_LENGTHS = {"spike": (1, 1), "drift": (20, 60), "stuck": (20, 60), "correlation_break": (10, 30)}


class SimulationParams(BaseModel):
    """Settings of a simulated fleet.

    >>> SimulationParams(turbines=3, sensors=5).sensor_names()
    ('temperature', 'rotor_speed', 'pressure', 'vibration', 'sensor_4')
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    turbines: int = Field(100, ge=1, le=100_000)
    sensors: int = Field(4, ge=2, le=4096)
    steps: int = Field(10_000, ge=1)
    seed: int = 0
    interval: float = Field(1.0, gt=0, description="Seconds between time steps.")
    start: float = Field(1_767_225_600.0, description="First timestamp (2026-01-01 UTC).")
    fault_fraction: float = Field(0.02, ge=0, le=0.5, description="Share of faulty readings.")
    magnitude: float = Field(4.0, gt=0, description="Fault size in standard deviations.")
    kinds: tuple[str, ...] = Field(FAULT_KINDS, min_length=1)
    clean_fraction: float = Field(0.1, ge=0, lt=1, description="Leading fault-free share.")

    def sensor_names(self) -> tuple[str, ...]:
        base = tuple(s[0] for s in _BASE_SENSORS[: self.sensors])
        return base + tuple(f"sensor_{j}" for j in range(len(base), self.sensors))


@dataclass(frozen=True)
class Fleet:
    """The fixed properties of a simulated fleet (drawn from the seed)."""

    sensors: tuple[str, ...]
    site: NDArray[np.float64]  # (T, D) operating points
    loading: NDArray[np.float64]  # (D,)
    noise: NDArray[np.float64]  # (D,)
    offsets: NDArray[np.float64]  # (D,)
    gains: NDArray[np.float64]  # (D,)
    region_factors: NDArray[np.float64]  # (T,)

    @property
    def sigma(self) -> NDArray[np.float64]:
        """Marginal standard deviation of each sensor's physical value, shape (D,)."""
        wind_var = _WIND_SD**2 + _LOCAL_SD**2
        return np.sqrt(self.loading**2 * wind_var + self.noise**2)

    @property
    def covariance(self) -> NDArray[np.float64]:
        """The true covariance of a turbine's physical readings, shape (D, D)."""
        wind_var = _WIND_SD**2 + _LOCAL_SD**2
        return np.outer(self.loading, self.loading) * wind_var + np.diag(self.noise**2)

    def calibration(self, fleet_relative: bool = False) -> dict[str, object]:
        """The detector configuration that undoes the sensor and region distortions.

        With ``fleet_relative`` every sensor is scored as its deviation from
        the fleet's median at the same time, in one key group (the median is
        over the readings a detector sees): the shared wind cancels, so the
        fleet's weather never alarms every turbine at once.  What is left is
        each turbine's local turbulence, an AR(1) of lag-1 correlation 0.9:
        consecutive readings repeat most of it, so a reading is worth
        (1 - 0.9) / (1 + 0.9) of an independent one, and a turbine model
        waits for the usual 20 * D readings' worth (``min_samples``,
        :func:`warmup_readings`) before it scores; the fleet model, which
        pools the fleet's independent turbulences, scores until then.
        Hotelling's prediction bound assumes independent readings: without
        the wait, models of 80 such readings flag about twice the rate.
        """
        out: dict[str, object] = {
            "sensors": list(self.sensors),
            "offsets": self.offsets.tolist(),
            "gains": self.gains.tolist(),
            "turbines": list(range(self.site.shape[0])),
            "region_factors": self.region_factors.tolist(),
        }
        if fleet_relative:
            out["fleet_relative"] = list(self.sensors)
            out["key_groups"] = 1
            out["min_samples"] = warmup_readings(len(self.sensors))
        return out


def warmup_readings(sensors: int) -> int:
    """Readings of a simulated turbine worth 20 * ``sensors`` independent ones.

    The local turbulence is an AR(1) of lag-1 correlation phi: the mean of
    n readings is as precise as that of n (1 - phi) / (1 + phi) independent ones.

    >>> warmup_readings(4)
    1520
    """
    return int(np.ceil(round(20 * sensors * (1 + _LOCAL_PHI) / (1 - _LOCAL_PHI), 9)))


@dataclass(frozen=True)
class Episode:
    turbine: int
    start: int
    length: int
    kind: str
    sensor: int
    partner: int
    sign: float


def make_fleet(params: SimulationParams, rng: np.random.Generator) -> Fleet:
    t, d = params.turbines, params.sensors
    base = np.array([s[1:] for s in _BASE_SENSORS[:d]], dtype=np.float64).reshape(-1, 3)
    extra = d - base.shape[0]
    if extra:
        more = np.column_stack(
            (
                rng.uniform(10, 100, extra),
                rng.uniform(0.5, 3.0, extra) * rng.choice([-1, 1], extra),
                rng.uniform(0.2, 1.0, extra),
            )
        )
        base = np.vstack((base, more))
    level, loading, noise = base.T
    site = level + rng.normal(scale=0.5, size=(t, d)) * np.abs(loading) * 2.0
    return Fleet(
        sensors=params.sensor_names(),
        site=site,
        loading=loading.copy(),
        noise=noise.copy(),
        offsets=rng.normal(scale=2.0, size=d),
        gains=rng.uniform(0.8, 1.25, size=d),
        region_factors=rng.uniform(0.9, 1.1, size=t),
    )


def plan_faults(params: SimulationParams, rng: np.random.Generator) -> list[Episode]:
    """Fault episodes, drawn up front so the stream can be generated in blocks."""
    first = int(np.ceil(params.clean_fraction * params.steps))
    span = params.steps - first
    if span <= 0 or params.fault_fraction == 0:
        return []
    mean_len = np.mean([np.mean(_LENGTHS[k]) for k in params.kinds])
    count = int(round(params.fault_fraction * params.turbines * span / mean_len))
    episodes = []
    for _ in range(count):
        kind = params.kinds[int(rng.integers(len(params.kinds)))]
        lo, hi = _LENGTHS[kind]
        length = int(rng.integers(lo, hi + 1))
        start = first + int(rng.integers(0, max(1, span - length + 1)))
        sensor = int(rng.integers(params.sensors))
        partner = (sensor + 1 + int(rng.integers(params.sensors - 1))) % params.sensors
        episodes.append(
            Episode(
                turbine=int(rng.integers(params.turbines)),
                start=start,
                length=min(length, params.steps - start),
                kind=kind,
                sensor=sensor,
                partner=partner,
                sign=float(rng.choice([-1.0, 1.0])),
            )
        )
    return episodes


class FleetSimulator:
    """Generate a simulated fleet, block by block.

    Examples
    --------
    >>> sim = FleetSimulator(SimulationParams(turbines=20, steps=500, seed=1))
    >>> chunks = list(sim.chunks())
    >>> sum(len(c) for c in chunks), chunks[0].values.shape[1]
    (10000, 4)
    >>> sorted(set(np.concatenate([c.kinds for c in chunks]).tolist()) - {""})
    ['correlation_break', 'drift', 'spike', 'stuck']
    """

    def __init__(self, params: SimulationParams) -> None:
        self.params = params
        rng = np.random.default_rng(params.seed)
        self.fleet = make_fleet(params, rng)
        self.episodes = plan_faults(params, rng)
        self._noise_seed = int(rng.integers(2**63 - 1))

    def chunks(self) -> Iterator[Chunk]:
        """All readings, ``BLOCK_STEPS`` time steps per chunk, rows ordered (step, turbine).

        The block size is fixed (not a setting) because the random draws are
        made block by block: the same seed must give the same file.
        """
        p, fleet = self.params, self.fleet
        t, d = p.turbines, p.sensors
        rng = np.random.default_rng(self._noise_seed)
        sigma = fleet.sigma
        # AR(1) states carried across blocks.
        wind_state = np.zeros(1)
        local_state = np.zeros((1, t))
        wind_scale = _WIND_SD * np.sqrt(1 - _WIND_PHI**2)
        local_scale = _LOCAL_SD * np.sqrt(1 - _LOCAL_PHI**2)
        wind_state[0] = _WIND_PHI * rng.normal(scale=_WIND_SD)
        local_state[0] = _LOCAL_PHI * rng.normal(scale=_LOCAL_SD, size=t)
        stuck_at: dict[int, float] = {}
        # Imported here: scipy.signal loads scipy.stats (about 45 MB resident), which a
        # detector service, importing this module for its fault kinds, does not need.
        from scipy.signal import lfilter

        for start in range(0, p.steps, BLOCK_STEPS):
            k = min(BLOCK_STEPS, p.steps - start)
            w, wind_state = lfilter(
                [1.0], [1.0, -_WIND_PHI], rng.normal(scale=wind_scale, size=k), zi=wind_state
            )
            u, local_state = lfilter(
                [1.0],
                [1.0, -_LOCAL_PHI],
                rng.normal(scale=local_scale, size=(k, t)),
                axis=0,
                zi=local_state,
            )
            wind = _WIND_MEAN + w[:, None] + u  # (k, T)
            phys = (
                fleet.site[None, :, :]
                + fleet.loading * (wind - _WIND_MEAN)[:, :, None]
                + rng.normal(size=(k, t, d)) * fleet.noise
            )  # (k, T, D)
            labels = np.zeros((k, t), dtype=np.int8)
            kinds = np.full((k, t), "", dtype="<U17")
            for i, ep in enumerate(self.episodes):
                self._apply(i, ep, start, k, phys, labels, kinds, sigma, stuck_at)
            raw = phys / (fleet.gains * fleet.region_factors[None, :, None]) + fleet.offsets
            steps = start + np.arange(k)
            ts = np.repeat(p.start + steps * p.interval, t)
            yield Chunk(
                timestamps=ts,
                turbine_ids=np.tile(np.arange(t, dtype=np.int64), k),
                values=raw.reshape(k * t, d),
                labels=labels.reshape(-1),
                kinds=kinds.reshape(-1),
                lines=start * t + np.arange(k * t, dtype=np.int64),
            )

    def _apply(
        self,
        key: int,
        ep: Episode,
        block_start: int,
        k: int,
        phys: NDArray[np.float64],
        labels: NDArray[np.int8],
        kinds: NDArray[np.str_],
        sigma: NDArray[np.float64],
        stuck_at: dict[int, float],
    ) -> None:
        """Inject the part of an episode that falls in this block (in place)."""
        lo = max(ep.start, block_start)
        hi = min(ep.start + ep.length, block_start + k)
        if lo >= hi:
            return
        rows = np.arange(lo, hi) - block_start
        m = self.params.magnitude
        j, tb = ep.sensor, ep.turbine
        site = self.fleet.site[tb]
        hit = np.ones(rows.size, dtype=bool)
        if ep.kind == "spike":
            phys[rows, tb, j] += ep.sign * m * sigma[j]
        elif ep.kind == "drift":
            frac = (np.arange(lo, hi) - ep.start) / max(ep.length - 1, 1)
            phys[rows, tb, j] += ep.sign * m * sigma[j] * (1.0 + frac)
        elif ep.kind == "stuck":
            if key not in stuck_at:
                onset = phys[rows[0], tb, j]
                toward_rail = 1.0 if onset >= site[j] else -1.0
                stuck_at[key] = onset + toward_rail * m * sigma[j]
            phys[rows, tb, j] = stuck_at[key]
        else:
            q = ep.partner
            loaded_same = np.sign(self.fleet.loading[j]) == np.sign(self.fleet.loading[q])
            shift_j = ep.sign * 0.5 * m * sigma[j]
            shift_q = (-1.0 if loaded_same else 1.0) * ep.sign * 0.5 * m * sigma[q]
            new_j = phys[rows, tb, j] + shift_j
            new_q = phys[rows, tb, q] + shift_q
            inside = (np.abs(new_j - site[j]) <= 3 * sigma[j]) & (
                np.abs(new_q - site[q]) <= 3 * sigma[q]
            )
            hit = inside
            phys[rows[inside], tb, j] = new_j[inside]
            phys[rows[inside], tb, q] = new_q[inside]
        labels[rows[hit], tb] = 1
        kinds[rows[hit], tb] = ep.kind
