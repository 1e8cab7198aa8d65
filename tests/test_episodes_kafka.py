"""Episodes through the real broker: the service stores and publishes what the embedded run does."""

from __future__ import annotations

import json
import signal
import time

import numpy as np
import pytest

from consumers.checkpoint import CheckpointDir
from pipeline.episodes import Episodes, EpisodeTracker
from pipeline.store import read_episodes
from tests.cli_support import spawn, turbine
from tests.test_kafka import consume_all

pytestmark = pytest.mark.kafka


def in_progress(store, topic: str, partitions: int) -> Episodes:
    """The episodes still open in the service's checkpoints."""
    cps = CheckpointDir(store / "checkpoints", topic)
    parts = []
    for p in range(partitions):
        cp = cps.load(p)
        if cp is not None and cp.episode_state:
            parts.append(EpisodeTracker.from_state(cp.episode_state).in_progress)
    return Episodes.concat(parts, parts[0].sensors if parts else ())


def key(e: Episodes) -> list[tuple]:
    return sorted(
        zip(
            e.turbine_ids.tolist(),
            e.starts.tolist(),
            e.ends.tolist(),
            e.alarms.tolist(),
            e.peak_distances.tolist(),
            strict=True,
        )
    )


def test_service_episodes_match_the_embedded_run_across_a_restart(
    kafka_servers, topic_factory, group_id, tmp_path
):
    topic = topic_factory("readings", partitions=3)
    sim = ["--turbines", 12, "--steps", 1200, "--seed", 8, "--fault-fraction", 0.05]
    sim += ["--start", "2026-01-01T00:00:00Z"]  # the file's start for the stream too
    cal = tmp_path / "cal.json"
    turbine("simulate", *sim, "--output", tmp_path / "f.npz", "--write-config", cal)
    config = json.loads(cal.read_text())
    config["episode_gap"] = 20.0
    cal.write_text(json.dumps(config))
    turbine("detect", "--input", tmp_path / "f.npz", "--config", cal, "--store", tmp_path / "e")
    embedded = read_episodes(tmp_path / "e")
    assert len(embedded) > 20

    # A detector stopped (SIGTERM: checkpoint, exit 0) while the stream comes, then another.
    store = tmp_path / "k"
    episodes_topic = f"{topic}.episodes"
    args = (
        "detect",
        "--bootstrap-servers",
        kafka_servers,
        "--topic",
        topic,
        "--group",
        group_id,
        "--anomalies-topic",
        f"{topic}.anomalies",
        "--dlq-topic",
        f"{topic}.dlq",
        "--store",
        store,
        "--config",
        cal,
        "--episodes-topic",
        episodes_topic,
    )
    first = spawn(*args, "--stop-after-idle", 60)
    producer = spawn(
        "simulate",
        *sim,
        "--bootstrap-servers",
        kafka_servers,
        "--topic",
        topic,
        "--speed",
        100,
        "--quiet",
    )
    checkpoint = store / "checkpoints" / f"{topic}-0000.npz"
    deadline = time.monotonic() + 60
    while not checkpoint.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    first.send_signal(signal.SIGTERM)
    assert first.wait(timeout=60) == 0, first.stderr.read() if first.stderr else ""
    assert producer.wait(timeout=300) == 0
    turbine(*args, "--stop-after-idle", 3)
    closed = read_episodes(store)
    still = in_progress(store, topic, 3)
    # The service never sees an end of file: episodes still open stay in its checkpoints.
    assert key(Episodes.concat([closed, still], closed.sensors)) == key(embedded)

    events = [json.loads(e.value) for e in consume_all(kafka_servers, episodes_topic)]
    opened = [e for e in events if e["event"] == "episode_opened"]
    done = [e for e in events if e["event"] == "episode_closed"]
    assert len({e["event_id"] for e in events}) == len(events)
    assert sorted(e["episode_id"] for e in opened) == sorted(
        Episodes.concat([closed, still], closed.sensors).ids()
    )
    assert sorted((e["turbine_id"], e["start"], e["end"], e["alarms"]) for e in done) == sorted(
        zip(
            closed.turbine_ids.tolist(),
            closed.starts.tolist(),
            closed.ends.tolist(),
            closed.alarms.tolist(),
            strict=True,
        )
    )
    assert all(e["top_sensors"] and e["state"] == "normal" for e in done)
    np.testing.assert_array_equal(np.sort(closed.ids()), np.sort([e["episode_id"] for e in done]))
    # Evaluated from the Kafka detector's store, the episodes score as the embedded run's.
    f = tmp_path / "f.npz"
    embedded_eval = turbine("evaluate", "--input", f, "--config", cal, "--format", "json")
    kafka_eval = turbine("evaluate", "--input", f, "--store", store, "--format", "json")
    assert json.loads(kafka_eval.stdout)["episodes"] == json.loads(embedded_eval.stdout)["episodes"]
