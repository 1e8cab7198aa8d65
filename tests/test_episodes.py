"""Alarm episodes: the tracker against a per-reading reference, any batch split, state."""

from __future__ import annotations

import io

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.episodes import NORMAL, Episodes, EpisodeTracker

SENSORS = ("a", "b", "c")


def naive_episodes(t, ids, alarm, dist, contrib, states, gap):
    """Episodes by a Python loop over readings in stream order (the oracle)."""
    row_of = np.cumsum(alarm) - 1
    open_: dict[int, dict] = {}
    closed: list[dict] = []
    for i in range(t.size):
        u = int(ids[i])
        ep = open_.get(u)
        if ep is not None and t[i] - ep["end"] >= gap:
            closed.append(open_.pop(u))
            ep = None
        if not alarm[i]:
            continue
        c = contrib[row_of[i]]
        if ep is None:
            open_[u] = {
                "turbine": u,
                "start": t[i],
                "end": t[i],
                "peak": dist[i],
                "peak_time": t[i],
                "alarms": 1,
                "sum": c.copy(),
                "state": states[i],
            }
        else:
            ep["end"] = max(ep["end"], t[i])
            if dist[i] > ep["peak"]:
                ep["peak"], ep["peak_time"], ep["state"] = dist[i], t[i], states[i]
            ep["alarms"] += 1
            ep["sum"] = ep["sum"] + c
    closed.extend(open_.values())
    return sorted(closed, key=lambda e: (e["start"], e["turbine"]))


def stream(seed: int, n_steps: int, n_turbines: int, rate: float):
    """A time-ordered stream: every turbine at every step, some steps missing, alarms at random."""
    rng = np.random.default_rng(seed)
    steps = np.cumsum(rng.choice([1.0, 1.0, 2.0, 7.0], size=n_steps))
    t = np.repeat(steps, n_turbines)
    ids = np.tile(np.arange(n_turbines) * 3 - 2, n_steps)
    keep = rng.random(t.size) < 0.9
    t, ids = t[keep], ids[keep]
    alarm = rng.random(t.size) < rate
    dist = rng.integers(10, 14, t.size).astype(float)  # few values: ties on the peak happen
    contrib = rng.exponential(1, (int(alarm.sum()), len(SENSORS)))
    states = rng.choice(np.array([NORMAL, "stopped"]), t.size)
    return t, ids, alarm, dist, contrib, states


def run_split(data, cuts, gap):
    t, ids, alarm, dist, contrib, states = data
    tracker = EpisodeTracker(SENSORS, gap)
    row_of = np.r_[0, np.cumsum(alarm)]
    closed, opened = [], []
    bounds = [0, *sorted(cuts), t.size]
    for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
        up = tracker.update(
            t[lo:hi],
            ids[lo:hi],
            alarm[lo:hi],
            dist[lo:hi],
            contrib[row_of[lo] : row_of[hi]],
            states[lo:hi],
        )
        closed.append(up.closed)
        opened.append(up.opened)
        # Closed in this batch means: no later reading can join it.
        assert len(Episodes.concat([up.closed, tracker.in_progress], SENSORS)) == len(
            np.unique(np.r_[up.closed.ids(), tracker.in_progress.ids()])
        )
    closed.append(tracker.close_all())
    return Episodes.concat(closed, SENSORS).chronological(), Episodes.concat(opened, SENSORS)


def assert_same(got: Episodes, expected: list[dict]) -> None:
    assert len(got) == len(expected)
    if not expected:
        return
    np.testing.assert_array_equal(got.turbine_ids, [e["turbine"] for e in expected])
    np.testing.assert_array_equal(got.starts, [e["start"] for e in expected])
    np.testing.assert_array_equal(got.ends, [e["end"] for e in expected])
    np.testing.assert_array_equal(got.peak_distances, [e["peak"] for e in expected])
    np.testing.assert_array_equal(got.peak_times, [e["peak_time"] for e in expected])
    np.testing.assert_array_equal(got.alarms, [e["alarms"] for e in expected])
    np.testing.assert_array_equal(got.states, [e["state"] for e in expected])
    np.testing.assert_allclose(got.contributions, [e["sum"] for e in expected], rtol=1e-12)


