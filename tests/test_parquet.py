"""Parquet recordings: read as CSV is (columns, options, names), written, chosen by content."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from pipeline.errors import InputError
from pipeline.inject import Fault, FaultPlan
from pipeline.recordings import (
    Chunk,
    RecordingSpec,
    RecordingWriter,
    read_recording,
    recording_format,
)
from pipeline.recordings.injected import inject_file
from tests.cli_support import turbine

CSV = (
    "Date_time,Wind_turbine_name,Ba_avg,P_avg,Note,label,fault_kind\n"
    "2014-01-01T01:00:00+01:00,R80711,-1.0,642.5,a,0,\n"
    "2014-01-01T01:00:00+01:00,R80721,,441.0,b,1,gain\n"
    "2014-06-01T02:10:00+02:00,R80711,0.5,-273.20001,c,0,\n"
    "2014-06-01T00:20:00Z,7,1.5,12.0,d,1,stuck\n"
)
SPEC = RecordingSpec(
    id_col="Wind_turbine_name",
    time_col="Date_time",
    sensors="Ba_avg=pitch,P_avg=power",
    sentinels={"power": -273.2},
)


def chunks(path: Path, spec: RecordingSpec) -> tuple[Chunk, list[tuple[int, str]], tuple]:
    with read_recording(path, spec) as rec:
        return Chunk.concat(list(rec)), rec.names.items(), rec.sensors


def assert_same_readings(a: Chunk, b: Chunk) -> None:
    for name in ("timestamps", "turbine_ids", "values", "labels", "kinds"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)


def to_parquet(table: pa.Table, path: Path, row_group_size: int = 2) -> Path:
    pq.write_table(table, path, row_group_size=row_group_size)
    return path


def csv_table(path: Path) -> pa.Table:
    """The CSV read by pyarrow as another tool would (times stay strings)."""
    opts = pacsv.ConvertOptions(column_types={"Date_time": pa.string()})
    return pacsv.read_csv(path, convert_options=opts)


@pytest.fixture
def farm_csv(tmp_path: Path) -> Path:
    path = tmp_path / "farm.csv"
    path.write_text(CSV)
    return path


def test_parquet_reads_as_the_csv_with_the_same_options(farm_csv: Path, tmp_path: Path) -> None:
    want, names, sensors = chunks(farm_csv, SPEC)
    path = to_parquet(csv_table(farm_csv), tmp_path / "farm.parquet")
    got, got_names, got_sensors = chunks(path, SPEC)
    assert got_sensors == sensors == ("pitch", "power")
    assert got_names == names and len(names) == 2
    assert_same_readings(got, want)
    assert got.lines.tolist() == [0, 1, 2, 3]  # rows, 0-based, as in .npz files


def test_time_as_a_timestamp_type_and_ids_as_integers(farm_csv: Path, tmp_path: Path) -> None:
    want, _, _ = chunks(farm_csv, SPEC)
    table = csv_table(farm_csv)
    stamps = pa.array((want.timestamps * 1000).astype(np.int64), pa.timestamp("ms", tz="UTC"))
    table = table.set_column(0, "Date_time", stamps)
    path = to_parquet(table, tmp_path / "typed.parquet")
    got, _, _ = chunks(path, SPEC)
    np.testing.assert_array_equal(got.timestamps, want.timestamps)
    ids = pa.table(
        {"timestamp": [1.0, 2.0], "turbine_id": pa.array([3, 4], pa.int16()), "x": [0.5, None]}
    )
    got, names, sensors = chunks(to_parquet(ids, tmp_path / "ints.parquet"), RecordingSpec())
    assert got.turbine_ids.tolist() == [3, 4] and names == [] and sensors == ("x",)
    assert np.isnan(got.values[1, 0])


def test_writer_round_trip_keeps_names_labels_and_kinds(farm_csv: Path, tmp_path: Path) -> None:
    want, names, sensors = chunks(farm_csv, SPEC)
    with read_recording(farm_csv, SPEC) as rec:
        out = tmp_path / "copy.parquet"
        with RecordingWriter(out, rec.sensors, labels=True, kinds=True, names=rec.names) as w:
            for chunk in rec:
                w.write(chunk)
    assert pq.ParquetFile(out).schema_arrow.names == [
        "timestamp",
        "turbine_id",
        "pitch",
        "power",
        "label",
        "fault_kind",
    ]
    got, got_names, got_sensors = chunks(out, RecordingSpec())
    assert got_sensors == sensors and got_names == names
    assert_same_readings(got, want)


def test_format_is_chosen_by_content_as_well_as_by_extension(
    farm_csv: Path, tmp_path: Path
) -> None:
    disguised = to_parquet(csv_table(farm_csv), tmp_path / "farm.csv.bak")
    assert recording_format(disguised) == "parquet"
    assert recording_format(farm_csv) == "csv"
    got, _, _ = chunks(disguised, SPEC)
    assert len(got) == 4
    fake = tmp_path / "fake.parquet"
    fake.write_text("timestamp,x\n1,2\n")
    assert recording_format(fake) == "parquet"
    with pytest.raises(InputError, match=r"^\S*fake\.parquet: not a readable Parquet file") as exc:
        chunks(fake, RecordingSpec())
    assert "\n" not in str(exc.value)


def test_a_truncated_or_bad_parquet_file_is_a_one_line_error(
    farm_csv: Path, tmp_path: Path
) -> None:
    good = to_parquet(csv_table(farm_csv), tmp_path / "good.parquet").read_bytes()
    cut = tmp_path / "cut.parquet"
    cut.write_bytes(good[: len(good) // 2])
    with pytest.raises(InputError, match="cut.parquet: not a readable Parquet file") as exc:
        chunks(cut, SPEC)
    assert "\n" not in str(exc.value)
    table = csv_table(farm_csv).set_column(
        0, "Date_time", pa.array(["2014-01-01T00:00Z", "", "soon", "2014-01-02"])
    )
    with pytest.raises(InputError, match=r"bad.parquet:1: column 'Date_time': missing timestamp"):
        chunks(to_parquet(table, tmp_path / "bad.parquet"), SPEC)
    with pytest.raises(InputError, match="--sensors: no column 'Ws_avg'"):
        chunks(tmp_path / "good.parquet", SPEC.model_copy(update={"sensors": (("Ws_avg", "w"),)}))


def test_inject_writes_a_parquet_copy(farm_csv: Path, tmp_path: Path) -> None:
    plan = FaultPlan(
        faults=(
            Fault(
                kind="offset",
                turbine="R80711",
                start=1388534400,
                duration=10**8,
                size=2.0,
                sensor="pitch",
            ),
        )
    )
    out = tmp_path / "faulty.parquet"
    report = inject_file(farm_csv, out, SPEC, plan)
    assert report.rows == 4 and report.labelled == 2
    got, names, _ = chunks(out, RecordingSpec())
    assert [n for _, n in names] == ["R80711", "R80721"]
    np.testing.assert_array_equal(got.values[:, 0], [1.0, np.nan, 2.5, 1.5])
    assert got.kinds.tolist() == ["offset", "gain", "offset", "stuck"]


def test_csv_to_parquet_gives_the_same_anomalies_from_detect(tmp_path: Path) -> None:
    csv = tmp_path / "fleet.csv"
    turbine(
        "simulate",
        "--turbines",
        8,
        "--steps",
        400,
        "--seed",
        3,
        "--output",
        csv,
        "--write-config",
        tmp_path / "cal.json",
    )
    table = pacsv.read_csv(csv)
    # Another tool's Parquet: times as a timestamp type, ids as text, small row groups.
    micros = pa.array(
        np.round(table.column("timestamp").to_numpy() * 1e6).astype(np.int64),
        pa.timestamp("us", tz="UTC"),
    )
    table = table.set_column(0, "timestamp", micros)
    ids = pa.compute.cast(table.column("turbine_id"), pa.string())
    table = table.set_column(1, "turbine_id", ids)
    parquet = to_parquet(table, tmp_path / "fleet.bin", row_group_size=500)
    listings = []
    for name, path in (("csv", csv), ("parquet", parquet)):
        store = tmp_path / f"store-{name}"
        out = turbine(
            "detect", "--input", path, "--config", tmp_path / "cal.json", "--store", store
        ).stdout
        assert "3,200 readings scored" in out
        listings.append(turbine("anomalies", store, "--format", "csv").stdout)
    assert listings[0].count("\n") > 1
    assert listings[0] == listings[1]
    scores = [
        turbine(
            "evaluate", "--input", path, "--config", tmp_path / "cal.json", "--format", "json"
        ).stdout
        for path in (csv, parquet)
    ]
    assert '"precision"' in scores[0] and scores[0] == scores[1]


def test_la_haute_borne_as_parquet_reads_as_its_csv(lhb_csv: Path, tmp_path: Path) -> None:
    from pipeline.config import load_config

    spec = load_config(Path("deploy/configs/la-haute-borne.toml")).recording
    assert spec is not None
    table = pacsv.read_csv(lhb_csv)  # pyarrow makes Date_time a timestamp[s, tz=UTC]
    assert pa.types.is_timestamp(table.schema.field("Date_time").type)
    path = to_parquet(table, tmp_path / "lhb.parquet", row_group_size=50_000)
    want, names, sensors = chunks(lhb_csv, spec)
    got, got_names, got_sensors = chunks(path, spec)
    assert (got_names, got_sensors) == (names, sensors) and len(got) == 420_480
    assert_same_readings(got, want)
