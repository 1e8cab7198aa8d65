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


def _high_water_kib(pid: int) -> int | None:
    """``VmHWM`` of a running process, in KiB (None once it has exited)."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        pass
    return None


def finish(proc: subprocess.Popen, timeout: float) -> tuple[str, int]:
    """Wait for ``proc`` (from :func:`spawn`): its stderr and its own peak RSS in KiB.

    The peak is the high-water mark of the child's own memory (``VmHWM``), read every
    0.1 s while it runs. Not ``os.wait4``'s ``ru_maxrss``: the child is started by
    vfork from this test process, and Linux counts the old memory's high water at exec,
    so that figure is at least the size of pytest itself (660 MB late in a full run).
    """
    stream = proc.stderr
    assert stream is not None
    chunks: list[str] = []
    reader = threading.Thread(target=lambda: chunks.append(stream.read()), daemon=True)
    reader.start()
    deadline = time.monotonic() + timeout
    peak = 0
    samples = 0
    while True:
        hwm = _high_water_kib(proc.pid)
        if hwm is not None:
            peak = max(peak, hwm)
            samples += 1
        pid, status, _ = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if time.monotonic() > deadline:
            proc.kill()
            raise subprocess.TimeoutExpired(proc.args, timeout)
        time.sleep(0.1)
    proc.returncode = os.waitstatus_to_exitcode(status)
    reader.join(timeout=30)
    assert samples, "the process exited before its memory could be read"
    return "".join(chunks), peak
