"""The corruption suite: every state file truncated, garbled and deleted.

State files: a partition's checkpoint, a store's manifest, a store chunk.
Whatever is done to one of them, no partition is silently skipped, no stored
anomaly is lost by the detector (a damaged chunk loses only what it held, and
says so), and the failure is an error naming the file, a metric, an exit code.
The Kafka cases run the detector service in this process against the real
broker (so its metrics can be read), with a fresh topic and group per test.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from pipeline import Detector, DetectorConfig, StoreError
from pipeline.store import MANIFEST, AnomalyStore, read_anomalies
from tests.cli_support import turbine


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def garble(path: Path) -> None:
    """Flip every bit of 64 bytes in the middle of the file (its size is unchanged)."""
    data = bytearray(path.read_bytes())
    mid = len(data) // 2
    data[mid : mid + 64] = bytes(b ^ 0xFF for b in data[mid : mid + 64])
    path.write_bytes(bytes(data))


def delete(path: Path) -> None:
    path.unlink()


CORRUPTIONS: dict[str, Callable[[Path], None]] = {
    "truncated": truncate,
    "garbled": garble,
    "deleted": delete,
}


def small_store(directory: Path, rng: np.random.Generator, chunks: int = 4) -> AnomalyStore:
    """A store of several chunks written by a real detector (anomalies injected)."""
    det = Detector(DetectorConfig(min_samples=30, key_groups=1))
    n_turbines, d = 10, 3
    det.learn(np.zeros(1000), np.tile(np.arange(n_turbines), 100), rng.normal(size=(1000, d)))
    store = AnomalyStore(directory, sensors=("a", "b", "c"), chunk_size=8)
    for b in range(12 * chunks):
        ids = np.tile(np.arange(n_turbines), 5)
        ts = 1000.0 + b * 5 + np.repeat(np.arange(5.0), n_turbines)
        x = rng.normal(size=(ids.size, d))
        x[rng.random(ids.size) < 0.04] += 9.0
        store.append(det.process(ts, ids, x), partitions=0, offsets=b)
        store.advance({0: b + 1})
    store.flush()
    assert len(store.chunks) >= chunks
    return store


# ---------------------------------------------------------------------- chunks
@pytest.mark.parametrize("member", ["distance", "contrib", "meta"])
@pytest.mark.parametrize("how", sorted(CORRUPTIONS))
def test_a_damaged_chunk_is_a_store_error_naming_it(tmp_path, rng, how, member):
    store = small_store(tmp_path / "s", rng)
    victim = tmp_path / "s" / f"{store.chunks[1]['name']}-{member}.npz"
    CORRUPTIONS[how](victim)
    reopened = AnomalyStore(tmp_path / "s")
    reopened.read_chunk(reopened.chunks[0])  # the other chunks still read
    with pytest.raises(StoreError, match=str(victim)) as info:
        reopened.read_chunk(reopened.chunks[1])
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("how", sorted(CORRUPTIONS))
def test_turbine_anomalies_on_a_damaged_chunk_is_one_line_exit_2(tmp_path, rng, how):
    store = small_store(tmp_path / "s", rng)
    victim = tmp_path / "s" / f"{store.chunks[2]['name']}-distance.npz"
    CORRUPTIONS[how](victim)
    proc = turbine("anomalies", tmp_path / "s", check=False)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and str(victim) in lines[0], proc.stderr


@pytest.mark.parametrize("how", ["truncated", "garbled"])
def test_turbine_report_on_a_damaged_model_is_one_line_exit_2(tmp_path, how):
    """An embedded run's model.npz (its state) cut or garbled: no BadZipFile traceback."""
    turbine(
        "simulate", "--turbines", 5, "--steps", 300, "--seed", 1, "--output", tmp_path / "f.npz"
    )
    turbine("detect", "--input", tmp_path / "f.npz", "--store", tmp_path / "st")
    victim = tmp_path / "st" / "model.npz"
    CORRUPTIONS[how](victim)
    proc = turbine("report", "--store", tmp_path / "st", "--output", tmp_path / "r", check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert len(proc.stderr.strip().splitlines()) == 1 and str(victim) in proc.stderr


# ---------------------------------------------------------------------- manifests
@pytest.mark.parametrize("how", sorted(CORRUPTIONS))
def test_a_damaged_manifest_is_a_store_error_naming_it(tmp_path, rng, how):
    small_store(tmp_path / "s", rng)
    victim = tmp_path / "s" / MANIFEST
    CORRUPTIONS[how](victim)
    with pytest.raises(StoreError, match=str(tmp_path / "s")) as info:
        AnomalyStore(tmp_path / "s")
    assert "\n" not in str(info.value)
    proc = turbine("anomalies", tmp_path / "s", check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr


def test_a_manifest_that_is_valid_json_but_no_manifest_is_a_store_error(tmp_path, rng):
    small_store(tmp_path / "s", rng)
    (tmp_path / "s" / MANIFEST).write_text(json.dumps({"version": 1, "chunks": 3}))
    with pytest.raises(StoreError, match="not a store manifest"):
        AnomalyStore(tmp_path / "s")


def test_replayed_readings_below_the_floor_are_counted_once(tmp_path, rng):
    """A partition rebuilding its models replays records already stored: no double count."""
    store = small_store(tmp_path / "s", rng, chunks=1)
    before, anomalies = store.readings, len(read_anomalies(tmp_path / "s"))
    det = Detector(DetectorConfig(min_samples=30, key_groups=1))
    det.learn(np.zeros(1000), np.tile(np.arange(10), 100), rng.normal(size=(1000, 3)))
    x = rng.normal(size=(50, 3))
    x[::7] += 9.0
    result = det.process(np.full(50, 1000.0), np.tile(np.arange(10), 5), x)
    assert store.append(result, partitions=0, offsets=3) == 0  # below the floor: dropped
    store.flush()
    assert store.readings == before
    assert len(read_anomalies(tmp_path / "s")) == anomalies


# ---------------------------------------------------------------------- the detector service
# Each case: data through a real broker, one detector run to idle (checkpoints,
# commits, store), a state file of partition 0 damaged, more data, a second run.
# Partition 0 is the first of every assignment: before the fix, its failure
# left it *and every partition after it* without a state, their records dropped.

TOPIC_PARTITIONS = 3
VICTIM = 0
RUN_TIMEOUT_S = 90.0


def simulate_into(servers: str, topic: str, seed: int) -> None:
    turbine(
        "simulate",
        "--turbines",
        18,
        "--steps",
        300,
        "--seed",
        seed,
        "--bootstrap-servers",
        servers,
        "--topic",
        topic,
        "--quiet",
    )


def service_run(servers: str, topic: str, group: str, store: Path):
    """One detector run to idle, in this process: (service, exception raised or None)."""
    from prometheus_client import CollectorRegistry

    from consumers.service import DetectorService, ServiceSettings

    settings = ServiceSettings(
        bootstrap_servers=servers,
        topic=topic,
        group=group,
        store=store,
        anomalies_topic=f"{topic}.anomalies",
        dlq_topic=f"{topic}.dlq",
        partitions=TOPIC_PARTITIONS,
        stop_after_idle=2,
        checkpoint_every_seconds=1,
        store_flush_seconds=0.5,  # chunks and episodes on disk at every checkpoint
        publish_events=False,
    )
    config = DetectorConfig(min_samples=30, episode_gap=5.0)  # episodes close in the stream
    service = DetectorService(settings, config, CollectorRegistry())
    # A run that never comes to idle (a partition without a state never catches
    # up) is stopped, and fails the test rather than hanging it.
    timed_out = threading.Event()

    def stop() -> None:
        timed_out.set()
        service.stop()

    watchdog = threading.Timer(RUN_TIMEOUT_S, stop)
    watchdog.start()
    try:
        service.run()
    except StoreError as exc:
        return service, exc
    finally:
        watchdog.cancel()
        assert not timed_out.is_set(), f"the detector did not come to idle in {RUN_TIMEOUT_S} s"
    return service, None


def metric(service, name: str) -> float:
    value = service.registry.get_sample_value(name)
    return 0.0 if value is None else value


def stored_rows(store: Path) -> list[tuple[int, int, int, float]]:
    """Every stored anomaly of a partition store: (partition, offset, row, distance)."""
    a = read_anomalies(store)
    return sorted(
        zip(
            a.partitions.tolist(),
            a.offsets.tolist(),
            a.rows.tolist(),
            a.distances.tolist(),
            strict=True,
        )
    )


def episode_ids(store: Path) -> list[str]:
    """The stored alarm episodes' ids (turbine:start), duplicates kept."""
    from pipeline.store import read_episodes

    return sorted(read_episodes(store).ids())


def committed(servers: str, topic: str, group: str) -> dict[int, int | None]:
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=servers, group_id=group, enable_auto_commit=False)
    try:
        return {p: consumer.committed(TopicPartition(topic, p)) for p in range(TOPIC_PARTITIONS)}
    finally:
        consumer.close()


def end_offsets(servers: str, topic: str) -> dict[int, int]:
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=servers)
    try:
        ends = consumer.end_offsets([TopicPartition(topic, p) for p in range(TOPIC_PARTITIONS)])
    finally:
        consumer.close()
    return {tp.partition: off for tp, off in ends.items()}


