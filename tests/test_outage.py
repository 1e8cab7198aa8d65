"""Broker outages with the detector running throughout (issue 13, D6): a 60-second one,
and (slow) a 5-minute one, end with the store and models of an uninterrupted run."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from consumers.checkpoint import CheckpointDir
from tests.test_crash import assert_same_as_reference, broker, detector_args, simulate

__all__ = ["broker"]  # the fixture, imported from test_crash
pytestmark = pytest.mark.kafka


class Background:
    """``turbine ARGS`` in the background, its log to a file (a long outage logs a lot:
    a pipe nobody reads would fill and block it)."""

    def __init__(self, args: list[object], log: Path) -> None:
        self.log = log
        self._out = open(log, "w")  # noqa: SIM115 (closed in wait)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pipeline.cli", *map(str, args)],
            stdout=subprocess.DEVNULL,
            stderr=self._out,
            text=True,
        )

    def alive(self) -> bool:
        return self.proc.poll() is None

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]

    def wait(self, timeout: float) -> tuple[int, str]:
        self.proc.wait(timeout=timeout)
        self._out.close()
        return self.proc.returncode, self.log.read_text(errors="replace")

    def stop(self) -> tuple[int, str]:
        self.proc.send_signal(signal.SIGTERM)
        return self.wait(300)


def wait_until_checkpointed(
    servers: str, topic: str, store: Path, timeout: float, detector: Background
) -> None:
    """Until every partition's checkpoint stands at its end offset (the detector alive)."""
    from kafka import KafkaConsumer, TopicPartition

    probe = KafkaConsumer(bootstrap_servers=servers)
    try:
        ends = probe.end_offsets([TopicPartition(topic, p) for p in range(6)])
    finally:
        probe.close()
    checkpoints = CheckpointDir(store / "checkpoints", topic)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = True
        for tp, end in ends.items():
            if end == 0:
                continue
            cp = checkpoints.load(tp.partition) if checkpoints.path(tp.partition).exists() else None
            done &= cp is not None and cp.offset == end
        if done:
            return
        assert detector.alive(), detector.tail()  # running throughout
        time.sleep(1)
    raise AssertionError(f"the detector did not catch up within {timeout} s")


@pytest.mark.parametrize("outage", [60, pytest.param(300, marks=pytest.mark.slow)])
def test_a_broker_outage_is_survived_with_the_same_store(broker, tmp_path, outage):
    path, config = simulate(tmp_path, 40, 3000)  # 120,000 readings, 3,000 s of data
    topic = f"outage{outage}"
    store = tmp_path / "store"
    args = [*detector_args(broker.servers, topic, store, config), "--partitions", 6]
    detector = Background(args, tmp_path / "detector.log")
    replay = [
        "replay",
        path,
        "--bootstrap-servers",
        broker.servers,
        "--topic",
        topic,
        "--partitions",
        6,
        "--speed",
        100,  # 30 s of stream: the outage falls in the middle of it
        "--quiet",
        "--producer-id",
        "outage-replay",
    ]
    producer = Background(replay, tmp_path / "replay.log")
    time.sleep(12)
    assert detector.alive(), detector.tail()
    broker.down()
    start = time.monotonic()
    while time.monotonic() - start < outage:
        time.sleep(5)
        assert detector.alive(), detector.tail()  # running throughout
    broker.up()
    survived = time.monotonic() - start
    if producer.wait(900)[0] != 0:  # its delivery timeout ran out: send again, duplicates drop
        code, perr = Background([*replay, "--speed", 0], tmp_path / "replay2.log").wait(900)
        assert code == 0, perr[-2000:]
    wait_until_checkpointed(broker.servers, topic, store, 600, detector)
    assert detector.alive(), detector.tail()
    code, err = detector.stop()
    assert code == 0, err[-3000:]
    assert "Traceback" not in err
    assert_same_as_reference(store, topic, path, config)
    print(f"\noutage survived: {survived:.0f} s with the detector running throughout")
