"""`make stack`: the compose stack from local processes, started and stopped for real."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time

import pytest

from tests.conftest import REPO
from tests.kafka_support import free_port
from tests.prometheus_support import query

pytestmark = [pytest.mark.kafka, pytest.mark.prometheus, pytest.mark.slow]


def listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_local_stack_runs_and_stops_cleanly(tmp_path):
    from tests.test_prometheus import tool

    tool("prometheus")
    ports = {
        "KAFKA_PORT": free_port(),
        "DETECTOR_METRICS_PORT": free_port(),
        "PRODUCER_METRICS_PORT": free_port(),
        "PROMETHEUS_PORT": free_port(),
        "ALERTMANAGER_PORT": free_port(),
    }
    env = {
        **os.environ,
        **{k: str(v) for k, v in ports.items()},
        "STACK_DIR": str(tmp_path / "stack"),
    }
    proc = subprocess.Popen(
        ["bash", str(REPO / "deploy" / "stack" / "local-stack.sh")],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    base = f"http://127.0.0.1:{ports['PROMETHEUS_PORT']}"
    try:
        deadline = time.monotonic() + 150
        seen = {}
        while time.monotonic() < deadline:
            try:
                ups = query(base, "up")
                readings = query(base, "sum(turbine_readings_total)")
            except OSError:
                time.sleep(1)
                continue
            seen = {r["metric"]["job"]: r["value"][1] for r in ups}
            if (
                seen.get("detector") == "1"
                and seen.get("producer") == "1"
                and readings
                and float(readings[0]["value"][1]) > 0
            ):
                break
            time.sleep(1)
        assert seen.get("detector") == "1" and seen.get("producer") == "1", seen
        from tests.prometheus_support import get_json

        active = get_json(f"{base}/api/v1/alertmanagers")["data"]["activeAlertmanagers"]
        assert [a["url"] for a in active] == [
            f"http://127.0.0.1:{ports['ALERTMANAGER_PORT']}/api/v2/alerts"
        ]
    finally:
        # Ctrl-C is SIGINT; a process started in the background (nohup, CI runners) inherits
        # SIGINT ignored, and bash cannot trap a signal ignored on entry: then send SIGTERM,
        # which the script handles the same way.
        ignored = signal.getsignal(signal.SIGINT) == signal.SIG_IGN
        proc.send_signal(signal.SIGTERM if ignored else signal.SIGINT)
        try:
            _, err = proc.communicate(timeout=200)
        except subprocess.TimeoutExpired:
            proc.kill()
            logs = {p.name: p.read_text()[-1500:] for p in (tmp_path / "stack").glob("*.log")}
            pytest.fail(f"the stack did not stop within 200 s after Ctrl-C: {logs}")
    assert "stack: stopped" in err, err[-2000:]
    for name, port in ports.items():
        assert not listening(port), f"{name} {port} still listening after Ctrl-C"
