"""Scale-out: three detectors in one group over six partitions, and detectors joining and
leaving mid-stream, give exactly what one detector (and the embedded run) gives."""

from __future__ import annotations

import signal
import time

import pytest

from tests.cli_support import spawn, turbine
from tests.test_crash import assert_same_as_reference, broker, detector_args, simulate  # noqa: F401

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


def test_three_detectors_over_six_partitions(broker, tmp_path):  # noqa: F811
    path, config = simulate(tmp_path, 60, 3_000)
    topic = "scale"
    store = tmp_path / "store"
    turbine(
        "replay",
        path,
        "--bootstrap-servers",
        broker.servers,
        "--topic",
        topic,
        "--partitions",
        6,
        "--speed",
        0,
        "--quiet",
        "--batch-steps",
        10,
    )  # creates the topic with 6 partitions
    detectors = [
        spawn("-v", *detector_args(broker.servers, topic, store, config), "--stop-after-idle", 8)
        for _ in range(3)
    ]
    outs = [d.communicate(timeout=600) for d in detectors]
    for d, (_, err) in zip(detectors, outs, strict=True):
        assert d.returncode == 0, err[-3000:]
    owned = [err.count("partition_restored") + err.count("partition_assigned ") for _, err in outs]
    assert sum(1 for n in owned if n) >= 2, (owned, outs[0][1][-3000:])  # work shared
    assert_same_as_reference(store, topic, path, config)


def test_detectors_join_and_leave_mid_stream(broker, tmp_path):  # noqa: F811
    path, config = simulate(tmp_path, 60, 6_000)
    topic = "churn"
    store = tmp_path / "store"
    args = detector_args(broker.servers, topic, store, config)
    producer = spawn(
        "replay",
        path,
        "--bootstrap-servers",
        broker.servers,
        "--topic",
        topic,
        "--partitions",
        6,
        "--speed",
        300,
        "--quiet",
    )
    first = spawn(*args)
    time.sleep(8)
    second = spawn("-v", *args)  # joins: a rebalance hands it partitions with their checkpoints
    time.sleep(8)
    first.send_signal(signal.SIGTERM)  # leaves: its partitions move to the second
    _, err = first.communicate(timeout=120)
    assert first.returncode == 0, err[-2000:]
    _, perr = producer.communicate(timeout=600)
    assert producer.returncode == 0, perr[-2000:]
    second.send_signal(signal.SIGTERM)
    _, err2 = second.communicate(timeout=120)
    assert second.returncode == 0, err2[-2000:]
    assert "partition_restored" in err2
    final = spawn(*args, "--stop-after-idle", 5)  # finishes whatever is left
    _, err3 = final.communicate(timeout=600)
    assert final.returncode == 0, err3[-2000:]
    assert_same_as_reference(store, topic, path, config)
