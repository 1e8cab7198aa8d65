"""Real SCADA through the real broker: La Haute Borne replayed into the detector service.

La Haute Borne wind farm data, ENGIE (opendata-renewables.engie.com), Open
Licence 2.0, as distributed with NREL OpenOA.
"""

from __future__ import annotations

import json
import signal
import time

import numpy as np
import pytest

from consumers.checkpoint import CheckpointDir
from pipeline import Detector
from pipeline.episodes import Episodes, EpisodeTracker
from pipeline.names import turbine_id
from pipeline.store import read_anomalies, read_episodes
from tests.cli_support import spawn, turbine
from tests.conftest import REPO
from tests.test_kafka import consume_all

pytestmark = pytest.mark.kafka
CONFIG = REPO / "deploy" / "configs" / "la-haute-borne.toml"


def service_args(servers: str, topic: str, group: str, store, config=None) -> tuple:
    extra = () if config is None else ("--config", config)
    return (
        "detect",
        "--bootstrap-servers",
        servers,
        "--topic",
        topic,
        "--group",
        group,
        "--anomalies-topic",
        f"{topic}.anomalies",
        "--dlq-topic",
        f"{topic}.dlq",
        "--episodes-topic",
        f"{topic}.episodes",
        "--store",
        store,
        *extra,
    )


def anomaly_keys(path) -> list[tuple]:
    a = read_anomalies(path)
    return sorted(
        zip(
            a.turbine_ids.tolist(),
            a.timestamps.tolist(),
            a.distances.round(9).tolist(),
            strict=True,
        )
    )


def episode_keys(e: Episodes) -> list[tuple]:
    return sorted(zip(e.turbine_ids.tolist(), e.starts.tolist(), e.ends.tolist(), strict=True))


def test_la_haute_borne_through_kafka_matches_the_embedded_run_across_a_restart(
    kafka_servers, topic_factory, group_id, tmp_path, lhb_csv
):
    embedded = tmp_path / "embedded"
    turbine(
        "detect", "--quiet", "--input", lhb_csv, "--config", CONFIG, "--batch-steps", 1008,
        "--store", embedded,
    )  # fmt: skip
    expected = anomaly_keys(embedded)
    assert len(expected) > 100

    topic = topic_factory("lhb", partitions=2)
    store = tmp_path / "kafka"
    args = service_args(kafka_servers, topic, group_id, store, CONFIG)
    first = spawn(*args, "--checkpoint-every-batches", 5, "--stop-after-idle", 120)
    turbine(
        "replay", lhb_csv, "--config", CONFIG, "--batch-steps", 1008, "--bootstrap-servers",
        kafka_servers, "--topic", topic, "--quiet",
    )  # fmt: skip
    # Stop the first detector mid-stream (SIGTERM: checkpoint, commit, exit 0).
    checkpoints = store / "checkpoints"
    deadline = time.monotonic() + 120
    while not any(checkpoints.glob("*.npz")) and time.monotonic() < deadline:
        time.sleep(0.1)
    first.send_signal(signal.SIGTERM)
    assert first.wait(timeout=120) == 0, first.stderr.read() if first.stderr else ""
    turbine(*args, "--stop-after-idle", 5)

    assert anomaly_keys(store) == expected
    # The name map, the regime models and the episode in progress came through the checkpoint.
    cps = CheckpointDir(checkpoints, topic)
    cp = next(c for c in (cps.load(p) for p in range(2)) if c is not None and c.detector_state)
    det = Detector.from_state(cp.detector_state)
    assert sorted(det.names.labels(det.turbines.ids)) == ["R80711", "R80721", "R80736", "R80790"]
    assert det.state()["turbine_counts"].size == 4 * 15  # 4 turbines x 15 wind bins
    open_eps = [
        EpisodeTracker.from_state(c.episode_state).in_progress
        for c in (cps.load(p) for p in range(2))
        if c is not None and c.episode_state
    ]
    closed = read_episodes(store)
    every = Episodes.concat([closed, *open_eps], closed.sensors)
    assert episode_keys(every) == episode_keys(read_episodes(embedded))


def test_rebaseline_through_the_running_service_is_checkpointed(
    kafka_servers, topic_factory, group_id, tmp_path
):
    topic = topic_factory("readings", partitions=3)
    sim = ["--turbines", 6, "--steps", 600, "--seed", 4, "--fault-fraction", 0]
    turbine("simulate", *sim, "--bootstrap-servers", kafka_servers, "--topic", topic, "--quiet")
    store = tmp_path / "store"
    args = service_args(kafka_servers, topic, group_id, store)  # the default configuration
    turbine(*args, "--stop-after-idle", 3)
    cps = CheckpointDir(store / "checkpoints", topic)

    def model_counts() -> dict[int, float]:
        out: dict[int, float] = {}
        for p in range(3):
            cp = cps.load(p)
            if cp is not None and "turbine_ids" in cp.detector_state:
                det = Detector.from_state(cp.detector_state)
                for t in det.turbines.ids.tolist():
                    out[t] = det.turbine_model(t).count
        return out

    before = model_counts()
    assert before[2] > 0 and before[3] > 0
    out = turbine(
        "rebaseline", "--bootstrap-servers", kafka_servers, "--topic", topic, "--turbine", "2",
        "--reason", "pitch bearing replaced",
    )  # fmt: skip
    assert "1 control record" in out.stdout
    turbine(*args, "--stop-after-idle", 3)
    after = model_counts()
    assert after[2] == 0 and after[3] == before[3]
    events = [json.loads(e.value) for e in consume_all(kafka_servers, f"{topic}.episodes")]
    rebaselines = [e for e in events if e.get("type") == "rebaseline"]
    assert [(e["turbine"], e["reason"], e["note"]) for e in rebaselines] == [
        (2, "operator", "pitch bearing replaced")
    ]
    # Restarting again does not apply it twice, and later readings are learned afresh.
    turbine("simulate", *sim, "--bootstrap-servers", kafka_servers, "--topic", topic, "--quiet",
            "--producer-id", "second")  # fmt: skip
    turbine(*args, "--stop-after-idle", 3)
    again = model_counts()
    assert 0 < again[2] < again[3]
    events = [json.loads(e.value) for e in consume_all(kafka_servers, f"{topic}.episodes")]
    assert sum(e.get("type") == "rebaseline" for e in events) == 1
    # A control record naming a turbine no partition has is a dead letter with its reason.
    turbine(
        "rebaseline", "--bootstrap-servers", kafka_servers, "--topic", topic, "--turbine", "R9",
    )  # fmt: skip
    turbine(*args, "--stop-after-idle", 3)
    dlq = consume_all(kafka_servers, f"{topic}.dlq")
    reasons = [dict(r.headers)["reason"] for r in dlq]
    assert reasons == [b"bad_control"]
    assert turbine_id("R9") not in model_counts()
    np.testing.assert_equal(len(rebaselines), 1)
