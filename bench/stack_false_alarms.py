"""False alarms of the running stack on a fault-free fleet: flagged share / configured rate.

Starts deploy/stack/local-stack.sh (a real local Kafka broker, the simulator at
100 turbines x ``--speed 10`` = 1,000 readings/s, a detector, Prometheus) with
``SIM_FAULT_FRACTION=0``, once per seed, and every minute asks Prometheus for
``turbine_readings_total`` and ``turbine_anomalies_total`` of the simulator's
site: the share flagged so far and in that minute, against the configuration's
``false_alarm_rate``.  After the stack has stopped it reads the detector's store:
the anomalies kept, and the most turbines flagged at one time (a fleet-wide
burst).  ``--compose SEEDS`` runs the compose stack too (deploy/docker/compose.sh:
two detectors, the private Docker engine), ``--before SEEDS`` the local stack with
the configuration its detector had before (the defaults: absolute levels, no
calibration, 12 key groups).  Writes bench/results/stack_false_alarms.md.

    python -m bench.stack_false_alarms [--minutes 6] [--seeds 42,7] [--compose 42] [--before 42]
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bench.latency import free_port, query
from pipeline.config import load_site_configs
from pipeline.store import read_anomalies

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "bench" / "results" / "stack_false_alarms.md"
SITE = 'site="default"'
PORTS = (
    "KAFKA_PORT",
    "DETECTOR_METRICS_PORT",
    "PRODUCER_METRICS_PORT",
    "PROMETHEUS_PORT",
    "ALERTMANAGER_PORT",
)


@dataclass
class Run:
    """One stack run: (minute, readings, anomalies) samples and the store's verdict."""

    seed: int
    label: str
    rate: float = 0.0
    samples: list[tuple[int, float, float]] = field(default_factory=list)
    stored: int = 0
    largest_at_one_time: int = 0
    min_samples: int = 0

    def share(self, i: int, since: int | None = None) -> float:
        """Flagged share / rate at sample ``i`` (cumulative, or since sample ``since``)."""
        _, readings, anomalies = self.samples[i]
        if since is not None:
            readings -= self.samples[since][1]
            anomalies -= self.samples[since][2]
        return anomalies / readings / self.rate if readings else float("nan")


STACK = "the stack's (fleet-relative)"
COMPOSE = "the compose stack's (fleet-relative, 2 detectors)"
BEFORE = "before (defaults: absolute, 12 key groups)"


def sample(base: str, run: Run, minutes: int) -> None:
    """Each minute after the first score, both counters of the default site."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if (query(base, f"sum(turbine_readings_total{{{SITE}}})") or 0) > 0:
            break
        time.sleep(1)
    else:
        raise SystemExit("the stack scored nothing within 5 minutes")
    started = time.monotonic()
    for minute in range(1, minutes + 1):
        time.sleep(max(0.0, started + 60 * minute - time.monotonic()))
        # One instant for both counters: the same scrape.
        at = time.time()
        readings = query(base, f"sum(turbine_readings_total{{{SITE}}})", at)
        anomalies = query(base, f"sum(turbine_anomalies_total{{{SITE}}})", at)
        run.samples.append((minute, readings or 0.0, anomalies or 0.0))
        print(f"{run.label} seed {run.seed} minute {minute}: {run.samples[-1]}", file=sys.stderr)


def verdict(run: Run, config: Path, store: Path) -> Run:
    """The configured rate and wait, and the store's anomalies and largest burst."""
    default = load_site_configs(config).config_of("default")
    run.rate = default.false_alarm_rate
    run.min_samples = default.warmup(4)[0]  # the simulator's 4 sensors
    stored = read_anomalies(store)
    run.stored = len(stored)
    if len(stored):
        run.largest_at_one_time = int(np.unique(stored.timestamps, return_counts=True)[1].max())
    return run


