"""Control records: operator actions sent through the readings topic itself.

A control record travels in the partition of the turbines it names (keyed
by their key group, like their readings), so the detector that owns those
turbines applies it, in order with their readings, and its checkpoint and
committed offset carry it like any other state change: a restart neither
loses nor repeats it.  Content type ``application/vnd.turbine.control+json``::

    {"action": "rebaseline", "turbines": ["R80711"], "reason": "gearbox replaced"}

>>> msg = decode_control(encode_control("rebaseline", ["R80711", 7]))
>>> msg.action, msg.turbines
('rebaseline', ['R80711', '7'])
"""

from __future__ import annotations

import json
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pipeline.names import turbine_id

CONTROL_TYPE = "application/vnd.turbine.control+json"
MAX_CONTROL_BYTES = 65_536


class ControlError(ValueError):
    """A control record that cannot be applied (its dead-letter reason is ``bad_control``)."""


class ControlMessage(BaseModel):
    """One operator action."""

    model_config = ConfigDict(extra="forbid")

    action: Literal["rebaseline"]
    turbines: list[str] = Field(min_length=1, max_length=10_000)
    reason: str = Field("", max_length=500)


def encode_control(action: str, turbines: list[str | int], reason: str = "") -> bytes:
    """The value of a control record."""
    msg = ControlMessage.model_validate(
        {"action": action, "turbines": [str(t) for t in turbines], "reason": reason}
    )
    return msg.model_dump_json().encode()


def decode_control(value: bytes | None) -> ControlMessage:
    """Parse and validate a control record's value; raises ControlError."""
    if value is None or len(value) > MAX_CONTROL_BYTES:
        raise ControlError("a control record must be a JSON object of at most 64 KiB")
    try:
        raw = json.loads(value.decode("utf-8"))
        msg = ControlMessage.model_validate(raw)
        for name in msg.turbines:
            turbine_id(name)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise ControlError(f"not a JSON control record: {exc}") from None
    except (ValidationError, ValueError) as exc:
        raise ControlError(f"bad control record: {str(exc).splitlines()[0]}") from None
    return msg


def control_key(turbine: str | int, key_groups: int) -> bytes:
    """The record key that puts a control record in ``turbine``'s partition."""
    return f"group-{turbine_id(turbine) % key_groups}".encode()