# A stream (see `stream`), its gap and where it is cut into batches.
STREAMS = dict(
    seed=st.integers(0, 2**32 - 1),
    n_steps=st.integers(1, 60),
    n_turbines=st.integers(1, 5),
    rate=st.sampled_from([0.05, 0.3, 0.8]),
    gap=st.sampled_from([0.5, 1.0, 3.0, 10.0]),
    cuts=st.lists(st.integers(0, 300), max_size=8),
)


@settings(max_examples=60, deadline=None)
@given(**STREAMS)
def test_tracker_matches_the_per_reading_reference_for_any_split(
    seed, n_steps, n_turbines, rate, gap, cuts
):
    data = stream(seed, n_steps, n_turbines, rate)
    n = data[0].size
    cuts = [c for c in cuts if c <= n]
    expected = naive_episodes(*data, gap)
    got, opened = run_split(data, cuts, gap)
    assert_same(got, expected)
    whole, _ = run_split(data, [], gap)
    assert_same(whole, expected)
    # Every episode is announced once, at the batch of its first alarm.
    np.testing.assert_array_equal(np.sort(opened.ids()), np.sort(got.ids()))


def test_an_episode_closes_on_its_own_turbines_clock():
    tr = EpisodeTracker(("a",), gap=10.0)
    up = tr.update([0.0, 0.0], [1, 2], [True, False], [50.0, 1.0], [[50.0]])
    assert len(up.opened) == 1 and len(up.closed) == 0
    # Turbine 2's clock passes the gap; turbine 1's does not: still open.
    up = tr.update([5.0, 30.0], [1, 2], [False, False], [1.0, 1.0], np.zeros((0, 1)))
    assert len(up.closed) == 0 and len(tr.in_progress) == 1
    up = tr.update([10.0], [1], [False], [1.0], np.zeros((0, 1)))
    assert up.closed.ids() == ["1:0.0"] and len(tr.in_progress) == 0


def test_alarms_less_than_a_gap_apart_are_one_episode_and_a_gap_splits():
    tr = EpisodeTracker(("a", "b"), gap=3.0)
    t = np.arange(10.0)
    alarm = np.isin(t, [1, 2, 4, 7, 8])  # 4 - 2 = 2 < 3 joins; 7 - 4 = 3 splits
    contrib = np.array([[1.0, 0], [0, 5], [1, 0], [0, 1], [3, 0]])
    dist = np.where(alarm, t * 10, 0)
    up = tr.update(t, np.zeros(10, int), alarm, dist, contrib)
    eps = Episodes.concat([up.closed, tr.close_all()], tr.sensors)
    assert eps.starts.tolist() == [1.0, 7.0] and eps.ends.tolist() == [4.0, 8.0]
    assert eps.alarms.tolist() == [3, 2] and eps.peak_times.tolist() == [4.0, 8.0]
    assert eps.top_sensors() == [["b", "a"], ["a", "b"]]
    assert eps.durations.tolist() == [3.0, 1.0]
    assert eps.states.tolist() == [NORMAL, NORMAL]


def test_expire_closes_by_stream_time():
    tr = EpisodeTracker(("a",), gap=10.0)
    tr.update([0.0], [4], [True], [30.0], [[30.0]])
    assert len(tr.expire(9.0)) == 0
    assert tr.expire(10.0).ids() == ["4:0.0"]


def test_state_round_trips_through_npz_without_pickle():
    data = stream(3, 40, 4, 0.5)
    t, ids, alarm, dist, contrib, states = data
    half = t.size // 2
    k = int(alarm[:half].sum())
    a = EpisodeTracker(SENSORS, gap=5.0)
    a.update(t[:half], ids[:half], alarm[:half], dist[:half], contrib[:k], states[:half])
    assert len(a.in_progress) > 0
    buf = io.BytesIO()
    np.savez(buf, **a.state())
    buf.seek(0)
    with np.load(buf, allow_pickle=False) as f:
        b = EpisodeTracker.from_state({key: f[key] for key in f.files})
    assert b.gap == a.gap and b.sensors == a.sensors
    assert EpisodeTracker.from_state(a.state(), gap=9.0).gap == 9.0  # a new configuration
    rest = (t[half:], ids[half:], alarm[half:], dist[half:], contrib[k:], states[half:])
    ua, ub = a.update(*rest), b.update(*rest)
    assert ua.closed.ids() == ub.closed.ids()
    np.testing.assert_array_equal(ua.closed.contributions, ub.closed.contributions)
    np.testing.assert_array_equal(a.close_all().states, b.close_all().states)


