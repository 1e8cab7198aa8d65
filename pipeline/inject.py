"""Labelled faults injected into real readings: the maths of ``turbine inject``.

A :class:`Fault` acts on one sensor of one turbine over ``[start, start +
duration)`` (UTC seconds).  Its effect on a reading ``x`` at time ``t``:

============  ===========================================================
kind          injected reading
============  ===========================================================
``derating``  ``x * (1 - size)`` while producing (``x > above``), else ``x``
``offset``    ``x + size`` (a sensor bias)
``gain``      ``x * (1 + size)`` (a calibration error, e.g. +7 %: 0.07)
``stuck``     the sensor's first reading of the fault, from then on
``drift``     ``x + size * (t - start) / duration``: a ramp to ``size``
============  ===========================================================

A missing reading (NaN, or a sentinel) stays missing.  Every reading of the
turbine inside the window is labelled (``label`` 1, ``fault_kind`` the
kind), whether or not its value changed (a derated turbine that is not
producing is still derated).  Two faults of one turbine must not overlap.
:func:`random_plan` draws a plan from a seed.

>>> plan = FaultPlan(faults=[Fault(kind="gain", turbine="R1", sensor="ws", start=10,
...                                duration=20, size=0.5)])
>>> inj = Injector(plan, ("ws",))
>>> x, labels, kinds = inj.apply(np.array([0.0, 10.0, 29.0, 30.0]),
...                              np.full(4, turbine_id("R1")), np.full((4, 1), 2.0))
>>> x[:, 0].tolist(), labels.tolist(), kinds.tolist()
([2.0, 3.0, 3.0, 2.0], [0, 1, 1, 0], ['', 'gain', 'gain', ''])
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from pipeline.durations import parse_duration
from pipeline.errors import ConfigError
from pipeline.names import turbine_id

F64 = NDArray[np.float64]
I64 = NDArray[np.int64]

FAULT_KINDS = ("derating", "offset", "gain", "stuck", "drift")
Kind = Literal["derating", "offset", "gain", "stuck", "drift"]


def parse_instant(text: str | float) -> float:
    """Epoch seconds, or an ISO 8601 time (its offset honoured; none means UTC)."""
    if isinstance(text, int | float):
        return float(text)
    try:
        return float(text)
    except ValueError:
        pass
    # Imported here (pyarrow): a detector service imports this module for its fault
    # kinds alone (the metrics' label values) and never parses a time with it.
    from pipeline.recordings.isotime import TimeFormatError, parse_times

    try:
        return float(parse_times([text])[0])
    except TimeFormatError:
        raise ConfigError(f"not a time: {text!r} (epoch seconds or ISO 8601)") from None


class Fault(BaseModel):
    """One injected fault (times in UTC epoch seconds; ISO 8601 and ``14d`` accepted)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Kind
    turbine: str = Field(description="Turbine name (R80711) or integer id.")
    start: float
    duration: float = Field(gt=0)
    size: float = Field(
        0.0, description="Fraction (derating, gain) or sensor units (offset, drift); stuck: none."
    )
    sensor: str | None = Field(None, description="Sensor (derating: 'power' by default).")
    above: float = Field(0.0, description="derating: the power above which it acts.")

    @field_validator("turbine", mode="before")
    @classmethod
    def _turbine_text(cls, v: object) -> object:
        return str(v) if isinstance(v, int) and not isinstance(v, bool) else v

    @field_validator("start", mode="before")
    @classmethod
    def _start(cls, v: object) -> object:
        return parse_instant(v) if isinstance(v, str) else v

    @field_validator("duration", mode="before")
    @classmethod
    def _duration(cls, v: object) -> object:
        return parse_duration(v) if isinstance(v, str) else v

    @model_validator(mode="after")
    def _sensor_named(self) -> Fault:
        if self.sensor is None and self.kind != "derating":
            raise ConfigError(f"a {self.kind} fault needs a sensor")
        if self.kind != "stuck" and self.size == 0:
            raise ConfigError(f"a {self.kind} fault needs a non-zero size")
        if self.kind == "derating" and not 0 < self.size < 1:
            raise ConfigError(f"derating size is a fraction in (0, 1), got {self.size}")
        return self

    @property
    def end(self) -> float:
        return self.start + self.duration

    @property
    def turbine_id(self) -> int:
        return turbine_id(self.turbine)

    @property
    def target(self) -> str:
        return self.sensor if self.sensor is not None else "power"

    def describe(self) -> str:
        start = str(np.datetime64(int(self.start), "s"))
        return f"{self.kind} of {self.target} on {self.turbine} from {start}Z"


