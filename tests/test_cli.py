"""The turbine command end to end, in a subprocess: outputs, exit codes, no tracebacks."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pipeline.store import AnomalyStore
from tests.cli_support import turbine

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


@pytest.fixture(scope="module")
def simulated(tmp_path_factory):
    d = tmp_path_factory.mktemp("sim")
    turbine(
        "simulate",
        "--turbines",
        20,
        "--steps",
        600,
        "--seed",
        7,
        "--output",
        d / "f.npz",
        "--write-config",
        d / "cal.json",
    )
    return d


def test_simulate_is_deterministic(tmp_path):
    for name in ("a.csv", "b.csv"):
        turbine(
            "simulate", "--turbines", 5, "--steps", 200, "--seed", 9, "--output", tmp_path / name
        )
    assert (tmp_path / "a.csv").read_bytes() == (tmp_path / "b.csv").read_bytes()
    header = (tmp_path / "a.csv").read_text().splitlines()[0]
    assert (
        header == "timestamp,turbine_id,temperature,rotor_speed,pressure,vibration,label,fault_kind"
    )


def test_detect_writes_the_store_and_prints_a_summary(simulated, tmp_path):
    out = turbine(
        "detect",
        "--input",
        simulated / "f.npz",
        "--store",
        tmp_path / "st",
        "--config",
        simulated / "cal.json",
    ).stdout
    assert "12,000 readings scored" in out and "worst events" in out and "anomaly store" in out
    store = AnomalyStore(tmp_path / "st")
    assert store.stats()["anomalies"] > 0
    csv_out = turbine("anomalies", tmp_path / "st", "--format", "csv").stdout.splitlines()
    assert len(csv_out) == store.stats()["anomalies"] + 1
    first_turbine = int(csv_out[1].split(",")[3])
    rows = json.loads(
        turbine("anomalies", tmp_path / "st", "--format", "json", "--turbine", first_turbine).stdout
    )
    assert rows and all(r["turbine_id"] == first_turbine for r in rows)
    assert (
        abs(sum(rows[0]["contributions"].values()) - rows[0]["distance2"])
        < 1e-6 * rows[0]["distance2"]
    )


def test_csv_and_npz_inputs_give_the_same_anomalies(simulated, tmp_path):
    turbine(
        "simulate", "--turbines", 20, "--steps", 600, "--seed", 7, "--output", tmp_path / "f.csv"
    )
    for name in ("f.csv",):
        turbine("detect", "--input", tmp_path / name, "--store", tmp_path / "csv")
    turbine("detect", "--input", simulated / "f.npz", "--store", tmp_path / "npz")
    a, b = AnomalyStore(tmp_path / "csv").query(), AnomalyStore(tmp_path / "npz").query()
    assert a.event_ids() == b.event_ids()
    np.testing.assert_array_equal(a.distances, b.distances)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (
            "timestamp,turbine_id,a,b\n0,1,2,3\n1,1,oops,3\n",
            "bad.csv:3: column 'a': not a number: 'oops'",
        ),
        ("", "bad.csv:1: empty file"),
        ("timestamp,turbine_id,a,b\n0,1,2\n", "bad.csv:2: expected 4 columns"),
        ("timestamp,turbine_id,a,b\nlater,1,2,3\n", "bad.csv:2: column 'timestamp'"),
    ],
)
def test_bad_input_exits_2_with_one_line(tmp_path, content, message):
    (tmp_path / "bad.csv").write_text(content)
    proc = turbine(
        "detect", "--input", tmp_path / "bad.csv", "--store", tmp_path / "st", check=False
    )
    assert proc.returncode == 2
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_unknown_turbine_names_its_line(tmp_path):
    (tmp_path / "c.json").write_text('{"turbines": [1, 2]}')
    (tmp_path / "f.csv").write_text("timestamp,turbine_id,a\n0,1,2\n0,2,2\n1,7,2\n")
    proc = turbine(
        "detect",
        "--input",
        tmp_path / "f.csv",
        "--store",
        tmp_path / "s",
        "--config",
        tmp_path / "c.json",
        check=False,
    )
    assert proc.returncode == 2 and "f.csv:4: column 'turbine_id': unknown turbine 7" in proc.stderr


def test_nan_readings_are_skipped_and_counted(tmp_path):
    lines = ["timestamp,turbine_id,a,b"] + [f"{i},0,{i % 7},{(i * 3) % 5}" for i in range(300)]
    lines[150] = "149,0,nan,1"
    (tmp_path / "f.csv").write_text("\n".join(lines) + "\n")
    out = turbine("detect", "--input", tmp_path / "f.csv", "--store", tmp_path / "s").stdout
    assert "1 skipped (NaN/inf)" in out


def test_bad_config_shape_is_one_line(tmp_path, simulated):
    (tmp_path / "c.json").write_text(
        '{"offsets": [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]}'
    )
    proc = turbine(
        "detect",
        "--input",
        simulated / "f.npz",
        "--store",
        tmp_path / "s",
        "--config",
        tmp_path / "c.json",
        check=False,
    )
    assert proc.returncode == 2
    assert "offsets has shape (20,) but readings have shape (n, 4)" in proc.stderr


def test_evaluate_json_on_skab(skab_dir):
    files = sorted((skab_dir / "valve1").glob("*.csv"))
    proc = turbine(
        "evaluate", "--input", *files, *SKAB_OPTS, "--train-rows", 400, "--format", "json"
    )
    result = json.loads(proc.stdout)
    assert {"precision", "recall", "f1", "far", "mar"} <= result.keys()
    assert result["files"] == 16 and result["faults"] == 16


def test_skab_mewma_beats_hotelling(skab_dir):
    """The documented SKAB configuration beats the published T-squared on F1 and FAR at once."""
    files = sorted((skab_dir / "valve1").glob("*.csv"))
    proc = turbine(
        "evaluate",
        "--input",
        *files,
        *SKAB_OPTS,
        "--train-rows",
        400,
        "--chart",
        "mewma",
        "--mewma-lambda",
        0.2,
        "--format",
        "json",
    )
    r = json.loads(proc.stdout)
    assert r["f1"] > 0.65 and r["far"] < 19.94, r


def test_a_failed_run_leaves_no_store(tmp_path):
    lines = ["timestamp,turbine_id,a,b"] + [f"{i},0,{i % 7},{i % 5}" for i in range(70000)]
    lines[69000] = "68999,0,broken,1"
    (tmp_path / "f.csv").write_text("\n".join(lines) + "\n")
    proc = turbine("detect", "--input", tmp_path / "f.csv", "--store", tmp_path / "st", check=False)
    assert proc.returncode == 2 and "f.csv:69001: column 'a'" in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.csv"]


def test_detect_refuses_a_non_empty_store(tmp_path, simulated):
    (tmp_path / "st").mkdir()
    (tmp_path / "st" / "x").write_text("keep me")
    proc = turbine(
        "detect", "--input", simulated / "f.npz", "--store", tmp_path / "st", check=False
    )
    assert proc.returncode == 2 and "exists and is not empty" in proc.stderr
    assert (tmp_path / "st" / "x").read_text() == "keep me"


@pytest.mark.parametrize("sep", [";;", "\\x"])
def test_bad_separator_is_one_line(tmp_path, simulated, sep):
    proc = turbine(
        "detect",
        "--input",
        simulated / "f.npz",
        "--store",
        tmp_path / "st",
        "--sep",
        sep,
        check=False,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "sep" in proc.stderr