def test_merge_takes_disjoint_turbines_and_refuses_the_same_one():
    a, b = EpisodeTracker(("a",), 5.0), EpisodeTracker(("a",), 5.0)
    a.update([0.0], [2], [True], [9.0], [[9.0]])
    b.update([0.0], [1], [True], [9.0], [[9.0]])
    assert a.merge(b).in_progress.turbine_ids.tolist() == [1, 2]
    with pytest.raises(ValueError, match="same turbine"):
        a.merge(b)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (([0.0, 1.0], [1], [True, False], [1.0, 1.0], [[1.0]]), "turbine_ids"),
        (([0.0], [1], [True], [1.0], np.zeros((0, 1))), "contributions"),
        (([0.0], [1], [False], [1.0], np.zeros((0, 1)), ["normal", "x"]), "states"),
    ],
)
def test_bad_shapes_are_named(args, message):
    with pytest.raises(ValueError, match=message):
        EpisodeTracker(("a",), 5.0).update(*args)
    with pytest.raises(ValueError, match="positive"):
        EpisodeTracker(("a",), 0.0)


# ---------------------------------------------------------------------- the store
def closed_episodes(seed: int = 5, gap: float = 4.0) -> Episodes:
    data = stream(seed, 80, 4, 0.3)
    got, _ = run_split(data, [50, 120], gap)
    return got


def test_store_keeps_episodes_beside_the_chunks_and_filters_them(tmp_path):
    from pipeline.store import AnomalyStore, read_episodes

    eps = closed_episodes()
    store = AnomalyStore(tmp_path / "s", sensors=SENSORS)
    half = len(eps) // 2
    store.append_episodes(eps.select(np.arange(half)))
    store.flush()
    store.append_episodes(eps.select(np.arange(half, len(eps))))
    assert len(store.pending_episodes()) == len(eps) - half
    store.flush()
    assert sorted(p.name for p in (tmp_path / "s").glob("episodes-*")) == [
        "episodes-000001.npz",
        "episodes-000002.npz",
    ]
    reopened = AnomalyStore(tmp_path / "s")
    back = reopened.episodes()
    for f in ("turbine_ids", "starts", "ends", "peak_distances", "alarms", "states"):
        np.testing.assert_array_equal(getattr(back, f), getattr(eps, f))
    np.testing.assert_array_equal(back.contributions, eps.contributions)
    assert back.sensors == SENSORS
    one = reopened.episodes(turbine=1)
    assert len(one) and set(one.turbine_ids.tolist()) == {1}
    t0 = float(np.median(eps.starts))
    late = read_episodes(tmp_path / "s", since=t0)
    np.testing.assert_array_equal(late.ids(), eps.select(eps.ends >= t0).ids())


def test_store_truncate_drops_the_episodes_written_after_the_position(tmp_path):
    from pipeline.store import AnomalyStore

    eps = closed_episodes()
    store = AnomalyStore(tmp_path / "s", sensors=SENSORS)
    store.append_episodes(eps.select(np.arange(3)))
    store.flush()
    position = store.position()
    store.append_episodes(eps.select(np.arange(3, len(eps))))
    store.flush()
    assert len(store.episodes()) == len(eps)
    store.truncate(position)
    assert len(AnomalyStore(tmp_path / "s").episodes()) == 3
    assert len(list((tmp_path / "s").glob("episodes-*"))) == 1


def test_store_refuses_episodes_of_other_sensors(tmp_path):
    from pipeline.errors import StoreError
    from pipeline.store import AnomalyStore

    store = AnomalyStore(tmp_path / "s", sensors=("x", "y", "z"))
    with pytest.raises(StoreError, match="sensors"):
        store.append_episodes(closed_episodes())