class FaultPlan(BaseModel):
    """Faults to inject; two faults of one turbine may not overlap in time."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    faults: tuple[Fault, ...]

    @model_validator(mode="after")
    def _no_overlap(self) -> FaultPlan:
        by_turbine: dict[int, list[tuple[float, float, int]]] = {}
        for i, f in enumerate(self.faults):
            by_turbine.setdefault(f.turbine_id, []).append((f.start, f.end, i))
        for spans in by_turbine.values():
            spans.sort()
            for (_, end, i), (start, _, j) in zip(spans[:-1], spans[1:], strict=True):
                if start < end:
                    a, b = sorted((i, j))
                    raise ConfigError(
                        f"faults {a + 1} and {b + 1} overlap on turbine "
                        f"{self.faults[a].turbine} ({self.faults[a].describe()}, "
                        f"{self.faults[b].describe()})"
                    )
        return self

    def kind_counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for f in self.faults:
            out[f.kind] = out.get(f.kind, 0) + 1
        return out

    def to_json(self) -> str:
        return json.dumps([f.model_dump(exclude_none=True) for f in self.faults], indent=1)


def make_plan(faults: Sequence[Mapping[str, object]], source: str = "plan") -> FaultPlan:
    """Validate faults into a plan; every problem is one ConfigError line naming ``source``."""
    try:
        return FaultPlan.model_validate({"faults": list(faults)})
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = list(first["loc"])
        ctx = first.get("ctx", {})
        msg = str(ctx["error"]) if isinstance(ctx.get("error"), ConfigError) else first["msg"]
        where = [f"fault {int(loc[1]) + 1}"] if len(loc) > 1 and isinstance(loc[1], int) else []
        where += [".".join(str(x) for x in loc[2:])] if loc[2:] else []
        raise ConfigError(": ".join([source, *where, msg])) from None


def load_plan(path: str | Path) -> FaultPlan:
    """A plan file: JSON (a list of faults, or ``{"fault": [...]}``) or TOML (``[[fault]]``)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read the plan: {exc.strerror}") from None
    try:
        raw: object = tomllib.loads(text) if p.suffix.lower() == ".toml" else json.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{p}: not valid {p.suffix.lstrip('.') or 'JSON'}: {exc}") from None
    if isinstance(raw, dict):
        raw = raw.get("fault", raw.get("faults"))
    if not isinstance(raw, list) or not all(isinstance(f, dict) for f in raw):
        raise ConfigError(f"{p}: a plan is a list of faults ([[fault]] tables in TOML)")
    return make_plan(raw, source=str(p))


def parse_kinds(text: str) -> list[dict[str, object]]:
    """``KIND[:SENSOR[:SIZE]],...`` as fault templates.

    >>> parse_kinds("derating::0.06,gain:wind_speed:0.07")
    [{'kind': 'derating', 'size': 0.06}, {'kind': 'gain', 'sensor': 'wind_speed', 'size': 0.07}]
    """
    out: list[dict[str, object]] = []
    for item in (i.strip() for i in text.split(",")):
        if not item:
            continue
        kind, _, rest = item.partition(":")
        sensor, _, size = rest.partition(":")
        if kind not in FAULT_KINDS:
            raise ConfigError(f"--kinds: unknown kind {kind!r} (kinds: {', '.join(FAULT_KINDS)})")
        spec: dict[str, object] = {"kind": kind}
        if sensor:
            spec["sensor"] = sensor
        if size:
            try:
                spec["size"] = float(size)
            except ValueError:
                raise ConfigError(f"--kinds: {item!r}: size {size!r} is not a number") from None
        out.append(spec)
    if not out:
        raise ConfigError("--kinds: no fault kind given")
    return out


