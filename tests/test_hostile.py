"""Hostile input: 10,000+ malformed records through the real broker, and fuzzed files."""

from __future__ import annotations

import dataclasses
import json
import resource
from collections import Counter

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.errors import InputError
from pipeline.recordings import RecordingSpec, read_recording
from pipeline.wire import BINARY_TYPE, JSON_TYPE, BatchMeta, WireError, decode_batch, encode_batch
from tests.cli_support import spawn
from tests.test_kafka import consume_all

BIN = [("content-type", BINARY_TYPE.encode())]
MAX_RECORD = 64 * 1024


def valid_record(batch: int, group: int, rng: np.random.Generator) -> bytes:
    n = 20
    meta = BatchMeta(
        sensors=["a", "b", "c"], producer_id="fuzz", batch=batch, sequence=batch, group=group
    )
    ids = np.full(n, group, dtype=np.int64) + 4 * np.arange(n) % 3 * 4
    return encode_batch(meta, 1e9 + batch + np.zeros(n), ids, rng.normal(size=(n, 3)))


def mutate(kind: str, good: bytes, rng: np.random.Generator) -> tuple[bytes | None, list]:
    """A record that is wrong in the way ``kind`` says (never accidentally valid)."""
    head = int.from_bytes(good[4:8], "little")
    meta = json.loads(good[8 : 8 + head])

    def with_meta(**changes) -> bytes:
        m = json.dumps({**meta, **changes}).encode()
        return good[:4] + len(m).to_bytes(4, "little") + m + good[8 + head :]

    if kind == "truncated":
        return good[: int(rng.integers(0, len(good) - 1))], BIN
    if kind == "wrong_shape":
        return with_meta(n=meta["n"] + int(rng.choice([-5, -1, 1, 7]))), BIN
    if kind == "wrong_dtype":  # values as float32: the byte count no longer fits the shape
        arr = np.frombuffer(good[8 + head + 16 * meta["n"] :], "<f8").astype("<f4")
        return good[: 8 + head + 16 * meta["n"]] + arr.tobytes(), BIN
    if kind == "nan_flood":
        vals = np.frombuffer(good[8 + head + 16 * meta["n"] :], "<f8").copy().reshape(-1, 3)
        vals[: int(len(vals) * 0.8)] = rng.choice([np.nan, np.inf, -np.inf])
        return good[: 8 + head + 16 * meta["n"]] + vals.tobytes(), BIN
    if kind == "absurd_size":
        return with_meta(n=int(rng.integers(10**9, 10**15))), BIN
    if kind == "schema_version":
        return with_meta(schema_version=int(rng.choice([0, 3, 99]))), BIN
    if kind == "bad_header":
        return good, [("content-type", bytes(rng.integers(128, 256, 6, dtype=np.uint8)))]
    if kind == "empty":
        return (b"" if rng.random() < 0.5 else None), BIN
    if kind == "garbage":
        junk = bytes(rng.integers(0, 256, int(rng.integers(1, 400)), dtype=np.uint8))
        return (b"XX" + junk if junk[:4] != b"TWB1" else b"XXXX" + junk), BIN
    if kind == "bad_json":
        return b'{"timestamps": [1, 2], "turbine_ids": [1], ' + junk_text(rng), [
            ("content-type", JSON_TYPE.encode())
        ]
    if kind == "too_large":
        return good + b"\0" * MAX_RECORD, BIN
    if kind == "bad_metadata":
        return good[:8] + b"[" * head + good[8 + head :], BIN
    raise ValueError(kind)


def junk_text(rng: np.random.Generator) -> bytes:
    return bytes(rng.integers(32, 127, int(rng.integers(0, 50)), dtype=np.uint8))


KINDS = [
    "truncated",
    "wrong_shape",
    "wrong_dtype",
    "nan_flood",
    "absurd_size",
    "schema_version",
    "bad_header",
    "empty",
    "garbage",
    "bad_json",
    "too_large",
    "bad_metadata",
    "duplicate",
]


