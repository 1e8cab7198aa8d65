"""Evaluation by episodes: labelled runs, detections, false episodes, delays; the CLI."""

from __future__ import annotations

import csv
import io
import json
import math
import re

import numpy as np
import pytest
from cli_support import turbine
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.evaluation import SECONDS_PER_MONTH, LabelRuns, first_overlap, score_episodes


def naive_runs(t, ids, labels):
    """Runs of consecutive labelled readings per turbine, by a loop over readings."""
    open_: dict[int, list[float]] = {}
    runs = []
    for ti, u, lab in zip(t.tolist(), ids.tolist(), labels.tolist(), strict=True):
        if lab:
            if u in open_:
                open_[u][1] = ti
            else:
                open_[u] = [ti, ti]
        elif u in open_:
            runs.append((u, *open_.pop(u)))
    runs += [(u, a, b) for u, (a, b) in open_.items()]
    return sorted(runs, key=lambda r: (r[1], r[0]))


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    steps=st.integers(1, 50),
    turbines=st.integers(1, 4),
    cuts=st.lists(st.integers(0, 200), max_size=6),
)
def test_label_runs_match_a_per_reading_loop_for_any_split(seed, steps, turbines, cuts):
    rng = np.random.default_rng(seed)
    t = np.repeat(np.arange(steps, dtype=float), turbines)
    ids = np.tile(np.arange(turbines) * 5, steps)
    keep = rng.random(t.size) < 0.8
    t, ids = t[keep], ids[keep]
    labels = rng.random(t.size) < 0.5
    runs = LabelRuns()
    bounds = [0, *sorted(c for c in cuts if c <= t.size), t.size]
    for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
        runs.update(t[lo:hi], ids[lo:hi], labels[lo:hi])
    got = list(zip(*(a.tolist() for a in runs.finish()), strict=True))
    assert got == naive_runs(t, ids, labels)
    spans = [t[ids == u].max() - t[ids == u].min() for u in np.unique(ids)]
    assert runs.turbine_months == pytest.approx(sum(spans) / SECONDS_PER_MONTH)


def test_first_overlap_uses_closed_intervals():
    # Touching ends overlap; one second apart do not; another turbine never does.
    got = first_overlap(
        np.array([1, 1, 1, 2]),
        np.array([0.0, 10.0, 21.0, 0.0]),
        np.array([5.0, 12.0, 22.0, 100.0]),
        np.array([1, 1, 3]),
        np.array([5.0, 13.0, 0.0]),
        np.array([9.0, 20.0, 100.0]),
    )
    assert got.tolist() == [0, -1, -1, -1]


def test_score_episodes_on_a_hand_made_stream():
    # Faults: turbine 1 at [100, 200] and [500, 510], turbine 2 at [100, 150].
    # Episodes: turbine 1 [90, 120] (starts before: delay 0) and [160, 170] (same fault,
    # not the first), [300, 310] (false); turbine 2 [130, 400] (delay 30); turbine 3 [0, 1].
    s = score_episodes(
        np.array([1, 1, 2]),
        np.array([100.0, 500.0, 100.0]),
        np.array([200.0, 510.0, 150.0]),
        np.array([1, 1, 1, 2, 3]),
        np.array([90.0, 160.0, 300.0, 130.0, 0.0]),
        np.array([120.0, 170.0, 310.0, 400.0, 1.0]),
        turbine_months=4.0,
    )
    assert (s.faults, s.detected, s.episodes, s.false_episodes) == (3, 2, 5, 2)
    assert sorted(s.delays) == [0.0, 30.0]
    assert s.delay_median_s == 15.0 and s.delay_p90_s == pytest.approx(27.0)
    assert s.false_per_turbine_month == 0.5
    empty = score_episodes(*(np.zeros(0),) * 6, turbine_months=0.0)
    assert math.isnan(empty.delay_median_s) and math.isnan(empty.false_per_turbine_month)


# ---------------------------------------------------------------------- the commands
STEPS = 2000