def random_plan(
    turbines: Sequence[str],
    since: float,
    until: float,
    count: int,
    kinds: Sequence[Mapping[str, object]],
    duration: float,
    seed: int,
    gap: float = 0.0,
    sizes: Mapping[str, float] | None = None,
    max_concurrent: int | None = None,
) -> FaultPlan:
    """``count`` faults drawn from ``seed``: kinds in turn, turbine and start at random.

    Each fault lies inside ``[since, until)``, starts on a whole minute, and
    keeps ``gap`` seconds from the other faults of its turbine.  With
    ``max_concurrent``, at no time are more than that many turbines faulty
    (a fault on most of a farm at once is what a comparison with the other
    turbines cannot see).  The same arguments give the same plan.
    """
    if count < 1:
        raise ConfigError(f"--random must be at least 1, got {count}")
    if not turbines:
        raise ConfigError("no turbines to inject faults into")
    span = until - since - duration
    if span < 0:
        raise ConfigError(
            f"a fault of {duration:g} s does not fit in the {until - since:g} s of the readings"
        )
    if max_concurrent is not None and max_concurrent < 1:
        raise ConfigError(f"--max-concurrent must be at least 1, got {max_concurrent}")
    templates = [_template(kinds[k % len(kinds)], sizes) for k in range(count)]
    rng = np.random.default_rng(seed)
    if max_concurrent is not None:
        faults = _staggered(turbines, since, span, templates, duration, gap, max_concurrent, rng)
    else:
        faults = _anywhere(turbines, since, span, templates, duration, gap, rng)
    if faults is None:
        most = "" if max_concurrent is None else f", at most {max_concurrent} at a time"
        raise ConfigError(
            f"cannot place {count} faults of {duration:g} s (gap {gap:g} s{most}) on "
            f"{len(turbines)} turbines in {until - since:g} s"
        )
    faults.sort(key=lambda f: (float(f["start"]), str(f["turbine"])))  # type: ignore[arg-type]
    return make_plan(faults, source="random plan")


def _template(kind: Mapping[str, object], sizes: Mapping[str, float] | None) -> dict[str, object]:
    template = dict(kind)
    if "size" not in template and template["kind"] != "stuck":
        default = (sizes or {}).get(str(template["kind"]))
        if default is None:
            raise ConfigError(f"--kinds: {template['kind']} needs a size (KIND:SENSOR:SIZE)")
        template["size"] = default
    return template


def _anywhere(
    turbines: Sequence[str],
    since: float,
    span: float,
    templates: Sequence[dict[str, object]],
    duration: float,
    gap: float,
    rng: np.random.Generator,
) -> list[dict[str, object]] | None:
    """Each fault at a random turbine and start, away from its turbine's other faults."""
    taken: dict[str, list[tuple[float, float]]] = {}
    faults: list[dict[str, object]] = []
    for template in templates:
        for _ in range(10_000):  # rejection sampling; a dense plan fails
            name = turbines[int(rng.integers(len(turbines)))]
            start = since + float(np.floor(rng.random() * span / 60.0) * 60.0)
            spans = taken.setdefault(name, [])
            if all(start + duration + gap <= a or start >= b + gap for a, b in spans):
                spans.append((start, start + duration))
                faults.append({**template, "turbine": name, "start": start, "duration": duration})
                break
        else:
            return None
    return faults


STAGGER_STEP = 3600.0  # starts of a staggered plan fall on whole hours from ``since``


