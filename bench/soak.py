"""Soak: a detector at a steady input rate for a long time (default 30 minutes).

Starts its own local broker (deploy/kafka/kafka.sh) unless KAFKA_BOOTSTRAP_SERVERS
is set, streams the simulator at a steady rate, runs one detector with metrics,
and samples every minute: the detector's resident memory (RSS), the anomaly
store's bytes and anomalies, and the consumer lag. Writes bench/results/soak.md.

    python -m bench.soak [--minutes 30] [--rate 20000]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "bench" / "results" / "soak.md"


def metrics(port: int) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()  # noqa: S310
    out: dict[str, float] = {}
    for name in (
        "turbine_readings_total",
        "turbine_store_bytes",
        "turbine_store_anomalies",
        "turbine_checkpoints_total",
    ):
        found = re.findall(rf"^{name}(?:\{{[^}}]*\}})? (\S+)$", text, re.M)  # summed over sites
        out[name] = sum(float(v) for v in found)
    out["anomalies"] = sum(
        float(v) for v in re.findall(r"^turbine_anomalies_total\{[^}]*\} (\S+)$", text, re.M)
    )
    out["lag"] = sum(
        float(v) for v in re.findall(r"^turbine_consumer_lag_records\{[^}]*\} (\S+)$", text, re.M)
    )
    return out


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> int:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the finally: stop children
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=30)
    ap.add_argument("--rate", type=int, default=20_000, help="readings per second")
    ap.add_argument("--turbines", type=int, default=100)
    args = ap.parse_args()
    turbine = str(REPO / ".venv" / "bin" / "turbine")
    work = Path(tempfile.mkdtemp(prefix="turbine-soak-"))
    env = {**os.environ, "KAFKA_PORT": "24092", "KAFKA_DATA_DIR": str(work / "kafka")}
    servers = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    own_broker = servers is None
    if own_broker:
        subprocess.run(
            ["bash", str(REPO / "deploy/kafka/kafka.sh"), "up"],
            env=env,
            check=True,
            capture_output=True,
        )
        servers = "127.0.0.1:24092"
    speed = args.rate / args.turbines  # steps per second (1 s per step recorded)
    steps = int(speed * (args.minutes * 60 + 120))
    topic = f"soak-{int(time.time())}"
    det_port, sim_port = 24400, 24401
    detector = subprocess.Popen(
        [
            turbine,
            "detect",
            "--bootstrap-servers",
            servers,
            "--topic",
            topic,
            "--group",
            topic,
            "--store",
            str(work / "store"),
            "--metrics-port",
            str(det_port),
            "--partitions",
            "6",
        ],
        stdout=subprocess.DEVNULL,
        stderr=open(work / "detector.log", "w"),  # noqa: SIM115
    )
    simulator = subprocess.Popen(
        [
            turbine,
            "simulate",
            "--bootstrap-servers",
            servers,
            "--topic",
            topic,
            "--partitions",
            "6",
            "--turbines",
            str(args.turbines),
            "--steps",
            str(steps),
            "--speed",
            str(speed),
            "--metrics-port",
            str(sim_port),
            "--quiet",
        ],
        stdout=subprocess.DEVNULL,
        stderr=open(work / "simulator.log", "w"),  # noqa: SIM115
    )
    rows = []
    start = time.monotonic()
    try:
        time.sleep(30)  # warm-up
        for minute in range(int(args.minutes) + 1):
            m = metrics(det_port)
            rows.append(
                (
                    minute,
                    rss_mb(detector.pid),
                    m["turbine_readings_total"],
                    m["anomalies"],
                    m["turbine_store_anomalies"],
                    m["turbine_store_bytes"],
                    m["lag"],
                )
            )
            print(rows[-1], flush=True)
            if minute < int(args.minutes):
                time.sleep(max(0.0, start + 30 + 60 * (minute + 1) - time.monotonic()))
    finally:
        simulator.terminate()
        simulator.wait(timeout=60)
        detector.terminate()
        detector.wait(timeout=120)
        if own_broker:
            subprocess.run(
                ["bash", str(REPO / "deploy/kafka/kafka.sh"), "down", "--purge"],
                env=env,
                capture_output=True,
            )
        shutil.rmtree(work, ignore_errors=True)
    lines = [
        "# Soak",
        "",
        f"- date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        f"- steady input: {args.rate:,} readings/s ({args.turbines} turbines, "
        f"simulator --speed {speed:g}), "
        f"{args.minutes:g} minutes after a 30 s warm-up; one detector, local broker, 6 partitions",
        f"- load average at the end: {os.getloadavg()}",
        "",
        "| minute | detector RSS MB | readings processed | anomalies (counter) | store anomalies | "
        "store bytes | bytes per anomaly | consumer lag (records) |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for minute, rss, readings, anomalies, stored, size, lag in rows:
        per = size / stored if stored else float("nan")
        lines.append(
            f"| {minute} | {rss:.1f} | {readings:,.0f} | {anomalies:,.0f} | {stored:,.0f} | "
            f"{size:,.0f} | {per:.0f} | {lag:,.0f} |"
        )
    first, last = rows[min(5, len(rows) - 1)], rows[-1]
    lines += [
        "",
        f"RSS from minute {first[0]} to {last[0]}: {first[1]:.1f} -> {last[1]:.1f} MB; "
        f"lag at the end: {last[6]:,.0f} records.",
        "",
    ]
    OUT.write_text("\n".join(lines))
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
