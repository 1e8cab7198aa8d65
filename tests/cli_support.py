"""Running the `turbine` command in a subprocess, as users do."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time


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


def finish(proc: subprocess.Popen, timeout: float) -> tuple[str, int]:
    """Wait for ``proc`` (from :func:`spawn`): its stderr and its own peak RSS in KiB.

    The peak is this one child's (``os.wait4``), not ``RUSAGE_CHILDREN``'s, which is the
    largest of every child the test session ever reaped (brokers, other detectors).
    """
    stream = proc.stderr
    assert stream is not None
    chunks: list[str] = []
    reader = threading.Thread(target=lambda: chunks.append(stream.read()), daemon=True)
    reader.start()
    deadline = time.monotonic() + timeout
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if time.monotonic() > deadline:
            proc.kill()
            raise subprocess.TimeoutExpired(proc.args, timeout)
        time.sleep(0.2)
    proc.returncode = os.waitstatus_to_exitcode(status)
    reader.join(timeout=30)
    return "".join(chunks), usage.ru_maxrss
