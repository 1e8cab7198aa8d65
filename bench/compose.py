"""Readings per second through the compose stack (simulator -> Kafka -> two detectors),
beside the same stack from local processes, in one run. Writes bench/results/compose.md.

    python -m bench.compose [--turbines 100] [--steps 10000]

Needs a Docker engine and the images (`make compose-up` builds them); the local
half uses deploy/kafka/kafka.sh. The simulator sends as fast as it can; the rate
is the detectors' summed `turbine_readings_total` over the steady middle of the
run (10 % to 90 % of the readings), sampled every second.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "bench" / "results" / "compose.md"
TURBINE = str(REPO / ".venv" / "bin" / "turbine")


def steady_rate(samples: list[tuple[float, float]], total: float) -> float:
    """Readings/s between 10 % and 90 % of ``total`` from (time, readings) samples."""
    lo = next((s for s in samples if s[1] >= 0.1 * total), None)
    hi = next((s for s in samples if s[1] >= 0.9 * total), None)
    if lo is None or hi is None or hi[0] <= lo[0]:
        return float("nan")
    return (hi[1] - lo[1]) / (hi[0] - lo[0])


def poll(read, total: float, timeout: float = 900) -> list[tuple[float, float]]:
    samples: list[tuple[float, float]] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = read()
        except OSError:
            value = 0.0
        samples.append((time.monotonic(), value))
        if value >= total:
            break
        time.sleep(1)
    return samples


def compose_run(turbines: int, steps: int, env: dict[str, str]) -> tuple[float, float]:
    project = f"twbench{int(time.time())}"
    env = {
        **env,
        "SIM_TURBINES": str(turbines),
        "SIM_STEPS": str(steps),
        "SIM_SPEED": "0",
        "SIM_BATCH_STEPS": "100",
        "PROMETHEUS_PORT": "25090",
        "ALERTMANAGER_PORT": "25093",
        "KAFKA_HOST_PORT": "25092",
    }
    base = ["docker-compose", "-p", project, "-f", str(REPO / "docker-compose.yml")]
    # The detectors first (they must be running when the stream starts), then the simulator.
    subprocess.run(
        [
            *base,
            "up",
            "-d",
            "--scale",
            "detector=2",
            "kafka",
            "kafka-init",
            "detector",
            "prometheus",
        ],
        env=env,
        cwd=REPO,
        check=True,
        capture_output=True,
    )
    try:

        def up() -> float:
            url = "http://127.0.0.1:25090/api/v1/query?" + urllib.parse.urlencode(
                {"query": "count(up{job='detector'} == 1)"}
            )
            data = json.loads(urllib.request.urlopen(url, timeout=5).read())["data"]["result"]
            return float(data[0]["value"][1]) if data else 0.0

        poll(up, 2, timeout=180)
        subprocess.run(
            [*base, "up", "-d", "simulator"], env=env, cwd=REPO, check=True, capture_output=True
        )
        total = turbines * steps

        def readings() -> float:
            url = "http://127.0.0.1:25090/api/v1/query?" + urllib.parse.urlencode(
                {"query": "sum(turbine_readings_total)"}
            )
            data = json.loads(urllib.request.urlopen(url, timeout=5).read())["data"]["result"]
            return float(data[0]["value"][1]) if data else 0.0

        samples = poll(readings, total)
        return steady_rate(samples, total), samples[-1][1]
    finally:
        subprocess.run([*base, "down", "-v"], env=env, cwd=REPO, capture_output=True)


def metrics_total(ports: list[int]) -> float:
    total = 0.0
    for port in ports:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        m = re.search(r"^turbine_readings_total (\S+)$", text, re.M)
        total += float(m.group(1)) if m else 0.0
    return total


def local_run(turbines: int, steps: int) -> tuple[float, float]:
    work = Path(tempfile.mkdtemp(prefix="turbine-bench-compose-"))
    env = {**os.environ, "KAFKA_PORT": "25192", "KAFKA_DATA_DIR": str(work / "kafka")}
    subprocess.run(
        ["bash", str(REPO / "deploy/kafka/kafka.sh"), "up"],
        env=env,
        check=True,
        capture_output=True,
    )
    servers = "127.0.0.1:25192"
    ports = [25400, 25401]
    procs = []
    try:
        for i, port in enumerate(ports):
            procs.append(
                subprocess.Popen(
                    [
                        TURBINE,
                        "detect",
                        "--bootstrap-servers",
                        servers,
                        "--group",
                        "bench",
                        "--store",
                        str(work / "store"),
                        "--metrics-port",
                        str(port),
                        "--partitions",
                        "6",
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=open(work / f"detector{i}.log", "w"),  # noqa: SIM115
                )
            )
        poll(lambda: float(len([p for p in ports if _answers(p)])), 2, timeout=120)
        time.sleep(5)  # both in the group
        sim = subprocess.Popen(
            [
                TURBINE,
                "simulate",
                "--bootstrap-servers",
                servers,
                "--turbines",
                str(turbines),
                "--steps",
                str(steps),
                "--speed",
                "0",
                "--batch-steps",
                "100",
                "--partitions",
                "6",
                "--quiet",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        procs.append(sim)
        total = turbines * steps
        samples = poll(lambda: metrics_total(ports), total)
        return steady_rate(samples, total), samples[-1][1]
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(timeout=120)
        subprocess.run(
            ["bash", str(REPO / "deploy/kafka/kafka.sh"), "down", "--purge"],
            env=env,
            capture_output=True,
        )


def _answers(port: int) -> bool:
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).close()
        return True
    except OSError:
        return False


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--turbines", type=int, default=100)
    ap.add_argument("--steps", type=int, default=10_000)
    args = ap.parse_args()
    env = dict(os.environ)
    if subprocess.run(["docker", "info"], capture_output=True).returncode != 0:
        out = subprocess.run(
            ["bash", str(REPO / "deploy/docker/engine.sh"), "env"], capture_output=True, text=True
        )
        for line in out.stdout.splitlines():
            if line.startswith("export "):
                k, v = line[len("export ") :].split("=", 1)
                env[k] = v.strip("'\"")
    local_rate, local_n = local_run(args.turbines, args.steps)
    compose_rate, compose_n = compose_run(args.turbines, args.steps, env)
    n = args.turbines * args.steps
    lines = [
        "# Compose stack throughput",
        "",
        f"- date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        f"- {n:,} readings ({args.turbines} turbines x {args.steps} steps, 4 sensors), "
        "simulator as fast as it can (`--speed 0 --batch-steps 100`), two detectors in one "
        "group, 6 partitions",
        "- 2 cores shared by the simulator, the broker, both detectors (and Prometheus under "
        f"compose); load average at the end {os.getloadavg()}",
        "",
        "| stack | readings processed | readings/s (steady 10-90 %) |",
        "| --- | ---: | ---: |",
        f"| docker-compose (stand-in images, Docker engine) | {compose_n:,.0f} "
        f"| {compose_rate:,.0f} |",
        f"| local processes (`make stack` layout) | {local_n:,.0f} | {local_rate:,.0f} |",
        "",
    ]
    OUT.write_text("\n".join(lines))
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
