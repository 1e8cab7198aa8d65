"""The report page (issue 14): faults, fault kinds, seen before, contributions, buckets, ids."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipeline.detector import BatchResult
from pipeline.report import ReportOptions, write_report
from pipeline.report.data import open_stores, summarise
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
