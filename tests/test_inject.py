"""turbine inject: each fault's exact effect, exact labels, plans, and the files it writes."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pipeline.errors import ConfigError
from pipeline.inject import FaultPlan, Injector, make_plan, parse_kinds, random_plan
from pipeline.names import turbine_id
from pipeline.recordings import Chunk, RecordingSpec, RecordingWriter, read_recording
from tests.cli_support import turbine

SENSORS = ("pitch", "power", "wind_speed")
T0 = 1_420_070_400.0  # 2015-01-01T00:00:00Z
STEP = 600.0


def stream(rng, steps=50, names=("R1", "R2")):
    """Two turbines, one reading each per 10 minutes, a few readings missing."""
    ts = np.repeat(T0 + STEP * np.arange(steps), len(names))
    ids = np.tile([turbine_id(n) for n in names], steps).astype(np.int64)
    x = np.column_stack(
        [rng.normal(0, 1, ts.size), rng.uniform(-5, 2000, ts.size), rng.uniform(0, 20, ts.size)]
    )
    x[rng.random(ts.size) < 0.05] = np.nan
    return ts, ids, x


def one(kind, size=0.0, sensor=None, start=T0 + 10 * STEP, duration=20 * STEP, **extra):
    fault = {"kind": kind, "turbine": "R1", "start": start, "duration": duration, "size": size}
    if sensor is not None:
        fault["sensor"] = sensor
    return make_plan([{**fault, **extra}])


def expected(kind, x, t, size, start, duration, above=0.0):
    if kind == "derating":
        return np.where(x > above, x * (1 - size), x)
    if kind == "offset":
        return x + size
    if kind == "gain":
        return x * (1 + size)
    if kind == "drift":
        return x + size * (t - start) / duration
    first = x[np.isfinite(x)][0]
    return np.where(np.isfinite(x), first, np.nan)


@pytest.mark.parametrize(
    ("kind", "sensor", "size", "above"),
    [
        ("derating", None, 0.06, 0.0),
        ("derating", "power", 0.5, 1000.0),
        ("offset", "pitch", 2.5, 0.0),
        ("gain", "wind_speed", 0.07, 0.0),
        ("stuck", "power", 0.0, 0.0),
        ("drift", "pitch", 8.0, 0.0),
    ],
)
@pytest.mark.parametrize("pieces", [1, 7])
def test_each_kind_changes_exactly_its_sensor_in_its_window(rng, kind, sensor, size, above, pieces):
    ts, ids, x = stream(rng)
    start, duration = T0 + 10 * STEP, 20 * STEP
    plan = one(kind, size, sensor, start, duration, above=above)
    inj = Injector(plan, SENSORS)
    parts = np.array_split(np.arange(ts.size), pieces)
    got = [inj.apply(ts[p], ids[p], x[p]) for p in parts]
    values = np.concatenate([g[0] for g in got])
    labels = np.concatenate([g[1] for g in got])
    kinds = np.concatenate([g[2] for g in got])
    inside = (ids == turbine_id("R1")) & (ts >= start) & (ts < start + duration)
    j = SENSORS.index(sensor or "power")
    want = x.copy()
    want[inside, j] = expected(kind, x[inside, j], ts[inside], size, start, duration, above)
    np.testing.assert_array_equal(values, want)
    assert labels.tolist() == inside.astype(int).tolist()
    assert kinds.tolist() == [kind if f else "" for f in inside]
    assert inj.labelled.tolist() == [int(inside.sum())]
    assert np.isnan(values).sum() == np.isnan(x).sum()  # missing stays missing


def test_drift_reaches_its_size_at_the_end_and_stuck_holds_the_first_value():
    ts = T0 + STEP * np.arange(5)
    ids = np.full(5, turbine_id("R1"))
    x = np.array([[np.nan], [3.0], [4.0], [5.0], [6.0]])
    drift = Injector(one("drift", 8.0, "a", start=T0, duration=4 * STEP), ("a",))
    assert drift.apply(ts, ids, x)[0][:, 0].tolist()[1:] == [5.0, 8.0, 11.0, 6.0]
    stuck = Injector(one("stuck", sensor="a", start=T0, duration=5 * STEP), ("a",))
    out = stuck.apply(ts, ids, x)[0][:, 0]
    assert np.isnan(out[0]) and out[1:].tolist() == [3.0, 3.0, 3.0, 3.0]


@pytest.mark.parametrize(
    ("faults", "message"),
    [
        (
            [("R1", T0, 10 * STEP), ("R2", T0, 10 * STEP), ("R1", T0 + 9 * STEP, STEP)],
            "plan: faults 1 and 3 overlap on turbine R1",
        ),
        (
            [("R1", T0 + 5 * STEP, "1h"), ("R1", "2015-01-01T01:00:00+01:00", "1h")],
            "plan: faults 1 and 2 overlap on turbine R1",
        ),
    ],
)
def test_overlapping_faults_on_one_turbine_are_one_line(faults, message):
    raw = [
        {"kind": "offset", "sensor": "pitch", "size": 1.0, "turbine": t, "start": s, "duration": d}
        for t, s, d in faults
    ]
    with pytest.raises(ConfigError) as info:
        make_plan(raw)
    assert str(info.value).startswith(message) and "\n" not in str(info.value)


def test_faults_that_touch_do_not_overlap_and_bad_faults_are_named():
    plan = make_plan(
        [
            {"kind": "stuck", "sensor": "power", "turbine": 7, "start": T0, "duration": "1h"},
            {
                "kind": "stuck",
                "sensor": "power",
                "turbine": "7",
                "start": T0 + 3600,
                "duration": "1h",
            },
        ]
    )
    assert [f.turbine_id for f in plan.faults] == [7, 7]
    for bad, msg in [
        (
            {"kind": "gain", "sensor": "x", "turbine": "R1", "start": T0, "duration": 60},
            "fault 1: a gain fault needs a non-zero size",
        ),
        (
            {"kind": "melt", "turbine": "R1", "start": T0, "duration": 60, "size": 1},
            "fault 1: kind:",
        ),
        (
            {"kind": "offset", "turbine": "R1", "start": T0, "duration": 60, "size": 1},
            "a offset fault needs a sensor",
        ),
        (
            {"kind": "derating", "turbine": "R1", "start": T0, "duration": "2x", "size": 0.1},
            "not a duration: '2x'",
        ),
        (
            {"kind": "derating", "turbine": "R1", "start": "soon", "duration": 60, "size": 0.1},
            "not a time: 'soon'",
        ),
        (
            {"kind": "derating", "turbine": "R1", "start": T0, "duration": 60, "size": 1.5},
            "derating size is a fraction",
        ),
    ]:
        with pytest.raises(ConfigError, match=msg):
            make_plan([bad])
    with pytest.raises(ConfigError, match="fault 1: no sensor 'rpm'"):
        Injector(one("offset", 1.0, "rpm"), SENSORS)


KINDS = "derating::0.06,gain:wind_speed:0.07,offset:pitch:2.5,stuck:power,drift:outdoor_temp:8"


def test_random_plans_are_determined_by_the_seed_and_never_overlap():
    names = ["R80711", "R80721", "R80736", "R80790"]
    year = (1_420_070_400.0, 1_451_606_400.0)
    args = (names, *year, 40, parse_kinds(KINDS), 14 * 86400.0)
    a, b = random_plan(*args, seed=3, gap=86400.0), random_plan(*args, seed=3, gap=86400.0)
    c = random_plan(*args, seed=4, gap=86400.0)
    assert a == b and a != c
    assert a.kind_counts() == {"derating": 8, "gain": 8, "offset": 8, "stuck": 8, "drift": 8}
    assert all(year[0] <= f.start and f.end <= year[1] for f in a.faults)
    FaultPlan.model_validate({"faults": a.faults})  # no overlap
    for n in names:
        spans = sorted((f.start, f.end) for f in a.faults if f.turbine == n)
        assert all(e + 86400.0 <= s for (_, e), (s, _) in zip(spans, spans[1:], strict=False))
    with pytest.raises(ConfigError, match="cannot place 40 faults"):
        random_plan(names[:1], *year, 40, parse_kinds(KINDS), 14 * 86400.0, seed=0)


@pytest.mark.parametrize("most", [1, 2, 3])
def test_staggered_plans_keep_at_most_n_turbines_faulty_at_a_time(most):
    names = ["R80711", "R80721", "R80736", "R80790"]
    year = (1_420_070_400.0, 1_451_606_400.0)
    count = {1: 20, 2: 40, 3: 40}[most]
    args = (names, *year, count, parse_kinds(KINDS), 14 * 86400.0)
    a = random_plan(*args, seed=5, gap=2 * 86400.0, max_concurrent=most)
    assert a == random_plan(*args, seed=5, gap=2 * 86400.0, max_concurrent=most)
    assert len(a.faults) == count and all(year[0] <= f.start and f.end <= year[1] for f in a.faults)
    edges = sorted({f.start for f in a.faults} | {f.end for f in a.faults})
    depth = [sum(f.start <= t < f.end for f in a.faults) for t in edges]
    assert max(depth) == most
    for n in names:  # the gap between a turbine's faults still holds
        spans = sorted((f.start, f.end) for f in a.faults if f.turbine == n)
        assert all(e + 2 * 86400.0 <= s for (_, e), (s, _) in zip(spans, spans[1:], strict=False))
    with pytest.raises(ConfigError, match="at most 1 at a time"):
        random_plan(names, *year, 40, parse_kinds(KINDS), 14 * 86400.0, seed=0, max_concurrent=1)


SCADA = [
    "--id-col",
    "Wind_turbine_name",
    "--time-col",
    "Date_time",
    "--sensors",
    "Ba_avg=pitch,P_avg=power,Ws_avg=wind_speed",
]


def scada_file(tmp_path, rng, steps=400):
    lines = ["Wind_turbine_name,Date_time,Ba_avg,P_avg,Ws_avg,Va_avg"]
    for i in range(steps):
        for name in ("R80711", "R80721"):
            ws = 8 + 3 * np.sin(i / 30) + rng.normal(0, 0.3)
            cells = [
                f"{-1 + rng.normal(0, 0.1):.3f}",
                f"{120 * ws + rng.normal(0, 20):.2f}",
                f"{ws:.4f}",
                f"{rng.normal(0, 5):.2f}",
            ]
            if i == 7:
                cells = ["", "", "", ""]
            stamp = np.datetime64(int(T0) + 600 * i + 3600, "s")
            lines.append(f"{name},{stamp}+01:00," + ",".join(cells))
    path = tmp_path / "farm.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_csv_copy_keeps_every_other_line_and_cell_and_detect_reads_its_labels(tmp_path, rng):
    src = scada_file(tmp_path, rng)
    out = tmp_path / "faulty.csv"
    plan = tmp_path / "plan.toml"
    plan.write_text(
        "[[fault]]\nkind = 'derating'\nturbine = 'R80711'\nstart = '2015-01-01T12:00:00+01:00'\n"
        "duration = '12h'\nsize = 0.5\n"
        "[[fault]]\nkind = 'gain'\nturbine = 'R80721'\nsensor = 'Ws_avg'\nstart = 1420200000\n"
        "duration = '1d'\nsize = 0.07\n"
    )
    msg = turbine("inject", "--input", src, "--output", out, "--plan", plan, *SCADA).stdout
    assert "2 faults (derating 1, gain 1)" in msg
    before, after = src.read_text().splitlines(), out.read_text().splitlines()
    assert after[0] == before[0] + ",label,fault_kind"
    spec = RecordingSpec(
        id_col="Wind_turbine_name",
        time_col="Date_time",
        sensors="Ba_avg=pitch,P_avg=power,Ws_avg=wind_speed",
    )
    with read_recording(src, spec) as rec:
        orig = Chunk.concat(list(rec))
    with read_recording(out, spec) as rec:
        back = Chunk.concat(list(rec))
        assert rec.has_labels and rec.has_kinds
    d_start = T0 + 11 * 3600
    r1 = (
        (orig.turbine_ids == turbine_id("R80711"))
        & (orig.timestamps >= d_start)
        & (orig.timestamps < d_start + 12 * 3600)
    )
    r2 = (
        (orig.turbine_ids == turbine_id("R80721"))
        & (orig.timestamps >= 1420200000)
        & (orig.timestamps < 1420200000 + 86400)
    )
    want = orig.values.copy()
    want[r1, 1] = np.where(orig.values[r1, 1] > 0, orig.values[r1, 1] * 0.5, orig.values[r1, 1])
    want[r2, 2] = orig.values[r2, 2] * 1.07
    np.testing.assert_array_equal(back.values, want)
    assert back.labels.tolist() == (r1 | r2).astype(int).tolist()
    assert set(back.kinds[r1]) == {"derating"} and set(back.kinds[r2]) == {"gain"}
    for b, a, faulty in zip(before[1:], after[1:], (r1 | r2).tolist(), strict=True):
        if not faulty:
            assert a == b + ",0,"
        else:
            assert a.split(",")[:2] == b.split(",")[:2] and a.split(",")[5] == b.split(",")[5]
    summary = turbine("detect", "--input", out, "--store", tmp_path / "st", *SCADA).stdout
    assert "against labels: precision" in summary


def test_npz_copy_keeps_all_sensors_and_names(tmp_path, rng):
    ts, ids, x = stream(rng)
    src = tmp_path / "in.npz"
    from pipeline.names import TurbineNames

    names = TurbineNames()
    names.add(["R1", "R2"])
    with RecordingWriter(src, ("Ba_avg", "P_avg", "Ws_avg"), names=names) as w:
        w.write(Chunk(ts, ids, x, None, None, np.arange(ts.size)))
    out = tmp_path / "out.npz"
    turbine(
        "inject",
        "--input",
        src,
        "--output",
        out,
        "--kind",
        "offset",
        "--sensor",
        "pitch",
        "--size",
        "2.5",
        "--turbine",
        "R2",
        "--start",
        str(T0),
        "--duration",
        "1h",
        "--sensors",
        "Ba_avg=pitch,P_avg=power",
    )
    with read_recording(out) as rec:
        back = Chunk.concat(list(rec))
        assert rec.sensors == ("Ba_avg", "P_avg", "Ws_avg")
        assert rec.names.labels(back.turbine_ids)[:2] == ["R1", "R2"]
    inside = (ids == turbine_id("R2")) & (ts < T0 + 3600)
    want = x.copy()
    want[inside, 0] += 2.5
    np.testing.assert_array_equal(back.values, want)
    assert back.labels.tolist() == inside.astype(int).tolist()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            [
                "--kind",
                "offset",
                "--sensor",
                "Ba_avg",
                "--size",
                "1",
                "--turbine",
                "R99",
                "--start",
                str(T0),
                "--duration",
                "1h",
            ],
            "fault 1 (offset of Ba_avg on R99 from 2015-01-01T00:00:00Z) matches no reading",
        ),
        (
            [
                "--kind",
                "offset",
                "--sensor",
                "Nope",
                "--size",
                "1",
                "--turbine",
                "R80711",
                "--start",
                str(T0),
                "--duration",
                "1h",
            ],
            "fault 1: no sensor 'Nope'",
        ),
        (
            ["--kind", "offset", "--sensor", "Ba_avg", "--size", "1"],
            "inject --kind needs --turbine, --start, --duration",
        ),
        ([], "inject needs one of --kind (one fault), --plan FILE or --random N"),
        (["--random", "3", "--kinds", "melt:x:1", "--duration", "1h"], "unknown kind 'melt'"),
    ],
)
def test_bad_inject_input_is_one_line_and_writes_nothing(tmp_path, rng, extra, message):
    src = scada_file(tmp_path, rng, steps=50)
    out = tmp_path / "o.csv"
    proc = turbine(
        "inject",
        "--input",
        src,
        "--output",
        out,
        "--id-col",
        "Wind_turbine_name",
        "--time-col",
        "Date_time",
        *extra,
        check=False,
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("turbine: error: ") and message in proc.stderr
    assert len(proc.stderr.splitlines()) == 1 and not out.exists()


def test_lhb_benchmark_plan(lhb_csv, tmp_path):
    out = tmp_path / "lhb-faults.csv"
    cfg = tmp_path / "lhb.toml"
    cfg.write_text(
        "[recording]\nid_col = 'Wind_turbine_name'\ntime_col = 'Date_time'\n"
        "sensors = {Ba_avg = 'pitch', P_avg = 'power', Ws_avg = 'wind_speed', "
        "Ot_avg = 'outdoor_temp'}\nsentinels = {outdoor_temp = [-273.2]}\n"
    )
    turbine(
        "inject",
        "--input",
        lhb_csv,
        "--output",
        out,
        "--config",
        cfg,
        "--random",
        40,
        "--kinds",
        KINDS,
        "--duration",
        "14d",
        "--since",
        "2015-01-01T00:00:00Z",
        "--until",
        "2016-01-01T00:00:00Z",
        "--seed",
        1,
        "--gap",
        "2d",
        "--write-plan",
        tmp_path / "plan.json",
    )
    plan = json.loads((tmp_path / "plan.json").read_text())
    assert len(plan) == 40 and {f["kind"] for f in plan} == {
        "derating",
        "gain",
        "offset",
        "stuck",
        "drift",
    }
    assert all(f["duration"] == 14 * 86400 and f["start"] >= 1_420_070_400 for f in plan)
    spec = RecordingSpec.model_validate(
        {
            "id_col": "Wind_turbine_name",
            "time_col": "Date_time",
            "sensors": "Ba_avg=pitch,P_avg=power,Ws_avg=wind_speed,Ot_avg=outdoor_temp",
        }
    )
    with read_recording(out, spec) as rec:
        back = Chunk.concat(list(rec))
    with read_recording(lhb_csv, spec) as rec:
        orig = Chunk.concat(list(rec))
    assert len(back) == 420_480
    f = next(f for f in plan if f["kind"] == "offset")
    inside = (
        (orig.turbine_ids == turbine_id(f["turbine"]))
        & (orig.timestamps >= f["start"])
        & (orig.timestamps < f["start"] + f["duration"])
    )
    np.testing.assert_array_equal(back.values[inside, 0], orig.values[inside, 0] + 2.5)
    assert int(back.labels.sum()) == sum(
        int(
            (
                (orig.turbine_ids == turbine_id(p["turbine"]))
                & (orig.timestamps >= p["start"])
                & (orig.timestamps < p["start"] + p["duration"])
            ).sum()
        )
        for p in plan
    )
    # The sentinel readings are copied as they were, never drifted.
    assert (np.abs(back.values[:, 3] + 273.2) < 1e-3).sum() == 33


def test_evaluate_of_a_store_agrees_with_the_engine_on_an_injected_file_with_quirks(tmp_path, rng):
    src = scada_file(tmp_path, rng)
    text = src.read_text().splitlines()
    src.write_text("\n".join([*text, text[-1], text[-40]]) + "\n")  # a duplicate, a step back
    out = tmp_path / "faulty.csv"
    turbine(
        "inject",
        "--input",
        src,
        "--output",
        out,
        *SCADA,
        "--random",
        4,
        "--seed",
        5,
        "--kinds",
        "offset:pitch:3,gain:Ws_avg:0.3",
        "--duration",
        "6h",
    )
    opts = [*SCADA, "--min-samples", "40", "--format", "json"]
    turbine("detect", "--input", out, "--store", tmp_path / "st", *SCADA, "--min-samples", "40")
    engine = json.loads(turbine("evaluate", "--input", out, *opts).stdout)
    stored = json.loads(
        turbine("evaluate", "--input", out, "--store", tmp_path / "st", *opts).stdout
    )
    assert engine["tp"] + engine["fn"] == stored["tp"] + stored["fn"] > 0
    assert {k: engine[k] for k in ("tp", "fp", "fn", "tn")} == {
        k: stored[k] for k in ("tp", "fp", "fn", "tn")
    }


def test_a_seed_gives_the_same_file_and_its_written_plan_replays_it(tmp_path, rng):
    src = scada_file(tmp_path, rng)
    args = [
        "--random",
        6,
        "--kinds",
        "derating::0.1,stuck:Ws_avg,drift:pitch:2",
        "--duration",
        "5h",
        *SCADA,
    ]
    for name in ("a", "b"):
        turbine(
            "inject",
            "--input",
            src,
            "--output",
            tmp_path / f"{name}.csv",
            "--seed",
            11,
            *args,
            "--write-plan",
            tmp_path / f"{name}.json",
        )
    turbine("inject", "--input", src, "--output", tmp_path / "c.csv", "--seed", 12, *args)
    turbine(
        "inject",
        "--input",
        src,
        "--output",
        tmp_path / "d.csv",
        "--plan",
        tmp_path / "a.json",
        *SCADA,
    )
    a = (tmp_path / "a.csv").read_bytes()
    assert a == (tmp_path / "b.csv").read_bytes() == (tmp_path / "d.csv").read_bytes()
    assert a != (tmp_path / "c.csv").read_bytes()
    assert len(json.loads((tmp_path / "a.json").read_text())) == 6