@pytest.mark.kafka
@pytest.mark.slow
def test_ten_thousand_malformed_records(kafka_servers, topic_factory, group_id, tmp_path):
    from kafka import KafkaProducer

    topic = topic_factory("fuzz", partitions=2)
    rng = np.random.default_rng(1130)
    producer = KafkaProducer(
        bootstrap_servers=kafka_servers, linger_ms=20, max_request_size=1 << 21
    )
    sent_valid = {0: [], 1: []}
    malformed = Counter()
    next_batch = {0: 0, 1: 0}
    n_bad = 0
    while n_bad < 10_000:
        group = int(rng.integers(0, 2))
        key = f"group-{group}".encode()
        if rng.random() < 0.2 or not sent_valid[group]:
            value = valid_record(next_batch[group], group, rng)
            producer.send(topic, key=key, value=value, headers=BIN)
            sent_valid[group].append(value)
            next_batch[group] += 1
            continue
        kind = KINDS[int(rng.integers(len(KINDS)))]
        if kind == "duplicate":
            value, headers = sent_valid[group][int(rng.integers(len(sent_valid[group])))], BIN
        else:
            value, headers = mutate(kind, valid_record(10**6, group, rng), rng)
        producer.send(topic, key=key, value=value, headers=headers)
        malformed[kind] += 1
        n_bad += 1
    producer.flush()
    producer.close()
    n_valid = sum(len(v) for v in sent_valid.values())
    proc = spawn(
        "detect",
        "--bootstrap-servers",
        kafka_servers,
        "--topic",
        topic,
        "--group",
        group_id,
        "--store",
        str(tmp_path / "st"),
        "--anomalies-topic",
        f"{topic}.a",
        "--dlq-topic",
        f"{topic}.dlq",
        "--stop-after-idle",
        "4",
        "--max-record-bytes",
        str(MAX_RECORD),
        "--key-groups",
        "4",
        "--min-samples",
        "10",
    )
    _, err = proc.communicate(timeout=900)
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    assert proc.returncode == 0, err[-3000:]  # zero crashes
    assert "Traceback" not in err
    dlq = consume_all(kafka_servers, f"{topic}.dlq", timeout_s=10)
    reasons = Counter(dict(r.headers)["reason"].decode() for r in dlq)
    assert len(dlq) == n_bad, (len(dlq), n_bad, reasons)  # every malformed record, with a reason
    assert all(dict(r.headers)["reason"] for r in dlq)
    readings = sum(
        json.loads(p.read_text())["readings"]
        for p in (tmp_path / "st").glob("partition-*/manifest.json")
    )
    assert readings == 20 * n_valid  # every valid record processed
    assert usage.ru_maxrss < 600 * 1024, (
        f"peak RSS {usage.ru_maxrss / 1024:.0f} MB"
    )  # bounded (KiB)
    assert set(malformed) == set(KINDS)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.binary(max_size=2000), st.sampled_from([BINARY_TYPE, JSON_TYPE, None, "x/y"]))
def test_decoding_random_bytes_never_raises_anything_else(data, ctype):
    try:
        decode_batch(data, ctype, max_bytes=1500)
    except WireError as exc:
        assert exc.reason and "\n" not in str(exc)


