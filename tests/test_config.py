"""Configuration files: JSON and TOML, shapes checked at load with both shapes named."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline import ConfigError, Detector, calibrate, load_config


def test_calibrate_is_broadcasting(rng):
    values = rng.normal(size=(7, 3))
    offsets, gains, factors = rng.normal(size=3), rng.normal(size=3), rng.normal(size=7)
    expected = np.array(
        [[(values[i, j] - offsets[j]) * gains[j] * factors[i] for j in range(3)] for i in range(7)]
    )
    np.testing.assert_allclose(calibrate(values, offsets, gains, factors), expected, rtol=1e-15)


def test_toml_and_json_load_the_same(tmp_path):
    (tmp_path / "c.toml").write_text(
        'sensors = ["a", "b"]\noffsets = [1.0, 2.0]\ngains = [0.5, 2.0]\n'
        "region_factors = [1.0, 1.5, 0.5]\nfalse_alarm_rate = 0.001\n"
    )
    (tmp_path / "c.json").write_text(
        '{"sensors": ["a", "b"], "offsets": [1, 2], "gains": [0.5, 2], '
        '"region_factors": [1, 1.5, 0.5], "false_alarm_rate": 0.001}'
    )
    assert load_config(tmp_path / "c.toml") == load_config(tmp_path / "c.json")


def test_region_factors_by_turbine_id(tmp_path):
    (tmp_path / "c.json").write_text('{"region_factors": {"17": 2.0}}')
    config = load_config(tmp_path / "c.json")
    assert config.factor_of(np.array([17, 3])).tolist() == [2.0, 1.0]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            '{"sensors": ["a","b","c","d"], "offsets": [0,0,0,0,0,0]}',
            r"offsets has shape \(6,\) but readings have shape \(n, 4\)",
        ),
        (
            '{"turbines": [1,2,3], "region_factors": [1,1], "gains": [1,1,1,1]}',
            r"region_factors has shape \(2,\) but the fleet has 3 turbines",
        ),
        (
            '{"offsets": [1,2], "gains": [1,2,3]}',
            r"gains has shape \(3,\) but readings have shape \(n, 2\)",
        ),
        ('{"false_alarm_rate": 2}', "false_alarm_rate"),
        ('{"unknown_key": 1}', "unknown_key"),
        ("{not json", "not valid json"),
        ('{"turbines": [1, 1]}', "same id twice"),
    ],
)
def test_bad_configurations_are_one_line_errors(tmp_path, text, message):
    path = tmp_path / "c.json"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message) as info:
        load_config(path)
    assert "\n" not in str(info.value) and str(path) in str(info.value)


def test_factor_vector_against_readings_named_at_first_batch(tmp_path):
    """Offsets of shape (T,) instead of (D,) are caught before any NumPy broadcasting."""
    (tmp_path / "c.json").write_text('{"offsets": [1,2,3,4,5,6,7,8,9,10]}')
    det = Detector(load_config(tmp_path / "c.json"))
    with pytest.raises(
        ConfigError, match=r"offsets has shape \(10,\) but readings have shape \(n, 4\)"
    ):
        det.process(np.zeros(2), [0, 1], np.zeros((2, 4)))


def test_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read configuration"):
        load_config(tmp_path / "nope.toml")


def test_a_factor_vector_shorter_than_the_declared_fleet_fails_at_load(tmp_path):
    """(T,) factors against a declared fleet, with no sensors given: checked at load."""
    (tmp_path / "c.json").write_text('{"turbines": [1, 2, 3], "region_factors": [1, 2]}')
    with pytest.raises(
        ConfigError, match=r"region_factors has shape \(2,\) but turbines has shape \(3,\)"
    ):
        load_config(tmp_path / "c.json")


def test_a_factor_vector_that_does_not_cover_a_turbine_seen_is_an_error(tmp_path):
    """3 factors, no fleet declared, 20 turbines: turbine 3 must not silently get 1.0."""
    (tmp_path / "c.json").write_text('{"region_factors": [1, 2, 3]}')
    det = Detector(load_config(tmp_path / "c.json"))
    ids = np.arange(20)
    with pytest.raises(
        ConfigError, match=r"shape \(3,\) but turbine 3 was seen .*shape \(20,\) or more"
    ) as info:
        det.process(np.zeros(20), ids, np.zeros((20, 4)))
    assert "{id: factor}" in str(info.value)
    covered = Detector(load_config(tmp_path / "c.json"))
    covered.process(np.zeros(3), np.arange(3), np.zeros((3, 4)))  # ids 0..2: fine


def test_an_embedded_run_with_too_few_factors_is_one_line_exit_2(tmp_path):
    from tests.cli_support import turbine

    turbine(
        "simulate", "--turbines", 20, "--steps", 30, "--seed", 3, "--output", tmp_path / "f.npz"
    )
    (tmp_path / "c.json").write_text('{"region_factors": [1, 2, 3]}')
    proc = turbine(
        "detect",
        "--input",
        tmp_path / "f.npz",
        "--config",
        tmp_path / "c.json",
        "--store",
        tmp_path / "st",
        check=False,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert "region_factors has shape (3,)" in proc.stderr