def test_checkpoint_carries_the_episode_in_progress_and_the_pending_ones(tmp_path):
    from consumers.checkpoint import Checkpoint, CheckpointDir

    data = stream(9, 30, 3, 0.6)
    tracker = EpisodeTracker(SENSORS, gap=4.0)
    up = tracker.update(*data)
    assert len(tracker.in_progress) and len(up.closed)
    cps = CheckpointDir(tmp_path, "readings")
    cps.save(
        Checkpoint(
            partition=2,
            offset=10,
            detector_state={},
            store_position={},
            pending=None,
            sensors=SENSORS,
            episode_state=tracker.state(),
            pending_episodes=up.closed,
        )
    )
    back = cps.load(2)
    assert back is not None and back.pending_episodes is not None
    restored = EpisodeTracker.from_state(back.episode_state)
    assert restored.in_progress.ids() == tracker.in_progress.ids()
    np.testing.assert_array_equal(restored.in_progress.states, tracker.in_progress.states)
    assert back.pending_episodes.ids() == up.closed.ids()
    np.testing.assert_array_equal(back.pending_episodes.contributions, up.closed.contributions)
    cps.save(Checkpoint(3, 0, {}, {}, None))  # none of either: nothing saved, nothing back
    empty = cps.load(3)
    assert empty is not None and empty.episode_state == {} and empty.pending_episodes is None


def test_episode_events_are_json_with_the_documented_fields_and_the_readme_says_so():
    import json
    from pathlib import Path

    import consumers.episode_events as ev

    tracker = EpisodeTracker(SENSORS, gap=4.0)
    up = tracker.update(*stream(2, 30, 3, 0.5))
    keys, values, ids = ev.render_episode_events(
        up.closed, ev.CLOSED, producer_id="p", site="s", detected_at=5.0
    )
    docs = [json.loads(v) for v in values]
    assert len(docs) == len(up.closed) > 0
    assert keys == [str(d["turbine_id"]).encode() for d in docs]
    assert ids == [d["event_id"].encode() for d in docs]
    documented = json.loads(
        ev.__doc__.split("::")[1]
        .split("``episode_opened``")[0]
        .replace("...", "")
        .replace(", ]", "]")
    )
    assert set(docs[0]) == set(documented)
    assert [d["episode_id"] for d in docs] == up.closed.ids()
    assert [d["duration_s"] for d in docs] == up.closed.durations.tolist()
    assert [d["turbine"] for d in docs] == [d["turbine_id"] for d in docs]
    from pipeline.names import TurbineNames

    names = TurbineNames()
    named = EpisodeTracker(("a",), gap=4.0)
    opened = named.update([0.0], names.ids_of(["R80711"]), [True], [9.0], [[9.0]]).opened
    _, values, _ = ev.render_episode_events(
        opened, ev.OPENED, producer_id="p", site="s", detected_at=1.0, names=names
    )
    assert json.loads(values[0])["turbine"] == "R80711"
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    for text in ("--episodes-topic", "`episode_gap` | 1800", "turbine anomalies STORE --episodes"):
        assert text in readme


def test_integer_state_codes_are_named_and_the_engine_gives_names_not_codes():
    from pipeline import Detector, DetectorConfig

    tr = EpisodeTracker(("a",), gap=5.0)
    up = tr.update(
        [0.0, 1.0],
        [1, 2],
        [True, True],
        [9.0, 9.0],
        [[9.0], [9.0]],
        np.array([0, 2]),
        ("normal", "x", "stopped"),
    )
    assert up.opened.states.tolist() == ["normal", "stopped"]
    with pytest.raises(ValueError, match="state codes"):
        tr.update([2.0], [1], [False], [0.0], np.zeros((0, 1)), np.array([3]), ("normal",))

    rng = np.random.default_rng(4)
    config = DetectorConfig(
        sensors=("p", "q"),
        key_groups=1,
        min_samples=50,
        learn_when=[{"sensor": "p", "above": 0.0, "state": "stopped"}],
    )
    det = Detector(config)
    ids = np.zeros(400, dtype=int)
    x = np.abs(rng.normal(size=(400, 2))) + 1.0
    det.learn(np.arange(400.0), ids, x)
    y = np.abs(rng.normal(size=(6, 2))) + 1.0
    y[1:3] += 50.0  # two alarms while producing
    y[4, 0] = -1.0  # a stop: filtered, never an alarm
    result = det.process(400.0 + np.arange(6.0), np.zeros(6, dtype=int), y)
    assert result.states is not None and result.states.any()
    tracker = EpisodeTracker(("p", "q"), gap=10.0)
    opened = tracker.update_result(result).opened
    assert opened.alarms.tolist() == [2] and opened.states.tolist() == [NORMAL]


