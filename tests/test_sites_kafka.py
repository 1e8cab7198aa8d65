"""Two sites in one detector service, through the real broker: SKAB and La Haute Borne.

SKAB (Skoltech Anomaly Benchmark, valve1/3.csv) and a Parquet copy of part
of La Haute Borne's SCADA file (ENGIE, Open Licence 2.0, as distributed with
NREL OpenOA) are replayed into one topic under their own sites: each is
scored with its own configuration and sensor schema, into its own stores,
exactly as the embedded run scores it, across a restart; a batch whose
sensors are not its site's is a dead letter.
"""

from __future__ import annotations

import re
import signal
import time
import urllib.request

import pytest

from consumers.checkpoint import CheckpointDir
from pipeline.store import read_anomalies
from tests.cli_support import spawn, turbine
from tests.conftest import REPO, lhb_head_parquet
from tests.kafka_support import free_port
from tests.test_kafka import consume_all

pytestmark = pytest.mark.kafka
LHB_CONFIG = REPO / "deploy" / "configs" / "la-haute-borne.toml"
SKAB_OPTIONS = ("--sep", ";", "--time-col", "datetime", "--label-col", "anomaly",
                "--drop-col", "changepoint")  # fmt: skip
LHB_ROWS = 60_000  # about 5 months of the four turbines


@pytest.fixture
def lhb_parquet(lhb_csv, tmp_path):
    return lhb_head_parquet(lhb_csv, tmp_path, LHB_ROWS)


def anomaly_keys(path) -> list[tuple]:
    a = read_anomalies(path)
    return sorted(
        zip(a.turbine_ids.tolist(), a.timestamps.tolist(), a.distances.round(9).tolist(),
            strict=True)
    )  # fmt: skip


def scrape(port: int) -> dict[tuple[str, str], float]:
    """{(metric, site): value} of the detector's site-labelled counters, summed."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()  # noqa: S310
    out: dict[tuple[str, str], float] = {}
    for name, labels, value in re.findall(r"^(turbine_\w+_total)\{([^}]*)\} (\S+)$", text, re.M):
        site = re.search(r'site="([^"]*)"', labels)
        if site:
            key = (name, site.group(1))
            out[key] = out.get(key, 0.0) + float(value)
    return out


def test_skab_and_la_haute_borne_are_scored_under_their_own_sites_across_a_restart(
    kafka_servers, topic_factory, group_id, tmp_path, skab_dir, lhb_parquet
):
    skab = skab_dir / "valve1" / "3.csv"
    config = tmp_path / "service.toml"
    config.write_text(
        f'max_sites = 4\n\n[sites.skab]\nchart = "mewma"\n\n[sites.lhb]\nconfig = "{LHB_CONFIG}"\n'
    )
    # The embedded runs: what each site's stores must hold.
    turbine("detect", "--quiet", "--input", skab, *SKAB_OPTIONS, "--config", config,
            "--site", "skab", "--store", tmp_path / "e-skab")  # fmt: skip
    turbine("detect", "--quiet", "--input", lhb_parquet, "--config", config, "--site", "lhb",
            "--batch-steps", 1008, "--store", tmp_path / "e-lhb")  # fmt: skip
    expected = {s: anomaly_keys(tmp_path / f"e-{s}") for s in ("skab", "lhb")}
    assert len(expected["skab"]) > 50 and len(expected["lhb"]) > 10

    topic = topic_factory("sites", partitions=2)
    store = tmp_path / "kafka"
    port = free_port()
    service = ("detect", "--bootstrap-servers", kafka_servers, "--topic", topic,
               "--group", group_id, "--anomalies-topic", f"{topic}.anomalies",
               "--dlq-topic", f"{topic}.dlq", "--episodes-topic", f"{topic}.episodes",
               "--store", store, "--config", config)  # fmt: skip
    first = spawn(*service, "--checkpoint-every-batches", 5, "--metrics-port", port)

    def replay(path, site, *options):
        return turbine("replay", path, *options, "--site", site, "--bootstrap-servers",
                       kafka_servers, "--topic", topic, "--quiet")  # fmt: skip

    replay(skab, "skab", *SKAB_OPTIONS)
    replay(lhb_parquet, "lhb", "--config", LHB_CONFIG, "--batch-steps", 1008)
    # Both sites counted under their own label (the default site, unused, at 0).
    deadline = time.monotonic() + 120
    seen: dict = {}
    while time.monotonic() < deadline:
        try:
            seen = scrape(port)
        except OSError:
            seen = {}
        if (
            seen.get(("turbine_readings_total", "lhb"), 0) > 0
            and seen.get(("turbine_anomalies_total", "skab"), 0) > 0
        ):
            break
        time.sleep(0.5)
    assert seen.get(("turbine_readings_total", "skab"), 0) > 0, seen
    assert seen.get(("turbine_readings_total", "lhb"), 0) > 0, seen
    assert seen.get(("turbine_anomalies_total", "skab"), 0) > 0, seen
    assert seen.get(("turbine_readings_total", "default")) == 0.0, seen
    first.send_signal(signal.SIGTERM)  # checkpoint, commit, exit 0: perhaps mid-LHB
    assert first.wait(timeout=120) == 0, first.stderr.read() if first.stderr else ""

    # After the restart each site keeps the schema its checkpoint recorded: the
    # other file replayed under its name is dead-lettered, never scored.
    replay(skab, "lhb", *SKAB_OPTIONS)
    replay(lhb_parquet, "skab", "--config", LHB_CONFIG, "--batch-steps", 1008)
    turbine(*service, "--stop-after-idle", 5)

    for site in ("skab", "lhb"):
        assert anomaly_keys(store / "sites" / site) == expected[site], site
    letters = consume_all(kafka_servers, f"{topic}.dlq", timeout_s=5)
    reasons = [dict(r.headers)["reason"].decode() for r in letters]
    errors = [dict(r.headers)["error"].decode() for r in letters]
    assert reasons and set(reasons) == {"sensor_mismatch"}, set(reasons)
    assert any("of site 'lhb'" in e for e in errors) and any("of site 'skab'" in e for e in errors)
    # One checkpoint per partition holds both sites.
    cps = CheckpointDir(store / "checkpoints", topic)
    held = [cp for cp in (cps.load(p) for p in range(2)) if cp is not None and cp.sites]
    assert {s for cp in held for s in cp.sites} == {"skab", "lhb"}
    # Listed per site.
    out = turbine("anomalies", store, "--site", "skab", "--format", "csv").stdout
    assert len(out.strip().splitlines()) == len(expected["skab"]) + 1
