"""Anomaly events rendered in bulk equal one ``json.dumps`` of a dict per event."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consumers.events import json_numbers, render_events
from pipeline import Detector, DetectorConfig
from pipeline.detector import BatchResult
from pipeline.names import TurbineNames


def reference_event(
    result, j, *, sensors, topic, partition, offsets, rows, produced, kinds, meta, names=None
):
    """The naive oracle: a dict per anomaly, as the wire contract describes it."""
    i = int(result.anomaly_index[j])
    contrib = result.contributions[j]
    order = sorted(range(contrib.size), key=lambda c: -contrib[c])[:3]

    def num(x):
        x = float(x)
        return x if math.isfinite(x) else None

    ms = int(np.round(result.timestamps[i] * 1000))
    return {
        "event_id": f"{topic}:{partition}:{offsets[i]}:{rows[i]}",
        "turbine_id": int(result.turbine_ids[i]),
        "turbine": names.name_of(tid)
        if names is not None and (tid := int(result.turbine_ids[i])) in names
        else int(result.turbine_ids[i]),
        "timestamp": num(result.timestamps[i]),
        "time": str(np.datetime64(ms, "ms")) + "Z",
        "distance2": num(result.distances[i]),
        "threshold": num(result.threshold),
        "model": "turbine" if result.scored_by[i] == 1 else "fleet",
        "top_sensors": [{"sensor": sensors[c], "contribution": num(contrib[c])} for c in order],
        "fault_kind": None if kinds is None or kinds[i] == "" else str(kinds[i]),
        "producer_id": meta[0],
        "site": meta[1],
        "produced_at": num(produced[i]),
        "detected_at": meta[2],
    }


def scored_batch(rng, d=4, n_turbines=30, fleet=None):
    fleet = np.arange(n_turbines) if fleet is None else fleet
    det = Detector(DetectorConfig(min_samples=30, key_groups=1))
    det.learn(np.zeros(3000), fleet[np.arange(3000) % n_turbines], rng.normal(size=(3000, d)))
    ids = np.tile(fleet, 20)
    x = rng.normal(size=(ids.size, d))
    x[rng.random(ids.size) < 0.1] += 6.0
    ts = 1.767e9 + np.repeat(np.arange(20.0), n_turbines) + 0.123
    return det.process(ts, ids, x)


def render_both(result, sensors, kinds, rng, producer_id="sim-1", site="north", names=None):
    n = result.n_readings
    offsets = np.repeat(np.arange(1000, 1000 + (n + 9) // 10), 10)[:n]
    rows = np.tile(np.arange(10), (n + 9) // 10)[:n]
    produced = result.timestamps + rng.random(n)
    common = dict(topic="turbine.readings", partition=3, offsets=offsets, rows=rows)
    keys, values, ids = render_events(
        result,
        sensors=sensors,
        produced=produced,
        kinds=kinds,
        producer_id=producer_id,
        site=site,
        detected_at=1.767e9 + 0.5,
        names=names,
        **common,
    )
    want = [
        reference_event(
            result,
            j,
            sensors=sensors,
            produced=produced,
            kinds=kinds,
            meta=(producer_id, site, 1.767e9 + 0.5),
            names=names,
            **common,
        )
        for j in range(result.n_anomalies)
    ]
    return keys, values, ids, want


def test_events_equal_the_reference(rng):
    result = scored_batch(rng)
    assert result.n_anomalies > 20
    kinds = rng.choice(np.array(["", "spike", "drift"]), size=result.n_readings)
    sensors = ("temperature", "rotor_speed", "pressure", "vibration")
    keys, values, ids, want = render_both(result, sensors, kinds, rng)
    got = [json.loads(v) for v in values]
    assert got == want
    assert keys == [str(w["turbine_id"]).encode() for w in want]
    assert ids == [w["event_id"].encode() for w in want]
    assert {w["fault_kind"] for w in want} >= {None, "spike"}


@pytest.mark.parametrize("d", [1, 2, 3, 6])
def test_events_of_any_number_of_sensors_equal_the_reference(rng, d):
    """Fewer sensors than the three top ones, exactly three, and more."""
    result = scored_batch(rng, d=d)
    assert result.n_anomalies > 5
    sensors = tuple(f"s{c}" for c in range(d))
    keys, values, ids, want = render_both(result, sensors, None, rng)
    got = [json.loads(v) for v in values]
    assert got == want
    assert {len(e["top_sensors"]) for e in got} == {min(d, 3)}


def test_named_turbines_show_their_names(rng):
    names = TurbineNames()
    fleet = names.ids_of([f"R{80700 + t}" for t in range(10)] + [str(t) for t in range(20)])
    result = scored_batch(rng, fleet=fleet)
    sensors = ("temperature", "rotor_speed", "pressure", "vibration")
    keys, values, ids, want = render_both(result, sensors, None, rng, names=names)
    got = [json.loads(v) for v in values]
    assert got == want
    shown = {type(e["turbine"]) for e in got}
    assert shown == {str, int}  # names as strings, integer ids as integers
    assert all(e["turbine"] == e["turbine_id"] for e in got if isinstance(e["turbine"], int))
    assert {e["turbine"] for e in got if isinstance(e["turbine"], str)} <= set(names.labels(fleet))


def test_no_anomaly_no_event(rng):
    result = scored_batch(rng)
    empty = BatchResult(
        result.timestamps,
        result.turbine_ids,
        result.distances,
        np.zeros_like(result.is_anomaly),
        result.scored_by,
        result.threshold,
        np.zeros(0, dtype=np.intp),
        np.zeros((0, 4)),
    )
    assert render_both(empty, ("a", "b", "c", "d"), None, rng)[:3] == ([], [], [])


@settings(max_examples=40, deadline=None)
@given(
    names=st.lists(st.text(min_size=1, max_size=12), min_size=2, max_size=2, unique=True),
    meta=st.tuples(st.text(max_size=10), st.text(max_size=10)),
    kind=st.text(max_size=8),
)
def test_any_names_give_strict_json(names, meta, kind):
    """Quotes, backslashes, control characters and non-ASCII text survive; D < 3 too."""
    rng = np.random.default_rng(1)
    result = scored_batch(rng, d=2, n_turbines=5)
    assert result.n_anomalies
    kinds = np.full(result.n_readings, kind)
    keys, values, ids, want = render_both(result, tuple(names), kinds, rng, *meta)
    assert [json.loads(v) for v in values] == want


def test_non_finite_numbers_are_null(rng):
    result = scored_batch(rng)
    distances = result.distances.copy()
    distances[result.anomaly_index[0]] = np.inf
    contrib = result.contributions.copy()
    contrib[1, 0] = np.inf
    broken = BatchResult(
        result.timestamps,
        result.turbine_ids,
        distances,
        result.is_anomaly,
        result.scored_by,
        result.threshold,
        result.anomaly_index,
        contrib,
    )
    _, values, _, want = render_both(broken, ("a", "b", "c", "d"), None, rng)
    got = [json.loads(v, parse_constant=pytest.fail) for v in values]
    assert got[0]["distance2"] is None
    assert None in [s["contribution"] for s in got[1]["top_sensors"]]
    assert got[2:] == want[2:]


@pytest.mark.parametrize(
    ("values", "texts"),
    [
        ([1.5, -0.0, 1e20, 1e-7], ["1.5", "-0.0", "1e+20", "1e-07"]),
        ([np.nan, np.inf, -np.inf, 2.0], ["null", "null", "null", "2.0"]),
    ],
)
def test_json_numbers(values, texts):
    assert json_numbers(np.array(values)) == texts
    assert [json.dumps(v) for v in values if math.isfinite(v)] == [t for t in texts if t != "null"]