def _same_episodes(a: Episodes, b: Episodes) -> None:
    for name in ("turbine_ids", "starts", "ends", "peak_distances", "peak_times", "alarms"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    np.testing.assert_array_equal(a.contributions, b.contributions)  # bit for bit
    assert a.states.tolist() == b.states.tolist()


@settings(max_examples=80, deadline=None)
@given(**STREAMS, with_states=st.booleans(), shuffled=st.booleans())
def test_the_compiled_tracker_gives_the_numpy_trackers_episodes_bit_for_bit(
    seed, n_steps, n_turbines, rate, gap, cuts, with_states, shuffled
):
    """Batch after batch: the same opened, closed and open episodes, in the same order."""
    from pipeline.batch_math import kernels_available

    if not kernels_available():  # pragma: no cover - numba is a dependency
        pytest.skip("numba is not importable")
    t, ids, alarm, dist, contrib, states = stream(seed, n_steps, n_turbines, rate)
    if shuffled:  # readings out of time order inside a batch (a late producer)
        order = np.random.default_rng(seed).permutation(t.size)
        alarm_row = (np.cumsum(alarm) - 1)[order][alarm[order]]  # each alarm's contributions
        t, ids, alarm, dist, states = t[order], ids[order], alarm[order], dist[order], states[order]
        contrib = contrib[alarm_row]
    row_of = np.r_[0, np.cumsum(alarm)]
    numpy_tr, compiled_tr = EpisodeTracker(SENSORS, gap), EpisodeTracker(SENSORS, gap, True)
    bounds = [0, *sorted(c for c in cuts if c <= t.size), t.size]
    for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
        batch = (t[lo:hi], ids[lo:hi], alarm[lo:hi], dist[lo:hi], contrib[row_of[lo] : row_of[hi]])
        s = states[lo:hi] if with_states else None
        want, got = numpy_tr.update(*batch, s), compiled_tr.update(*batch, s)
        _same_episodes(got.opened, want.opened)
        _same_episodes(got.closed, want.closed)
        _same_episodes(compiled_tr.in_progress, numpy_tr.in_progress)


@pytest.mark.parametrize("n_alarms", [7, 9, 130, 300, 1000])
def test_long_episodes_sum_their_contributions_as_numpy_does(rng, n_alarms):
    """Segments past NumPy's pairwise block sizes (8, 128), in one batch and carried on."""
    from pipeline.batch_math import kernels_available

    if not kernels_available():  # pragma: no cover - numba is a dependency
        pytest.skip("numba is not importable")
    t = np.arange(2.0 * n_alarms)
    ids = np.tile([4, 9], n_alarms)
    alarm = np.ones(t.size, bool)
    dist = rng.normal(20, 3, t.size)
    contrib = rng.exponential(1, (t.size, len(SENSORS)))
    numpy_tr, compiled_tr = EpisodeTracker(SENSORS, 5.0), EpisodeTracker(SENSORS, 5.0, True)
    half = t.size // 2
    for sl in (slice(0, half), slice(half, None)):
        want = numpy_tr.update(t[sl], ids[sl], alarm[sl], dist[sl], contrib[sl])
        got = compiled_tr.update(t[sl], ids[sl], alarm[sl], dist[sl], contrib[sl])
        _same_episodes(got.opened, want.opened)
        _same_episodes(compiled_tr.in_progress, numpy_tr.in_progress)
    _same_episodes(compiled_tr.close_all(), numpy_tr.close_all())
