"""The wire format: versions 1 and 2, and every way a record can be wrong (pure code)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pipeline.names import TurbineNames, turbine_id
from pipeline.wire import BINARY_TYPE, JSON_TYPE, BatchMeta, WireError, decode_batch, encode_batch

T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z


def binary(n: int = 4, names: TurbineNames | None = None, ids=None, ts=None) -> bytes:
    meta = BatchMeta(sensors=["a", "b"], producer_id="p", batch=3, group=1)
    ids = np.arange(n, dtype=np.int64) if ids is None else np.asarray(ids, dtype=np.int64)
    ts = T0 + np.arange(n, dtype=np.float64) if ts is None else np.asarray(ts, dtype=np.float64)
    return encode_batch(meta, ts, ids, np.ones((n, 2)), names=names)


def with_head(raw: bytes, head: bytes) -> bytes:
    mlen = int.from_bytes(raw[4:8], "little")
    return raw[:4] + len(head).to_bytes(4, "little") + head + raw[8 + mlen :]


def js(**fields) -> bytes:
    doc = {
        "schema_version": 1,
        "sensors": ["a", "b"],
        "timestamps": [T0, T0 + 1],
        "turbine_ids": [1, 2],
        "values": [[1.0, 2.0], [3.0, 4.0]],
        **fields,
    }
    return json.dumps(doc).encode()


def reason(value: bytes, ctype: str = BINARY_TYPE) -> str:
    with pytest.raises(WireError) as info:
        decode_batch(value, ctype)
    assert "\n" not in str(info.value)
    return info.value.reason


def test_version_1_records_keep_working():
    raw = binary()
    head = json.loads(raw[8 : 8 + int.from_bytes(raw[4:8], "little")])
    assert head["schema_version"] == 1 and "turbine_names" not in head
    b = decode_batch(raw, BINARY_TYPE)
    assert b.turbine_ids.tolist() == [0, 1, 2, 3] and len(b.names) == 0
    assert b.timestamps.tolist() == (T0 + np.arange(4)).tolist()


def test_version_2_carries_turbine_names_as_indices():
    names = TurbineNames()
    ids = names.ids_of(["R80711", "R80721", "7", "R80711"])
    raw = binary(names=names, ids=ids)
    head = json.loads(raw[8 : 8 + int.from_bytes(raw[4:8], "little")])
    assert head["schema_version"] == 2 and sorted(head["turbine_names"]) == [
        "7",
        "R80711",
        "R80721",
    ]
    column = np.frombuffer(raw[-(8 * 4 + 8 * 8 + 8 * 4) : -(8 * 8)], "<i8")[4:]
    assert column.max() < 3  # indices into the names, not the ids
    b = decode_batch(raw, BINARY_TYPE)
    assert b.turbine_ids.tolist() == ids.tolist()
    assert b.names.labels(b.turbine_ids) == ["R80711", "R80721", "7", "R80711"]
    assert b.meta.schema_version == 2


def test_version_2_index_outside_the_names_is_refused():
    names = TurbineNames()
    raw = binary(n=2, names=names, ids=names.ids_of(["A1", "B2"]))
    head = json.loads(raw[8 : 8 + int.from_bytes(raw[4:8], "little")])
    head["turbine_names"] = ["A1"]
    assert reason(with_head(raw, json.dumps(head).encode())) == "bad_turbine_id"
    head["turbine_names"] = ["A1", ""]
    assert reason(with_head(raw, json.dumps(head).encode())) == "bad_turbine_id"
    head["schema_version"], head["turbine_names"] = 1, ["A1", "B2"]
    assert reason(with_head(raw, json.dumps(head).encode())) == "bad_metadata"


@pytest.mark.parametrize("ctype", [BINARY_TYPE, JSON_TYPE])
def test_deep_nesting_and_huge_integers_are_refused_not_raised(ctype):
    deep = b"[" * 100_000 + b"]" * 100_000
    huge = b'{"sensors": ["a"], "batch": ' + b"9" * 5000 + b"}"
    for head in (deep, huge, b'{"sensors": ["a"], "site": ' + deep + b"}"):
        value = with_head(binary(), head) if ctype == BINARY_TYPE else head
        assert reason(value, ctype) in ("bad_metadata", "bad_json")


@pytest.mark.parametrize(
    ("labels", "expected"),
    [
        (["x", "y"], "bad_json"),
        ([[1], [0, 1]], "bad_json"),
        ([1], "shape_mismatch"),
        ("1", "shape_mismatch"),
    ],
)
def test_bad_json_labels_are_refused(labels, expected):
    assert reason(js(labels=labels), JSON_TYPE) == expected


def test_json_labels_and_null_values():
    b = decode_batch(js(labels=[0, True], values=[[1, None], [3.5, 4]]), JSON_TYPE)
    assert b.labels.tolist() == [0, 1] and np.isnan(b.values[0, 1]) and b.values[1, 0] == 3.5


@pytest.mark.parametrize("bad", [1e300, -1e300, float("nan"), float("inf"), -1.0, 7_258_118_400.0])
def test_binary_timestamps_outside_the_range_are_refused(bad):
    assert reason(binary(n=2, ts=[T0, bad])) == "bad_timestamp"


@pytest.mark.parametrize(
    "bad",
    ["1767226000", "NaT", {"t": 1}, [1], None, True, "2026-13-01T00:00:00Z", 10**400, "2260-01-01"],
)
def test_json_timestamps_must_be_numbers_or_iso_8601(bad):
    assert reason(js(timestamps=[T0, bad]), JSON_TYPE) == "bad_timestamp"


def test_json_iso_timestamps_are_utc_unless_offset():
    b = decode_batch(
        js(timestamps=["2026-01-01T00:00:00Z", "2026-01-01T01:00:00.250+01:00"]), JSON_TYPE
    )
    assert b.timestamps.tolist() == [T0, T0 + 0.25]
    assert decode_batch(
        js(timestamps=["2026-01-01 00:00:00", 1767225601]), JSON_TYPE
    ).timestamps.tolist() == [T0, T0 + 1]


def test_the_time_range_is_configurable():
    raw = binary(n=2, ts=[10.0, 20.0])
    assert decode_batch(raw, BINARY_TYPE).timestamps.tolist() == [10.0, 20.0]
    with pytest.raises(WireError, match="bad_timestamp"):
        decode_batch(raw, BINARY_TYPE, time_range=(15.0, 30.0))


@pytest.mark.parametrize("big", [2**53 + 1, 2**63 - 1, -(2**63)])
def test_json_ids_are_exact_integers(big):
    b = decode_batch(js(turbine_ids=[big, 1]), JSON_TYPE)
    assert b.turbine_ids.tolist() == [big, 1]


@pytest.mark.parametrize("bad", [1e30, 2**63, 7.0, True, None, [1], "7"])
def test_json_ids_that_are_not_int64_are_refused(bad):
    assert reason(js(turbine_ids=[bad, 1]), JSON_TYPE) == "bad_turbine_id"


def test_json_version_2_ids_may_be_names():
    b = decode_batch(js(schema_version=2, turbine_ids=["R80711", 12]), JSON_TYPE)
    assert b.turbine_ids.tolist() == [turbine_id("R80711"), 12]
    assert b.names.labels(b.turbine_ids) == ["R80711", "12"]
    assert reason(js(schema_version=2, turbine_ids=["", 12]), JSON_TYPE) == "bad_turbine_id"


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"values": [["1.5", 2.0], [3.0, 4.0]]}, "bad_json"),
        ({"values": [[True, 2.0], [3.0, 4.0]]}, "bad_json"),
        ({"values": [[10**400, 2.0], [3.0, 4.0]]}, "bad_json"),
        ({"values": [[1.0], [3.0, 4.0]]}, "shape_mismatch"),
        ({"values": [[1.0, 2.0]]}, "shape_mismatch"),
        ({"values": {"a": 1}}, "bad_json"),
        ({"batch": "5"}, "bad_metadata"),
        ({"batch": 5.0}, "bad_metadata"),
        ({"batch": 2**64}, "bad_metadata"),
        ({"producer_id": 7}, "bad_metadata"),
        ({"sensors": "ab"}, "bad_metadata"),
        ({"sensors": [f"s{i}" for i in range(4097)]}, "bad_metadata"),
        ({"schema_version": 3}, "unknown_schema_version"),
        ({"schema_version": "1"}, "unknown_schema_version"),
        ({"turbine_names": ["a", "b"]}, "bad_metadata"),
        ({"extra": 1}, "bad_metadata"),
    ],
)
def test_json_wrong_types_are_refused(fields, expected):
    assert reason(js(**fields), JSON_TYPE) == expected
