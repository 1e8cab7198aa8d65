"""Fleet-relative scoring through Kafka with two detectors, as the stacks run it.

A turbine's fleet-relative reading is its deviation from the median of the
readings at the same time in one engine call, so a time step's whole fleet must
reach one engine call: the simulator (``--fleet-relative``) sends each batch in
one record (one key group), which lands on one partition and so on one of the
detectors.  Keyed by 12 groups instead, each partition would hold a part of the
fleet and its detector would take the median of that part.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest

from pipeline.store import read_anomalies
from tests.cli_support import spawn, turbine
from tests.test_kafka import rows

pytestmark = [pytest.mark.kafka, pytest.mark.slow]
TURBINES, STEPS, RATE = 100, 3000, 1e-4
FLEET = ("--turbines", TURBINES, "--steps", STEPS, "--seed", 42, "--fault-fraction", 0,
         "--start", "2026-03-01T00:00:00Z", "--fleet-relative")  # fmt: skip


def two_detectors(servers: str, topic: str, group: str, store: Path, config: Path) -> None:
    """Two detector processes in one group until the topic has been idle for 5 s."""
    args = ("detect", "--bootstrap-servers", servers, "--topic", topic, "--group", group,
            "--anomalies-topic", f"{topic}.anomalies", "--dlq-topic", f"{topic}.dlq",
            "--store", store, "--config", config, "--stop-after-idle", 5)  # fmt: skip
    procs = [spawn(*args), spawn(*args)]
    try:
        for p in procs:
            _, err = p.communicate(timeout=300)
            assert p.returncode == 0, err[-3000:]
    except subprocess.TimeoutExpired:
        for p in procs:
            p.kill()
        raise


def test_two_detectors_score_a_fault_free_fleet_as_the_embedded_run(
    kafka_servers, topic_factory, group_id, tmp_path
):
    config = tmp_path / "simulator.json"
    turbine("simulate", *FLEET, "--write-config", config, env={"TURBINE_BOOTSTRAP_SERVERS": ""})
    turbine("simulate", *FLEET, "--output", tmp_path / "f.npz")
    turbine("detect", "--input", tmp_path / "f.npz", "--config", config,
            "--store", tmp_path / "embedded", "--quiet")  # fmt: skip
    topic = topic_factory("fleet", partitions=6)
    sent = turbine("simulate", *FLEET, "--bootstrap-servers", kafka_servers, "--topic", topic,
                   "--quiet")  # fmt: skip
    assert f"sent {TURBINES * STEPS:,} readings in {STEPS // 10:,} records" in sent.stderr
    two_detectors(kafka_servers, topic, group_id, tmp_path / "kafka", config)
    embedded, kafka = read_anomalies(tmp_path / "embedded"), read_anomalies(tmp_path / "kafka")
    # The same fleet medians as the embedded run, so the same anomalies ...
    assert rows(kafka) == rows(embedded)
    # ... scored on one partition, by whichever detector owns it.
    assert len(set(kafka.partitions.tolist())) == 1, set(kafka.partitions.tolist())
    # A fault-free fleet: within twice the configured rate, no fleet-wide burst.
    share = len(kafka) / (TURBINES * STEPS) / RATE
    assert 0 < share < 2, share
    assert np.unique(kafka.timestamps, return_counts=True)[1].max() < 5


def test_a_fleet_relative_stream_must_be_one_key_group():
    # refused before any broker is asked
    refused = turbine("simulate", *FLEET, "--key-groups", 12, "--bootstrap-servers",
                      "127.0.0.1:1", check=False)  # fmt: skip
    assert refused.returncode == 2 and "--key-groups 1, not 12" in refused.stderr