def partition_store(store: Path, p: int) -> Path:
    return store / f"partition-{p:04d}"


def checkpoint_file(store: Path, topic: str, p: int) -> Path:
    return store / "checkpoints" / f"{topic}-{p:04d}.npz"


def reference_store(servers: str, topic: str, group: str, tmp_path: Path) -> Path:
    """The store of one uninterrupted run over everything in the topic."""
    ref = tmp_path / "reference"
    service, error = service_run(servers, topic, f"{group}-ref", ref)
    assert error is None
    return ref


@pytest.fixture
def first_run(kafka_servers, topic_factory, group_id, tmp_path):
    topic = topic_factory("corrupt", partitions=TOPIC_PARTITIONS)
    simulate_into(kafka_servers, topic, seed=1)
    store = tmp_path / "store"
    service, error = service_run(kafka_servers, topic, group_id, store)
    assert error is None and metric(service, "turbine_partition_state_errors_total") == 0
    assert all(checkpoint_file(store, topic, p).exists() for p in range(TOPIC_PARTITIONS))
    before = {p: stored_rows(partition_store(store, p)) for p in range(TOPIC_PARTITIONS)}
    assert before[VICTIM], "the victim partition must hold anomalies to lose"
    return kafka_servers, topic, group_id, store, before


UNRESTORABLE = [
    ("checkpoint", "truncated"),
    ("checkpoint", "garbled"),
    ("manifest", "truncated"),
    ("manifest", "garbled"),
    ("manifest", "deleted"),
]


