"""Data quirks: duplicates, steps back in time and sentinels, counted and never learned twice."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.config import DetectorConfig
from pipeline.errors import ConfigError
from pipeline.names import turbine_id
from pipeline.quirks import DUPLICATE, KEPT, OUT_OF_ORDER, Quirks, blank_sentinels, order_codes
from pipeline.recordings import Chunk, RecordingSpec, read_recording
from pipeline.runner import run_file
from pipeline.store import AnomalyStore
from tests.cli_support import turbine


def naive_codes(ts, ids):
    latest: dict[int, float] = {}
    out = []
    for t, i in zip(ts.tolist(), ids.tolist(), strict=True):
        last = latest.get(i)
        if last is None or t > last:
            out.append(KEPT)
            latest[i] = t
        else:
            out.append(DUPLICATE if t == last else OUT_OF_ORDER)
    return out


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("pieces", [1, 3, 17])
def test_order_codes_match_a_naive_scan_over_any_chunking(seed, pieces):
    rng = np.random.default_rng(seed)
    n = 400
    ts = np.cumsum(rng.integers(0, 3, size=n)).astype(float)
    ts[rng.random(n) < 0.05] -= 3.0
    ids = rng.integers(0, 5, size=n).astype(np.int64) - 2**40
    cuts = np.sort(rng.choice(np.arange(1, n), size=pieces - 1, replace=False))
    last_ids, last_times = np.zeros(0, np.int64), np.zeros(0)
    got = []
    for a, b in zip([0, *cuts.tolist()], [*cuts.tolist(), n], strict=True):
        codes, last_ids, last_times = order_codes(ts[a:b], ids[a:b], last_ids, last_times)
        got += codes.tolist()
    assert got == naive_codes(ts, ids)
    assert (OUT_OF_ORDER in got) and (DUPLICATE in got)
    for i, t in zip(last_ids.tolist(), last_times.tolist(), strict=True):
        assert t == ts[ids == i].max()


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.integers(-2, 2), st.integers(0, 6)), min_size=1, max_size=60),
    st.lists(st.integers(1, 59), max_size=5),
)
def test_order_codes_property(rows, cuts):
    ids = np.array([r[0] for r in rows], dtype=np.int64) * (1 << 40)
    ts = np.array([r[1] for r in rows], dtype=np.float64)
    bounds = sorted({0, len(rows), *(c for c in cuts if c < len(rows))})
    last_ids, last_times = np.zeros(0, np.int64), np.zeros(0)
    got: list[int] = []
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        codes, last_ids, last_times = order_codes(ts[a:b], ids[a:b], last_ids, last_times)
        got += codes.tolist()
    assert got == naive_codes(ts, ids)


def test_sentinels_blank_at_export_precision_only():
    v = np.array([[-273.20001, 1.0], [-273.2, -273.2], [-273.3, 2.0], [np.nan, 3.0]])
    out, counts = blank_sentinels(v, {0: (-273.2,)})
    assert counts.tolist() == [2, 0]
    np.testing.assert_array_equal(
        out, [[np.nan, 1.0], [np.nan, -273.2], [-273.3, 2.0], [np.nan, 3.0]]
    )
    assert v[0, 0] == -273.20001  # the input is not changed


def test_sentinels_name_sensors_or_columns():
    q = Quirks(("temp",), {"Ot_avg": (-1.0,)}, columns=("Ot_avg",))
    assert q.sentinels == {0: (-1.0,)}
    with pytest.raises(ConfigError, match="sentinels: no sensor 'rpm' \\(sensors: temp\\)"):
        Quirks(("temp",), {"rpm": (0.0,)})


def test_state_carries_the_latest_times_to_a_new_filter():
    c = Chunk(np.array([5.0, 6.0]), np.array([1, 2]), np.zeros((2, 1)), None, None, np.arange(2))
    first = Quirks(("a",))
    first.apply(c)
    second = Quirks(("a",))
    second.restore(first.state())
    assert len(second.apply(c)) == 0 and second.counts.duplicate == 2


QUIRKY = (
    "Wind_turbine_name,Date_time,Ot_avg,P_avg\n"
    + "".join(
        f"R{k},2014-01-01T{1 + i // 60:02d}:{i % 60:02d}:00+01:00,"
        f"{(i * 7 + k) % 11},{(i * 3) % 5}\n"
        for i in range(100)
        for k in (1, 2)
    )
    # an exact repeat, a repeat with other values, a step back, a sentinel
    + "R1,2014-01-01T02:39:00+01:00,1,2\n"
    + "R2,2014-01-01T01:39:00Z,5,5\n"
    + "R1,2014-01-01T02:00:00+01:00,3,3\n"
    + "R1,2014-01-01T02:40:00+01:00,-273.20001,1\n"
    + "R2,2014-01-01T02:40:00+01:00,4,4\n"
)
QUIRKY_SPEC = RecordingSpec(
    id_col="Wind_turbine_name",
    time_col="Date_time",
    sensors="Ot_avg=outdoor_temp,P_avg=power",
    sentinels={"outdoor_temp": -273.2},
)


def test_the_run_counts_quirks_and_learns_each_reading_once(tmp_path):
    path = tmp_path / "q.csv"
    path.write_text(QUIRKY)
    cfg = DetectorConfig(min_samples=1000, key_groups=1)
    report, det = run_file(path, QUIRKY_SPEC, cfg, store_dir=tmp_path / "st")
    q = report.quirks
    assert (q.duplicate, q.out_of_order, q.sentinel) == (2, 1, {"outdoor_temp": 1})
    assert report.readings == 202 and report.skipped == 1
    # Learned once each: 100 readings per turbine, plus R1's sentinel row skipped, R2's last.
    assert det.turbine_model(turbine_id("R1")).count == 100
    assert det.turbine_model(turbine_id("R2")).count == 101
    assert [n for _, n in det.names.items()] == ["R1", "R2"]
    assert [n for _, n in AnomalyStore(tmp_path / "st").names.items()] == ["R1", "R2"]


def test_detect_prints_the_quirks_and_a_sentinel_only_column_is_one_line(tmp_path):
    path = tmp_path / "q.csv"
    path.write_text(QUIRKY)
    opts = ["--id-col", "Wind_turbine_name", "--time-col", "Date_time"]
    out = turbine(
        "detect",
        "--input",
        path,
        "--store",
        tmp_path / "st",
        *opts,
        "--sensors",
        "Ot_avg=outdoor_temp,P_avg=power",
        "--sentinel",
        "outdoor_temp=-273.2",
    ).stdout
    assert "2 duplicate readings" in out and "1 out of order" in out
    assert "1 sentinel values read as missing (outdoor_temp: 1)" in out
    only = tmp_path / "only.csv"
    only.write_text("timestamp,turbine_id,a,b\n" + "".join(f"{i},1,{i},-1\n" for i in range(50)))
    proc = turbine(
        "detect", "--input", only, "--store", tmp_path / "st2", "--sentinel", "b=-1", check=False
    )
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    assert "sensor 'b': every reading is empty or the sentinel -1" in proc.stderr
    assert not (tmp_path / "st2").exists()


def test_the_configuration_reads_the_file_and_options_override_it(tmp_path):
    path = tmp_path / "q.csv"
    path.write_text(QUIRKY)
    cfg = tmp_path / "farm.toml"
    cfg.write_text(
        "min_samples = 40\n[recording]\nid_col = 'Wind_turbine_name'\ntime_col = 'Date_time'\n"
        "sensors = {Ot_avg = 'outdoor_temp', P_avg = 'power'}\n"
        "sentinels = {outdoor_temp = [-273.2]}\n"
    )
    out = turbine("detect", "--input", path, "--store", tmp_path / "st", "--config", cfg).stdout
    assert "(outdoor_temp: 1)" in out
    assert AnomalyStore(tmp_path / "st").sensors == ("outdoor_temp", "power")
    opts = ["detect", "--input", path, "--config", cfg]
    turbine(*opts, "--store", tmp_path / "st2", "--sensors", "P_avg=power,Ot_avg=outdoor_temp")
    assert AnomalyStore(tmp_path / "st2").sensors == ("power", "outdoor_temp")
    proc = turbine(*opts, "--store", tmp_path / "st3", "--sensors", "P_avg", check=False)
    assert proc.returncode == 2
    assert proc.stderr == "turbine: error: sentinels: no sensor 'outdoor_temp' (sensors: P_avg)\n"
    with pytest.raises(AssertionError, match="options: sensors: name 'P_avg' given twice"):
        turbine("detect", "--input", path, "--store", tmp_path / "st3", "--sensors", "P_avg,P_avg")


def test_anomalies_by_turbine_name(tmp_path):
    lines = ["Wind_turbine_name,Date_time,a,b"]
    for i in range(300):
        for name in ("R80711", "R80721"):
            a, b = (i % 7, (i * 3) % 5) if i != 250 or name == "R80711" else (60, -60)
            lines.append(f"{name},{1_400_000_000 + 600 * i},{a},{b}")
    path = tmp_path / "n.csv"
    path.write_text("\n".join(lines) + "\n")
    turbine(
        "detect",
        "--input",
        path,
        "--store",
        tmp_path / "st",
        "--id-col",
        "Wind_turbine_name",
        "--time-col",
        "Date_time",
        "--min-samples",
        "50",
    )
    rows = json.loads(
        turbine("anomalies", tmp_path / "st", "--format", "json", "--turbine", "R80721").stdout
    )
    assert rows and {r["turbine"] for r in rows} == {"R80721"}
    assert {r["turbine_id"] for r in rows} == {turbine_id("R80721")}
    assert any(r["timestamp"] == 1_400_000_000 + 600 * 250 for r in rows)
    csv_rows = turbine("anomalies", tmp_path / "st").stdout.splitlines()
    header = csv_rows[0].split(",")
    assert header[3:5] == ["turbine_id", "turbine"]
    assert {r.split(",")[4] for r in csv_rows[1:]} <= {"R80711", "R80721"}
    none = turbine("anomalies", tmp_path / "st", "--turbine", "R99999").stdout.splitlines()
    assert len(none) == 1


def test_lhb_quirks_as_found(lhb_csv):
    spec = RecordingSpec(
        id_col="Wind_turbine_name",
        time_col="Date_time",
        sensors="Ba_avg=pitch,P_avg=power,Ws_avg=wind_speed,Ot_avg=outdoor_temp",
        sentinels={"outdoor_temp": [-273.2]},
    )
    with read_recording(lhb_csv, spec) as rec:
        q = Quirks.for_spec(spec, rec.sensors)
        kept = sum(len(c) for c in q.filter(rec))
    # 12 UTC times (the spring clock changes) at which every turbine has two rows.
    assert (q.counts.duplicate, q.counts.out_of_order) == (48, 0)
    assert q.counts.sentinel == {"outdoor_temp": 33}
    assert kept == 420_480 - 48
