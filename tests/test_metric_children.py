"""Counters with known label values start at 0, so increase() and rate() see the first burst."""

from __future__ import annotations

import re

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from pipeline.inject import FAULT_KINDS as INJECTED
from pipeline.metrics import DEAD_LETTER_REASONS, DetectorMetrics
from pipeline.simulator import FAULT_KINDS as SIMULATED
from tests.conftest import REPO

# A reason given to WireError(...) or to a dead-letter call, or chosen for one, in the sources.
REASON = re.compile(
    r"""WireError\(\s*"([a-z_]+)"|_dead_letter\([^)]*?"([a-z_]+)",|"([a-z_]+)",\s*message\)"""
    r'|dead_letters\.record\(\s*\w+,\s*"([a-z_]+)"'
    r"""|\breason = "([a-z_]+)"(?: if \w+ else "([a-z_]+)")?"""
)


def reasons_in_sources() -> set[str]:
    found: set[str] = set()
    for folder in ("pipeline", "consumers"):
        for path in (REPO / folder).rglob("*.py"):
            for groups in REASON.findall(path.read_text()):
                found.update(g for g in groups if g)
    return found


def test_every_dead_letter_reason_in_the_sources_is_known_and_starts_at_zero() -> None:
    found = reasons_in_sources()
    assert {"bad_magic", "sensor_mismatch", "bad_control", "undecodable", "schema"} <= found
    assert found <= set(DEAD_LETTER_REASONS), sorted(found - set(DEAD_LETTER_REASONS))
    reg = CollectorRegistry()
    DetectorMetrics(reg)
    for reason in DEAD_LETTER_REASONS:
        assert reg.get_sample_value("turbine_dead_letters_total", {"reason": reason}) == 0.0


def test_readme_lists_every_dead_letter_reason() -> None:
    readme = (REPO / "README.md").read_text()
    for reason in DEAD_LETTER_REASONS:
        assert f"`{reason}`" in readme, reason


@pytest.mark.parametrize("kind", ["none", "unknown", *SIMULATED, *INJECTED])
def test_every_fault_kind_starts_at_zero(kind: str) -> None:
    reg = CollectorRegistry()
    DetectorMetrics(reg)
    assert reg.get_sample_value("turbine_anomalies_by_kind_total", {"fault_kind": kind}) == 0.0


def test_anomalies_by_kind_count_as_the_labelled_counter_does() -> None:
    reg = CollectorRegistry()
    m = DetectorMetrics(reg)
    m.count_anomalies(np.array([3, 3, 900, 7]), np.array(["drift", "drift", "", "spike"]), True)
    m.count_anomalies(np.array([5]), None, labelled=False)
    got = {
        k: reg.get_sample_value("turbine_anomalies_by_kind_total", {"fault_kind": k})
        for k in ("drift", "none", "spike", "unknown", "stuck")
    }
    assert got == {"drift": 2.0, "none": 1.0, "spike": 1.0, "unknown": 1.0, "stuck": 0.0}


def test_anomaly_counts_per_turbine_and_kind_match_a_naive_count() -> None:
    """Batch after batch, with named turbines and the turbine-label cap: one count per reading."""
    from collections import Counter as Tally

    from pipeline.names import TurbineNames

    rng = np.random.default_rng(11)
    names = TurbineNames()
    named = names.ids_of(["R80711", "R80721"])
    reg = CollectorRegistry()
    m = DetectorMetrics(reg, max_turbine_labels=6)
    expected: Tally[tuple[str, str]] = Tally()
    shown_labels: set[str] = set()
    for _ in range(30):
        k = int(rng.integers(0, 12))
        ids = rng.choice(np.concatenate([np.arange(9), named]), size=k)
        labelled = bool(rng.integers(0, 2))
        kinds = rng.choice(np.array(["", "drift", "spike"]), size=k) if labelled else None
        m.count_anomalies(ids, kinds, labelled, names)
        # the reference: labels given in the order of the turbines' ids, then reading by reading
        for t in sorted(set(ids.tolist())):
            shown = names.name_of(t)
            if shown not in shown_labels and len(shown_labels) < 6:
                shown_labels.add(shown)
        for i, t in enumerate(ids.tolist()):
            shown = names.name_of(t)
            kind = "unknown" if kinds is None else (kinds[i] or "none")
            expected[(shown if shown in shown_labels else "other", kind)] += 1
    got = {
        (s.labels["turbine"], s.labels["fault_kind"]): s.value
        for metric in reg.collect()
        if metric.name == "turbine_anomalies"
        for s in metric.samples
        if s.name == "turbine_anomalies_total"
    }
    assert got == {key: float(n) for key, n in expected.items()}
    assert "other" in {t for t, _ in got}  # the cap was reached