def labelled_file(path, seed=11, names=(0, 1)):
    """Two turbines, 1 s steps, unit-normal sensors; spikes and labels placed by hand.

    Turbine 0: fault [1000, 1019], spikes from 1005 (delay 5); fault [1500, 1509] missed.
    Turbine 1: spikes [790, 800], fault [800, 829] (episode starts first: delay 0), and a
    lone spike at 1700 outside any fault (a false episode).  ``names`` are written in the
    id column for turbines 0 and 1.
    """
    rng = np.random.default_rng(seed)
    t = np.repeat(np.arange(STEPS, dtype=float), 2) + 1.7e9
    ids = np.tile([0, 1], STEPS)
    x = rng.normal(size=(t.size, 2))
    step = np.repeat(np.arange(STEPS), 2)
    label = np.zeros(t.size, dtype=int)
    spike = np.zeros(t.size, dtype=bool)
    for u, (a, b) in [(0, (1000, 1019)), (0, (1500, 1509)), (1, (800, 829))]:
        label[(ids == u) & (step >= a) & (step <= b)] = 1
    for u, (a, b) in [(0, (1005, 1019)), (1, (790, 800)), (1, (1700, 1700))]:
        spike[(ids == u) & (step >= a) & (step <= b)] = True
    x[spike] += 60.0
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["timestamp", "turbine_id", "a", "b", "label"])
        for row in zip(t, ids, x[:, 0], x[:, 1], label, strict=True):
            w.writerow(
                [
                    repr(float(row[0])),
                    names[int(row[1])],
                    repr(float(row[2])),
                    repr(float(row[3])),
                    row[4],
                ]
            )
    return path


EXPECTED = {
    "faults": 3,
    "detected": 2,
    "episodes": 3,
    "false_episodes": 1,
    "delay_median_s": 2.5,
    "delay_p90_s": 4.5,
}


@pytest.fixture
def labelled(tmp_path):
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"episode_gap": 30, "false_alarm_rate": 1e-9, "key_groups": 1}))
    return labelled_file(tmp_path / "lab.csv"), cfg


def test_evaluate_json_has_the_episode_figures(labelled):
    path, cfg = labelled
    out = json.loads(
        turbine("evaluate", "--input", path, "--config", cfg, "--format", "json").stdout
    )
    got = out["episodes"]
    assert {k: got[k] for k in EXPECTED} == EXPECTED
    assert got["turbine_months"] == pytest.approx(2 * (STEPS - 1) / SECONDS_PER_MONTH)
    assert got["false_episodes_per_turbine_month"] == pytest.approx(1 / got["turbine_months"])
    text = turbine("evaluate", "--input", path, "--config", cfg).stdout
    assert "episodes: 2 of 3 faults detected, 3 episodes, 1 false" in text
    assert "delay median 2.5 s, p90 4.5 s" in text


def test_detect_stores_episodes_listed_and_evaluated_from_the_store(labelled, tmp_path):
    path, cfg = labelled
    store = tmp_path / "store"
    turbine("detect", "--input", path, "--config", cfg, "--store", store, "--quiet")
    rows = list(csv.DictReader(io.StringIO(turbine("anomalies", store, "--episodes").stdout)))
    assert [(r["turbine_id"], r["start"], r["end"], r["alarms"]) for r in rows] == [
        ("1", "2023-11-14T22:26:30Z", "2023-11-14T22:26:40Z", "11"),
        ("0", "2023-11-14T22:30:05Z", "2023-11-14T22:30:19Z", "15"),
        ("1", "2023-11-14T22:41:40Z", "2023-11-14T22:41:40Z", "1"),
    ]
    assert rows[1]["duration_s"] == "14.0" and rows[1]["state"] == "normal"
    assert set(rows[1]["top_sensors"].split(";")) <= {"a", "b"}
    listed = json.loads(turbine("anomalies", store, "--episodes", "--format", "json").stdout)
    assert [e["alarms"] for e in listed] == [11, 15, 1]
    assert listed[0]["top_sensors"] and listed[0]["peak_distance2"] > 1000
    only = json.loads(
        turbine("anomalies", store, "--episodes", "--format", "json", "--turbine", "0").stdout
    )
    assert [e["turbine_id"] for e in only] == [0]
    out = json.loads(
        turbine("evaluate", "--input", path, "--store", store, "--format", "json").stdout
    )
    assert {k: out["episodes"][k] for k in EXPECTED} == EXPECTED


