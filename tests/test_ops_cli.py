"""Operator-facing options: replay's defaults in --help, recording options from the
environment (the compose ``replay`` profile), the simulator's start time."""

from __future__ import annotations

import time

import numpy as np
import pytest

from pipeline.cli import apply_recording_env, build_parser, recording_spec, simulation_params
from pipeline.errors import ConfigError
from pipeline.recordings import read_recording
from pipeline.simulator import SimulationParams
from tests.cli_support import turbine


def test_replay_help_shows_the_default_topic_and_speed() -> None:
    out = turbine("replay", "--help").stdout
    assert "default turbine.readings" in " ".join(out.split())
    assert "(default 0)" in out


def replay_args(*argv: str):
    return build_parser().parse_args(["replay", "f.csv", *argv])


def test_recording_options_come_from_the_environment_when_not_given(monkeypatch) -> None:
    for key, value in {
        "TURBINE_RECORDING_SEP": ";",
        "TURBINE_RECORDING_TIME_COL": "datetime",
        "TURBINE_RECORDING_LABEL_COL": "anomaly",
        "TURBINE_RECORDING_DROP_COLS": "changepoint, other",
        "TURBINE_RECORDING_CHUNK_ROWS": "128",
        "TURBINE_RECORDING_ID_COL": "",  # empty: unset
    }.items():
        monkeypatch.setenv(key, value)
    args = replay_args()
    apply_recording_env(args)
    spec = recording_spec(args)
    assert (spec.sep, spec.time_col, spec.label_col, spec.drop_cols, spec.chunk_rows) == (
        ";",
        "datetime",
        "anomaly",
        ("changepoint", "other"),
        128,
    )
    assert spec.id_col == "turbine_id"  # the default
    # an option given wins over the environment
    args = replay_args("--sep", ",", "--drop-col", "x")
    apply_recording_env(args)
    spec = recording_spec(args)
    assert (spec.sep, spec.drop_cols, spec.time_col) == (",", ("x",), "datetime")
    monkeypatch.setenv("TURBINE_RECORDING_CHUNK_ROWS", "many")
    with pytest.raises(ConfigError, match="TURBINE_RECORDING_CHUNK_ROWS"):
        apply_recording_env(replay_args())


def simulate_args(*argv: str):
    return build_parser().parse_args(["simulate", *argv])


def test_a_streamed_simulation_starts_now_a_file_at_a_fixed_time() -> None:
    before = time.time()
    streamed = simulation_params(simulate_args(), streamed=True)
    assert before - 1 <= streamed.start <= time.time()
    assert simulation_params(simulate_args(), streamed=False).start == SimulationParams().start
    chosen = simulation_params(simulate_args("--start", "2030-01-01T00:00:00+01:00"), True)
    assert chosen.start == 1_893_452_400.0
    assert simulation_params(simulate_args("--start", "1000"), False).start == 1000.0


def test_simulate_start_sets_the_written_file_times(tmp_path) -> None:
    out = tmp_path / "fleet.csv"
    turbine("simulate", "--turbines", 2, "--steps", 5, "--start", "2030-01-01", "--output", out)
    with read_recording(out) as rec:
        ts = np.concatenate([c.timestamps for c in rec])
    assert ts.min() == 1_893_456_000.0 and ts.max() == 1_893_456_004.0


@pytest.mark.parametrize("suffix", [".npz", ".parquet", ".csv"])
def test_a_file_mounted_without_its_name_is_read_in_its_format(tmp_path, suffix) -> None:
    """The compose replay service mounts the file as /input/recording: no extension."""
    from pipeline.recordings import recording_format

    named = tmp_path / f"fleet{suffix}"
    turbine("simulate", "--turbines", 2, "--steps", 5, "--output", named)
    bare = tmp_path / "recording"
    bare.write_bytes(named.read_bytes())
    assert recording_format(bare) == suffix[1:]
    with read_recording(bare) as rec, read_recording(named) as want:
        got = np.concatenate([c.values for c in rec])
        assert np.array_equal(got, np.concatenate([c.values for c in want]))