@pytest.mark.kafka
@pytest.mark.parametrize(("target", "how"), UNRESTORABLE)
def test_unrestorable_state_pauses_that_partition_only(first_run, tmp_path, caplog, target, how):
    servers, topic, group, store, before = first_run
    victim = (
        checkpoint_file(store, topic, VICTIM)
        if target == "checkpoint"
        else partition_store(store, VICTIM) / MANIFEST
    )
    original = victim.read_bytes()
    CORRUPTIONS[how](victim)
    damaged = victim.read_bytes() if victim.exists() else None
    commits_before = committed(servers, topic, group)
    simulate_into(servers, topic, seed=2)  # more records, in every partition
    caplog.set_level(logging.INFO, logger="consumers.service")

    service, error = service_run(servers, topic, group, store)

    # Not consumed, and said so: an error naming the file, a metric, a non-zero exit.
    assert error is not None and str(victim) in str(error) and "\n" not in str(error)
    assert metric(service, "turbine_partition_state_errors_total") == 1
    logged = [r.getMessage() for r in caplog.records if "partition_state_error" in r.getMessage()]
    assert logged and f"file={victim}" in logged[0]
    # The victim: not a record consumed, not a byte of its state touched.
    assert committed(servers, topic, group)[VICTIM] == commits_before[VICTIM]
    assert (victim.read_bytes() if victim.exists() else None) == damaged
    if target == "checkpoint":
        assert stored_rows(partition_store(store, VICTIM)) == before[VICTIM]
    # The other partitions carried on to the end of the new records (none skipped).
    ends = end_offsets(servers, topic)
    for p in range(TOPIC_PARTITIONS):
        if p != VICTIM:
            assert committed(servers, topic, group)[p] == ends[p] > commits_before[p]
            assert stored_rows(partition_store(store, p))[: len(before[p])] == before[p]

    # Repaired (the file put back), the next run consumes the victim too: the
    # store is then exactly an uninterrupted run's: nothing skipped, nothing lost.
    victim.write_bytes(original)
    service, error = service_run(servers, topic, group, store)
    assert error is None and metric(service, "turbine_partition_state_errors_total") == 0
    assert committed(servers, topic, group) == ends
    ref = reference_store(servers, topic, group, tmp_path)
    for p in range(TOPIC_PARTITIONS):
        assert stored_rows(partition_store(store, p)) == stored_rows(partition_store(ref, p))