def test_report_draws_episodes_and_tables_the_longest(labelled, tmp_path):
    from pipeline.episodes import Episodes
    from pipeline.report import write_report
    from pipeline.report.data import Series
    from pipeline.report.figures import timeline_figure

    path, cfg = labelled
    store = tmp_path / "store"
    turbine("detect", "--input", path, "--config", cfg, "--store", store, "--quiet")
    report = write_report(store, tmp_path / "rep", input_path=path)
    page = report.index.read_text(encoding="utf-8")
    assert "<th>alarm episodes</th><td>3</td>" in page.replace("\n", "")
    section = page[page.index("6. Alarm episodes") :]
    assert "less than 30 s apart" in section and "Green bars" in page
    rows = re.findall(r"<tr><td>(\d+)</td><td>([^<]+)</td><td>[^<]+</td><td>([^<]+)</td>", section)
    # Longest first: turbine 0's 14 s episode, then turbine 1's 10 s one, then the lone alarm.
    assert [(r[0], r[2]) for r in rows] == [("0", "14 s"), ("1", "10 s"), ("1", "0 s")]

    t = np.arange(100.0)
    s = Series(t, np.ones(100), np.zeros(100, bool), None)
    eps = Episodes(
        np.array([4, 5]),
        np.array([10.0, 50.0]),
        np.array([20.0, 50.0]),
        np.array([9.0, 9.0]),
        np.array([15.0, 50.0]),
        np.array([3, 1]),
        np.ones((2, 1)),
        np.array(["normal", "normal"]),
        ("a",),
    )
    fig = timeline_figure({4: s, 5: s}, {}, 5.0, True, episodes=eps)
    bars = [[c for c in ax.collections if c.get_label() == "alarm episode"] for ax in fig.axes]
    assert [len(b) for b in bars] == [1, 1]
    widths = [p.get_extents().width for b in bars for p in b[0].get_paths()]
    assert len(widths) == 2 and all(w > 0 for w in widths)  # a one-alarm episode shows too


def test_episodes_show_turbine_names(tmp_path):
    from pipeline.names import turbine_id

    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"episode_gap": 30, "false_alarm_rate": 1e-9, "key_groups": 1}))
    path = labelled_file(tmp_path / "named.csv", names=("R80711", "R80721"))
    store = tmp_path / "store"
    turbine("detect", "--input", path, "--config", cfg, "--store", store, "--quiet")
    rows = list(csv.DictReader(io.StringIO(turbine("anomalies", store, "--episodes").stdout)))
    assert [r["turbine"] for r in rows] == ["R80721", "R80711", "R80721"]
    assert rows[1]["turbine_id"] == str(turbine_id("R80711"))
    only = json.loads(
        turbine("anomalies", store, "--episodes", "--turbine", "R80711", "--format", "json").stdout
    )
    assert [(e["turbine"], e["alarms"]) for e in only] == [("R80711", 15)]


def test_episodes_in_progress_come_from_the_checkpoints(labelled, tmp_path):
    """A Kafka-layout store: closed episodes in the partition store, one still open in its
    checkpoint; both listed (``open``), and evaluate --store counts the open one as the
    embedded run does (closed at the end)."""
    from consumers.checkpoint import Checkpoint, CheckpointDir
    from pipeline.episodes import Episodes
    from pipeline.store import AnomalyStore, episodes_in_progress, read_episodes

    path, cfg = labelled
    embedded = tmp_path / "embedded"
    turbine("detect", "--input", path, "--config", cfg, "--store", embedded, "--quiet")
    every = read_episodes(embedded)
    last = int(np.argmax(every.starts))  # turbine 1's lone alarm at step 1700
    kafka = tmp_path / "kafka"
    store = AnomalyStore(kafka / "partition-0000", sensors=every.sensors)
    store.append_episodes(every.select(np.arange(len(every)) != last))
    store.flush()
    still = every.select(np.array([last]))
    tracker_state = {
        **still.arrays("episode_"),
        "episode_gap": np.asarray(30.0),
    }
    with np.load(embedded / "model.npz", allow_pickle=False) as f:
        model = {k: f[k] for k in f.files}
    CheckpointDir(kafka / "checkpoints", "readings").save(
        Checkpoint(
            0,
            10,
            model,
            store.position(),
            None,
            sensors=every.sensors,
            episode_state=tracker_state,
        )
    )
    assert episodes_in_progress(kafka).ids() == still.ids()
    assert len(episodes_in_progress(kafka, until=float(still.starts[0]) - 1)) == 0
    listed = json.loads(turbine("anomalies", kafka, "--episodes", "--format", "json").stdout)
    assert [e["open"] for e in listed] == [False, False, True]
    assert [e["episode"] for e in listed] == Episodes.concat([every], every.sensors).ids()
    out = json.loads(
        turbine("evaluate", "--input", path, "--store", kafka, "--format", "json").stdout
    )
    assert {k: out["episodes"][k] for k in EXPECTED} == EXPECTED
    from pipeline.report import write_report

    page = write_report(kafka, tmp_path / "rep").index.read_text(encoding="utf-8")
    assert "<th>alarm episodes</th><td>3</td>" in page.replace("\n", "")
