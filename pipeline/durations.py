"""Durations in configuration files: seconds as a number, or a number with a unit.

>>> parse_duration("14d"), parse_duration("6 h"), parse_duration(90)
(1209600.0, 21600.0, 90.0)
"""

from __future__ import annotations

import math
import re
from typing import Annotated

from pydantic import BeforeValidator

from pipeline.errors import ConfigError

_UNITS = {
    "s": 1.0,
    "sec": 1.0,
    "min": 60.0,
    "m": 60.0,
    "h": 3600.0,
    "d": 86400.0,
    "day": 86400.0,
    "days": 86400.0,
    "w": 7 * 86400.0,
}
_PATTERN = re.compile(r"\s*([0-9]+(?:\.[0-9]*)?(?:[eE][-+]?[0-9]+)?)\s*([a-z]*)\s*")


def parse_duration(value: object, allow_zero: bool = False) -> float:
    """Seconds from ``value``: a number of seconds, or text such as ``"14d"``, ``"30min"``.

    Positive (and finite); zero too with ``allow_zero`` (a gap of none).
    """
    if isinstance(value, bool):
        raise ConfigError(f"not a duration: {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        m = _PATTERN.fullmatch(value.lower())
        if m is None or m.group(2) not in {"", *_UNITS}:
            raise ConfigError(
                f"not a duration: {value!r} (a number of seconds, or e.g. '90s', '30min', "
                "'6h', '14d', '2w')"
            )
        seconds = float(m.group(1)) * _UNITS.get(m.group(2), 1.0)
    else:
        raise ConfigError(f"not a duration: {value!r}")
    if not math.isfinite(seconds) or seconds < 0 or (seconds == 0 and not allow_zero):
        raise ConfigError(f"a duration must be positive and finite, got {value!r}")
    return seconds


def _validate(value: object) -> object:
    return None if value is None else parse_duration(value)


Duration = Annotated[float, BeforeValidator(_validate)]
"""A positive number of seconds, written as a number or with a unit."""
