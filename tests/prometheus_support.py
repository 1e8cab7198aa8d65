"""A real Prometheus server for tests: Debian's package (or a binary on PATH)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
INSTALL = REPO / "deploy" / "prometheus" / "install.sh"


class NoPrometheus(RuntimeError):
    pass


def binary(name: str, *alternatives: str) -> str:
    for candidate in (name, *alternatives):
        found = shutil.which(candidate)
        if found:
            return found
    if os.geteuid() == 0:
        subprocess.run(["bash", str(INSTALL)], capture_output=True, check=False)
        for candidate in (name, *alternatives):
            found = shutil.which(candidate)
            if found:
                return found
    raise NoPrometheus(f"{name} is not installed (deploy/prometheus/install.sh)")


def get_json(url: str, timeout: float = 5.0) -> dict:
    with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 (loopback only)
        return json.loads(resp.read())


def query(base: str, expr: str) -> list[dict]:
    data = get_json(f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": expr}))
    assert data["status"] == "success", data
    return data["data"]["result"]


@contextmanager
def prometheus_server(config_dir: Path, port: int, workdir: Path) -> Iterator[str]:
    """Run prometheus on 127.0.0.1:port with ``config_dir/prometheus.yml``; yields its URL."""
    exe = binary("prometheus")
    proc = subprocess.Popen(
        [
            exe,
            f"--config.file={config_dir / 'prometheus.yml'}",
            f"--storage.tsdb.path={workdir / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=open(workdir / "prometheus.log", "w"),  # noqa: SIM115
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"{base}/-/ready", timeout=2).close()  # noqa: S310
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise NoPrometheus(
                        "prometheus did not start: "
                        + (workdir / "prometheus.log").read_text()[-1000:]
                    ) from None
                time.sleep(0.5)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
