"""Pipeline latency under the stack's steady load (``make stack``, its defaults).

Starts deploy/stack/local-stack.sh (local Kafka, the simulator at 100 turbines x
--speed 10 = 1,000 readings/s, a detector, Prometheus, Alertmanager) on free ports,
waits for the first minute to pass, then every 30 s asks Prometheus for the p50 and
p99 of ``turbine_pipeline_latency_seconds`` (the Kafka record's timestamp, set by
the producer, to scoring) over the last minute, beside the readings rate. Writes
bench/results/latency.md.

    python -m bench.latency [--minutes 3]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "bench" / "results" / "latency.md"


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def query(base: str, expr: str, at: float | None = None) -> float | None:
    """The first value of a Prometheus instant query (at ``at``, epoch seconds; else now)."""
    params = {"query": expr} | ({"time": f"{at:.3f}"} if at is not None else {})
    url = f"{base}/api/v1/query?" + urllib.parse.urlencode(params)
    try:
        data = json.load(urllib.request.urlopen(url, timeout=5))  # noqa: S310 (loopback)
    except OSError:
        return None
    result = data["data"]["result"]
    return float(result[0]["value"][1]) if result else None


def quantile(q: float, metric: str) -> str:
    return f"histogram_quantile({q}, sum by (le) (rate({metric}_bucket[1m])))"


def main() -> int:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=3)
    ap.add_argument("--warmup", type=float, default=60, help="seconds before the first sample")
    args = ap.parse_args()
    ports = {
        k: free_port()
        for k in (
            "KAFKA_PORT",
            "DETECTOR_METRICS_PORT",
            "PRODUCER_METRICS_PORT",
            "PROMETHEUS_PORT",
            "ALERTMANAGER_PORT",
        )
    }
    workdir = Path(tempfile.mkdtemp(prefix="tw-latency-"))
    env = {**os.environ, **{k: str(v) for k, v in ports.items()}, "STACK_DIR": str(workdir)}
    stack = subprocess.Popen(  # noqa: S603
        ["bash", str(REPO / "deploy" / "stack" / "local-stack.sh")],  # noqa: S607
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    base = f"http://127.0.0.1:{ports['PROMETHEUS_PORT']}"
    rows = []
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if (query(base, "sum(turbine_readings_total)") or 0) > 0:
                break
            time.sleep(1)
        else:
            raise SystemExit("the stack scored nothing within 3 minutes")
        started = time.monotonic()
        time.sleep(args.warmup)
        end = started + args.warmup + args.minutes * 60
        while time.monotonic() < end:
            time.sleep(30)
            rows.append(
                (
                    round(time.monotonic() - started),
                    query(base, "sum(rate(turbine_readings_total[1m]))"),
                    query(base, quantile(0.5, "turbine_pipeline_latency_seconds")),
                    query(base, quantile(0.99, "turbine_pipeline_latency_seconds")),
                    query(base, quantile(0.99, "turbine_batch_processing_seconds")),
                )
            )
            print(rows[-1], file=sys.stderr)
        load = os.getloadavg()
    finally:
        # SIGTERM, which the script handles as Ctrl-C: a job started in the background
        # inherits SIGINT ignored, and bash cannot trap a signal ignored on entry.
        stack.send_signal(signal.SIGTERM)
        try:
            stack.communicate(timeout=200)
        except subprocess.TimeoutExpired:
            stack.kill()

    def f(v: float | None, fmt: str) -> str:
        return "-" if v is None else format(v, fmt)

    worst = max(r[3] for r in rows if r[3] is not None)
    lines = [
        "# Pipeline latency",
        "",
        f"- date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        "- the `make stack` stack at its defaults: local broker, 6 partitions, the simulator "
        "(100 turbines, `--speed 10`: 1,000 readings/s in batches of 10 steps), one detector, "
        "Prometheus scraping every 5 s",
        "- `turbine_pipeline_latency_seconds`: the Kafka record's timestamp (set by the producer "
        "when it sends) to the scoring of its readings; quantiles over the last minute, from "
        f"the histogram's buckets; first sample after {args.warmup:.0f} s of load",
        f"- machine: {os.cpu_count()} CPUs, load average at the end {load[0]:.2f}, "
        f"{load[1]:.2f}, {load[2]:.2f} (other work shared the machine)",
        f"- **worst p99: {worst:.3f} s** (bar: below 1 s)",
        "",
        "| s since first score | readings/s | latency p50 s | latency p99 s | batch p99 s |",
        "| ---: | ---: | ---: | ---: | ---: |",
    ]
    for t, rate, p50, p99, batch in rows:
        lines.append(
            f"| {t} | {f(rate, ',.0f')} | {f(p50, '.3f')} | {f(p99, '.3f')} | {f(batch, '.3f')} |"
        )
    OUT.write_text("\n".join(lines) + "\n")
    print(f"wrote {OUT}: worst p99 {worst:.3f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