VALID_CSV = "timestamp,turbine_id,a,b\n" + "".join(
    f"{i},{i % 3},{i * 0.5},{i % 7}\n" for i in range(60)
)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.data())
def test_fuzzed_csv_is_read_or_refused_with_a_located_line(tmp_path_factory, data):
    raw = bytearray(VALID_CSV.encode())
    for _ in range(data.draw(st.integers(1, 5))):
        op = data.draw(st.sampled_from(["flip", "cut", "insert"]))
        pos = data.draw(st.integers(0, max(0, len(raw) - 1)))
        if op == "flip" and raw:
            raw[pos] = data.draw(st.integers(0, 255))
        elif op == "cut":
            del raw[pos:]
        else:
            raw[pos:pos] = data.draw(st.binary(min_size=1, max_size=20))
    path = tmp_path_factory.mktemp("fuzz") / "f.csv"
    path.write_bytes(bytes(raw))
    try:
        with read_recording(path, RecordingSpec(chunk_rows=16, max_line_bytes=4096)) as rec:
            for chunk in rec:
                assert chunk.values.shape[0] == chunk.timestamps.shape[0]
    except InputError as exc:
        text = str(exc)
        assert text.startswith(f"{path}:") and "\n" not in text


def test_no_pickle_anywhere():
    from tests.conftest import REPO

    for folder in ("pipeline", "producers", "consumers"):
        for py in (REPO / folder).rglob("*.py"):
            src = py.read_text()
            assert "import pickle" not in src and "allow_pickle=True" not in src, py
            for line in src.splitlines():
                if "np.load(" in line:
                    assert "allow_pickle=False" in line, f"{py}: {line.strip()}"


def test_secrets_never_show_in_settings_or_logs(caplog):
    from producers.kafka_client import KafkaSettings

    s = KafkaSettings(
        sasl_mechanism="PLAIN",
        sasl_username="u",
        sasl_password="hunter2-secret",
        security_protocol="SASL_SSL",
        ssl_cafile="/etc/ca.pem",
    )
    assert "hunter2" not in repr(s) and "hunter2" not in str(s.model_dump())
    cfg = s.client_config()
    assert cfg["sasl_plain_password"] == "hunter2-secret" and cfg["security_protocol"] == "SASL_SSL"
    assert cfg["ssl_cafile"] == "/etc/ca.pem"


def test_settings_come_from_the_environment(monkeypatch):
    from consumers.service import ServiceSettings

    monkeypatch.setenv("TURBINE_SASL_PASSWORD", "from-env")
    monkeypatch.setenv("TURBINE_METRICS_ADDRESS", "0.0.0.0")  # noqa: S104
    s = ServiceSettings()
    assert s.sasl_password.get_secret_value() == "from-env" and s.metrics_address == "0.0.0.0"  # noqa: S104
    assert ServiceSettings(metrics_address="127.0.0.1").metrics_address == "127.0.0.1"


def test_container_runs_as_non_root():
    from tests.conftest import REPO

    lines = (REPO / "Dockerfile").read_text().splitlines()
    users = [ln.split()[1] for ln in lines if ln.startswith("USER ")]
    assert users and users[-1].split(":")[0] not in ("root", "0")


@pytest.mark.parametrize("bad", [1e300, -1e300, float("nan"), float("inf")])
def test_a_store_holding_a_bad_timestamp_still_lists(tmp_path, rng, bad):
    """Stores written before timestamps were validated: the bad row is flagged, not fatal."""
    from pipeline import Detector, DetectorConfig
    from pipeline.store import AnomalyStore
    from tests.cli_support import turbine

    cfg = DetectorConfig(min_samples=10, key_groups=1, per_turbine=False)
    det = Detector(cfg)
    det.learn(np.zeros(200), np.zeros(200, dtype=np.int64), rng.normal(size=(200, 2)))
    result = det.process(
        np.array([1.767e9, 1.767e9]), np.zeros(2, dtype=np.int64), np.full((2, 2), 50.0)
    )
    assert result.n_anomalies == 2
    result = dataclasses.replace(result, timestamps=np.array([1.767e9, bad]))
    store = AnomalyStore(tmp_path / "st", config=cfg)
    store.append(result)
    store.flush()
    for fmt in ("csv", "json"):
        out = turbine("anomalies", tmp_path / "st", "--format", fmt).stdout
        assert "invalid:" in out and str(np.datetime64(1_767_000_000, "s")) in out