@pytest.mark.kafka
def test_a_lost_checkpoint_keeps_the_store_and_rebuilds_from_the_earliest_offset(
    first_run, tmp_path, caplog
):
    servers, topic, group, store, before = first_run
    delete(checkpoint_file(store, topic, VICTIM))  # its offsets stay committed
    simulate_into(servers, topic, seed=2)
    caplog.set_level(logging.INFO, logger="consumers.service")

    service, error = service_run(servers, topic, group, store)

    assert error is None
    assert metric(service, "turbine_partition_rebuilds_total") == 1
    assert metric(service, "turbine_partition_state_errors_total") == 0
    logged = [r.getMessage() for r in caplog.records if "state_rebuild" in r.getMessage()]
    assert len(logged) == 1 and "reason=checkpoint_lost" in logged[0]
    assert "from=earliest" in logged[0]
    after = stored_rows(partition_store(store, VICTIM))
    assert set(before[VICTIM]) <= set(after)  # no stored anomaly lost
    assert len(after) == len(set(after))  # none stored twice
    assert committed(servers, topic, group) == end_offsets(servers, topic)
    # The topic still holds the whole partition: the rebuilt models are the
    # lost ones, so the store and the new checkpoint are an uninterrupted run's.
    ref = reference_store(servers, topic, group, tmp_path)
    for p in range(TOPIC_PARTITIONS):
        assert stored_rows(partition_store(store, p)) == stored_rows(partition_store(ref, p))
        assert episode_ids(partition_store(store, p)) == episode_ids(partition_store(ref, p))
    assert episode_ids(partition_store(store, VICTIM))  # the victim's episodes, once each
    for p in range(TOPIC_PARTITIONS):
        with (
            np.load(checkpoint_file(store, topic, p)) as got,
            np.load(checkpoint_file(ref, topic, p)) as want,
        ):
            for key in ("det__turbine_counts", "det__turbine_m2", "det__group_m2"):
                np.testing.assert_array_equal(got[key], want[key])
    readings = [
        json.loads((partition_store(d, p) / MANIFEST).read_text())["readings"]
        for d in (store, ref)
        for p in range(TOPIC_PARTITIONS)
    ]
    assert readings[:TOPIC_PARTITIONS] == readings[TOPIC_PARTITIONS:]  # counted once


