"""The report page (issue 14): faults, fault kinds, seen before, contributions, buckets, ids."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipeline.detector import BatchResult
from pipeline.report import ReportOptions, write_report
from pipeline.report.common import iso
from pipeline.report.data import open_stores, summarise
from pipeline.similarity import SeenBefore
from pipeline.store import AnomalyStore

T0 = 1_767_225_617.3  # 2026-01-01 00:00:17.3 UTC: not on any round edge


def anomaly_store(
    path: Path,
    timestamps: np.ndarray,
    turbines: np.ndarray,
    contributions: np.ndarray,
    batch_of: np.ndarray | None = None,
) -> Path:
    """A store holding exactly these anomalies, one batch (offset) per distinct batch_of."""
    d = contributions.shape[1]
    store = AnomalyStore(path, sensors=tuple(f"s{j}" for j in range(d)))
    batch_of = np.arange(timestamps.size) if batch_of is None else batch_of
    for b in np.unique(batch_of).tolist():
        sel = np.flatnonzero(batch_of == b)
        k = sel.size
        store.append(
            BatchResult(
                timestamps[sel],
                turbines[sel],
                contributions[sel].sum(axis=1),
                np.ones(k, bool),
                np.ones(k, np.int8),
                1.0,
                np.arange(k),
                contributions[sel],
            ),
            partitions=-1,
            offsets=b,
        )
    store.flush()
    return path


@pytest.mark.parametrize(
    ("span", "width", "name"),
    [
        (50 * 60.0, 60.0, "1 min"),
        (5 * 3600.0, 600.0, "10 min"),
        (3 * 86_400.0, 3600.0, "1 h"),
        (200 * 86_400.0, 86_400.0, "1 day"),
    ],
)
def test_heatmap_buckets_are_round_units_chosen_by_span(tmp_path, span, width, name):
    ts = T0 + np.array([0.0, span / 3, span])
    path = anomaly_store(tmp_path / "s", ts, np.array([1, 2, 1]), np.ones((3, 2)) * 10)
    summary = summarise(open_stores(path), ReportOptions())
    np.testing.assert_allclose(np.diff(summary.edges), width)
    assert summary.edges[0] % width == 0
    assert summary.edges[0] <= ts.min() and summary.edges[-1] >= ts.max()
    assert summary.edges.size - 1 <= ReportOptions().time_buckets or width == 86_400.0
    assert summary.heat.sum() == 3
    page = write_report(path, tmp_path / "rep").index.read_text()
    assert f"{name} bucket" in page
    assert " s bucket" not in page


def _cells(page: str, header: str) -> list[list[str]]:
    """Rows (as cell texts) of the first table whose header row has ``header``."""
    import re

    for table in re.findall(r"<table>(.*?)</table>", page, flags=re.S):
        heads = re.findall(r"<th>(.*?)</th>", table)
        if header in heads:
            body = table.split("</thead>", 1)[1]
            rows = [re.findall(r"<td>(.*?)</td>", row) for row in body.split("</tr>")]
            return [r for r in rows if r]
    raise AssertionError(f"no table with a {header!r} column")


def test_contributions_are_explained_and_their_shares_sum_to_d2(tmp_path):
    # Signed shares: one larger than d^2, one negative (correlated sensors against each other).
    contrib = np.array([[30.0, -12.0, 2.0], [5.0, 6.0, 1.0]])
    path = anomaly_store(tmp_path / "s", T0 + np.array([0.0, 60.0]), np.array([1, 2]), contrib)
    page = write_report(path, tmp_path / "rep").index.read_text()
    assert "signed shares of d\u00b2" in page and "add up to its d\u00b2" in page
    rows = _cells(page, "sum of shares")
    assert len(rows) == 2
    for row in rows:
        d2, total = float(row[3].replace(",", "")), float(row[-1].replace(",", ""))
        assert total == pytest.approx(d2)
    assert any("s0 +30.0" in row[4] for row in rows)
    # The note stands beside the contributions: in section 3, before its event table.
    section = page.split("<h2>3.", 1)[1].split("<h2>4.", 1)[0]
    assert section.index("signed shares") < section.index("sum of shares")


@pytest.mark.parametrize(("partition", "embedded"), [(-1, True), (3, False)])
def test_event_id_format_is_explained_in_the_page(tmp_path, partition, embedded):
    store = AnomalyStore(tmp_path / "s", sensors=("a", "b"))
    c = np.array([[4.0, 1.0]])
    store.append(
        BatchResult(np.array([T0]), np.array([7]), c.sum(1), np.ones(1, bool),
                    np.ones(1, np.int8), 1.0, np.arange(1), c),
        partitions=partition,
        offsets=12,
    )  # fmt: skip
    store.flush()
    page = write_report(tmp_path / "s", tmp_path / "rep").index.read_text()
    assert f"{partition}:12:0" in page
    assert "Event ids are partition:offset:row" in page
    assert ("Partition -1 is an embedded run" in page) is embedded


def _episodes(turbines, starts, ends, d: int):
    from pipeline.episodes import Episodes

    k = len(turbines)
    return Episodes(
        np.asarray(turbines, np.int64),
        np.asarray(starts, float),
        np.asarray(ends, float),
        np.ones(k),
        np.asarray(ends, float),
        np.ones(k, np.int64),
        np.zeros((k, d)),
        np.array(["normal"] * k),
        tuple(f"s{j}" for j in range(d)),
    )


def _seen_before_store(tmp_path: Path, with_episodes: bool) -> Path:
    # Turbine 1's fault: alarms every 600 s (under the 1800 s gap) for 6000 s, all alike,
    # the last the largest.  Earlier: turbine 1's own older fault (another episode), and
    # turbine 2's look-alike.  Turbine 3 points elsewhere.
    fault = T0 + np.arange(0.0, 6001.0, 600.0)
    ts = np.r_[T0 - 20_000.0, T0 - 15_000.0, T0 - 14_000.0, fault]
    turb = np.r_[1, 2, 3, np.ones(fault.size, np.int64)]
    contrib = np.r_[
        [[5.0, 1.2, 0.0]],
        [[4.0, 1.0, 0.1]],
        [[0.0, -1.0, 6.0]],
        np.tile([[5.0, 1.0, 0.0]], (11, 1)),
    ]
    contrib[3:, 1] += 0.02 * np.arange(10, -1, -1)  # the latest alarms most like the event
    contrib[-1] *= 3.0
    path = anomaly_store(tmp_path / "s", ts, turb, contrib)
    if with_episodes:
        store = AnomalyStore(path)
        store.append_episodes(
            _episodes(
                [1, 2, 3, 1], [ts[0], ts[1], ts[2], fault[0]], [ts[0], ts[1], ts[2], fault[-1]], 3
            )
        )
        store.flush()
    return path


@pytest.mark.parametrize("with_episodes", [True, False])
def test_seen_before_skips_the_events_own_episode(tmp_path, with_episodes):
    path = _seen_before_store(tmp_path, with_episodes)
    page = write_report(path, tmp_path / "rep").index.read_text()
    section = page.split("<h3>Seen before</h3>", 1)[1].split("<h2>4.", 1)[0]
    worst = section.split("(turbine 1)</h4>", 1)[1].split("<h4>", 1)[0]
    rows = _cells(worst, "similarity")
    times = {row[2] for row in rows}
    own = {iso(T0 + t) for t in np.arange(0.0, 6000.0, 600.0)}
    if with_episodes:
        assert not times & own  # none of the fault's own alarms, however far back the chain
        assert {row[3] for row in rows} == {"1", "2"}  # turbine 1's older fault and turbine 2
    else:
        # Without recorded episodes, the gap before the event: its last 1800 s are left out.
        assert not times & {iso(T0 + t) for t in (4800.0, 5400.0)}
        assert times & {iso(T0 + t) for t in (3000.0, 3600.0)}
    assert all(float(row[0]) > 0 for row in rows)  # turbine 3 points elsewhere: not listed
    assert "3" not in {row[3] for row in rows}


def test_seen_before_says_when_nothing_else_is_similar(tmp_path):
    fault = T0 + np.arange(0.0, 601.0, 60.0)
    contrib = np.tile([[5.0, 1.0]], (fault.size, 1))
    contrib[-1] *= 2
    path = anomaly_store(tmp_path / "s", fault, np.ones(fault.size, np.int64), contrib)
    page = write_report(path, tmp_path / "rep").index.read_text()
    assert "Nothing else similar" in page and "own episode" in page
    assert "<td>1.0000</td>" not in page  # no match with itself seconds earlier


def test_seen_before_own_episode_equals_a_naive_loop(tmp_path, rng):
    n, d = 300, 4
    contrib = rng.normal(size=(n, d))
    ts = np.sort(rng.uniform(0, 1000, size=n))
    ids = rng.integers(0, 5, size=n)
    path = anomaly_store(tmp_path / "s", ts, ids, contrib, batch_of=np.arange(n) // 20)
    table = AnomalyStore(path).query()
    q = np.array([50, 150, 299])
    since = table.timestamps[q] - 200.0
    seen = SeenBefore(
        table.contributions[q], 6, table.timestamps[q], own=(table.turbine_ids[q], since)
    )
    for chunk in AnomalyStore(path).iter_matrices():
        seen.update(chunk)
    for i, qi in enumerate(q.tolist()):
        ok = (table.timestamps < table.timestamps[qi]) & ~(
            (table.turbine_ids == table.turbine_ids[qi]) & (table.timestamps >= since[i])
        )
        a = table.contributions[qi] / np.linalg.norm(table.contributions[qi])
        b = table.contributions / np.linalg.norm(table.contributions, axis=1, keepdims=True)
        sims = np.where(ok, b @ a, -np.inf)
        want = np.sort(sims[np.isfinite(sims)])[::-1][:6]
        np.testing.assert_allclose(seen.matches(i)[1], want, rtol=1e-10)


# ---------------------------------------------------------------------- faults and their kinds
@pytest.fixture(scope="module")
def simulated(tmp_path_factory):
    """A simulated fleet (with fault kinds), its store and its report with --input."""
    from tests.cli_support import turbine

    d = tmp_path_factory.mktemp("faults")
    made = turbine(
        "simulate", "--turbines", 20, "--steps", 2000, "--seed", 11, "--output", d / "f.npz"
    ).stdout
    turbine("detect", "--input", d / "f.npz", "--store", d / "store", "--quiet")
    turbine("report", "--store", d / "store", "--input", d / "f.npz", "--output", d / "rep")
    return d, made, (d / "rep" / "index.html").read_text()


def test_the_simulator_and_the_report_count_faults_alike(simulated):
    import json
    import re

    from tests.cli_support import turbine

    d, made, page = simulated
    n = int(re.search(r"(\d+) faults: labelled runs per turbine, from (\d+) injected", made)[1])
    injected = int(re.search(r"from (\d+) injected episodes", made)[1])
    assert n != injected  # correlation breaks are labelled only where they show: not 1:1
    ev = json.loads(turbine("evaluate", "--input", d / "f.npz", "--format", "json").stdout)
    assert ev["faults"] == n
    row = dict((r[0], r[1]) for r in _cells(page, "value"))
    assert row["faults detected"].endswith(f"of {n}")
    assert "A fault is a labelled run" in page


def test_fault_kinds_in_the_evaluation_and_the_event_tables(simulated):
    import re

    _, made, page = simulated
    printed = dict((k, int(v)) for k, v in re.findall(r"(\w+) (\d+)", made.split("by kind:", 1)[1]))
    rows = dict((r[0], r[1]) for r in _cells(page, "value"))
    shown = {
        k.removeprefix("faults detected: "): int(v.split(" of ")[1])
        for k, v in rows.items()
        if k.startswith("faults detected: ")
    }
    assert shown == printed and sum(shown.values()) == int(rows["faults detected"].split()[-1])
    events = _cells(page, "sum of shares")
    assert events and all(r[-1] in (*printed, "none") for r in events)
    assert any(r[-1] in printed for r in events)  # the worst events are faults here
    episodes = _cells(page, "fault kinds")
    assert episodes and all(set(r[-1].split("+")) <= {*printed, "none"} for r in episodes)
    assert "each with its fault kind" in page


def test_timeline_series_carry_kinds_and_the_figure_writes_them():
    from pipeline.detector import BatchResult as R
    from pipeline.recordings import Chunk
    from pipeline.report.data import TimelineCollector
    from pipeline.report.figures import timeline_figure

    c = TimelineCollector(np.array([7]))
    ts = np.arange(6.0)
    r = R(ts, np.full(6, 7), np.array([1.0, 30, 30, 1, 40, 1]), np.array([0, 1, 1, 0, 1, 0], bool),
          np.ones(6, np.int8), 10.0, np.array([1, 2, 4]), np.zeros((3, 1)))  # fmt: skip
    labels = np.array([0, 1, 1, 0, 1, 0], np.int8)
    kinds = np.array(["", "drift", "drift", "", "stuck", ""])
    c(Chunk(ts, np.full(6, 7), np.zeros((6, 1)), labels, kinds, np.arange(6)), r)
    s = c.series()[7]
    assert s.kinds is not None and s.kinds.tolist() == kinds.tolist()
    fig = timeline_figure({7: s}, {7: 3}, 10.0, True)
    assert [t.get_text() for t in fig.axes[0].texts] == ["drift", "stuck"]


def test_a_file_without_kinds_shows_no_kind_column(tmp_path):
    contrib = np.array([[30.0, -12.0], [5.0, 6.0]])
    path = anomaly_store(tmp_path / "s", T0 + np.array([0.0, 60.0]), np.array([1, 2]), contrib)
    page = write_report(path, tmp_path / "rep").index.read_text()
    assert "fault kind" not in page
