"""The project's exceptions: one root, each carrying what the operator needs to act."""

from __future__ import annotations


class TurbineError(Exception):
    """Root of every error this project raises on purpose."""


class ConfigError(TurbineError, ValueError):
    """A configuration that cannot work (bad shapes, unknown keys, impossible values)."""


class InputError(TurbineError, ValueError):
    """Bad data in a recorded file, located as precisely as known.

    >>> str(InputError("not a number: 'x'", path="a.csv", line=3, column="Pressure"))
    "a.csv:3: column 'Pressure': not a number: 'x'"
    """

    def __init__(
        self,
        message: str,
        *,
        path: str | None = None,
        line: int | None = None,
        column: str | None = None,
    ) -> None:
        self.message = message
        self.path = path
        self.line = line
        self.column = column
        super().__init__(self.__str__())

    def __str__(self) -> str:
        where = self.path or "<input>"
        if self.line is not None:
            where += f":{self.line}"
        if self.column is not None:
            where += f": column {self.column!r}"
        return f"{where}: {self.message}"


class SchemaError(TurbineError, ValueError):
    """A batch whose sensors, shapes or turbines do not fit the model it is sent to."""


class StoreError(TurbineError):
    """An anomaly store that is missing, corrupt, or written by an incompatible version."""