@pytest.mark.kafka
def test_a_store_never_checkpointed_is_started_afresh(first_run, tmp_path, caplog):
    """No checkpoint and no committed offset (a new group on an old store): reset is right."""
    servers, topic, group, store, before = first_run
    for p in range(TOPIC_PARTITIONS):
        delete(checkpoint_file(store, topic, p))
    caplog.set_level(logging.INFO, logger="consumers.service")
    service, error = service_run(servers, topic, f"{group}-new", store)
    assert error is None and metric(service, "turbine_partition_rebuilds_total") == 0
    assert any("reason=never_checkpointed" in r.getMessage() for r in caplog.records)
    for p in range(TOPIC_PARTITIONS):
        assert stored_rows(partition_store(store, p)) == before[p]  # rebuilt, not doubled


@pytest.mark.kafka
def test_records_polled_for_a_partition_without_state_are_read_again(
    kafka_servers, topic_factory, group_id, tmp_path
):
    """handle() for a partition without state: rewound, never dropped as the consumer moves on."""
    import time

    from prometheus_client import CollectorRegistry

    from consumers.service import DetectorService, ServiceSettings

    topic = topic_factory("nostate", partitions=1)
    simulate_into(kafka_servers, topic, seed=3)
    settings = ServiceSettings(
        bootstrap_servers=kafka_servers, topic=topic, group=group_id, store=tmp_path / "st"
    )
    service = DetectorService(settings, DetectorConfig(min_samples=30), CollectorRegistry())

    def first_records() -> list:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            polled = service._consumer.poll(timeout_ms=500)
            service.settle_partitions()
            for records in polled.values():
                if records:
                    return records
        raise AssertionError("no records polled in 60 s")

    service._consumer = service._make_consumer()
    try:
        records = first_records()
        assert records[0].offset == 0
        service.states.clear()  # the state is gone between the poll and handle()
        service.handle(0, records)
        again = first_records()
        assert again[0].offset == records[0].offset  # not skipped
        service.handle(0, again)
        assert service.states[0].next_offset == again[-1].offset + 1
    finally:
        service.close()


@pytest.mark.kafka
def test_turbine_detect_stop_after_idle_exits_2_naming_the_file(first_run):
    servers, topic, group, store, _ = first_run
    victim = checkpoint_file(store, topic, VICTIM)
    garble(victim)
    proc = turbine(
        "detect",
        "--bootstrap-servers",
        servers,
        "--topic",
        topic,
        "--group",
        group,
        "--store",
        store,
        "--anomalies-topic",
        f"{topic}.anomalies",
        "--dlq-topic",
        f"{topic}.dlq",
        "--min-samples",
        30,
        "--stop-after-idle",
        2,
        check=False,
        timeout=180,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert f"partition_state_error partition={VICTIM} file={victim}" in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("turbine: error: 1 partition(s) not consumed") and str(victim) in last


@pytest.mark.kafka
def test_a_paused_partition_shows_in_the_gauge_the_alert_reads(first_run):
    """turbine_partitions_paused (PartitionStateUnrestorable) while the detector runs."""
    import time

    from prometheus_client import CollectorRegistry

    from consumers.service import DetectorService, ServiceSettings

    servers, topic, group, store, _ = first_run
    truncate(partition_store(store, VICTIM) / MANIFEST)
    settings = ServiceSettings(bootstrap_servers=servers, topic=topic, group=group, store=store)
    service = DetectorService(settings, DetectorConfig(min_samples=30), CollectorRegistry())
    service._consumer = service._make_consumer()
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(service.states) + len(service.unrestored) < 3:
            service._consumer.poll(timeout_ms=500)
            service.settle_partitions()
        assert sorted(service.unrestored) == [VICTIM]
        assert metric(service, "turbine_partitions_paused") == 1
        assert metric(service, "turbine_partitions_owned") == TOPIC_PARTITIONS - 1
        assert service._consumer.paused() == {
            t for t in service._consumer.assignment() if t.partition == VICTIM
        }
    finally:
        service.close()
