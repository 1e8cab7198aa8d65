"""Crash safety with real processes and a real broker: kill -9, broker restarts, producer
restarts. Every run ends with the anomaly store and the models an uninterrupted run gives."""

from __future__ import annotations

import os
import random
import signal
import time
from pathlib import Path

import numpy as np
import pytest

from consumers.checkpoint import CheckpointDir
from pipeline import Detector, load_config
from pipeline.recordings import RecordingSpec
from pipeline.runner import run_file
from pipeline.store import read_anomalies
from tests.cli_support import spawn, turbine
from tests.kafka_support import LocalBroker, NoBroker

pytestmark = [pytest.mark.kafka, pytest.mark.slow]
CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.fixture
def broker():
    try:
        b = LocalBroker()
        b.up()
    except NoBroker as exc:
        if CI:
            pytest.fail(f"CI=true and no local broker: {exc}")
        pytest.skip(str(exc))
    yield b
    b.purge()


def detector_args(servers: str, topic: str, store: Path, config: Path) -> list[object]:
    return [
        "detect",
        "--bootstrap-servers",
        servers,
        "--topic",
        topic,
        "--group",
        f"{topic}-g",
        "--store",
        store,
        "--anomalies-topic",
        f"{topic}.a",
        "--dlq-topic",
        f"{topic}.d",
        "--config",
        config,
        "--checkpoint-every-batches",
        20,
        "--checkpoint-every-seconds",
        1,
    ]


def rows(a) -> list[tuple[float, int, float]]:
    return sorted(
        zip(a.timestamps.tolist(), a.turbine_ids.tolist(), a.distances.tolist(), strict=True)
    )


def assert_same_as_reference(store: Path, topic: str, path: Path, config: Path) -> None:
    """Same anomalies (no loss, no duplicate) and the same models as the uninterrupted run."""
    cfg = load_config(config)
    with_store = Path(str(store) + "-ref")
    run_file(path, RecordingSpec(), cfg, store_dir=with_store)
    assert rows(read_anomalies(store)) == rows(read_anomalies(with_store))
    _, ref = run_file(path, RecordingSpec(), cfg)
    checkpoints = CheckpointDir(store / "checkpoints", topic)
    merged = Detector(cfg)
    for p in range(6):
        cp = checkpoints.load(p)
        if cp is not None:
            merged.merge(Detector.from_state(cp.detector_state, cfg))
    assert merged.readings == ref.readings
    for t in ref.turbines.ids.tolist():
        a, b = merged.turbine_model(t), ref.turbine_model(t)
        assert a.count == b.count
        np.testing.assert_allclose(a.covariance, b.covariance, rtol=1e-9)
    np.testing.assert_allclose(merged.fleet_model.covariance, ref.fleet_model.covariance, rtol=1e-9)


def simulate(tmp_path: Path, turbines: int, steps: int) -> tuple[Path, Path]:
    path, config = tmp_path / "fleet.npz", tmp_path / "cal.json"
    turbine(
        "simulate",
        "--turbines",
        turbines,
        "--steps",
        steps,
        "--seed",
        77,
        "--output",
        path,
        "--write-config",
        config,
    )
    return path, config


def test_kill_9_ten_times_loses_and_doubles_nothing(broker, tmp_path):
    path, config = simulate(tmp_path, 100, 10_000)  # 1,000,000 readings
    topic = "crash"
    turbine(
        "replay",
        path,
        "--bootstrap-servers",
        broker.servers,
        "--topic",
        topic,
        "--partitions",
        6,
        "--quiet",
    )
    store = tmp_path / "store"
    args = detector_args(broker.servers, topic, store, config)
    env = {"TURBINE_INSTANCE_ID": "crash-test-detector"}
    rng = random.Random(20261130)
    kills = 0
    for _ in range(10):
        proc = spawn(*args, env=env)
        time.sleep(rng.uniform(2.0, 5.0))
        assert proc.poll() is None, proc.stderr.read()[-2000:]
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        kills += 1
    final = spawn(*args, "--stop-after-idle", 5, env=env)
    _, err = final.communicate(timeout=600)
    assert final.returncode == 0, err[-3000:]
    assert kills == 10
    assert_same_as_reference(store, topic, path, config)


def test_broker_restart_and_producer_kill_mid_stream(broker, tmp_path):
    path, config = simulate(tmp_path, 50, 4_000)  # 200,000 readings
    topic = "outage"
    store = tmp_path / "store"
    detector = spawn(*detector_args(broker.servers, topic, store, config), "--partitions", 6)
    replay_args = [
        "replay",
        path,
        "--bootstrap-servers",
        broker.servers,
        "--topic",
        topic,
        "--partitions",
        6,
        "--speed",
        400,
        "--quiet",
        "--producer-id",
        "outage-replay",
    ]
    producer = spawn(*replay_args)
    time.sleep(4)
    os.kill(producer.pid, signal.SIGKILL)  # the producer dies mid-stream
    producer.wait()
    broker.down()  # and the broker goes away for a while
    time.sleep(8)
    broker.up()
    producer = spawn(*replay_args, "--speed", 0)
    _, perr = producer.communicate(timeout=600)  # restarted: sends everything again
    assert producer.returncode == 0, perr[-2000:]
    time.sleep(3)
    broker.down()  # once more, while the detector catches up
    time.sleep(5)
    broker.up()
    detector.send_signal(signal.SIGTERM)
    _, err = detector.communicate(timeout=300)
    assert detector.returncode == 0, err[-3000:]
    final = spawn(*detector_args(broker.servers, topic, store, config), "--stop-after-idle", 5)
    _, err = final.communicate(timeout=600)
    assert final.returncode == 0, err[-3000:]
    assert_same_as_reference(store, topic, path, config)
