"""Running the `turbine` command in a subprocess, as users do."""

from __future__ import annotations

import os
import subprocess
import sys


def turbine(
    *args: object, check: bool = True, timeout: float = 600, env: dict | None = None
) -> subprocess.CompletedProcess:
    """Run ``turbine ARGS`` to the end; with ``check``, a non-zero exit fails the test."""
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"turbine {' '.join(map(str, args))}: exit {proc.returncode}\n{proc.stderr[-3000:]}"
        )
    return proc


def spawn(*args: object, env: dict | None = None) -> subprocess.Popen:
    """Start ``turbine ARGS`` in the background (stderr captured, for its logs)."""
    return subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli", *map(str, args)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )
