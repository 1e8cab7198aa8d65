"""Kafka end-to-end benchmark of ``make bench``: readings/s and event latency through a broker.

Run from the repository root (about 5 minutes)::

    .venv/bin/python -m bench.kafka_e2e

It starts its own single-node broker with ``deploy/kafka/kafka.sh`` (port 21092,
or 21192, 21292, ... when taken; data in a temporary directory; ``down
--purge`` at the end) unless ``KAFKA_BOOTSTRAP_SERVERS`` names one; topics and
consumer groups get fresh names.  Every ``turbine`` command runs as ``python
-m pipeline.cli`` of this checkout, in its own process.  It prints a Markdown
report and writes it to ``bench/results/kafka.md``.

One run measures (D = 4 sensors, 100 turbines, 12 key groups, 6 partitions) on
two recorded fleets of ``turbine simulate``: one with the simulator's default
faults (``--fault-fraction 0.02``: about 1.6 % of the readings labelled faulty,
17 anomaly events per 1,000 readings) and one at a more realistic rate
(``--fault-fraction 0.001``: about 0.09 % labelled, under 1 event per 1,000).
The report gives each file's labelled share and each detector run's event rate.

1. **Throughput.**  ``turbine replay FILE --speed 0 --partitions 6`` fills a
   fresh topic per scenario (fleet, ``--batch-steps`` B: B x 100 / 12 readings
   per record):

   * default faults, B = 100 (2 M readings, about 830 per record) and B = 10
     (0.3 M readings, about 83 per record; the detector is slower there, so
     the file is smaller: rates are per reading and steady);
   * realistic faults, B = 100 and B = 1000 (4 M readings, about 830 and
     8,300 per record: the detector is fastest there, the file larger, so its
     window stays above a second or two).

   On each full topic, in turn:

   * a bare kafka-python ``KafkaConsumer`` in this process (the ceiling): the
     detector's fetch settings (``make_consumer``, ``max_poll_records=2000``),
     a fresh group, records fetched and counted, their value bytes touched (one
     byte per 4 KiB page), nothing decoded; its rate in readings by the bytes
     it drained;
   * one ``turbine detect`` as shipped (fresh group and store,
     ``--stop-after-idle 2``).  Its ``/metrics`` are scraped every 50 ms (only a
     few names, via ``name[]=``): the window runs from the first scrape where
     it owns all partitions to the first showing every reading scored, so
     start-up, group join and the idle wait are left out, the first fetch is in;
   * except at B = 10, once: the same detector publishing no anomaly events
     (``TURBINE_PUBLISH_EVENTS=false``): not a fix, their cost.

   A bare consumer runs before each detector run, so a change of load on the
   shared machine hits both sides of a ratio alike.  The replay rate comes
   from its ``/metrics``: first reading sent to last record acknowledged.
   Then the whole pipeline at once (default faults at B = 100, realistic
   faults at B = 1000): the detector on fresh topics first, the replay once it
   owns the partitions; rate = readings / (first reading sent .. last reading
   scored).
2. **Latency.**  The detector on fresh topics, then ``turbine simulate
   --bootstrap-servers ... --speed S --batch-steps B --fault-fraction F``
   (S = 1000: 100 turbines x 1,000 steps/s = 100 k readings/s requested; the
   actual send rate is measured) for a while, then SIGINT (it flushes and
   exits); the detector is stopped (SIGTERM) once it has scored everything, or
   5 s later.  A consumer in this process reads the anomaly events; the
   anomalies topic is created with ``message.timestamp.type=LogAppendTime``,
   so an event record's Kafka timestamp is when the broker appended it.
   Latency = that - ``produced_at`` (the input record's Kafka CreateTime: the
   producer's ``send`` call, so its ``linger_ms`` counts), over the events
   whose input was produced after the warm-up, split into ``detected_at -
   produced_at`` and the rest.  Runs (``LATENCY_RUNS``): default faults at
   B = 1 as asked (12,000 records/s) and B = 10 (1,200 records/s); realistic
   faults at B = 5 (2,400 records/s) and B = 10.

CPU use over each window comes from ``/proc``: per process (producer, broker,
detector, this benchmark) and for the whole machine, whose other jobs compete
for the same 2 cores.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

if not __package__:  # run as ``python bench/kafka_e2e.py``: make the repository importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results" / "kafka.md"
KAFKA_SH = REPO / "deploy" / "kafka" / "kafka.sh"
BASH = shutil.which("bash") or "/bin/bash"

TURBINES = 100
SENSORS = 4
KEY_GROUPS = 12
PARTITIONS = 6
SCRAPE_INTERVAL = 0.05  # seconds between /metrics scrapes
SLOW_SCRAPE_INTERVAL = 0.25  # in the latency runs, where they only cost CPU
IDLE_STOP = 2.0  # the detector's --stop-after-idle
ASSIGN_TIMEOUT = 15.0  # seconds a detector may take to own its partitions
LATENCY_SPEED = 1000.0  # simulated steps per second: 100 turbines -> 100 k readings/s

DEFAULT_FAULTS = 0.02  # turbine simulate's default --fault-fraction: ~1.6 % labelled
REALISTIC_FAULTS = 0.001  # ~0.09 % of the readings labelled faulty
# Not a fix, a measure of their cost: the detector publishing no anomaly events.
NO_EVENTS_ENV = {"TURBINE_PUBLISH_EVENTS": "false"}
# The same events, one record per engine batch and partition (JSON lines).
BATCHED_EVENTS_ENV = {"TURBINE_EVENT_RECORDS": "batch"}

# readings/s end to end (issue 15): 3 M at ~0.1 % anomalies, 1.5 M at ~1.7 %
TARGET_RATE_FEW, TARGET_RATE_MANY = 3e6, 1.5e6
FEW_ANOMALIES = 0.005  # a share below this is the "0.1 %" scenario


def target_rate(anomaly_share: float) -> float:
    """The end-to-end rate target for a stream with this share of anomalies."""
    return TARGET_RATE_FEW if anomaly_share < FEW_ANOMALIES else TARGET_RATE_MANY


def rate_target_text(anomaly_share: float) -> str:
    return f">= {target_rate(anomaly_share) / 1e6:g} M readings/s"


TARGET_RATIO = 0.70  # detector / bare consumer
TARGET_P99_MS = 100.0

# The services' settings this benchmark runs with (their defaults), for the report.
SETTINGS_NOTE = (
    "producers: acks=all, idempotent, linger_ms=5, batch_size=1 MiB; "
    "detector: one BLAS thread (TURBINE_BLAS_THREADS=1), poll_timeout_ms=200, "
    "max_poll_records=2000, fetch_max_wait_ms=500 (kafka-python default), "
    "max_partition_fetch_bytes=16 MiB, fetch_max_bytes=64 MiB, checkpoint every 10 s "
    "(or 100,000 engine batches), lag from the fetches' high-water marks (every 2 s; every poll "
    "with --stop-after-idle), event "
    "producer on librdkafka (confluent-kafka; the consumer is kafka-python's), acks=all, "
    "idempotent, linger_ms=10 (events_linger_ms), one JSON event record per anomaly (rendered "
    "per batch from columns, consumers/events.py; partitions memoised per turbine key)"
)

DETECTOR_METRICS = (
    "turbine_readings_total",
    "turbine_partitions_owned",
    "turbine_batches_total",
    "turbine_anomaly_events_published_total",
    "turbine_checkpoints_total",
)
PRODUCER_METRICS = (
    "turbine_producer_readings_sent_total",
    "turbine_producer_records_sent_total",
    "turbine_producer_records_delivered_total",
)


def progress(message: str) -> None:
    print(f"[bench.kafka_e2e] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- processes
def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a ``turbine`` child: no TURBINE_* or BLAS thread overrides
    (the services' defaults), then ``extra``."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("TURBINE_")
        and k not in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
    }
    env["PYTHONPATH"] = str(REPO)
    env.update(extra or {})
    return env


CHILDREN: list[subprocess.Popen[bytes]] = []  # every child started, for the final cleanup


def turbine(
    args: Sequence[str], log: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Start ``python -m pipeline.cli ARGS`` of this checkout, output to ``log``."""
    with open(log, "wb") as out:
        proc = subprocess.Popen(  # noqa: S603 (this interpreter, this repository)
            [sys.executable, "-m", "pipeline.cli", *args],
            cwd=REPO,
            env=env or child_env(),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    CHILDREN.append(proc)
    return proc


def stop_children() -> None:
    """Terminate (then kill) the children still running, by their pids."""
    live = [p for p in CHILDREN if p.poll() is None]
    for p in live:
        p.terminate()
    for p in live:
        try:
            p.wait(timeout=15)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def wait_ok(proc: subprocess.Popen[bytes], log: Path, timeout: float) -> float:
    """Wait for a child to exit 0; returns the monotonic time it was seen to exit."""
    try:
        code = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise RuntimeError(
            f"{proc.args[3:5]} still running after {timeout:.0f} s; see {log}"
        ) from None
    if code != 0:
        tail = log.read_text(errors="replace").splitlines()[-15:]
        raise RuntimeError(f"{proc.args[3:5]} exited {code}:\n" + "\n".join(tail))
    return time.monotonic()


def free_port() -> int:
    """A TCP port free at the moment (the child binds it a moment later)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


MACHINE = 0  # pseudo pid: the whole machine's busy CPU seconds


def cpu_seconds(pid: int | None) -> float | None:
    """User + system CPU seconds of a live process (all its threads), from /proc.

    ``MACHINE``: busy seconds of all CPUs (everything but idle and iowait).
    """
    if pid is None:
        return None
    if pid == MACHINE:
        with open("/proc/stat", encoding="ascii") as f:
            ticks = [int(x) for x in f.readline().split()[1:9]]
        return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def producer_summary(log: Path) -> tuple[int, int]:
    """(readings, records) from a producer's last line: "...: sent R readings in N records..."."""
    line = next((ln for ln in log.read_text().splitlines() if " readings in " in ln), "")
    words = line.replace(",", "").split()
    try:
        return int(words[words.index("readings") - 1]), int(words[words.index("records") - 1])
    except (ValueError, IndexError):
        raise RuntimeError(f"no summary line in {log}") from None


# --------------------------------------------------------------------------- metrics
@dataclass
class Sample:
    t: float  # time.monotonic()
    values: dict[str, float]
    cpu: dict[str, float | None]


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text format -> {name (with labels): value}."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            try:
                out[name] = float(value)
            except ValueError:
                continue
            base = name.partition("{")[0]
            if base != name and base in DETECTOR_METRICS:  # labelled (by site): summed
                out[base] = out.get(base, 0.0) + float(value)
    return out


class Scraper(threading.Thread):
    """Scrapes a child's ``/metrics`` (only ``names``) and the CPU time of some processes.

    Samples are kept only when the scrape succeeded, so a value of 0 means
    the child answered and had done nothing yet.
    """

    def __init__(
        self,
        port: int,
        names: Sequence[str],
        pids: dict[str, int | None],
        interval: float = SCRAPE_INTERVAL,
    ) -> None:
        super().__init__(daemon=True)
        self.interval = interval
        query = "&".join(f"name[]={n}" for n in names)
        self.url = f"http://127.0.0.1:{port}/metrics?{query}"
        self.pids = pids
        self.samples: list[Sample] = []
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            t = time.monotonic()
            try:
                with urllib.request.urlopen(self.url, timeout=1.0) as resp:  # noqa: S310
                    values = parse_metrics(resp.read().decode())
            except (OSError, http.client.HTTPException, ValueError):
                values = None  # not listening yet, or exiting
            if values is not None:
                cpu = {k: cpu_seconds(p) for k, p in self.pids.items()}
                self.samples.append(Sample(time.monotonic(), values, cpu))
            self._stop_event.wait(max(0.0, self.interval - (time.monotonic() - t)))

    def stop(self) -> list[Sample]:
        self._stop_event.set()
        self.join()
        return self.samples

    def wait_for(self, name: str, value: float, timeout: float) -> None:
        """Block until a scrape shows ``name >= value``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.samples and self.samples[-1].values.get(name, 0.0) >= value:
                return
            time.sleep(SCRAPE_INTERVAL)
        raise RuntimeError(f"{name} did not reach {value} within {timeout:.0f} s")


@dataclass
class Window:
    """Progress of a counter between two observations."""

    t0: float
    t1: float
    n0: float
    n1: float
    cpu: dict[str, float] = field(default_factory=dict)  # % of one core over the window

    @property
    def seconds(self) -> float:
        return self.t1 - self.t0

    @property
    def rate(self) -> float:
        return (self.n1 - self.n0) / self.seconds if self.seconds > 0 else float("nan")


def counter_window(
    samples: Sequence[Sample],
    name: str,
    final: float | None = None,
    end: float | None = None,
    start: tuple[str, float] | None = None,
) -> Window:
    """A counter's window: from the first sample with ``name > 0`` (or with the
    ``start`` metric at its value) to the first with ``name >= final``.

    ``final`` defaults to the largest value seen.  When no sample reached it
    (the child exited first), the window ends at ``end`` with ``final``.
    """
    seen = [s for s in samples if s.values.get(name, 0.0) > 0]
    if not seen:
        raise RuntimeError(f"{name} never moved")
    top = max(s.values[name] for s in seen) if final is None else final
    if start is None:
        first = seen[0]
    else:
        first = next(s for s in samples if s.values.get(start[0], 0.0) >= start[1])
    last = next((s for s in seen if s.values[name] >= top), None)
    if last is None:
        if end is None:
            raise RuntimeError(f"{name} never reached {top}")
        t1, n1, cpu1 = end, top, seen[-1].cpu
    else:
        t1, n1, cpu1 = last.t, last.values[name], last.cpu
    cpu = {}
    for k, c0 in first.cpu.items():
        c1 = cpu1.get(k)
        if c0 is not None and c1 is not None and t1 > first.t:
            cpu[k] = 100.0 * (c1 - c0) / (t1 - first.t)
    return Window(first.t, t1, first.values.get(name, 0.0), n1, cpu)


# --------------------------------------------------------------------------- broker
@dataclass
class Broker:
    bootstrap: str
    pid: int | None  # None: an external broker
    version: str


def port_busy(port: int) -> bool:
    """True when something listens on 127.0.0.1:port."""
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@contextmanager
def broker(workdir: Path, port: int) -> Iterator[Broker]:
    """The broker of ``KAFKA_BOOTSTRAP_SERVERS``, or one started here and purged at the end."""
    external = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if external:
        yield Broker(external, None, "external")
        return
    for candidate in range(port, port + 1000, 100):  # fixed ports, below the ephemeral range
        if not port_busy(candidate) and not port_busy(candidate + 1):  # + 1: the controller
            break
    else:
        raise RuntimeError(f"no free port pair among {port}, {port + 100}, ...")
    env = {
        **os.environ,
        "KAFKA_PORT": str(candidate),
        "KAFKA_DATA_DIR": str(workdir / f"broker-{candidate}"),
    }
    progress(f"starting a broker on 127.0.0.1:{candidate}")
    up = subprocess.run(  # noqa: S603 (the repository's script)
        [BASH, str(KAFKA_SH), "up"], env=env, capture_output=True, text=True
    )
    if up.returncode != 0:
        raise RuntimeError(f"kafka.sh up failed:\n{up.stderr[-2000:]}")
    bootstrap = up.stdout.strip().rpartition("=")[2]
    pid_file = Path(env["KAFKA_DATA_DIR"]) / "kafka.pid"
    pid = int(pid_file.read_text().strip()) if pid_file.exists() else None
    version = os.environ.get("KAFKA_VERSION", "4.4.0")
    try:
        yield Broker(bootstrap, pid, f"Apache Kafka {version} (deploy/kafka/kafka.sh, KRaft)")
    finally:
        progress("stopping the broker")
        subprocess.run(  # noqa: S603
            [BASH, str(KAFKA_SH), "down", "--purge"], env=env, capture_output=True, text=True
        )


def create_topics(bootstrap: str, names: dict[str, dict[str, str]]) -> None:
    """Create topics (name -> topic configs) with PARTITIONS partitions; wait for metadata.

    The detector creates missing topics itself, but right after a creation its
    first group join can see no partitions (see the report): topics made here
    first avoid that.
    """
    from kafka import KafkaConsumer
    from kafka.admin import KafkaAdminClient, NewTopic

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.create_topics(
            [NewTopic(n, PARTITIONS, 1, topic_configs=cfg or None) for n, cfg in names.items()]
        )
    finally:
        admin.close()
    probe = KafkaConsumer(bootstrap_servers=bootstrap)
    try:
        deadline = time.monotonic() + 30
        for name in names:
            while len(probe.partitions_for_topic(name) or ()) < PARTITIONS:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"topic {name} has no partition metadata after 30 s")
                time.sleep(0.1)
    finally:
        probe.close()


# --------------------------------------------------------------------------- runs
@dataclass(frozen=True)
class DataFile:
    """A recorded fleet (.npz) and its share of readings labelled faulty."""

    path: Path
    fault_fraction: float  # turbine simulate --fault-fraction
    labelled: float

    @property
    def faults(self) -> str:
        default = " (default)" if self.fault_fraction == DEFAULT_FAULTS else ""
        return f"fault fraction {self.fault_fraction:g}{default}, {pct(self.labelled)} labelled"


@dataclass
class ProducerRun:
    readings: int
    records: int
    window: Window


def scenario(data: DataFile, batch_steps: int, producer: ProducerRun) -> str:
    """Record size and faults of a topic, for the report."""
    per_record = producer.readings / producer.records
    return f"batch-steps {batch_steps} ({per_record:,.0f} readings/record), {data.faults}"


@dataclass
class DetectorRun:
    window: Window
    readings: float
    final: dict[str, float]  # the detector's metrics at its last scrape

    def count(self, name: str) -> int:
        return int(self.final.get(f"turbine_{name}_total", 0))

    @property
    def events_per_k(self) -> float:
        """Anomaly events published per 1,000 readings (one per anomaly, when published)."""
        return 1e3 * self.count("anomaly_events_published") / max(1.0, self.readings)


@dataclass
class Pipeline:
    """Replay and detector at once, on fresh topics."""

    data: DataFile
    batch_steps: int
    detector: DetectorRun
    producer: ProducerRun
    whole: Window  # first reading sent .. last reading scored

    @property
    def scenario(self) -> str:
        return scenario(self.data, self.batch_steps, self.producer)

    def cpu(self, of: str) -> Window:
        """The ``of`` child's window ("producer" or "detector") with the other child's CPU
        share (over its own window) added: both ran at once on the same cores."""
        if of == "producer":
            return with_cpu(self.producer.window, "detector", self.detector.window)
        return with_cpu(self.detector.window, "producer", self.producer.window)


def with_cpu(w: Window, name: str, other: Window) -> Window:
    """``w`` with the CPU share of ``name`` from ``other`` (a process of another scraper)."""
    return Window(w.t0, w.t1, w.n0, w.n1, {**w.cpu, name: other.cpu[name]})


class Bench:
    """One benchmark session: a broker, a work directory and unique names."""

    def __init__(self, broker: Broker, workdir: Path) -> None:
        self.broker = broker
        self.workdir = workdir
        self.run_id = datetime.now(UTC).strftime("%H%M%S") + f"-{os.getpid()}"
        self.stuck_starts = 0  # consumers replaced: no partitions after their group join
        self._count = 0

    def name(self, stem: str) -> str:
        """A fresh topic/group/directory name."""
        self._count += 1
        return f"bench-{self.run_id}-{stem}-{self._count}"

    # ------------------------------------------------------------------ producers
    def simulate_file(self, steps: int, fault_fraction: float) -> DataFile:
        """Write a recorded file of TURBINES x ``steps`` readings."""
        import numpy as np

        path = self.workdir / f"fleet-{steps}-{fault_fraction:g}.npz"
        log = self.workdir / f"simulate-{steps}-{fault_fraction:g}.log"
        proc = turbine(
            [
                "simulate",
                f"--turbines={TURBINES}",
                f"--sensors={SENSORS}",
                f"--steps={steps}",
                "--seed=7",
                f"--fault-fraction={fault_fraction}",
                f"--output={path}",
            ],
            log,
        )
        wait_ok(proc, log, 120)
        with np.load(path) as data:
            labelled = float(np.mean(data["label"] != 0))
        return DataFile(path, fault_fraction, labelled)

    def start_producer(
        self, args: Sequence[str], tag: str, interval: float = SCRAPE_INTERVAL
    ) -> tuple[subprocess.Popen[bytes], Scraper, Path]:
        """Start a replay/simulate child with /metrics and a scraper on it."""
        port = free_port()
        log = self.workdir / f"{tag}.log"
        proc = turbine(
            [
                *args,
                f"--bootstrap-servers={self.broker.bootstrap}",
                "--quiet",
                f"--metrics-port={port}",
            ],
            log,
        )
        pids = {"producer": proc.pid, "broker": self.broker.pid, "machine": MACHINE}
        pids["bench"] = os.getpid()
        scraper = Scraper(port, PRODUCER_METRICS, pids, interval)
        scraper.start()
        return proc, scraper, log

    def finish_producer(
        self, proc: subprocess.Popen[bytes], scraper: Scraper, log: Path, timeout: float
    ) -> ProducerRun:
        """Wait for a producer child; its window ends at its last acknowledged record."""
        end = wait_ok(proc, log, timeout)
        samples = scraper.stop()
        readings, records = producer_summary(log)
        window = counter_window(
            samples, "turbine_producer_records_delivered_total", final=records, end=end
        )
        # the same window in readings: first reading sent .. last record acknowledged
        first = next(s for s in samples if s.values.get(PRODUCER_METRICS[0], 0) > 0)
        window.t0 = first.t
        window.n0, window.n1 = first.values[PRODUCER_METRICS[0]], readings
        return ProducerRun(readings, records, window)

    def replay(self, path: Path, topic: str, batch_steps: int) -> ProducerRun:
        """``turbine replay --speed 0`` of a file into a fresh topic."""
        proc, scraper, log = self.start_producer(
            [
                "replay",
                str(path),
                f"--topic={topic}",
                "--speed=0",
                f"--batch-steps={batch_steps}",
                f"--key-groups={KEY_GROUPS}",
                f"--partitions={PARTITIONS}",
            ],
            f"replay-{topic}",
        )
        return self.finish_producer(proc, scraper, log, timeout=300)

    # ------------------------------------------------------------------ detector
    def _spawn_detector(
        self,
        topic: str,
        batch_steps: int,
        idle_stop: bool = True,
        interval: float = SCRAPE_INTERVAL,
        extra_env: dict[str, str] | None = None,
    ) -> tuple[subprocess.Popen[bytes], Scraper, Path]:
        """Start ``turbine detect`` on ``topic`` (fresh group and store) with a scraper.

        Without ``idle_stop`` it runs until SIGTERM (``--stop-after-idle`` also
        fires on a topic nothing was sent to yet).
        """
        port = free_port()
        group = self.name("group")
        log = self.workdir / f"detect-{group}.log"
        proc = turbine(
            [
                "-v",
                "detect",
                f"--bootstrap-servers={self.broker.bootstrap}",
                f"--topic={topic}",
                f"--anomalies-topic={topic}.anomalies",
                f"--dlq-topic={topic}.dlq",
                f"--group={group}",
                f"--store={self.workdir / group}",
                *([f"--stop-after-idle={IDLE_STOP}"] if idle_stop else []),
                f"--batch-steps={batch_steps}",
                f"--metrics-port={port}",
            ],
            log,
            env=child_env(extra_env),
        )
        pids = {"detector": proc.pid, "broker": self.broker.pid, "machine": MACHINE}
        pids["bench"] = os.getpid()
        scraper = Scraper(port, DETECTOR_METRICS, pids, interval)
        scraper.start()
        return proc, scraper, log

    def finish_detector(
        self,
        proc: subprocess.Popen[bytes],
        scraper: Scraper,
        log: Path,
        from_assignment: bool = False,
        timeout: float = 300,
    ) -> DetectorRun:
        """Wait for the detector's idle stop; its window ends at the last batch scored.

        It starts when it owns every partition (``from_assignment``: on a full
        topic, so the first fetch counts, as for the bare consumer) or else at
        the first batch scored.
        """
        wait_ok(proc, log, timeout)
        samples = scraper.stop()
        start = ("turbine_partitions_owned", PARTITIONS) if from_assignment else None
        window = counter_window(samples, "turbine_readings_total", start=start)
        shutil.rmtree(self.workdir / log.stem.removeprefix("detect-"), ignore_errors=True)
        return DetectorRun(window, window.n1, samples[-1].values)

    def start_detector(
        self,
        topic: str,
        batch_steps: int,
        idle_stop: bool = True,
        interval: float = SCRAPE_INTERVAL,
        extra_env: dict[str, str] | None = None,
    ) -> tuple[subprocess.Popen[bytes], Scraper, Path]:
        """A detector that owns every partition of ``topic``.

        kafka-python 3.0's first group join could see no partition metadata for
        the topic and assign nothing; now and then no rejoin followed and the
        consumer idled forever.  The detector (and the bare consumer here) now
        refresh the metadata before their first poll; should a consumer still
        own nothing after ASSIGN_TIMEOUT s, it is replaced by one in a fresh
        group (counted in the report).
        """
        for _attempt in range(3):
            spawned = self._spawn_detector(topic, batch_steps, idle_stop, interval, extra_env)
            proc, scraper, log = spawned
            try:
                scraper.wait_for("turbine_partitions_owned", PARTITIONS, ASSIGN_TIMEOUT)
            except RuntimeError:
                self.stuck_starts += 1
                progress(f"  detector got no partitions in {ASSIGN_TIMEOUT:.0f} s ({log.name})")
                proc.terminate()
                proc.wait(timeout=30)
                scraper.stop()
                continue
            return spawned
        raise RuntimeError(f"three detectors in a row got no partitions of {topic}")

    def stop_detector(
        self,
        proc: subprocess.Popen[bytes],
        scraper: Scraper,
        log: Path,
        readings: int,
        catch_up: float,
    ) -> tuple[DetectorRun, int]:
        """Wait (at most ``catch_up`` s) until it scored ``readings``, then SIGTERM it.

        Returns its run and the readings still unscored when it was stopped.
        """
        deadline = time.monotonic() + catch_up
        done = 0.0
        while time.monotonic() < deadline:
            if scraper.samples:
                done = scraper.samples[-1].values.get("turbine_readings_total", 0.0)
                if done >= readings:
                    break
            time.sleep(SCRAPE_INTERVAL)
        proc.send_signal(signal.SIGTERM)  # finishes the batch in hand, checkpoints, exits
        return self.finish_detector(proc, scraper, log), int(max(0, readings - done))

    def detect(
        self,
        topic: str,
        batch_steps: int,
        extra_env: dict[str, str] | None = None,
    ) -> DetectorRun:
        """One detector draining a full topic."""
        proc, scraper, log = self.start_detector(topic, batch_steps, extra_env=extra_env)
        return self.finish_detector(proc, scraper, log, from_assignment=True)

    # ------------------------------------------------------------------ bare consumer
    def bare_consume(self, topic: str, total_readings: int) -> Window:
        """Drain ``topic`` with a bare KafkaConsumer; rate in readings/s (by bytes drained).

        The window runs from the assignment of the partitions (as the detector's)
        to the last record.
        """
        from kafka import ConsumerRebalanceListener, TopicPartition

        from producers.kafka_client import KafkaSettings, make_consumer

        assigned: list[tuple[float, dict[str, float | None]]] = []
        broker_pid = self.broker.pid

        def cpu_now() -> dict[str, float | None]:
            return {
                "consumer": time.process_time(),
                "broker": cpu_seconds(broker_pid),
                "machine": cpu_seconds(MACHINE),
            }

        class Listener(ConsumerRebalanceListener):
            def on_partitions_revoked(self, revoked: object) -> None:
                pass

            def on_partitions_assigned(self, partitions: object) -> None:
                assigned.append((time.monotonic(), cpu_now()))

        for _attempt in range(3):
            consumer = make_consumer(
                KafkaSettings(bootstrap_servers=self.broker.bootstrap),
                group_id=self.name("bare"),
                max_poll_records=2000,  # the detector's
            )
            consumer.subscribe([topic], listener=Listener())
            consumer.topics()  # as the detector does: one join, with the topic's metadata
            deadline = time.monotonic() + ASSIGN_TIMEOUT
            first: dict[Any, list[Any]] = {}
            while not consumer.assignment() and time.monotonic() < deadline:
                first = consumer.poll(timeout_ms=200)
            if consumer.assignment():
                break
            self.stuck_starts += 1
            progress(f"  bare consumer got no partitions in {ASSIGN_TIMEOUT:.0f} s")
            consumer.close()
        else:
            raise RuntimeError(f"three bare consumers in a row got no partitions of {topic}")
        try:
            ends = consumer.end_offsets([TopicPartition(topic, p) for p in range(PARTITIONS)])
            expected = sum(ends.values())
            records = nbytes = touched = 0
            deadline = time.monotonic() + 120
            while records < expected:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"bare consumer: {records} of {expected} records")
                polled, first = first or consumer.poll(timeout_ms=200), {}
                for batch in polled.values():
                    for record in batch:
                        value = record.value
                        records += 1
                        nbytes += len(value)
                        touched += len(value[::4096])  # one byte per page: the bytes are read
            t1, cpu1 = time.monotonic(), cpu_now()
        finally:
            consumer.close()
        t0, cpu0 = assigned[-1]
        per_byte = total_readings / nbytes
        cpu = {
            k: 100.0 * (c1 - c0) / (t1 - t0)
            for k, c0 in cpu0.items()
            if c0 is not None and (c1 := cpu1[k]) is not None
        }
        return Window(t0, t1, 0.0, nbytes * per_byte, cpu)

    # ------------------------------------------------------------------ together
    def concurrent(self, data: DataFile, batch_steps: int) -> Pipeline:
        """Detector first (on fresh topics), then replay: the whole pipeline at once."""
        topic = self.name(f"live-b{batch_steps}")
        create_topics(self.broker.bootstrap, {topic: {}, f"{topic}.anomalies": {}})
        det = self.start_detector(topic, batch_steps, idle_stop=False)
        replay = self.replay_start(data.path, topic, batch_steps)
        producer = self.finish_producer(*replay, timeout=300)
        detector, _ = self.stop_detector(*det, readings=producer.readings, catch_up=120)
        whole = Window(producer.window.t0, detector.window.t1, 0, detector.readings)
        return Pipeline(data, batch_steps, detector, producer, whole)

    def replay_start(
        self, path: Path, topic: str, batch_steps: int
    ) -> tuple[subprocess.Popen[bytes], Scraper, Path]:
        return self.start_producer(
            [
                "replay",
                str(path),
                f"--topic={topic}",
                "--speed=0",
                f"--batch-steps={batch_steps}",
                f"--key-groups={KEY_GROUPS}",
            ],
            f"replay-{topic}",
        )

    # ------------------------------------------------------------------ latency
    def latency(
        self,
        batch_steps: int,
        seconds: float,
        warmup: float,
        fault_fraction: float = DEFAULT_FAULTS,
        speed: float = LATENCY_SPEED,
        catch_up: float = 5.0,
    ) -> LatencyRun:
        """Stream a simulated fleet at ``speed`` steps/s; time each anomaly event."""
        topic = self.name(f"lat-b{batch_steps}")
        events_topic = f"{topic}.anomalies"
        create_topics(
            self.broker.bootstrap,
            {topic: {}, events_topic: {"message.timestamp.type": "LogAppendTime"}},
        )
        listener = EventListener(self.broker.bootstrap, events_topic)
        listener.start()
        det = self.start_detector(topic, batch_steps, False, SLOW_SCRAPE_INTERVAL)
        steps = int(speed * (seconds + 30))  # more than it can send: stopped by time
        proc, scraper, log = self.start_producer(
            [
                "simulate",
                f"--topic={topic}",
                f"--turbines={TURBINES}",
                f"--sensors={SENSORS}",
                f"--steps={steps}",
                "--seed=11",
                f"--fault-fraction={fault_fraction}",
                f"--speed={speed}",
                f"--batch-steps={batch_steps}",
                f"--key-groups={KEY_GROUPS}",
            ],
            f"simulate-{topic}",
            SLOW_SCRAPE_INTERVAL,
        )
        start_wall = time.time()
        time.sleep(seconds)
        proc.send_signal(signal.SIGINT)  # stops after the batch in hand, flushes
        wait_ok(proc, log, 60)
        prod_samples = scraper.stop()
        sent_total, _ = producer_summary(log)
        detector, backlog = self.stop_detector(*det, readings=sent_total, catch_up=catch_up)
        time.sleep(0.5)
        events = listener.stop()
        sent = counter_window(prod_samples, PRODUCER_METRICS[0])
        steady = [s for s in prod_samples if s.t >= sent.t0 + warmup]
        send_rate = counter_window(steady, PRODUCER_METRICS[0]).rate if len(steady) > 2 else 0.0
        kept = [e for e in events if e.produced >= start_wall + warmup]
        return LatencyRun(
            batch_steps,
            fault_fraction,
            speed,
            seconds,
            sent,
            send_rate,
            detector,
            backlog,
            events,
            kept,
        )


# --------------------------------------------------------------------------- latency parts
@dataclass(frozen=True)
class Event:
    produced: float  # input record's Kafka timestamp (producer send), s
    detected: float  # detector's detected_at, s
    appended: float  # this event's Kafka timestamp (LogAppendTime), s
    received: float  # time.time() when this process got it
    log_append: bool


class EventListener(threading.Thread):
    """Reads anomaly events as they arrive (the broker answers a fetch as soon as one
    byte is there, so the default fetch_max_wait_ms delays nothing).

    Partitions are assigned by hand, not by a group: no join, no rebalance.
    """

    def __init__(self, bootstrap: str, topic: str) -> None:
        super().__init__(daemon=True)
        from kafka import KafkaConsumer, TopicPartition

        self.consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
        partitions = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        self.consumer.assign(partitions)
        self.consumer.seek_to_beginning(*partitions)
        self.events: list[Event] = []
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            polled = self.consumer.poll(timeout_ms=50)
            now = time.time()
            for batch in polled.values():
                for r in batch:
                    ev = json.loads(r.value)
                    self.events.append(
                        Event(
                            ev["produced_at"],
                            ev["detected_at"],
                            r.timestamp / 1000.0,
                            now,
                            r.timestamp_type == 1,
                        )
                    )
        self.consumer.close()

    def stop(self) -> list[Event]:
        self._stop_event.set()
        self.join()
        return self.events


def percentiles_ms(values: Sequence[float]) -> tuple[float, float, float]:
    """p50, p99 and max of seconds, in milliseconds."""
    if not values:
        return (float("nan"),) * 3
    ordered = sorted(values)
    p99 = ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]
    return 1e3 * statistics.median(ordered), 1e3 * p99, 1e3 * ordered[-1]


@dataclass
class LatencyRun:
    batch_steps: int
    fault_fraction: float  # turbine simulate --fault-fraction
    speed: float  # simulated steps per second
    seconds: float  # of sending
    sent: Window  # the whole send
    send_rate: float  # readings/s after the warm-up
    detector: DetectorRun
    backlog: int  # readings sent but not scored when the detector was stopped
    events: list[Event]
    kept: list[Event]  # after the warm-up

    @property
    def input_note(self) -> str:
        """Flags a producer that sent less than 95 % of the requested rate."""
        return (
            "" if self.send_rate >= 0.95 * self.speed * TURBINES else " (input below the request)"
        )

    def cpu(self) -> Window:
        """The detector's window with the producer's CPU share added."""
        return with_cpu(self.detector.window, "producer", self.sent)

    def split(self, part: str) -> tuple[float, float, float]:
        get = {
            "append": lambda e: e.appended - e.produced,
            "detected": lambda e: e.detected - e.produced,
            "event": lambda e: e.appended - e.detected,
            "received": lambda e: e.received - e.produced,
        }[part]
        return percentiles_ms([get(e) for e in self.kept])


# --------------------------------------------------------------------------- facts
def cpu_model() -> str:
    fields: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                key, _, value = line.partition(":")
                if not key.strip():
                    break
                fields.setdefault(key.strip(), value.strip())
    except OSError:
        return platform.processor() or "unknown"
    return (
        f"{fields.get('model name', 'unknown')} "
        f"(family {fields.get('cpu family', '?')}, model {fields.get('model', '?')})"
    )


def load_average() -> str:
    return ", ".join(f"{x:.2f}" for x in os.getloadavg())


def command_output(args: Sequence[str]) -> str:
    try:
        out = subprocess.run(list(args), capture_output=True, text=True, timeout=20)  # noqa: S603
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return (out.stdout or out.stderr).strip().splitlines()[0] if (out.stdout or out.stderr) else "?"


def machine_facts(broker_: Broker) -> dict[str, str]:
    import kafka
    import numpy
    import scipy

    with open("/proc/uptime", encoding="ascii") as f:
        up = float(f.read().split()[0])
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": command_output(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"]),
        "CPU": cpu_model(),
        "cores": f"{os.cpu_count()} logical, {len(os.sched_getaffinity(0))} usable",
        "memory": f"{os.sysconf('SC_PHYS_PAGES') * os.sysconf('SC_PAGE_SIZE') / 2**30:.1f} GiB",
        "uptime": f"{up / 3600:.1f} h",
        "Python / NumPy / SciPy / kafka-python": (
            f"{platform.python_version()} / {numpy.__version__} / {scipy.__version__} / "
            f"{kafka.__version__}"
        ),
        "broker": f"{broker_.version} on {broker_.bootstrap}",
        "Java": command_output(["java", "-version"]),
        "load average at start (1, 5, 15 min)": load_average(),
    }


# --------------------------------------------------------------------------- report
def fmt_rate(rate: float) -> str:
    return f"{rate / 1e6:.2f} M/s" if rate >= 1e6 else f"{rate / 1e3:.0f} k/s"


def pct(share: float) -> str:
    return f"{100 * share:.2f} %"


def mark(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def median(xs: Sequence[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> list[str]:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in rows]
    return lines


def cpu_text(windows: Sequence[Window]) -> str:
    """Median CPU % of one core per process over the windows; then the whole machine's
    busy CPU and the part of it no process of this benchmark used (other jobs)."""
    total = 100.0 * (os.cpu_count() or 1)
    keys = sorted({k for w in windows for k in w.cpu if k != "machine"})
    values = {k: median([w.cpu[k] for w in windows if k in w.cpu]) for k in keys}
    parts = [f"{k} {v:.0f} %" for k, v in values.items()]
    machines = [w.cpu["machine"] for w in windows if "machine" in w.cpu]
    if machines:
        busy = min(total, median(machines))
        others = max(0.0, busy - sum(values.values()))
        parts.append(f"machine {busy:.0f} of {total:.0f} % (other jobs {others:.0f} %)")
    return ", ".join(parts)


@dataclass
class Throughput:
    data: DataFile
    batch_steps: int
    readings: int
    records: int
    replay: ProducerRun
    bare: list[Window]
    detector: list[DetectorRun]  # as shipped
    no_events: list[DetectorRun]  # NO_EVENTS_ENV
    batched: list[DetectorRun]  # BATCHED_EVENTS_ENV

    @property
    def scenario(self) -> str:
        return scenario(self.data, self.batch_steps, self.replay)

    @property
    def bare_rate(self) -> float:
        return median([w.rate for w in self.bare])


@dataclass
class Results:
    facts: dict[str, str]
    throughput: list[Throughput]
    pipelines: list[Pipeline]
    latency: list[LatencyRun]
    seconds: float = 0.0


def rates(runs: Sequence[DetectorRun]) -> list[float]:
    return [r.window.rate for r in runs]


def spread(values: Sequence[float]) -> str:
    """``min-max`` of several rates (empty for one)."""
    if len(values) < 2:
        return ""
    return f"{min(values) / 1e3:,.0f}-{max(values) / 1e3:,.0f} k"


def detector_note(runs: Sequence[DetectorRun]) -> str:
    """What one detector run did: events published, engine batches, checkpoints."""
    r = runs[0]
    return (
        f"{r.count('anomaly_events_published'):,} events ({r.events_per_k:.1f} per 1,000 "
        f"readings), {r.count('batches'):,} engine calls, checkpoints: {r.count('checkpoints')}"
    )


EVENTS_SHOWN = {
    "shipped": "events published (as shipped)",
    "none": "**no events published**",
    "batched": "events published, **one record per batch** (`TURBINE_EVENT_RECORDS=batch`)",
}


def conditions(tp: Throughput, events: str) -> str:
    """The conditions of a throughput target: record size, anomaly rate, events."""
    anomalies = f", {pct(tp.detector[0].events_per_k / 1e3)} anomalies" if tp.detector else ""
    publish = EVENTS_SHOWN[events]
    return (
        f"{tp.readings / tp.records:,.0f} readings/record (batch-steps {tp.batch_steps}), "
        f"{pct(tp.data.labelled)} labelled{anomalies}; {publish}"
    )


def throughput_rows(res: Results) -> list[list[object]]:
    """Rows of the throughput table."""
    rows: list[list[object]] = []
    for tp in res.throughput:
        rw = tp.replay.window
        rows.append(
            [f"replay (producer), {tp.scenario}", fmt_rate(rw.rate), 1, "", cpu_text([rw]), ""]
        )
        rows.append(
            [
                f"bare KafkaConsumer (ceiling), {tp.scenario}",
                fmt_rate(tp.bare_rate),
                len(tp.bare),
                spread([w.rate for w in tp.bare]),
                cpu_text(tp.bare),
                "",
            ]
        )
        for runs, name in (
            (tp.detector, "**detector, as shipped**"),
            (tp.no_events, "detector, *publishing no events* (their cost)"),
            (tp.batched, "detector, events *one record per batch*"),
        ):
            if not runs:
                continue
            rate = median(rates(runs))
            rows.append(
                [
                    f"{name}, {tp.scenario}",
                    fmt_rate(rate),
                    len(runs),
                    spread(rates(runs)),
                    cpu_text([r.window for r in runs]),
                    f"{rate / tp.bare_rate:.1%} of bare; {detector_note(runs)}",
                ]
            )
    for pl in res.pipelines:
        rows.append(
            [
                f"replay while the detector runs, {pl.scenario}",
                fmt_rate(pl.producer.window.rate),
                1,
                "",
                cpu_text([pl.cpu("producer")]),
                "",
            ]
        )
        rows.append(
            [
                f"**whole pipeline: replay + detector at once**, {pl.scenario}",
                fmt_rate(pl.whole.rate),
                1,
                "",
                cpu_text([pl.cpu("detector")]),
                f"first reading sent to last scored; {detector_note([pl.detector])}",
            ]
        )
    return rows


def latency_input(lr: LatencyRun) -> str:
    records_per_s = lr.speed / lr.batch_steps * KEY_GROUPS
    return (
        f"batch-steps {lr.batch_steps} ({lr.batch_steps * TURBINES / KEY_GROUPS:,.0f} "
        f"readings/record), fault fraction {lr.fault_fraction:g}: "
        f"{fmt_rate(lr.speed * TURBINES)} ({records_per_s:,.0f} records/s) requested"
    )


def latency_rows(res: Results) -> list[list[object]]:
    """Rows of the latency table."""
    rows: list[list[object]] = []
    for lr in res.latency:
        p50, p99, mx = lr.split("append")
        row: list[object] = [
            f"{latency_input(lr)}, {lr.seconds:.0f} s",
            fmt_rate(lr.send_rate),
            fmt_rate(lr.detector.window.rate),
            f"{lr.backlog:,}",
            f"{len(lr.kept):,} ({lr.detector.events_per_k:.1f} per 1,000 readings)",
            f"{p50:,.0f} / {p99:,.0f} / {mx:,.0f}",
        ]
        for part in ("detected", "event", "received"):
            x, y, z = lr.split(part)
            row.append(f"{x:,.0f} / {y:,.0f} / {z:,.0f}")
        row.append(cpu_text([lr.cpu()]))
        row.append(f"{lr.detector.count('checkpoints')}")
        row.append(mark(p99 < TARGET_P99_MS) + lr.input_note)
        rows.append(row)
    return rows


def target_rows(res: Results) -> list[list[object]]:
    """The targets, each under its conditions (settings as shipped, unless stated)."""
    speed_rows: list[list[object]] = []
    ratio_rows: list[list[object]] = []
    for tp in res.throughput:
        for runs, events in (
            (tp.detector, "shipped"),
            (tp.no_events, "none"),
            (tp.batched, "batched"),
        ):
            if not runs:
                continue
            rate = median(rates(runs))
            cond = conditions(tp, events)
            share = tp.detector[0].events_per_k / 1e3 if tp.detector else 0.0
            speed_rows.append(
                [
                    f"{rate_target_text(share)}, detector draining a full topic",
                    cond,
                    fmt_rate(rate),
                    mark(rate >= target_rate(share)),
                ]
            )
            ratio_rows.append(
                [
                    "detector >= 70 % of the bare consumer",
                    cond,
                    f"{rate / tp.bare_rate:.1%} (of {fmt_rate(tp.bare_rate)})",
                    mark(rate / tp.bare_rate >= TARGET_RATIO),
                ]
            )
    rows = speed_rows
    for pl in res.pipelines:
        share = pl.detector.events_per_k / 1e3
        rows.append(
            [
                f"{rate_target_text(share)}, replay + detector at once",
                f"{pl.producer.readings / pl.producer.records:,.0f} readings/record (batch-steps "
                f"{pl.batch_steps}), {pct(pl.data.labelled)} labelled, "
                f"{pct(pl.detector.events_per_k / 1e3)} anomalies; events published (as shipped)",
                fmt_rate(pl.whole.rate),
                mark(pl.whole.rate >= target_rate(share)),
            ]
        )
    rows += ratio_rows
    for lr in res.latency:
        p99 = lr.split("append")[1]
        rows.append(
            [
                f"p99 < 100 ms at {fmt_rate(lr.speed * TURBINES)}",
                f"{latency_input(lr)}, {pct(lr.detector.events_per_k / 1e3)} anomalies; "
                "events published (as shipped)",
                f"{p99:,.0f} ms (input {fmt_rate(lr.send_rate)})",
                mark(p99 < TARGET_P99_MS) + lr.input_note,
            ]
        )
    return rows


def data_rows(res: Results) -> list[list[object]]:
    """The recorded fleets: labelled share and the detector's anomaly (event) rate."""
    rows: list[list[object]] = []
    seen: set[Path] = set()
    for tp in res.throughput:
        if tp.data.path in seen or not tp.detector:
            continue
        seen.add(tp.data.path)
        r = tp.detector[0]
        rows.append(
            [
                f"`--fault-fraction {tp.data.fault_fraction:g}`"
                + (" (default)" if tp.data.fault_fraction == DEFAULT_FAULTS else ""),
                f"{tp.readings:,}",
                pct(tp.data.labelled),
                f"{r.events_per_k:.2f} ({pct(r.events_per_k / 1e3)})",
            ]
        )
    return rows


def report(res: Results) -> str:
    """The Markdown report."""
    out = ["# Kafka end-to-end benchmark", ""]
    out += [f"- {k}: {v}" for k, v in res.facts.items()]
    out += [f"- run time: {res.seconds:.0f} s", ""]
    out += [
        "Written by `python -m bench.kafka_e2e` (see its docstring for the method). The "
        "producer, the broker, the detector and this benchmark run on the same machine: "
        f"{os.cpu_count()} cores, which other jobs may share (`other jobs` in the CPU "
        "columns: busy CPU no process of this benchmark used). Rates move by tens of % from "
        "run to run. Rates are medians over `n` runs (range beside); CPU is % of one core "
        "over the measured window.",
        "",
        "## Settings",
        "",
        f"- data: `turbine simulate` fleets, {TURBINES} turbines, D = {SENSORS}; "
        f"{KEY_GROUPS} key groups, {PARTITIONS} partitions, binary wire format; "
        "`batch-steps B`: the producer's records hold B steps of a key group "
        f"(B x {TURBINES} / {KEY_GROUPS} readings)",
        f"- as shipped: {SETTINGS_NOTE}",
        "- *publishing no events*: as shipped plus `TURBINE_PUBLISH_EVENTS=false`, to show "
        "what the anomaly events cost (one JSON record and one librdkafka `produce` per "
        "anomaly)",
        "- *one record per batch*: as shipped plus `TURBINE_EVENT_RECORDS=batch`: the same "
        "JSON events, one anomalies-topic record per engine batch and partition",
        "- the detector's own `--batch-steps` has no effect in Kafka mode: its engine batch "
        "is the producer's (records with the same batch number in one poll of a partition "
        "are scored in one engine call)",
        "- detector rate: readings from the assignment of its partitions (full topic) to the "
        "first `/metrics` scrape showing all of them; start-up, group join and the 2 s idle "
        "wait excluded. Bare consumer: the same window. Replay: first reading sent to last "
        "record acknowledged",
        "",
        "Recorded fleets (anomalies: events published by the first detector run on the "
        "file, one per anomaly):",
        "",
    ]
    out += table(
        ["simulated with", "readings", "labelled faulty", "anomaly events per 1,000 readings"],
        data_rows(res),
    )
    out += ["", "## Targets", ""]
    out += table(["target", "conditions", "measured", "result"], target_rows(res))
    out += ["", "## Throughput", ""]
    out += table(["measurement", "readings/s", "n", "range", "CPU", "notes"], throughput_rows(res))
    out += ["", "## Latency: produce to anomaly event", ""]
    out += [
        f"`turbine simulate --bootstrap-servers ... --turbines {TURBINES} --speed S "
        "--batch-steps B --fault-fraction F` (S = 1000: 100 k readings/s) with the detector "
        "started first on fresh topics. Latency = the event record's LogAppendTime - "
        "`produced_at` (the input record's CreateTime: the producer's `send` call), events "
        "whose input was produced after the warm-up; `input -> detector send` = `detected_at "
        "- produced_at`; `event -> broker` = LogAppendTime - `detected_at`; `received` = "
        "arrival at a consumer in this process. `backlog`: readings not yet scored 5 s after "
        "the producer stopped (the detector was slower than the input, so latency grows for "
        "as long as the run lasts). One run per row: a p99 within about 15 % of 100 ms can "
        "land on either side of it on a rerun.",
        "",
    ]
    out += table(
        [
            "input",
            "sent",
            "detector",
            "backlog",
            "events",
            "latency ms p50 / p99 / max",
            "input -> detector send",
            "event -> broker",
            "received",
            "CPU",
            "checkpoints",
            "p99 < 100 ms",
        ],
        latency_rows(res),
    )
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------- main
def measure_throughput(
    bench: Bench, data: DataFile, batch_steps: int, repeats: int, events_off_run: bool
) -> Throughput:
    """Replay a file, then bare consumer and detector runs interleaved on the full topic."""
    topic = bench.name(f"b{batch_steps}")
    progress(f"batch-steps {batch_steps}: replay of {data.path.name} into {topic}")
    replay = bench.replay(data.path, topic, batch_steps)
    progress(f"  replay {fmt_rate(replay.window.rate)} ({replay.records:,} records)")
    bare: list[Window] = []
    detector: list[DetectorRun] = []
    no_events: list[DetectorRun] = []
    batched: list[DetectorRun] = []
    runs: list[tuple[list[DetectorRun], dict[str, str] | None]] = [(detector, None)] * repeats
    if events_off_run:
        runs += [(no_events, NO_EVENTS_ENV), (batched, BATCHED_EVENTS_ENV)]
    for out, env in runs:  # a bare consumer before each detector
        bare.append(bench.bare_consume(topic, replay.readings))
        out.append(bench.detect(topic, batch_steps, env))
        what = {None: "", "false": " (no events)", "batch": " (events per batch)"}[
            None if env is None else next(iter(env.values()))
        ]
        progress(
            f"  bare consumer {fmt_rate(bare[-1].rate)}, detector{what} "
            f"{fmt_rate(out[-1].window.rate)}"
        )
    return Throughput(
        data,
        batch_steps,
        replay.readings,
        replay.records,
        replay,
        bare,
        detector,
        no_events,
        batched,
    )


# (batch steps, --fault-fraction, share of --latency-seconds), all at LATENCY_SPEED
LATENCY_RUNS = (
    (1, DEFAULT_FAULTS, 0.35),  # as asked: 12,000 records/s, beyond the producer
    (10, DEFAULT_FAULTS, 0.5),  # 1,200 records/s: the producer keeps up
    (5, REALISTIC_FAULTS, 1.0),  # 2,400 records/s
    (10, REALISTIC_FAULTS, 1.0),
)


def run(args: argparse.Namespace, workdir: Path) -> Results:
    """Every measurement, in one broker session."""
    start = time.monotonic()
    with broker(workdir, args.port) as b:
        try:
            return measure_all(args, b, workdir, start)
        finally:
            stop_children()  # after a failure: no detector left behind, before the broker stops


def measure_all(args: argparse.Namespace, b: Broker, workdir: Path, start: float) -> Results:
    """The measurements, on a running broker."""
    bench = Bench(b, workdir)
    facts = machine_facts(b)
    progress(
        f"simulating {TURBINES} x {args.steps:,} and x {args.small_steps:,} (default faults), "
        f"{TURBINES} x {args.realistic_steps:,} (fault fraction {args.fault_fraction:g})"
    )
    default = bench.simulate_file(args.steps, DEFAULT_FAULTS)
    realistic = bench.simulate_file(args.realistic_steps, args.fault_fraction)
    small = bench.simulate_file(args.small_steps, DEFAULT_FAULTS)
    small_repeats = max(1, args.repeats - 1)
    throughput = [
        measure_throughput(bench, default, 100, args.repeats, True),
        measure_throughput(bench, small, 10, small_repeats, False),
        measure_throughput(bench, realistic, 100, args.repeats, True),
        measure_throughput(bench, realistic, 1000, args.repeats, True),
    ]
    pipelines = []
    for data, batch_steps in ((default, 100), (realistic, 1000)):
        progress(f"whole pipeline, batch-steps {batch_steps}: detector, then replay, at once")
        pipelines.append(bench.concurrent(data, batch_steps))
        progress(f"  pipeline {fmt_rate(pipelines[-1].whole.rate)}")
    latency = []
    for batch_steps, faults, share in LATENCY_RUNS:
        if faults == REALISTIC_FAULTS:
            faults = args.fault_fraction
        seconds = max(args.warmup_seconds + 5, share * args.latency_seconds)
        progress(f"latency: batch-steps {batch_steps}, fault fraction {faults:g}, {seconds:.0f} s")
        lr = bench.latency(batch_steps, seconds, args.warmup_seconds, faults)
        p50, p99, mx = lr.split("append")
        progress(
            f"  send {fmt_rate(lr.send_rate)}, detector {fmt_rate(lr.detector.window.rate)}, "
            f"p50 {p50:.1f} p99 {p99:.1f} max {mx:.0f} ms"
        )
        latency.append(lr)
    facts["load average at end (1, 5, 15 min)"] = load_average()
    facts[f"consumers replaced (no partitions {ASSIGN_TIMEOUT:.0f} s after their start)"] = str(
        bench.stuck_starts
    )
    return Results(facts, throughput, pipelines, latency, time.monotonic() - start)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--steps", type=int, default=20_000, help="steps, default-fault file")
    parser.add_argument("--small-steps", type=int, default=3_000, help="steps, batch-10 file")
    parser.add_argument(
        "--realistic-steps", type=int, default=40_000, help="steps, realistic-fault file"
    )
    parser.add_argument("--repeats", type=int, default=3, help="detector runs per scenario")
    parser.add_argument(
        "--fault-fraction",
        type=float,
        default=REALISTIC_FAULTS,
        help="the realistic files' --fault-fraction",
    )
    parser.add_argument(
        "--latency-seconds", type=float, default=30.0, help="send time of the longest run"
    )
    parser.add_argument("--warmup-seconds", type=float, default=5.0)
    parser.add_argument("--port", type=int, default=21092, help="first broker port to try")
    parser.add_argument("--no-write", action="store_true", help=f"do not write {RESULTS}")
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="bench-kafka-"))
    try:
        res = run(args, workdir)
    except BaseException:
        for data in workdir.glob("*.npz"):
            data.unlink()
        progress(f"failed: the children's logs are in {workdir}")
        raise
    shutil.rmtree(workdir, ignore_errors=True)
    text = report(res)
    sys.stdout.write(text)
    if not args.no_write:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
