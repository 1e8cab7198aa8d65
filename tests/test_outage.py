"""Broker outages with the detector running throughout (issue 13, D6): a 60-second one,
and (slow) a 5-minute one, end with the store and models of an uninterrupted run."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import pytest

from consumers.checkpoint import CheckpointDir
from tests.cli_support import spawn
from tests.test_crash import assert_same_as_reference, broker, detector_args, simulate

__all__ = ["broker"]  # the fixture, imported from test_crash
pytestmark = pytest.mark.kafka


def wait_until_checkpointed(
    servers: str, topic: str, store: Path, timeout: float, detector: subprocess.Popen
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
        assert detector.poll() is None, detector.stderr.read()[-3000:]  # running throughout
        time.sleep(1)
    raise AssertionError(f"the detector did not catch up within {timeout} s")


@pytest.mark.parametrize("outage", [60, pytest.param(300, marks=pytest.mark.slow)])
def test_a_broker_outage_is_survived_with_the_same_store(broker, tmp_path, outage):
    path, config = simulate(tmp_path, 40, 3000)  # 120,000 readings, 3,000 s of data
    topic = f"outage{outage}"
    store = tmp_path / "store"
    detector = spawn(*detector_args(broker.servers, topic, store, config), "--partitions", 6)
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
    producer = spawn(*replay)
    time.sleep(12)
    assert detector.poll() is None, detector.stderr.read()[-3000:]
    broker.down()
    start = time.monotonic()
    while time.monotonic() - start < outage:
        time.sleep(5)
        assert detector.poll() is None, detector.stderr.read()[-3000:]  # running throughout
    broker.up()
    survived = time.monotonic() - start
    _, perr = producer.communicate(timeout=900)
    if producer.returncode != 0:  # its delivery timeout ran out: send again, duplicates drop
        again = spawn(*replay, "--speed", 0)
        _, perr = again.communicate(timeout=900)
        assert again.returncode == 0, perr[-2000:]
    wait_until_checkpointed(broker.servers, topic, store, 600, detector)
    assert detector.poll() is None, detector.stderr.read()[-3000:]
    detector.send_signal(signal.SIGTERM)
    _, err = detector.communicate(timeout=300)
    assert detector.returncode == 0, err[-3000:]
    assert "Traceback" not in err
    assert_same_as_reference(store, topic, path, config)
    print(f"\noutage survived: {survived:.0f} s with the detector running throughout")
