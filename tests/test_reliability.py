"""Reliability against the real broker: codecs, undecodable records, huge dead letters,
replays by content, idle flush, turbine names on the wire (issue 13 and issue 12)."""

from __future__ import annotations

import hashlib
import json
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from pipeline import DetectorConfig
from pipeline.names import TurbineNames
from pipeline.store import read_anomalies
from pipeline.wire import BINARY_TYPE, JSON_TYPE, BatchMeta, encode_batch
from tests.cli_support import spawn, turbine
from tests.test_kafka import consume_all, detect, kcat_path, rows

pytestmark = pytest.mark.kafka
BIN = [("content-type", BINARY_TYPE.encode())]
CODECS = ("gzip", "lz4", "zstd", "snappy")


def json_batch(batch: int, n: int = 20, turbine: int = 7, seed: int = 0) -> str:
    rng = np.random.default_rng(seed + batch)
    return json.dumps(
        {
            "schema_version": 1,
            "sensors": ["temp", "rpm"],
            "batch": batch,
            "producer_id": "kcat",
            "timestamps": [1_767_225_600 + batch * n + i for i in range(n)],
            "turbine_ids": [turbine] * n,
            "values": rng.normal(size=(n, 2)).tolist(),
        }
    )


def kcat_send(kcat: str, servers: str, topic: str, line: str, *extra: str | bytes) -> None:
    subprocess.run(
        [kcat, "-P", "-b", servers, "-t", topic, "-k", "group-7", *extra],
        input=(line + "\n").encode(),
        check=True,
        timeout=30,
    )


def readings_stored(store: Path) -> int:
    return sum(
        json.loads(p.read_text())["readings"] for p in store.glob("partition-*/manifest.json")
    )


def dead_letters(servers: str, topic: str) -> dict[int, dict[str, bytes]]:
    return {
        int(dict(r.headers)["source-offset"]): {**dict(r.headers), "value": r.value}
        for r in consume_all(servers, topic, timeout_s=8)
    }


def test_every_codec_from_kcat_and_an_undecodable_record_skipped_by_offset(
    kafka_servers, topic_factory, group_id, tmp_path
):
    kcat = kcat_path()
    topic = topic_factory("codec", partitions=1)
    ctype = f"content-type={JSON_TYPE}"
    for b, codec in enumerate(CODECS):
        kcat_send(kcat, kafka_servers, topic, json_batch(b), "-z", codec, "-H", ctype)
    # offset 4: a header key that is not UTF-8 (kafka-python cannot unpack the batch)
    kcat_send(kcat, kafka_servers, topic, json_batch(10), "-H", ctype, "-H", b"\xff\xfe=x")
    kcat_send(kcat, kafka_servers, topic, json_batch(4), "-z", "lz4", "-H", ctype)
    proc = detect(kafka_servers, topic, group_id, tmp_path / "st", "--key-groups", 12)
    assert "Traceback" not in proc.stderr
    assert readings_stored(tmp_path / "st") == 5 * 20  # every codec read, nothing after lost
    dlq = dead_letters(kafka_servers, f"{topic}.dlq")
    assert set(dlq) == {4}
    assert dlq[4]["reason"] == b"undecodable" and dlq[4]["source-topic"] == topic.encode()
    assert dlq[4]["source-partition"] == b"0"


def topic_bytes(servers: str, topic: str) -> int:
    """Bytes the broker holds for ``topic`` (compressed as written)."""
    from kafka import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=servers)
    try:
        found = admin.describe_log_dirs(topic_partitions=[topic])
    finally:
        admin.close()
    return sum(
        part["partition_size"]
        for broker in found
        for log_dir in broker["log_dirs"]
        for t in log_dir["topics"]
        if t["name"] == topic
        for part in t["partitions"]
    )


@pytest.mark.parametrize("codec", CODECS)
def test_producers_write_every_codec(kafka_servers, topic_factory, group_id, tmp_path, codec):
    sim = ["--turbines", 6, "--steps", 300, "--seed", 3]
    turbine("simulate", *sim, "--output", tmp_path / "f.npz")
    sizes = {}
    for how in ("none", codec):
        topic = topic_factory(f"w{how}", partitions=2)
        turbine(
            "replay",
            tmp_path / "f.npz",
            "--bootstrap-servers",
            kafka_servers,
            "--topic",
            topic,
            "--quiet",
            env={"TURBINE_COMPRESSION_TYPE": how},
        )
        sizes[how] = topic_bytes(kafka_servers, topic)
    assert 0 < sizes[codec] < 0.9 * sizes["none"], sizes  # written compressed
    detect(kafka_servers, topic, group_id, tmp_path / "st", "--min-samples", 20)
    assert readings_stored(tmp_path / "st") == 6 * 300