def _staggered(
    turbines: Sequence[str],
    since: float,
    span: float,
    templates: Sequence[dict[str, object]],
    duration: float,
    gap: float,
    most: int,
    rng: np.random.Generator,
    attempts: int = 50,
) -> list[dict[str, object]] | None:
    """Faults placed one by one among the starts still free: at most ``most`` at a time.

    Time is cut into hours; ``active`` counts the faults running in each hour
    and ``own`` marks each turbine's hours within ``gap`` of its faults.  A
    dense plan that paints itself into a corner is drawn again (``attempts``).
    """
    from scipy.ndimage import maximum_filter1d  # only where a plan is staggered

    width = int(np.ceil(duration / STAGGER_STEP))
    pad = int(np.ceil(gap / STAGGER_STEP))
    starts = int(np.floor(span / STAGGER_STEP)) + 1
    hours = starts + width
    for _ in range(attempts):
        active = np.zeros(hours, dtype=np.int64)
        own = np.zeros((len(turbines), hours), dtype=bool)
        faults: list[dict[str, object]] = []
        for template in templates:
            # the most faults running in each window [h, h + width), and whether a
            # turbine's own window meets one of its faults (or their gaps)
            busy = maximum_filter1d(active, width, origin=-(width // 2))[:starts]
            marks = np.concatenate((np.zeros((own.shape[0], 1)), np.cumsum(own, axis=1)), axis=1)
            mine = (marks[:, width : width + starts] - marks[:, :starts]) > 0
            free = (busy < most)[None, :] & ~mine
            options = np.flatnonzero(free.any(axis=1))
            if options.size == 0:
                break
            t = int(options[rng.integers(options.size)])
            slots = np.flatnonzero(free[t])
            h = int(slots[rng.integers(slots.size)])
            active[h : h + width] += 1
            own[t, max(h - pad, 0) : h + width + pad] = True
            start = since + h * STAGGER_STEP
            faults.append(
                {**template, "turbine": turbines[t], "start": start, "duration": duration}
            )
        else:
            return faults
    return None


class Injector:
    """Applies a plan to a stream of readings, chunk by chunk, in stream order.

    Parameters
    ----------
    plan : FaultPlan
    sensors : tuple of str
        The D sensor names of the readings.
    aliases : mapping of str to str, optional
        Other names of sensors (a file's column -> the sensor name), so a
        fault may name either.
    """

    def __init__(
        self,
        plan: FaultPlan,
        sensors: tuple[str, ...],
        aliases: Mapping[str, str] | None = None,
    ) -> None:
        self.plan = plan
        self.sensors = tuple(sensors)
        self.columns: list[int] = []
        for i, f in enumerate(plan.faults):
            name = f.target
            name = name if name in self.sensors else (aliases or {}).get(name, name)
            if name not in self.sensors:
                raise ConfigError(
                    f"fault {i + 1}: no sensor {f.target!r} (sensors: {', '.join(self.sensors)})"
                )
            self.columns.append(self.sensors.index(name))
        self._ids = np.array([f.turbine_id for f in plan.faults], dtype=np.int64)
        self._frozen = np.full(len(plan.faults), np.nan)  # stuck: the value held
        self.labelled = np.zeros(len(plan.faults), dtype=np.int64)

    def apply(
        self, timestamps: F64, turbine_ids: I64, values: F64
    ) -> tuple[F64, NDArray[np.int8], NDArray[np.str_]]:
        """Injected readings, labels and fault kinds.

        Parameters
        ----------
        timestamps : ndarray of shape (n,)
        turbine_ids : ndarray of shape (n,)
        values : ndarray of shape (n, D)
            Readings; NaN for missing ones (they stay missing).

        Returns
        -------
        values : ndarray of shape (n, D)
            A copy with the faults applied.
        labels : ndarray of shape (n,)
        kinds : ndarray of shape (n,)
        """
        n = timestamps.size
        out = np.array(values, dtype=np.float64, copy=True)
        labels = np.zeros(n, dtype=np.int8)
        width = max(len(k) for k in FAULT_KINDS)
        kinds = np.full(n, "", dtype=f"<U{width}")
        present = np.isin(self._ids, turbine_ids)
        for i in np.flatnonzero(present).tolist():  # a loop over the plan's faults
            f = self.plan.faults[i]
            rows = np.flatnonzero(
                (turbine_ids == self._ids[i]) & (timestamps >= f.start) & (timestamps < f.end)
            )
            if rows.size == 0:
                continue
            j = self.columns[i]
            x = out[rows, j]
            out[rows, j] = self._effect(i, f, timestamps[rows], x)
            labels[rows] = 1
            kinds[rows] = f.kind
            self.labelled[i] += rows.size
        return out, labels, kinds

    def _effect(self, i: int, f: Fault, t: F64, x: F64) -> F64:
        """The faulty readings ``x`` (k,) at times ``t`` (k,) inside fault ``i``."""
        if f.kind == "derating":
            return np.where(x > f.above, x * (1.0 - f.size), x)
        if f.kind == "offset":
            return x + f.size
        if f.kind == "gain":
            return x * (1.0 + f.size)
        if f.kind == "drift":
            return x + f.size * (t - f.start) / f.duration
        finite = np.isfinite(x)
        if np.isnan(self._frozen[i]) and finite.any():
            self._frozen[i] = x[np.flatnonzero(finite)[0]]
        return np.where(finite, self._frozen[i], np.nan)
