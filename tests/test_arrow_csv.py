"""The pyarrow fast path of CSV recordings against the NumPy reader, its oracle."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.errors import InputError
from pipeline.recordings import RecordingSpec, arrowcsv
from pipeline.recordings.csvfile import CsvRecording
from pipeline.recordings.isotime import (
    TimeFormatError,
    parse_fixed,
    parse_times,
    split_offset,
    split_offsets,
)

FIELDS = ("timestamps", "turbine_ids", "values", "labels", "kinds", "lines")


def read_all(path: Path, spec: RecordingSpec, fast: bool) -> tuple[list, list] | str:
    """The chunks and names of a file, or the error it gives."""
    try:
        rec = CsvRecording(path, spec, fast=fast)
    except InputError as exc:
        return str(exc)
    try:
        return list(rec), rec.names.items()
    except InputError as exc:
        return str(exc)
    finally:
        rec.close()


def assert_same(fast: tuple[list, list] | str, slow: tuple[list, list] | str) -> None:
    if isinstance(slow, str) or isinstance(fast, str):
        assert fast == slow
        return
    assert fast[1] == slow[1]
    assert len(fast[0]) == len(slow[0])
    for a, b in zip(fast[0], slow[0], strict=True):
        for name in FIELDS:
            x, y = getattr(a, name), getattr(b, name)
            if x is None or y is None:
                assert x is None and y is None, name
                continue
            assert x.dtype == y.dtype, name
            assert x.shape == y.shape, name
            np.testing.assert_array_equal(x, y, err_msg=name)


NUMBERS = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False, width=32).map(repr),
    st.integers(-(10**6), 10**6).map(str),
    st.sampled_from(["", "", "nan", "inf", "-inf", "1e400", "NaN", " 1.5", "1_0", "x", "+2", ".5"]),
)
TIMES_ISO = st.sampled_from(
    [
        "2014-01-01T01:00:00+01:00",
        "2014-01-01T00:10:00Z",
        "2014-03-30 01:50",
        "2014-10-26T02:00:00+0200",
        '"2014-06-01T00:00:00-01:30"',
        "2014-06-01",
    ]
)
IDS = st.sampled_from(["R80711", "R80721", "7", "007", "3.0", " R1 ", '"R2"', "1e3"])


@st.composite
def csv_files(draw: st.DrawFn) -> tuple[str, RecordingSpec]:
    sep = draw(st.sampled_from([",", ";", "\t"]))
    newline = draw(st.sampled_from(["\n", "\r\n"]))
    iso = draw(st.booleans())
    with_id = draw(st.booleans())
    with_label = draw(st.booleans())
    with_kind = draw(st.booleans())
    d = draw(st.integers(1, 3))
    rare = draw(st.integers(0, 40))  # how often a bad or unusual cell is written
    n = draw(st.integers(1, 30))
    header = ["timestamp", *(["turbine_id"] if with_id else []), *[f"s{j}" for j in range(d)]]
    header += ["note"] + (["label"] if with_label else []) + (["fault_kind"] if with_kind else [])
    lines = [sep.join(header)]
    for r in range(n):
        t = draw(TIMES_ISO) if iso else str(1_400_000_000 + 600 * r)
        row = [t]
        if with_id:
            row.append(draw(IDS))
        for _ in range(d):
            cell = draw(NUMBERS)
            row.append(cell if draw(st.integers(0, 40)) < rare or cell[:1].isdigit() else "1.25")
        row.append(draw(st.sampled_from(["a", "", "b c", "é"])))
        if with_label:
            row.append(draw(st.sampled_from(["0", "1", ""])))
        if with_kind:
            row.append(draw(st.sampled_from(["", "gain", " stuck "])))
        lines.append(sep.join(row))
        if draw(st.integers(0, 60)) < rare // 4:
            lines.append(draw(st.sampled_from(["", " ", sep * (len(header) - 1)])))
    if draw(st.integers(0, 60)) < rare // 8:
        k = draw(st.integers(1, len(lines) - 1))
        lines[k] = lines[k] + sep  # one column too many
    text = newline.join(lines) + draw(st.sampled_from(["", newline, newline * 2]))
    spec = RecordingSpec(sep=sep, chunk_rows=draw(st.integers(1, 12)), max_line_bytes=4096)
    return text, spec


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(csv_files(), st.sampled_from([7, 64, 4 << 20]))
def test_fast_path_gives_the_numpy_readers_chunks_and_errors(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    case: tuple[str, RecordingSpec],
    block_bytes: int,
) -> None:
    """Blocks of a few bytes too: lines carried across blocks, chunks across tables."""
    monkeypatch.setattr(arrowcsv, "BLOCK_BYTES", block_bytes)
    text, spec = case
    path = tmp_path / "rec.csv"
    path.write_bytes(text.encode("utf-8"))
    assert_same(read_all(path, spec, fast=True), read_all(path, spec, fast=False))


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ("1,7,2.5\n2,7,x\n", "rec.csv:3: column 's0': not a number: 'x'"),
        ("1,7,2.5\n2,7\n", "rec.csv:3: expected 3 columns (as the header), found 2"),
        ("1,7,2.5\n,7,1\n", "rec.csv:3: column 'timestamp': missing or infinite timestamp"),
        (
            "1,7,2.5\n2,7.5,1\n",
            "rec.csv:3: column 'turbine_id': turbine id '7.5' is not an integer",
        ),
        ("1,7,2.5\n\n2,,1\n", "rec.csv:4: column 'turbine_id': empty turbine id"),
        ("1,7,2.5\n2,7,\xff\n", "rec.csv:3: not UTF-8 text (byte 5 of the line is 0xff)"),
    ],
)
def test_a_bad_cell_is_located_as_the_numpy_reader_locates_it(
    tmp_path: Path, body: str, error: str
) -> None:
    path = tmp_path / "rec.csv"
    path.write_bytes(("timestamp,turbine_id,s0\n" + body).encode("latin-1"))
    spec = RecordingSpec(chunk_rows=1)
    with pytest.raises(InputError) as fast:
        list(CsvRecording(path, spec))
    assert str(fast.value).endswith(error)


@pytest.mark.parametrize("sep", ["|", "§", " "])
def test_other_separators_read_alike(tmp_path: Path, sep: str) -> None:
    path = tmp_path / "rec.csv"
    rows = ["timestamp,turbine_id,a,b", "1,R1,2.5,", "2,R2,,3", "3,R1,4,5"]
    path.write_text("\n".join(r.replace(",", sep) for r in rows) + "\n")
    spec = RecordingSpec(sep=sep, chunk_rows=2)
    fast = read_all(path, spec, fast=True)
    assert not isinstance(fast, str) and sum(len(c) for c in fast[0]) == 3
    assert_same(fast, read_all(path, spec, fast=False))


def test_a_line_too_long_is_refused_on_the_fast_path_too(tmp_path: Path) -> None:
    path = tmp_path / "rec.csv"
    path.write_text("timestamp,s0\n1,2\n2," + "3" * 200 + "\n")
    with pytest.raises(InputError, match="rec.csv:3: line longer than 64 bytes"):
        list(CsvRecording(path, RecordingSpec(max_line_bytes=64)))


def test_fast_path_reads_la_haute_borne_as_the_numpy_reader(lhb_csv: Path) -> None:
    from pipeline.config import load_config

    spec = load_config(Path("deploy/configs/la-haute-borne.toml")).recording
    assert spec is not None
    fast, slow = read_all(lhb_csv, spec, fast=True), read_all(lhb_csv, spec, fast=False)
    assert not isinstance(fast, str)
    assert sum(len(c) for c in fast[0]) == 420_480
    assert_same(fast, slow)


@given(
    st.lists(
        st.one_of(
            TIMES_ISO,
            st.text(alphabet="0123456789T:+-zZ \t", max_size=30),
            st.text(max_size=12),
        ),
        max_size=20,
    )
)
def test_split_offsets_is_split_offset_of_each_cell(cells: list[str]) -> None:
    local, offsets = split_offsets(cells)
    expected = [split_offset(c) for c in cells]
    assert local == [e[0] for e in expected]
    assert offsets.tolist() == [e[1] for e in expected]


@st.composite
def fixed_cells(draw: st.DrawFn) -> tuple[list[str], bool]:
    """Cells of one fixed layout, some not valid dates or times; whether parse_fixed reads it."""
    tail = draw(st.sampled_from(["", "Z", "z", "+HHMM", "+HH:MM"]))
    sep = draw(st.sampled_from(["T", " ", "t"]))
    cells, plain = [], sep != "t"
    for _ in range(draw(st.integers(1, 8))):
        year = draw(st.sampled_from([1, 1600, 1899, 1900, 1970, 2000, 2014, 2016, 2100, 9999]))
        month = draw(st.integers(0, 13))
        day = draw(st.sampled_from([0, 1, 15, 28, 29, 30, 31, 32]))
        clock = [draw(st.integers(0, 25)), draw(st.integers(0, 61)), draw(st.integers(0, 61))]
        cell = f"{year:04d}-{month:02d}-{day:02d}{sep}{clock[0]:02d}:{clock[1]:02d}:{clock[2]:02d}"
        if tail.startswith("+"):
            sign = draw(st.sampled_from("+-"))
            hh, mm = draw(st.integers(0, 99)), draw(st.integers(0, 99))
            cell += f"{sign}{hh:02d}:{mm:02d}" if tail == "+HH:MM" else f"{sign}{hh:02d}{mm:02d}"
        else:
            cell += tail
        if draw(st.integers(0, 20)) == 0:  # a stray character somewhere
            k = draw(st.integers(0, len(cell) - 1))
            cell = cell[:k] + draw(st.sampled_from("x/.:-+ 0")) + cell[k + 1 :]
            plain = False
        cells.append(cell)
    return cells, plain


@pytest.mark.filterwarnings("ignore:no explicit representation of timezones")  # a stray "Z"
@given(fixed_cells())
def test_parse_fixed_is_parse_times_or_declines(drawn: tuple[list[str], bool]) -> None:
    cells, plain = drawn
    data = np.frombuffer("".join(cells).encode("ascii"), dtype=np.uint8)
    fast = parse_fixed(data.reshape(len(cells), -1))
    try:
        expected = parse_times(cells)
    except TimeFormatError:
        assert fast is None
        return
    assert fast is not None or not plain  # every valid cell of the layouts is read
    if fast is not None:
        assert fast.tobytes() == expected.tobytes()
