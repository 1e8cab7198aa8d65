"""Recorded files: formats, chunking, round trips, and one-line located errors."""

from __future__ import annotations

import zipfile

import numpy as np
import pytest

from pipeline.errors import InputError
from pipeline.recordings import Chunk, RecordingSpec, RecordingWriter, read_recording

SKAB = RecordingSpec(sep=";", time_col="datetime", label_col="anomaly", drop_cols=("changepoint",))


def read_all(path, spec=None):
    with read_recording(path, spec) as rec:
        chunks = list(rec)
        return rec, Chunk.concat(chunks), chunks


def sample_chunk(rng, n=50, d=3, kinds=True):
    return Chunk(
        timestamps=1_767_225_600.0 + np.repeat(np.arange(n // 5, dtype=float), 5) * 0.25,
        turbine_ids=np.tile(np.arange(5, dtype=np.int64), n // 5),
        values=rng.normal(size=(n, d)) * 1e3,
        labels=(rng.random(n) < 0.2).astype(np.int8),
        kinds=np.where(rng.random(n) < 0.2, "spike", "") if kinds else None,
        lines=np.arange(n),
    )


@pytest.mark.parametrize("suffix", [".csv", ".npz"])
def test_write_read_round_trip_is_exact(tmp_path, rng, suffix):
    chunk = sample_chunk(rng)
    path = tmp_path / f"r{suffix}"
    with RecordingWriter(path, ("a", "b", "c"), labels=True, kinds=True) as w:
        w.write(chunk.take(slice(0, 20)))
        w.write(chunk.take(slice(20, None)))
    rec, back, _ = read_all(path, RecordingSpec(chunk_rows=7))
    assert rec.sensors == ("a", "b", "c")
    np.testing.assert_array_equal(back.timestamps, chunk.timestamps)
    np.testing.assert_array_equal(back.turbine_ids, chunk.turbine_ids)
    np.testing.assert_array_equal(back.values, chunk.values)
    np.testing.assert_array_equal(back.labels, chunk.labels)
    np.testing.assert_array_equal(back.kinds, chunk.kinds)


def test_chunks_are_bounded(tmp_path, rng):
    path = tmp_path / "r.npz"
    with RecordingWriter(path, ("a", "b", "c")) as w:
        w.write(sample_chunk(rng, n=1000))
    _, _, chunks = read_all(path, RecordingSpec(chunk_rows=64))
    assert max(len(c) for c in chunks) == 64 and sum(len(c) for c in chunks) == 1000


def test_skab_file_reads_with_options(skab_dir):
    rec, chunk, _ = read_all(skab_dir / "valve1" / "0.csv", SKAB)
    assert len(rec.sensors) == 8 and "changepoint" not in rec.sensors
    assert (chunk.turbine_ids == 0).all()
    assert chunk.labels.sum() > 0 and len(chunk) > 1000
    assert chunk.timestamps[1] - chunk.timestamps[0] in (1.0, 2.0, 3.0)
    assert chunk.lines[0] == 2  # the header is line 1


def test_mixed_line_endings_and_iso_times(tmp_path):
    path = tmp_path / "m.csv"
    path.write_bytes(
        b"datetime;x;y;anomaly\r\n2020-03-09 10:14:33;1;2;0\n2020-03-09T10:14:34;3;4;1\r\n"
    )
    _, chunk, _ = read_all(path, RecordingSpec(sep=";", time_col="datetime", label_col="anomaly"))
    assert chunk.values.tolist() == [[1.0, 2.0], [3.0, 4.0]]
    assert chunk.timestamps[1] - chunk.timestamps[0] == 1.0
    assert chunk.labels.tolist() == [0, 1]


def test_empty_cells_are_missing_readings(tmp_path):
    path = tmp_path / "e.csv"
    path.write_text("timestamp,turbine_id,a,b\n0,1,1.5,\n1,1,nan,inf\n")
    _, chunk, _ = read_all(path)
    assert np.isnan(chunk.values[0, 1]) and np.isnan(chunk.values[1, 0])
    assert np.isinf(chunk.values[1, 1])


BAD_CSV = [
    (b"", "empty file", 1),
    (b"timestamp,turbine_id,a\n", "no readings after the header", 2),
    (b"timestamp,turbine_id,a,b\n0,1,2,3\n1,1,x7,3\n", "column 'a': not a number: 'x7'", 3),
    (
        b"timestamp,turbine_id,a,b\n0,1,2,3\n1,1,2\n",
        "expected 4 columns (as the header), found 3",
        3,
    ),
    (b"timestamp,turbine_id,a\n0,1,2\nnoon,1,2\n", "column 'timestamp': not a number: 'noon'", 3),
    (b"time,turbine_id,a\n2020-01-01,1,2\n2020-13-45,1,2\n", "unreadable timestamp", 3),
    (b"timestamp,turbine_id,a\n0,1.5,2\n", "turbine id '1.5' is not an integer", 2),
    (b"timestamp,turbine_id,a\n0,1,2\n1,1,\xff\xfe\n", "not UTF-8", 3),
    (b"a,b\n1,2\n", "no time column 'timestamp'", 1),
    (b"a;b\n1;2\n", "the header has one column with separator ','", 1),
]


@pytest.mark.parametrize(("data", "message", "line"), BAD_CSV)
def test_bad_csv_gives_one_located_line(tmp_path, data, message, line):
    path = tmp_path / "bad.csv"
    path.write_bytes(data)
    spec = RecordingSpec(time_col="time") if data.startswith(b"time,") else RecordingSpec()
    with pytest.raises(InputError) as info:
        read_all(path, spec)
    text = str(info.value)
    assert message in text and "\n" not in text
    assert text.startswith(f"{path}:{line}:"), text


def test_huge_line_is_refused(tmp_path):
    path = tmp_path / "huge.csv"
    path.write_bytes(b"timestamp,turbine_id,a\n0,1,2\n" + b"9" * 5000 + b"\n")
    with pytest.raises(InputError, match=r":3: line longer than 1000 bytes"):
        read_all(path, RecordingSpec(max_line_bytes=1000))


def test_garbage_binary_as_csv_is_a_located_error(tmp_path, rng):
    path = tmp_path / "garbage.csv"
    path.write_bytes(rng.integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(InputError):
        read_all(path)


def write_npz(tmp_path, rng):
    path = tmp_path / "r.npz"
    with RecordingWriter(path, ("a", "b", "c"), labels=True) as w:
        w.write(sample_chunk(rng, n=500, kinds=False))
    return path


def test_truncated_npz_is_refused(tmp_path, rng):
    path = write_npz(tmp_path, rng)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="not a readable .npz archive|truncated|corrupt"):
        read_all(path)


def test_npz_shape_mismatch_and_pickle_are_refused(tmp_path):
    bad = tmp_path / "shape.npz"
    np.savez(bad, timestamp=np.zeros(3), values=np.zeros((4, 2)), sensors=np.array(["a", "b"]))
    with pytest.raises(InputError, match=r"column 'values': has shape \(4, 2\), expected \(3, 2\)"):
        read_all(bad)
    pick = tmp_path / "pickle.npz"
    np.savez(
        pick,
        timestamp=np.zeros(2),
        values=np.zeros((2, 1)),
        sensors=np.array(["a"]),
        turbine_id=np.array([object(), object()]),
    )
    with pytest.raises(InputError, match="object arrays"):
        read_all(pick)


def test_npz_declared_size_larger_than_data(tmp_path, rng):
    """An absurd declared shape is caught from the header, before any allocation."""
    path = write_npz(tmp_path, rng)
    with zipfile.ZipFile(path) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    members["values.npy"] = members["values.npy"].replace(b"(500, 3)", b"(900000000000, 3)", 1)
    with zipfile.ZipFile(path, "w") as zf:
        for name, blob in members.items():
            zf.writestr(name, blob)
    with pytest.raises(InputError, match="declares shape|has shape"):
        read_all(path)


def test_writer_failure_leaves_no_output(tmp_path, rng):
    path = tmp_path / "out.npz"
    with pytest.raises(RuntimeError), RecordingWriter(path, ("a", "b", "c")) as w:
        w.write(sample_chunk(rng))
        raise RuntimeError("interrupted")
    assert not path.exists() and list(tmp_path.iterdir()) == []


def rewrite_member_header(path, member: str, old: bytes, new: bytes) -> None:
    with zipfile.ZipFile(path) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    assert old in members[member]
    members[member] = members[member].replace(old, new, 1)
    with zipfile.ZipFile(path, "w") as zf:
        for name, blob in members.items():
            zf.writestr(name, blob)


def test_npz_sensors_declaring_a_trillion_names_is_refused_before_reading(tmp_path, rng):
    """Today's MemoryError: the sensors member was read whole on its header's word."""
    path = write_npz(tmp_path, rng)
    rewrite_member_header(path, "sensors.npy", b"(3,)", b"(1000000000000,)")
    with pytest.raises(InputError, match=r"column 'sensors': declares shape \(1000000000000,\)"):
        read_all(path)


def test_npz_fault_kinds_and_names_are_bounded_before_reading(tmp_path):
    path = tmp_path / "kinds.npz"
    np.savez(
        path,
        timestamp=np.zeros(2),
        values=np.zeros((2, 1)),
        sensors=np.array(["a"]),
        fault_code=np.zeros(2, dtype=np.int8),
        fault_kinds=np.array(["", "spike"]),
    )
    rewrite_member_header(path, "fault_kinds.npy", b"(2,)", b"(99999999999,)")
    with pytest.raises(InputError, match="column 'fault_kinds': declares shape"):
        read_all(path)
    long_names = tmp_path / "long.npz"
    np.savez(
        long_names, timestamp=np.zeros(2), values=np.zeros((2, 1)), sensors=np.array(["a" * 2000])
    )
    with pytest.raises(InputError, match="column 'sensors': dtype <U2000: strings longer"):
        read_all(long_names)


def wide_csv(path, sensors: int) -> None:
    header = ",".join(["timestamp", "turbine_id", *(f"s{j}" for j in range(sensors))])
    rows = [",".join([str(1000 + t), "0", *["1.5"] * sensors]) for t in range(3)]
    path.write_text("\n".join([header, *rows]) + "\n")


@pytest.mark.parametrize("suffix", [".csv", ".npz"])
def test_more_sensors_than_max_sensors_is_a_one_line_error(tmp_path, suffix):
    """A 59 KB CSV of 5,000 sensor columns reached 5.4 GB RSS: bounded at 4,096 by default."""
    path = tmp_path / f"wide{suffix}"
    if suffix == ".csv":
        wide_csv(path, 5000)
        message = r"wide.csv:1: 5000 sensor columns, more than max_sensors \(4096\)"
    else:
        np.savez(
            path,
            timestamp=np.arange(2.0),
            values=np.zeros((2, 5000)),
            sensors=np.array([f"s{j}" for j in range(5000)]),
        )
        message = r"column 'sensors': declares 5000 sensors, more than max_sensors \(4096\)"
    with pytest.raises(InputError, match=message):
        read_all(path)
    with read_recording(path, RecordingSpec(max_sensors=5000)) as rec:
        assert len(rec.sensors) == 5000


def test_detect_on_a_file_too_wide_exits_2_with_one_line(tmp_path):
    from tests.cli_support import turbine

    wide_csv(tmp_path / "wide.csv", 5000)
    proc = turbine(
        "detect", "--input", tmp_path / "wide.csv", "--store", tmp_path / "st", check=False
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert "more than max_sensors (4096)" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_npz_turbine_names_header_is_checked_before_reading(tmp_path):
    """A turbine_names member declaring 10**12 names is a one-line error, not a MemoryError."""
    import io

    from pipeline.recordings import open_recording

    path = tmp_path / "names.npz"
    np.savez(
        path,
        timestamp=np.arange(3.0),
        turbine_id=np.zeros(3, dtype=np.int64),
        values=np.zeros((3, 1)),
        sensors=np.array(["a"]),
    )
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "<U8", "fortran_order": False, "shape": (10**12,)}
    )
    with zipfile.ZipFile(path, "a") as z:
        z.writestr("turbine_names.npy", header.getvalue())
    with pytest.raises(InputError, match="turbine_names"):
        open_recording(path)