def test_a_dead_letter_too_large_for_its_topic_is_cut_with_size_and_hash(
    kafka_servers, topic_factory, group_id, tmp_path
):
    from kafka import KafkaProducer

    topic = topic_factory("huge", partitions=1)
    huge = b"TWB1" + b"\0" * (20 << 20)  # 20 MiB, a few KiB once compressed
    producer = KafkaProducer(
        bootstrap_servers=kafka_servers, compression_type="gzip", max_request_size=64 << 20
    )
    producer.send(topic, key=b"group-0", value=huge, headers=BIN).get(30)
    meta = BatchMeta(sensors=["a"], producer_id="p", batch=1)
    good = encode_batch(meta, 1.767e9 + np.arange(5.0), np.zeros(5, np.int64), np.ones((5, 1)))
    producer.send(topic, key=b"group-0", value=good, headers=BIN).get(30)
    producer.close()
    proc = detect(kafka_servers, topic, group_id, tmp_path / "st")
    assert "Traceback" not in proc.stderr
    dlq = dead_letters(kafka_servers, f"{topic}.dlq")
    assert set(dlq) == {0} and dlq[0]["reason"] == b"too_large"
    assert dlq[0]["truncated"] == b"true" and dlq[0]["original-size"] == str(len(huge)).encode()
    assert dlq[0]["original-blake2b"] == hashlib.blake2b(huge, digest_size=32).hexdigest().encode()
    assert dlq[0]["value"] == huge[: len(dlq[0]["value"])] and len(dlq[0]["value"]) <= 1_000_000
    assert readings_stored(tmp_path / "st") == 5


def test_replays_are_deduplicated_by_content_not_by_file_name(
    kafka_servers, topic_factory, group_id, tmp_path
):
    topic = topic_factory("days", partitions=2)
    for day in ("day1", "day2"):
        (tmp_path / day).mkdir()
    sim = ["--turbines", 4, "--steps", 200, "--seed", 1]
    turbine("simulate", *sim, "--output", tmp_path / "day1" / "fleet.npz")
    with np.load(tmp_path / "day1" / "fleet.npz", allow_pickle=False) as f:
        arrays = {k: f[k] for k in f.files}
    arrays["timestamp"] = arrays["timestamp"] + 86_400.0  # the next day, same turbines
    np.savez(tmp_path / "day2" / "fleet.npz", **arrays)
    for path in (
        tmp_path / "day1" / "fleet.npz",
        tmp_path / "day2" / "fleet.npz",  # another file, the same name: a new stream
        tmp_path / "day1" / "fleet.npz",  # the same file again: all duplicates
    ):
        turbine("replay", path, "--bootstrap-servers", kafka_servers, "--topic", topic, "--quiet")
    detect(kafka_servers, topic, group_id, tmp_path / "st", "--min-samples", 20)
    assert readings_stored(tmp_path / "st") == 2 * 4 * 200
    reasons = {d["reason"] for d in dead_letters(kafka_servers, f"{topic}.dlq").values()}
    assert reasons == {b"duplicate"}


def test_pending_anomalies_reach_the_store_while_idle(
    kafka_servers, topic_factory, group_id, tmp_path
):
    topic = topic_factory("idle", partitions=1)
    sim = ["--turbines", 10, "--steps", 600, "--seed", 8]
    turbine("simulate", *sim, "--output", tmp_path / "f.npz", "--write-config", tmp_path / "c.json")
    turbine(
        "detect",
        "--input",
        tmp_path / "f.npz",
        "--config",
        tmp_path / "c.json",
        "--store",
        tmp_path / "ref",
    )
    want = rows(read_anomalies(tmp_path / "ref"))
    assert len(want) > 5
    turbine(
        "replay",
        tmp_path / "f.npz",
        "--bootstrap-servers",
        kafka_servers,
        "--topic",
        topic,
        "--quiet",
    )
    store = tmp_path / "st"
    proc = spawn(
        "detect",
        "--bootstrap-servers",
        kafka_servers,
        "--topic",
        topic,
        "--group",
        group_id,
        "--store",
        store,
        "--anomalies-topic",
        f"{topic}.a",
        "--dlq-topic",
        f"{topic}.d",
        "--config",
        tmp_path / "c.json",
        "--checkpoint-every-seconds",
        1,  # the burst's checkpoints come before the store's flush is due
        env={"TURBINE_STORE_FLUSH_SECONDS": "8"},
    )
    try:
        deadline = time.monotonic() + 60
        got: list = []
        while time.monotonic() < deadline and got != want:
            time.sleep(1)
            if (store / "partition-0000" / "manifest.json").exists():
                got = rows(read_anomalies(store))
        assert proc.poll() is None  # still running: no shutdown flushed them
        assert got == want
    finally:
        proc.terminate()
        proc.communicate(timeout=60)


