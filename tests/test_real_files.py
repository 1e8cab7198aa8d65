"""Real files as they come: turbine names, chosen and renamed sensors, UTC offsets."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.errors import InputError
from pipeline.names import turbine_id
from pipeline.recordings import Chunk, RecordingSpec, RecordingWriter, read_recording
from pipeline.recordings.isotime import TimeFormatError, parse_times

SCADA = RecordingSpec(
    id_col="Wind_turbine_name",
    time_col="Date_time",
    sensors="Ba_avg=pitch,P_avg=power",
)


def read_all(path, spec=None):
    with read_recording(path, spec) as rec:
        return rec, Chunk.concat(list(rec))


def scada_csv(tmp_path, rows):
    path = tmp_path / "scada.csv"
    header = "Wind_turbine_name,Date_time,Ba_avg,P_avg,Va_avg,Note\n"
    path.write_text(header + "".join(r + "\n" for r in rows))
    return path


@pytest.mark.parametrize(
    ("cell", "expected"),
    [
        ("2014-01-01T01:00:00+01:00", 1_388_534_400.0),
        ("2014-01-01T00:00:00Z", 1_388_534_400.0),
        ("2014-01-01T00:00:00", 1_388_534_400.0),
        ("2014-06-01T02:00:00+02:00", 1_401_580_800.0),
        ("2014-05-31T19:30:00-0430", 1_401_580_800.0),
        ("2014-01-01 00:10", 1_388_535_000.0),
        ("2014-01-01", 1_388_534_400.0),
    ],
)
def test_iso_times_honour_their_offsets(cell, expected):
    assert parse_times([cell]).tolist() == [expected]


def test_autumn_clock_change_is_one_hour_apart_in_utc():
    # 02:30 summer time and 02:30 winter time on 2014-10-26: 3600 s apart.
    ts = parse_times(["2014-10-26T02:30:00+02:00", "2014-10-26T02:30:00+01:00"])
    assert np.diff(ts).tolist() == [3600.0]


def test_bad_time_names_its_position():
    with pytest.raises(TimeFormatError) as info:
        parse_times(["2014-01-01T00:00:00Z", "2014-01-01T00:00:00Z", "yesterday"])
    assert info.value.index == 2 and info.value.cell == "yesterday"


def test_names_chosen_columns_renames_and_empty_cells(tmp_path):
    path = scada_csv(
        tmp_path,
        [
            "R80711,2014-01-01T01:00:00+01:00,-1.0,642.5,0.6,ok",
            "R80721,2014-01-01T01:00:00+01:00,,,,",
            "R80711,2014-01-01T01:10:00+01:00,-0.5,600.0,0.1,",
            "7,2014-01-01T01:10:00+01:00,2.0,10.0,0.2,x",
            "7.0,2014-01-01T01:20:00+01:00,2.0,10.0,0.2,x",
        ],
    )
    rec, chunk = read_all(path, SCADA)
    assert rec.sensors == ("pitch", "power")
    assert rec.ignored == ["Va_avg", "Note"]
    ids = [turbine_id("R80711"), turbine_id("R80721"), turbine_id("R80711"), 7, 7]
    assert chunk.turbine_ids.tolist() == ids
    assert chunk.turbine_ids.dtype == np.int64
    assert rec.names.labels(chunk.turbine_ids) == ["R80711", "R80721", "R80711", "7", "7"]
    np.testing.assert_array_equal(
        chunk.values, [[-1.0, 642.5], [np.nan, np.nan], [-0.5, 600.0], [2.0, 10.0], [2.0, 10.0]]
    )
    assert chunk.timestamps.tolist() == [1_388_534_400.0] * 2 + [1_388_535_000.0] * 2 + [
        1_388_535_600.0
    ]


def test_names_in_a_later_chunk_after_integer_ids(tmp_path):
    rows = [f"{i % 3},2014-01-01T00:{i:02d}:00Z,1,2,3,a" for i in range(10)]
    rows += ["R80790,2014-01-01T00:10:00Z,1,2,3,a"]
    spec = RecordingSpec(**{**SCADA.model_dump(), "chunk_rows": 4})
    rec, chunk = read_all(scada_csv(tmp_path, rows), spec)
    assert chunk.turbine_ids.tolist() == [i % 3 for i in range(10)] + [turbine_id("R80790")]
    assert rec.names.name_of(turbine_id("R80790")) == "R80790"


@pytest.mark.parametrize(
    ("rows", "spec", "message"),
    [
        (["R1,2014-01-01T00:00:00Z,1,2,3,a"], {"sensors": "Nope"}, "--sensors: no column 'Nope'"),
        (["R1,2014-01-01T00:00:00Z,1,2,3,a"], {"sensors": "Date_time"}, "is the time, id"),
        (
            ["1.5,2014-01-01T00:00:00Z,1,2,3,a", "R1,2014-01-01T00:00:00Z,1,2,3,a"],
            {},
            ":2: column 'Wind_turbine_name': turbine id '1.5' is not an integer",
        ),
        (
            ["R1,2014-01-01T00:00:00Z,1,2,3,a", ",2014-01-01T00:00:00Z,1,2,3,a"],
            {},
            ":3: column 'Wind_turbine_name': empty turbine id",
        ),
        (
            ["R1,2014-01-01T00:00:00+01:00,1,2,3,a", "R1,2014-13-01T00:00:00+01:00,1,2,3,a"],
            {},
            ":3: column 'Date_time': unreadable timestamp",
        ),
        (["R1,2014-01-01T00:00:00Z,1,x7,3,a"], {}, ":2: column 'P_avg': not a number: 'x7'"),
    ],
)
def test_bad_cells_are_one_located_line(tmp_path, rows, spec, message):
    with pytest.raises(InputError) as info:
        read_all(scada_csv(tmp_path, rows), RecordingSpec(**{**SCADA.model_dump(), **spec}))
    assert message in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("suffix", [".csv", ".npz"])
def test_names_round_trip_through_both_formats(tmp_path, suffix):
    src = scada_csv(
        tmp_path,
        [
            "R80711,2014-01-01T01:00:00+01:00,-1.0,642.5,0.6,ok",
            "R80721,2014-01-01T01:00:00+01:00,0.25,1.5,0.6,ok",
            "12,2014-01-01T01:00:00+01:00,0.5,2.5,0.6,ok",
        ],
    )
    rec, chunk = read_all(src, SCADA)
    out = tmp_path / f"out{suffix}"
    with RecordingWriter(out, rec.sensors, names=rec.names) as w:
        w.write(chunk)
    back_rec, back = read_all(out)
    np.testing.assert_array_equal(back.turbine_ids, chunk.turbine_ids)
    np.testing.assert_array_equal(back.values, chunk.values)
    np.testing.assert_array_equal(back.timestamps, chunk.timestamps)
    assert back_rec.names.labels(back.turbine_ids) == ["R80711", "R80721", "12"]
    if suffix == ".csv":
        assert out.read_text().splitlines()[1].split(",")[1] == "R80711"


def test_npz_sensors_chosen_and_renamed(tmp_path, rng):
    out = tmp_path / "r.npz"
    chunk = Chunk(
        np.arange(4.0), np.zeros(4, np.int64), rng.normal(size=(4, 3)), None, None, np.arange(4)
    )
    with RecordingWriter(out, ("a", "b", "c")) as w:
        w.write(chunk)
    rec, back = read_all(out, RecordingSpec(sensors="c=z,a"))
    assert rec.sensors == ("z", "a") and rec.ignored == ["b"]
    np.testing.assert_array_equal(back.values, chunk.values[:, [2, 0]])


def test_lhb_file_reads_as_it_is(lhb_csv):
    spec = RecordingSpec(
        id_col="Wind_turbine_name",
        time_col="Date_time",
        sensors="Ba_avg=pitch,P_avg=power,Ws_avg=wind_speed,Ot_avg=outdoor_temp",
    )
    rec, chunk = read_all(lhb_csv, spec)
    assert len(chunk) == 420_480
    assert [name for _, name in rec.names.items()] == ["R80711", "R80721", "R80736", "R80790"]
    # 2014-01-01T01:00:00+01:00 .. 2016-01-01T00:50:00+01:00, in UTC.
    assert chunk.timestamps[0] == 1_388_534_400.0 and chunk.timestamps[-1] == 1_451_605_800.0
    assert np.unique(chunk.timestamps).size == 105_108
    assert not (np.diff(chunk.timestamps) < 0).any()
    assert int(np.isnan(chunk.values).any(axis=1).sum()) == 2_569


def test_names_reach_the_model_the_store_and_the_report(tmp_path):
    pytest.importorskip("matplotlib")
    from pipeline.detector import Detector
    from pipeline.store import AnomalyStore
    from tests.cli_support import turbine

    lines = ["Wind_turbine_name,Date_time,Ba_avg,P_avg,Ot_avg"]
    for i in range(300):
        for k, name in enumerate(("R80711", "R80721")):
            a, b = (i % 7, (i * 3 + k) % 5) if (i, name) != (250, "R80721") else (60, -60)
            stamp = np.datetime64(1_400_000_000 + 600 * i + 7200, "s")
            lines.append(f"{name},{stamp}+02:00,{a},{b},{-273.2 if i == 5 else i % 3}")
    lines.append(lines[-1])  # a duplicate row
    src = tmp_path / "n.csv"
    src.write_text("\n".join(lines) + "\n")
    cfg = tmp_path / "farm.toml"
    cfg.write_text(
        "min_samples = 50\n[recording]\nid_col = 'Wind_turbine_name'\ntime_col = 'Date_time'\n"
        "sensors = ['Ba_avg=pitch', 'P_avg=power', 'Ot_avg=outdoor_temp']\n"
        "sentinels = {Ot_avg = -273.2}\nattribution = 'Test farm data, CC0'\n"
    )
    out = turbine("detect", "--input", src, "--store", tmp_path / "st", "--config", cfg).stdout
    assert out.startswith("data: Test farm data, CC0\n")
    with np.load(tmp_path / "st" / "model.npz") as f:
        model = Detector.from_state(dict(f))
    assert [n for _, n in model.names.items()] == ["R80711", "R80721"]
    assert [n for _, n in AnomalyStore(tmp_path / "st").names.items()] == ["R80711", "R80721"]
    # The report reads the input with the store's [recording] table: no options needed.
    turbine("report", "--store", tmp_path / "st", "--output", tmp_path / "rep", "--input", src)
    page = (tmp_path / "rep" / "index.html").read_text()
    assert "<td>R80721</td>" in page and "turbine names</th><td>R80711, R80721" in page
    assert "1 duplicate readings dropped" in page and "outdoor_temp 2" in page
    assert "warning: re-scoring" not in page
    assert "<p class='note'>Data: Test farm data, CC0</p>" in page


def test_the_shipped_configuration_names_the_lhb_columns(lhb_csv):
    import tomllib

    from pipeline.quirks import Quirks
    from tests.conftest import REPO

    raw = tomllib.loads((REPO / "deploy" / "configs" / "la-haute-borne.toml").read_text())
    spec = RecordingSpec.model_validate(raw["recording"])
    assert "Open Licence 2.0" in (spec.attribution or "")
    with read_recording(lhb_csv, spec) as rec:
        quirks = Quirks.for_spec(spec, rec.sensors)
        n = sum(len(c) for c in quirks.filter(rec))
        assert rec.sensors == ("pitch", "power", "wind_speed", "wind_vs_fleet", "outdoor_temp")
    assert n == 420_480 - 48 and quirks.counts.sentinel == {"outdoor_temp": 33}