def run_compose(seed: int, minutes: int, speed: float) -> Run:
    """The same on the compose stack (`make compose-up`: 2 detectors), on its own ports."""
    up = subprocess.run(  # noqa: S603
        ["bash", str(REPO / "deploy" / "docker" / "engine.sh"), "up"],  # noqa: S607
        capture_output=True,
        text=True,
        check=True,
    )
    started_engine = "starting dockerd" in up.stderr
    host = [ln.split("=", 1)[1] for ln in up.stdout.splitlines() if ln.startswith("DOCKER_HOST=")]
    project = f"twfa{os.getpid()}"
    ports = {
        k: free_port()
        for k in ("PROMETHEUS_PORT", "ALERTMANAGER_PORT", "KAFKA_HOST_PORT", "GRAFANA_PORT")
    }
    tag = f"turbine-watch/app:bench-{REPO.name.lower()}"  # this clone's own app image
    env = {
        **os.environ,
        **({"DOCKER_HOST": host[0]} if host else {}),
        **{k: str(v) for k, v in ports.items()},
        "COMPOSE_PROJECT_NAME": project,
        "TURBINE_IMAGE": tag,
        "APP_IMAGE": tag,
        "SIM_FAULT_FRACTION": "0",
        "SIM_SEED": str(seed),
        "SIM_SPEED": str(speed),
    }
    script = str(REPO / "deploy" / "docker" / "compose.sh")
    run = Run(seed, COMPOSE)
    try:
        subprocess.run(["bash", script, "up"], env=env, check=True, cwd=REPO)  # noqa: S603,S607
        sample(f"http://127.0.0.1:{ports['PROMETHEUS_PORT']}", run, minutes)
        cli = subprocess.run(  # noqa: S603
            ["bash", script, "cli"],
            env=env,
            capture_output=True,
            text=True,
            check=True,  # noqa: S607
        ).stdout.split()
        # The detectors checkpoint and flush their stores when stopped.
        subprocess.run([*cli, "stop", "detector"], env=env, check=True, cwd=REPO)  # noqa: S603
        volume = subprocess.run(  # noqa: S603
            ["docker", "volume", "inspect", "-f", "{{.Mountpoint}}", f"{project}_store"],  # noqa: S607
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        verdict(run, REPO / "deploy" / "configs" / "sites.toml", Path(volume) / "store")
    finally:
        subprocess.run(["bash", script, "down"], env=env, cwd=REPO)  # noqa: S603,S607
        if started_engine:
            subprocess.run(  # noqa: S603
                ["bash", str(REPO / "deploy" / "docker" / "engine.sh"), "down"],  # noqa: S607
                capture_output=True,
            )
    return run


def run_stack(seed: int, minutes: int, speed: float, label: str) -> Run:
    ports = {k: free_port() for k in PORTS}
    workdir = Path(tempfile.mkdtemp(prefix="tw-stack-fa-"))
    config = workdir / "configs" / "sites.toml"
    env = {
        **os.environ,
        **{k: str(v) for k, v in ports.items()},
        "STACK_DIR": str(workdir),
        "SIM_FAULT_FRACTION": "0",
        "SIM_SEED": str(seed),
        "SIM_SPEED": str(speed),
    }
    if label == BEFORE:
        # The stack's detector before: sites.toml had no [sites.default], so the
        # simulator's stream was scored with the defaults.  (The simulator now sends a
        # batch in one record; the detector groups turbines itself, so its models are
        # those of the 12-key-group stream.)
        config = workdir / "before.toml"
        config.write_text("max_sites = 8\n")
        env["DETECTOR_CONFIG"] = str(config)
    stack = subprocess.Popen(  # noqa: S603
        ["bash", str(REPO / "deploy" / "stack" / "local-stack.sh")],  # noqa: S607
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    base = f"http://127.0.0.1:{ports['PROMETHEUS_PORT']}"
    run = Run(seed, label)
    try:
        sample(base, run, minutes)
    finally:
        # SIGTERM, which the script handles as Ctrl-C: a job started in the background
        # inherits SIGINT ignored, and bash cannot trap a signal ignored on entry.
        stack.send_signal(signal.SIGTERM)
        try:
            stack.communicate(timeout=200)
        except subprocess.TimeoutExpired:
            stack.kill()
    return verdict(run, config, workdir / "store")


def share_table(runs: list[Run], minutes: int) -> list[str]:
    """Cumulative share / rate per minute (that minute alone in brackets), per seed."""
    lines = [
        "| minute | " + " | ".join(f"seed {r.seed}" for r in runs) + " | all seeds |",
        "| ---: | " + " | ".join("---:" for _ in runs) + " | ---: |",
    ]
    for i in range(minutes):
        cells = []
        for r in runs:
            window = r.share(i, i - 1) if i else r.share(i)
            cells.append(f"{r.share(i):.2f} ({window:.2f})")
        readings = sum(r.samples[i][1] for r in runs)
        flagged = sum(r.samples[i][2] for r in runs)
        lines.append(
            f"| {i + 1} | " + " | ".join(cells) + f" | {flagged / readings / runs[0].rate:.2f} |"
        )
    return lines


def report(runs: list[Run], minutes: int, speed: float, seconds: float) -> list[str]:
    stack = [r for r in runs if r.label == STACK]
    first = stack[0]
    per_second = 100 * speed
    lines = [
        "# False alarms in the running stack (fault-free fleet)",
        "",
        f"- date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        "- `make stack` (deploy/stack/local-stack.sh): a real local Kafka broker, 6 partitions, "
        f"the simulator (100 turbines, `--speed {speed:g}`: {per_second:,.0f} readings/s in "
        "batches of 10 steps, `SIM_FAULT_FRACTION=0`: no faults), one detector, Prometheus "
        "scraping every 5 s; the compose stack (`make compose-up`, deploy/docker/compose.sh): "
        "the same in containers with two detectors",
        "- the stack's configuration (deploy/configs/sites.toml, `[sites.default]`: the "
        "simulator fleet's `--fleet-relative` configuration, every sensor against the fleet's "
        f"median at the same time, one key group, `min_samples` {first.min_samples:,}: the "
        f"turbine models score from step {first.min_samples:,}, "
        f"{first.min_samples / speed / 60:.1f} min here, the fleet model before)",
        f"- configured false_alarm_rate {first.rate:g}; counters "
        "`turbine_readings_total` and `turbine_anomalies_total` of the site `default` in "
        "Prometheus, one query instant for both, each minute after the first score; "
        f"seeds {', '.join(str(r.seed) for r in stack)}; {seconds:.0f} s in all",
        "",
    ]
    for label in dict.fromkeys(r.label for r in runs):
        group = [r for r in runs if r.label == label]
        lines += [
            f"Flagged share / configured rate, {label} configuration, cumulative since the "
            "first score (in brackets: that minute alone):",
            "",
            *share_table(group, minutes),
            "",
        ]
    lines += [
        "| configuration | seed | readings scored | flagged | flagged share / rate "
        "| anomalies in the store | most turbines flagged at one time |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in runs:
        _, readings, flagged = r.samples[-1]
        lines.append(
            f"| {r.label} | {r.seed} | {readings:,.0f} | {flagged:,.0f} "
            f"| {r.share(len(r.samples) - 1):.2f} | {r.stored:,} | {r.largest_at_one_time} |"
        )
    lines += [
        "",
        "The store holds what the detector flagged up to its stop (a few seconds after the "
        "last Prometheus sample), so it may hold a few more.",
        "",
    ]
    return lines


def main() -> int:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=int, default=6)
    ap.add_argument("--seeds", default="42,7", help="comma-separated simulator seeds")
    ap.add_argument("--speed", type=float, default=10.0)
    ap.add_argument("--before", default="", help="seeds run with the configuration before too")
    ap.add_argument("--compose", default="", help="seeds run on the compose stack too")
    args = ap.parse_args()
    start = time.perf_counter()

    def seeds(text: str) -> list[int]:
        return [int(x) for x in text.split(",") if x]

    runs = [run_stack(s, args.minutes, args.speed, STACK) for s in seeds(args.seeds)]
    runs += [run_compose(s, args.minutes, args.speed) for s in seeds(args.compose)]
    runs += [run_stack(s, args.minutes, args.speed, BEFORE) for s in seeds(args.before)]
    lines = report(runs, args.minutes, args.speed, time.perf_counter() - start)
    OUT.write_text("\n".join(lines))
    sys.stdout.write("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