def test_named_turbines_travel_in_version_2(kafka_servers, topic_factory, group_id, tmp_path):
    from consumers.checkpoint import CheckpointDir
    from consumers.service import DetectorService, ServiceSettings
    from pipeline.recordings import Chunk
    from producers.kafka_client import KafkaSettings
    from producers.publisher import BatchPublisher

    topic = topic_factory("names", partitions=2)
    names = TurbineNames()
    fleet = names.ids_of(["R80711", "R80721", "R80736", "R80790", "12"])
    rng = np.random.default_rng(12)
    settings = KafkaSettings(bootstrap_servers=kafka_servers)
    steps = 200
    with BatchPublisher(settings, topic, ("a", "b"), 12, "named", names=names) as pub:
        for b in range(steps // 10):
            ts = 1.767e9 + np.repeat(np.arange(b * 10, b * 10 + 10.0), fleet.size)
            ids = np.tile(fleet, 10)
            values = rng.normal(size=(ids.size, 2))
            values[ids == fleet[0]] += 9.0 * (b == steps // 10 - 1)  # R80711 breaks at the end
            pub.publish(b, Chunk(ts, ids, values, None, None, np.arange(ids.size)))
    v1 = BatchMeta(sensors=["a", "b"], producer_id="plain", batch=0, group=3)
    from kafka import KafkaProducer

    raw = KafkaProducer(bootstrap_servers=kafka_servers)
    raw.send(
        topic,
        key=b"group-3",
        value=encode_batch(v1, 1.7671e9 + np.zeros(2), np.array([3, 15]), np.zeros((2, 2))),
        headers=[*BIN, ("schema-version", b"1")],
    ).get(30)
    raw.close()
    store = tmp_path / "st"
    service = DetectorService(
        ServiceSettings(
            bootstrap_servers=kafka_servers,
            topic=topic,
            group=group_id,
            store=store,
            anomalies_topic=f"{topic}.a",
            dlq_topic=f"{topic}.d",
            stop_after_idle=3,
        ),
        DetectorConfig(min_samples=40),
    )
    assert service.run() == 0
    assert readings_stored(store) == steps * fleet.size + 2  # version 1 still read
    anomalies = read_anomalies(store)
    assert int(fleet[0]) in anomalies.turbine_ids.tolist()
    events = [json.loads(e.value) for e in consume_all(kafka_servers, f"{topic}.a")]
    named = [e for e in events if e["turbine_id"] == int(fleet[0])]
    assert named and all(e["turbine"] == "R80711" for e in named)
    assert all(e["turbine"] == e["turbine_id"] for e in events if e["turbine_id"] >= 0)
    labels = {
        s.labels["turbine"]
        for m in service.registry.collect()
        if m.name == "turbine_anomalies"
        for s in m.samples
    }
    assert "R80711" in labels
    checkpoints = CheckpointDir(store / "checkpoints", topic)
    saved = TurbineNames()
    for p in (0, 1):
        cp = checkpoints.load(p)
        if cp is not None:
            saved.merge(TurbineNames.from_state(cp.detector_state))
    assert sorted(n for _, n in saved.items()) == ["R80711", "R80721", "R80736", "R80790"]
    assert dead_letters(kafka_servers, f"{topic}.d") == {}


def test_json_ids_stay_exact_through_the_broker(kafka_servers, topic_factory, group_id, tmp_path):
    from kafka import KafkaProducer

    topic = topic_factory("ids", partitions=1)
    big = 2**53 + 1  # float64 would make it 2**53
    rng = np.random.default_rng(5)
    producer = KafkaProducer(bootstrap_servers=kafka_servers)
    for b in range(4):
        values = rng.normal(size=(20, 2))
        if b == 3:
            values[-1] = [40.0, -40.0]
        doc = {
            "schema_version": 1,
            "sensors": ["a", "b"],
            "batch": b,
            "timestamps": [1_767_225_600 + 20 * b + i for i in range(20)],
            "turbine_ids": [big] * 20,
            "values": values.tolist(),
        }
        headers = [("content-type", JSON_TYPE.encode())]
        producer.send(topic, key=b"group-0", value=json.dumps(doc).encode(), headers=headers)
    producer.flush()
    producer.close()
    detect(kafka_servers, topic, group_id, tmp_path / "st", "--min-samples", 20)
    anomalies = read_anomalies(tmp_path / "st")
    assert len(anomalies) >= 1 and set(anomalies.turbine_ids.tolist()) == {big}


@pytest.mark.parametrize(
    "bad",
    [
        (b"[" * 100_000 + b"]" * 100_000, BIN),  # nested 100,000 deep (binary metadata)
        (
            b'{"sensors": ["a"], "batch": ' + b"9" * 5000 + b"}",
            [("content-type", b"application/json")],
        ),
        (
            json.dumps(
                {
                    "sensors": ["a"],
                    "timestamps": [1.767e9],
                    "turbine_ids": [0],
                    "values": [[1.0]],
                    "labels": ["x"],
                }
            ).encode(),
            [("content-type", b"application/json")],
        ),
    ],
)
def test_a_record_after_accepted_ones_in_one_poll_never_loses_them(
    kafka_servers, topic_factory, group_id, tmp_path, bad
):
    """D1: batch 30 of three key groups, then a hostile record, all in one poll: the three are
    scored (never claimed by a checkpoint unscored), the hostile one dead-lettered."""
    from kafka import KafkaProducer

    topic = topic_factory("d1", partitions=1)
    producer = KafkaProducer(bootstrap_servers=kafka_servers, max_request_size=1 << 21)
    for g in range(3):
        meta = BatchMeta(sensors=["a"], producer_id="p", batch=30, group=g)
        ids = np.full(10, g, dtype=np.int64)
        value = encode_batch(meta, 1.767e9 + np.arange(10.0), ids, np.ones((10, 1)))
        producer.send(topic, key=f"group-{g}".encode(), value=value, headers=BIN)
    value, headers = bad
    if value[:1] == b"[":  # as binary metadata
        value = b"TWB1" + len(value).to_bytes(4, "little") + value
    producer.send(topic, key=b"group-0", value=value, headers=headers)
    producer.flush()
    producer.close()
    proc = detect(kafka_servers, topic, group_id, tmp_path / "st", "--key-groups", 3)
    assert "Traceback" not in proc.stderr
    assert readings_stored(tmp_path / "st") == 30
    dlq = dead_letters(kafka_servers, f"{topic}.dlq")
    assert set(dlq) == {3}
    assert dlq[3]["reason"] in (b"bad_metadata", b"bad_json")


def test_dead_letters_at_the_end_of_the_stream_are_checkpointed_while_running(
    kafka_servers, topic_factory, group_id, tmp_path
):
    """A poll that only dead-letters (a replay's duplicates at the tail) still moves
    the checkpoint on: the position must not wait for the next scored batch, which may
    never come (found by tests/test_outage.py when a producer re-sent its last records)."""
    from consumers.checkpoint import CheckpointDir

    kcat = kcat_path()
    ctype = f"content-type={JSON_TYPE}"
    topic = topic_factory("tail", partitions=1)
    for b in range(3):
        kcat_send(kcat, kafka_servers, topic, json_batch(b), "-H", ctype)
    store = tmp_path / "st"
    proc = spawn(
        "detect", "--bootstrap-servers", kafka_servers, "--topic", topic, "--group", group_id,
        "--store", store, "--anomalies-topic", f"{topic}.a", "--dlq-topic", f"{topic}.d",
        "--checkpoint-every-seconds", 1,
    )  # fmt: skip
    checkpoints = CheckpointDir(store / "checkpoints", topic)

    def offset() -> int | None:
        return checkpoints.load(0).offset if checkpoints.path(0).exists() else None

    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and offset() != 3:
            time.sleep(0.5)
        assert offset() == 3, proc.poll() or "no checkpoint of the three batches"
        for b in range(3):  # the same batches again: duplicates, all dead-lettered
            kcat_send(kcat, kafka_servers, topic, json_batch(b), "-H", ctype)
        kcat_send(kcat, kafka_servers, topic, "not json", "-H", ctype)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and offset() != 7:
            time.sleep(0.5)
        assert proc.poll() is None
        assert offset() == 7, "the checkpoint stayed before the dead-lettered tail"
    finally:
        proc.terminate()
        err = proc.communicate(timeout=60)[1]
    assert "Traceback" not in err
    dlq = dead_letters(kafka_servers, f"{topic}.d")
    assert sorted(dlq) == [3, 4, 5, 6]
    assert [dlq[o]["reason"] for o in (3, 4, 5)] == [b"duplicate"] * 3
