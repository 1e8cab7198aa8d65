"""The Kafka path against a real broker: producers, the detector service, dead letters, kcat."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from consumers.events import EVENTS_TYPE, read_events
from pipeline.store import read_anomalies
from pipeline.wire import BINARY_TYPE, JSON_TYPE, BatchMeta, encode_batch
from tests.cli_support import spawn, turbine
from tests.conftest import IN_CI, REPO

pytestmark = pytest.mark.kafka
SKAB_OPTS = [
    "--sep",
    ";",
    "--time-col",
    "datetime",
    "--label-col",
    "anomaly",
    "--drop-col",
    "changepoint",
]


def detect(
    servers: str, topic: str, group: str, store: Path, *extra: object
) -> subprocess.CompletedProcess:
    return turbine(
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
        "--store",
        store,
        "--stop-after-idle",
        3,
        *extra,
    )


def rows(anomalies) -> list[tuple[float, int, float]]:
    return sorted(
        zip(
            anomalies.timestamps.tolist(),
            anomalies.turbine_ids.tolist(),
            anomalies.distances.tolist(),
            strict=True,
        )
    )


def consume_all(servers: str, topic: str, timeout_s: float = 15.0) -> list:
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=servers,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
        consumer_timeout_ms=int(timeout_s * 1000),
    )
    try:
        return list(consumer)
    finally:
        consumer.close()


def test_simulate_through_kafka_stores_what_the_embedded_run_stores(
    kafka_servers, topic_factory, group_id, tmp_path
):
    topic = topic_factory("readings", partitions=6)
    # one start for both (a stream starts at the current time by default)
    sim = ["--turbines", 30, "--steps", 1500, "--seed", 21, "--start", "2026-01-01T00:00:00Z"]
    turbine(
        "simulate", *sim, "--output", tmp_path / "f.npz", "--write-config", tmp_path / "cal.json"
    )
    turbine(
        "detect",
        "--input",
        tmp_path / "f.npz",
        "--config",
        tmp_path / "cal.json",
        "--store",
        tmp_path / "embedded",
    )
    turbine("simulate", *sim, "--bootstrap-servers", kafka_servers, "--topic", topic, "--quiet")
    detect(kafka_servers, topic, group_id, tmp_path / "kafka", "--config", tmp_path / "cal.json")
    embedded, kafka = read_anomalies(tmp_path / "embedded"), read_anomalies(tmp_path / "kafka")
    assert len(embedded) > 50
    assert rows(kafka) == rows(embedded)
    np.testing.assert_allclose(kafka.contributions.sum(axis=1), kafka.distances, rtol=1e-8)
    events = consume_all(kafka_servers, f"{topic}.anomalies")
    assert len(events) == len(kafka)
    ids = {json.loads(e.value)["event_id"] for e in events}
    assert len(ids) == len(events)  # deterministic, unique ids
    # Events are keyed by turbine, in the partition kafka-python's own
    # partitioner picks for that key (the detector memoises it).
    assert all(e.key == str(json.loads(e.value)["turbine_id"]).encode() for e in events)
    assert_default_partitions(kafka_servers, f"{topic}.anomalies", events)


def test_batched_event_records_carry_the_same_events_in_their_keys_partitions(
    kafka_servers, topic_factory, tmp_path
):
    topic = topic_factory("readings", partitions=3)
    sim = ["--turbines", 20, "--steps", 800, "--seed", 5, "--start", "2026-01-01T00:00:00Z"]
    turbine("simulate", *sim, "--bootstrap-servers", kafka_servers, "--topic", topic, "--quiet")
    runs = {}
    for shape in ("anomaly", "batch"):
        out = f"{topic}.{shape}"
        detect(
            kafka_servers,
            topic,
            f"g-{shape}-{os.getpid()}",
            tmp_path / shape,
            "--anomalies-topic",
            out,
            "--event-records",
            shape,
        )
        runs[shape] = consume_all(kafka_servers, out)

    def events(records: list) -> list[dict]:
        return [
            {k: v for k, v in e.items() if k != "detected_at"} | {"partition": r.partition}
            for r in records
            for e in read_events(r.value, dict(r.headers)["content-type"].decode())
        ]

    one, many = events(runs["anomaly"]), events(runs["batch"])
    assert len(one) > 30
    key = lambda e: e["event_id"]  # noqa: E731
    assert sorted(many, key=key) == sorted(one, key=key)  # the same events, same partitions
    assert len(runs["batch"]) < len(runs["anomaly"]) / 3
    for r in runs["batch"]:
        headers = dict(r.headers)
        inside = read_events(r.value, EVENTS_TYPE)
        assert r.key is None and int(headers["event-count"]) == len(inside)
        assert headers["first-event-id"].decode() == inside[0]["event_id"]
        assert headers["last-event-id"].decode() == inside[-1]["event_id"]
    # a turbine's events keep their order inside the batched stream
    for shape, records in runs.items():
        seq = [e for e in events(records)]
        per = {}
        for e in seq:
            per.setdefault(e["turbine_id"], []).append(e["timestamp"])
        assert all(ts == sorted(ts) for ts in per.values()), shape


def assert_default_partitions(servers: str, topic: str, events: list) -> None:
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=servers)
    try:
        keys = sorted({e.key for e in events})
        futures = {key: producer.send(topic, key=key, value=b"probe") for key in keys}
        expected = {key: f.get(timeout=30).partition for key, f in futures.items()}
    finally:
        producer.close()
    assert len(set(expected.values())) > 1
    assert {(e.key, e.partition) for e in events} == set(expected.items())


def test_skab_replay_gives_the_embedded_evaluation(
    kafka_servers, topic_factory, group_id, tmp_path, skab_dir
):
    topic = topic_factory("skab", partitions=2)
    path = skab_dir / "valve1" / "4.csv"
    chart = ["--chart", "mewma", "--mewma-lambda", 0.2]
    embedded = json.loads(
        turbine("evaluate", "--input", path, *SKAB_OPTS, *chart, "--format", "json").stdout
    )
    turbine(
        "replay",
        path,
        *SKAB_OPTS,
        "--bootstrap-servers",
        kafka_servers,
        "--topic",
        topic,
        "--quiet",
    )
    detect(kafka_servers, topic, group_id, tmp_path / "kafka", *chart)
    via_kafka = json.loads(
        turbine(
            "evaluate",
            "--input",
            path,
            *SKAB_OPTS,
            "--store",
            tmp_path / "kafka",
            "--format",
            "json",
        ).stdout
    )
    for key in ("tp", "fp", "fn", "tn", "f1", "far", "mar"):
        assert via_kafka[key] == embedded[key], key
    assert embedded["tp"] > 0


def test_record_replay_record_gives_the_same_readings(kafka_servers, topic_factory, tmp_path):
    first, second = topic_factory("rec1", partitions=3), topic_factory("rec2", partitions=3)
    turbine(
        "simulate",
        "--turbines",
        7,
        "--steps",
        300,
        "--seed",
        5,
        "--start",
        "2026-01-01T00:00:00Z",  # the file's default start (a stream's is the current time)
        "--bootstrap-servers",
        kafka_servers,
        "--topic",
        first,
        "--quiet",
    )
    turbine(
        "record",
        "--bootstrap-servers",
        kafka_servers,
        "--topic",
        first,
        "--output",
        tmp_path / "a.npz",
    )
    turbine(
        "replay",
        tmp_path / "a.npz",
        "--bootstrap-servers",
        kafka_servers,
        "--topic",
        second,
        "--quiet",
    )
    turbine(
        "record",
        "--bootstrap-servers",
        kafka_servers,
        "--topic",
        second,
        "--output",
        tmp_path / "b.npz",
    )
    turbine(
        "simulate", "--turbines", 7, "--steps", 300, "--seed", 5, "--output", tmp_path / "orig.npz"
    )
    with (
        np.load(tmp_path / "a.npz") as a,
        np.load(tmp_path / "b.npz") as b,
        np.load(tmp_path / "orig.npz") as o,
    ):
        for key in ("timestamp", "turbine_id", "values", "label", "fault_code", "fault_kinds"):
            np.testing.assert_array_equal(a[key], b[key])
            np.testing.assert_array_equal(a[key], o[key])


def _valid(batch: int, sensors=("a", "b"), n=40, seed=0, group=0, producer="p1"):
    rng = np.random.default_rng(seed + batch)
    meta = BatchMeta(
        sensors=list(sensors), producer_id=producer, batch=batch, sequence=batch, group=group
    )
    ts = 1000.0 + batch * 10 + np.repeat(np.arange(10.0), n // 10)
    ids = np.tile(np.arange(n // 10), 10) * 2 + group  # turbines of key group `group` (mod 2)
    return encode_batch(meta, ts, ids, rng.normal(size=(n, len(sensors))))


def malformed_records() -> list[tuple[str, bytes, list[tuple[str, bytes]]]]:
    """(expected reason, value, headers) of every kind of bad record."""
    ctype = [("content-type", BINARY_TYPE.encode())]
    good = _valid(99)
    head_len = int.from_bytes(good[4:8], "little")
    meta = json.loads(good[8 : 8 + head_len])

    def with_meta(**changes):
        m = json.dumps({**meta, **changes}).encode()
        return good[:4] + len(m).to_bytes(4, "little") + m + good[8 + head_len :]

    nan_values = _valid(98)
    arr = np.frombuffer(nan_values, dtype=np.uint8).copy()
    start = 8 + int.from_bytes(nan_values[4:8], "little") + 16 * 40
    arr[start : start + 8 * 80] = np.frombuffer(np.full(80, np.nan).tobytes(), np.uint8)
    return [
        ("too_large", good + b"\0" * 70_000, ctype),
        ("shape_mismatch", with_meta(n=41), ctype),
        ("truncated", good[:6], ctype),
        ("bad_magic", b"XXXX" + good[4:], ctype),
        ("unknown_schema_version", with_meta(schema_version=3), ctype),
        ("unknown_schema_version", good, [*ctype, ("schema-version", b"7")]),
        ("bad_metadata", good[:8] + b"{not json" + good[17:], ctype),
        ("sensor_mismatch", _valid(97, sensors=("a", "b", "c")), ctype),
        ("nan_flood", arr.tobytes(), ctype),
        ("bad_json", b'{"timestamps": [1,', [("content-type", JSON_TYPE.encode())]),
        ("bad_header", good, [("content-type", b"\xff\xfe")]),
        ("empty", b"", ctype),
        ("unknown_content_type", good, [("content-type", b"text/plain")]),
    ]


def test_malformed_records_go_to_the_dead_letter_topic(
    kafka_servers, topic_factory, group_id, tmp_path
):
    from kafka import KafkaProducer

    topic = topic_factory("hostile", partitions=1)
    producer = KafkaProducer(bootstrap_servers=kafka_servers, max_request_size=1 << 21)
    expected: dict[int, str] = {}
    valid = 0
    offset = 0
    bad = malformed_records()
    for i in range(30):  # valid batches with a bad record after each of the first ones
        producer.send(
            topic, key=b"group-0", value=_valid(i), headers=[("content-type", BINARY_TYPE.encode())]
        ).get(10)
        offset += 1
        valid += 40
        if i < len(bad):
            reason, value, headers = bad[i]
            producer.send(topic, key=b"group-0", value=value, headers=headers).get(10)
            expected[offset] = reason
            offset += 1
    producer.send(
        topic, key=b"group-0", value=_valid(5), headers=[("content-type", BINARY_TYPE.encode())]
    ).get(10)
    expected[offset] = "duplicate"
    producer.close()
    detect(
        kafka_servers,
        topic,
        group_id,
        tmp_path / "st",
        "--max-record-bytes",
        65536,
        "--min-samples",
        20,
    )
    dlq = consume_all(kafka_servers, f"{topic}.dlq")
    got = {}
    for rec in dlq:
        h = {k: v for k, v in rec.headers}
        got[int(h["source-offset"])] = h["reason"].decode()
    assert got == expected
    manifests = [
        json.loads(p.read_text()) for p in (tmp_path / "st").glob("partition-*/manifest.json")
    ]
    assert sum(m["readings"] for m in manifests) == valid
    # the original bytes are kept
    by_offset = {int(dict(r.headers)["source-offset"]): r.value for r in dlq}
    assert by_offset[min(expected)] == bad[0][1]


def kcat_path() -> str:
    found = shutil.which("kcat")
    if found:
        return found
    if os.geteuid() == 0:
        subprocess.run(
            ["bash", str(REPO / "deploy" / "kafka" / "install-kcat.sh")],
            check=False,
            capture_output=True,
        )
        found = shutil.which("kcat")
        if found:
            return found
    if IN_CI:
        pytest.fail("kcat is not installed (deploy/kafka/install-kcat.sh)")
    pytest.skip("kcat is not installed (deploy/kafka/install-kcat.sh)")


def test_kcat_json_batch_is_processed_and_events_read_back(
    kafka_servers, topic_factory, group_id, tmp_path
):
    kcat = kcat_path()
    topic = topic_factory("kcat", partitions=1)
    rng = np.random.default_rng(3)
    normal = rng.normal(size=(60, 2))
    lines = []
    for b in range(3):
        part = normal[b * 20 : (b + 1) * 20]
        lines.append(
            json.dumps(
                {
                    "schema_version": 1,
                    "sensors": ["temp", "rpm"],
                    "batch": b,
                    "timestamps": [f"2026-01-01T00:00:{b * 20 + i:02d}Z" for i in range(20)],
                    "turbine_ids": [7] * 20,
                    "values": part.tolist(),
                }
            )
        )
    lines.append(
        json.dumps(
            {
                "schema_version": 1,
                "sensors": ["temp", "rpm"],
                "batch": 3,
                "timestamps": [1767225700.0],
                "turbine_ids": [7],
                "values": [[40.0, -40.0]],
            }
        )
    )
    subprocess.run(
        [
            kcat,
            "-P",
            "-b",
            kafka_servers,
            "-t",
            topic,
            "-k",
            "group-7",
            "-H",
            f"content-type={JSON_TYPE}",
        ],
        input="\n".join(lines) + "\n",
        text=True,
        check=True,
        timeout=30,
    )
    detect(kafka_servers, topic, group_id, tmp_path / "st", "--min-samples", 20, "--key-groups", 12)
    anomalies = read_anomalies(tmp_path / "st")
    assert 1767225700.0 in anomalies.timestamps.tolist()
    out = subprocess.run(
        [kcat, "-C", "-b", kafka_servers, "-t", f"{topic}.anomalies", "-e", "-q"],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout
    events = [json.loads(line) for line in out.splitlines() if line.strip()]
    assert (
        events
        and events[-1]["turbine_id"] == 7
        and events[-1]["distance2"] > events[-1]["threshold"]
    )
    assert {"event_id", "time", "top_sensors", "threshold"} <= events[-1].keys()


def test_detector_waits_for_a_broker_that_is_not_there_yet(tmp_path):
    """Broker unreachable at start: retry with backoff, log clearly, then give up cleanly."""
    from tests.kafka_support import free_port

    port = free_port()
    start = time.monotonic()
    proc = turbine(
        "detect",
        "--bootstrap-servers",
        f"127.0.0.1:{port}",
        "--store",
        tmp_path / "st",
        "--stop-after-idle",
        1,
        check=False,
        timeout=120,
        env={"TURBINE_CONNECT_TIMEOUT_S": "6"},
    )
    assert proc.returncode == 2
    assert "broker_unreachable" in proc.stderr and "no Kafka broker answered" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert time.monotonic() - start >= 5


def test_producer_flushes_and_exits_cleanly_on_sigterm(kafka_servers, topic_factory, tmp_path):
    topic = topic_factory("sig", partitions=3)
    turbine(
        "simulate", "--turbines", 10, "--steps", 600, "--seed", 2, "--output", tmp_path / "f.npz"
    )
    proc = spawn(
        "replay",
        tmp_path / "f.npz",
        "--bootstrap-servers",
        kafka_servers,
        "--topic",
        topic,
        "--speed",
        20,
        "--batch-steps",
        1,
        "--quiet",
    )
    time.sleep(6)
    proc.send_signal(15)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    line = next(ln for ln in err.splitlines() if "stopped by signal" in ln)
    sent_records = int(line.split(" in ")[1].split(" records")[0].replace(",", ""))
    acked = int(line.split(", ")[1].split(" acknowledged")[0].replace(",", ""))
    assert 0 < sent_records == acked
    assert len(consume_all(kafka_servers, topic, timeout_s=5)) == sent_records


def test_detector_sigterm_checkpoints_commits_and_exits_0(
    kafka_servers, topic_factory, group_id, tmp_path
):
    from kafka import KafkaConsumer, TopicPartition

    from consumers.checkpoint import CheckpointDir

    topic = topic_factory("term", partitions=2)
    turbine(
        "simulate",
        "--turbines",
        10,
        "--steps",
        400,
        "--seed",
        4,
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
        f"{topic}.anomalies",
        "--dlq-topic",
        f"{topic}.dlq",
    )
    probe = KafkaConsumer(bootstrap_servers=kafka_servers)
    ends = probe.end_offsets([TopicPartition(topic, p) for p in (0, 1)])
    probe.close()
    used = [tp.partition for tp, end in ends.items() if end > 0]
    deadline = time.monotonic() + 90
    checkpoints = CheckpointDir(store / "checkpoints", topic)
    while time.monotonic() < deadline and not all(checkpoints.path(p).exists() for p in used):
        time.sleep(0.5)
    time.sleep(2)
    proc.send_signal(15)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err[-2000:]
    consumer = KafkaConsumer(
        bootstrap_servers=kafka_servers, group_id=group_id, enable_auto_commit=False
    )
    try:
        for tp in (TopicPartition(topic, p) for p in used):
            cp = checkpoints.load(tp.partition)
            assert cp is not None and cp.offset == ends[tp]
            assert consumer.committed(tp) == cp.offset  # committed == checkpoint, never ahead
    finally:
        consumer.close()
    assert (
        sum(json.loads(p.read_text())["readings"] for p in store.glob("partition-*/manifest.json"))
        == 4000
    )
