"""Operating states (learn_when) counted apart from anomalies: summary, store, evaluate."""

from __future__ import annotations

import json

import numpy as np

from pipeline.store import AnomalyStore
from tests.cli_support import turbine


def write_stream(path, rng, n=3000):
    wind = rng.uniform(4, 12, n)
    power = 150 * wind + rng.normal(0, 30, n)
    stopped = np.zeros(n, dtype=bool)
    stopped[2000:2100] = True  # a stop: power 0 at any wind, not an anomaly
    power[stopped] = 0.0
    label = np.zeros(n, dtype=int)
    label[2500:2600] = 1
    power[2500:2600] -= 300  # a labelled fault while producing (still above 10 kW)
    ts = np.arange(n) * 600.0
    rows = ["timestamp,turbine_id,wind,power,label"]
    cols = zip(ts, wind, power, label, strict=True)
    rows += [f"{t},T1,{w:.3f},{p:.3f},{lab}" for t, w, p, lab in cols]
    path.write_text("\n".join(rows) + "\n")
    return int(np.count_nonzero(power <= 10.0))


CONFIG = """conditions = ["wind"]
key_groups = 1
[[learn_when]]
sensor = "power"
above = 10.0
state = "stopped"
"""


def test_stops_are_counted_apart_everywhere(tmp_path, rng):
    data = tmp_path / "farm.csv"
    stops = write_stream(data, rng)
    cfg = tmp_path / "farm.toml"
    cfg.write_text(CONFIG)
    out = turbine("detect", "--quiet", "--input", data, "--config", cfg, "--store", tmp_path / "s")
    assert f"not scored: stopped {stops:,}" in out.stdout
    assert AnomalyStore(tmp_path / "s").states == {"stopped": stops}
    res = json.loads(
        turbine("evaluate", "--input", data, "--config", cfg, "--format", "json").stdout
    )
    assert res["not_scored"] == {"stopped": stops}
    assert res["fp"] < 20, "the stop is not a false alarm"
    assert res["episodes"]["detected"] == 1
    stored = json.loads(
        turbine(
            "evaluate", "--input", data, "--config", cfg, "--store", tmp_path / "s",
            "--format", "json",
        ).stdout
    )  # fmt: skip
    assert stored["not_scored"] == {"stopped": stops}
