"""The anomaly report and "seen before": figures, the HTML page, a real browser, the maths."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from consumers.checkpoint import Checkpoint, CheckpointDir
from pipeline import Detector, DetectorConfig
from pipeline.batching import iter_batches
from pipeline.detector import BatchResult
from pipeline.recordings import read_recording
from pipeline.report import FIGURES, ReportOptions, write_report
from pipeline.runner import config_for
from pipeline.similarity import SeenBefore, cosine_similarities, normalise_rows
from pipeline.store import MODEL, AnomalyStore, find_event, parse_event_id
from tests.cli_support import turbine

REPO = Path(__file__).resolve().parent.parent
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")  # as tests/conftest.py
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SKAB_OPTS = ["--sep", ";", "--time-col", "datetime", "--label-col", "anomaly"]
SKAB_OPTS += ["--drop-col", "changepoint"]


class Images(HTMLParser):
    """The <img> tags of a page, as attribute dicts."""

    def __init__(self) -> None:
        super().__init__()
        self.images: list[dict[str, str | None]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "img":
            self.images.append(dict(attrs))


def images_of(page: str) -> list[dict[str, str | None]]:
    parser = Images()
    parser.feed(page)
    return parser.images


def check_png(path: Path, min_width: int = 400, min_height: int = 200) -> None:
    """A real, decodable, non-trivial PNG of a reasonable size."""
    import matplotlib.image as mpimg

    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC, path
    assert 5_000 < len(data) < 3_000_000, (path, len(data))
    pixels = mpimg.imread(path)
    h, w = pixels.shape[:2]
    assert w >= min_width and h >= min_height, (path, pixels.shape)
    rgb = (np.asarray(pixels)[..., :3] * 255).round().astype(np.int64).reshape(-1, 3)
    colours = np.unique(rgb[:, 0] << 16 | rgb[:, 1] << 8 | rgb[:, 2])
    assert colours.size > 20, (path, colours.size)  # not a blank or single-colour image
    assert rgb.std() > 10, path


def check_report(directory: Path, expected: tuple[str, ...] = FIGURES) -> str:
    """Every expected figure written, valid, and referenced from index.html."""
    page = (directory / "index.html").read_text(encoding="utf-8")
    srcs = [img["src"] for img in images_of(page)]
    assert sorted(srcs) == sorted(expected), srcs
    for name in expected:
        check_png(directory / name)
    return page


# ---------------------------------------------------------------------- similarity maths
def naive_cosine(a: np.ndarray, b: np.ndarray) -> float:
    na, nb = float(np.sqrt(a @ a)), float(np.sqrt(b @ b))
    return 0.0 if na == 0 or nb == 0 else float(a @ b) / (na * nb)


def test_cosine_similarities_match_a_per_pair_loop(rng):
    q = rng.normal(size=(4, 6))
    c = rng.normal(size=(30, 6))
    c[3] = 0.0  # a zero vector is similar to nothing, not NaN
    c[rng.random(c.shape) < 0.3] = 0.0  # sparse rows
    got = cosine_similarities(q, c)
    want = np.array([[naive_cosine(q[i], c[j]) for j in range(30)] for i in range(4)])
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    norms = np.linalg.norm(normalise_rows(c).toarray(), axis=1)
    np.testing.assert_allclose(norms[np.linalg.norm(c, axis=1) > 0], 1.0)


def _random_store(path: Path, rng: np.random.Generator, n: int = 400, d: int = 5) -> AnomalyStore:
    """A store of n random anomalies (contributions of both signs) in chunks of 37."""
    contrib = rng.normal(size=(n, d)) * rng.uniform(0.1, 10.0, size=(n, 1))
    contrib[rng.random(contrib.shape) < 0.2] = 0.0
    contrib[np.abs(contrib).sum(axis=1) == 0, 0] = 1.0
    ts = np.sort(rng.integers(0, 150, size=n).astype(np.float64))  # ties in time too
    ids = rng.integers(0, 12, size=n)
    store = AnomalyStore(path, sensors=tuple(f"s{j}" for j in range(d)), chunk_size=37)
    for b in range(0, n, 25):
        sl = slice(b, min(n, b + 25))
        k = sl.stop - sl.start
        r = BatchResult(
            ts[sl],
            ids[sl],
            np.abs(contrib[sl]).sum(axis=1) + 30.0,
            np.ones(k, bool),
            np.ones(k, np.int8),
            20.0,
            np.arange(k),
            contrib[sl],
        )
        store.append(r, partitions=3, offsets=b // 25)
    store.flush()
    return store


@pytest.mark.parametrize("past_only", [True, False])
def test_seen_before_equals_a_naive_loop_over_every_pair(tmp_path, rng, past_only):
    store = _random_store(tmp_path / "s", rng)
    assert len(store.chunks) > 5
    everything = store.query()
    queries = everything.select(np.array([5, 120, 260, 399]))
    k = 7
    seen = SeenBefore(queries.contributions, k, queries.timestamps if past_only else None)
    for chunk in store.iter_matrices():
        seen.update(chunk)
    ids = everything.event_ids()
    for qi in range(len(queries)):  # the naive reference: every pair, one at a time
        pairs = []
        for j in range(len(everything)):
            if past_only and not everything.timestamps[j] < queries.timestamps[qi]:
                continue
            pairs.append((naive_cosine(queries.contributions[qi], everything.contributions[j]), j))
        pairs.sort(key=lambda p: -p[0])
        want = pairs[:k]
        matches, sim = seen.matches(qi)
        np.testing.assert_allclose(sim, [p[0] for p in want], rtol=1e-10, atol=1e-12)
        assert matches.event_ids() == [ids[j] for _, j in want]
        if past_only:
            assert (matches.timestamps < queries.timestamps[qi]).all()
    if not past_only:  # with no time limit each query finds itself first
        for qi in range(len(queries)):
            assert seen.matches(qi)[1][0] == pytest.approx(1.0)


def test_seen_before_with_nothing_earlier_is_empty(tmp_path, rng):
    store = _random_store(tmp_path / "s", rng, n=60)
    first = store.query().select(np.array([0]))
    seen = SeenBefore(first.contributions, 3, np.array([-1.0]))
    for chunk in store.iter_matrices():
        seen.update(chunk)
    matches, sim = seen.matches(0)
    assert len(matches) == 0 and sim.size == 0


def test_event_ids_parse_and_find(tmp_path, rng):
    store = _random_store(tmp_path / "s", rng, n=60)
    eid = store.query().event_ids()[17]
    p, o, r = parse_event_id(eid)
    assert parse_event_id(f"turbine.readings:{eid}") == (p, o, r)
    found = find_event(tmp_path / "s", f"turbine.readings:{eid}")
    assert found.event_ids() == [eid]


# ---------------------------------------------------------------------- the report, embedded
@pytest.fixture(scope="module")
def embedded(tmp_path_factory):
    d = tmp_path_factory.mktemp("embedded")
    turbine("simulate", "--turbines", 20, "--steps", 2000, "--seed", 11, "--output", d / "f.npz")
    turbine("detect", "--input", d / "f.npz", "--store", d / "store", "--quiet")
    out = turbine("report", "--store", d / "store", "--input", d / "f.npz", "--output", d / "rep")
    assert "index.html" in out.stdout
    turbine("report", "--store", d / "store", "--output", d / "rep-store")
    return d


def test_detect_records_config_and_model_in_the_store(embedded):
    manifest = json.loads((embedded / "store" / "manifest.json").read_text())
    assert manifest["config"]["sensors"] == ["temperature", "rotor_speed", "pressure", "vibration"]
    assert manifest["batch_steps"] == 10 and manifest["train_rows"] == 0
    with np.load(embedded / "store" / MODEL, allow_pickle=False) as f:
        det = Detector.from_state({k: f[k] for k in f.files})
    assert det.readings == 40_000 and len(det.turbines) == 20


def test_report_with_input_has_every_figure_and_the_evaluation(embedded):
    page = check_report(embedded / "rep")
    assert "warning" not in page  # the re-scored input gives the store's anomalies
    for score in ("precision", "recall", "F1 (SKAB)", "FAR", "MAR"):
        assert score in page
    ev = json.loads(
        turbine(
            "evaluate",
            "--store",
            embedded / "store",
            "--input",
            embedded / "f.npz",
            "--format",
            "json",
        ).stdout
    )
    assert f"<td>{ev['f1']:.3f}</td>" in page and f"<td>{ev['far']:.2f}</td>" in page
    assert "Seen before" in page
    stored = AnomalyStore(embedded / "store").stats()["anomalies"]
    assert f"{stored:,} anomalies" in page


def test_report_from_the_store_alone_has_every_figure(embedded):
    page = check_report(embedded / "rep-store")
    assert "stored anomalies" in page and "Pass --input FILE with labels" in page


def test_anomalies_similar_to_lists_earlier_lookalikes(embedded):
    store = embedded / "store"
    table = AnomalyStore(store).query()
    i = int(np.argmax(table.timestamps))
    eid = table.event_ids()[i]
    rows = json.loads(
        turbine("anomalies", store, "--similar-to", eid, "--top", 4, "--format", "json").stdout
    )
    assert len(rows) == 4
    sims = [r["similarity"] for r in rows]
    assert sims == sorted(sims, reverse=True)
    assert all(r["timestamp"] < table.timestamps[i] for r in rows)
    earlier = np.flatnonzero(table.timestamps < table.timestamps[i])
    naive = sorted(
        (naive_cosine(table.contributions[i], table.contributions[j]) for j in earlier),
        reverse=True,
    )[:4]
    np.testing.assert_allclose(sims, naive, rtol=1e-9)
    kafka_style = turbine(
        "anomalies", store, "--similar-to", f"turbine.readings:{eid}", "--top", 4
    ).stdout
    assert kafka_style.splitlines()[0].startswith("similarity,event,")
    assert len(kafka_style.splitlines()) == 5
    bad = turbine("anomalies", store, "--similar-to", "7:7:7", check=False)
    assert bad.returncode == 2 and "no stored anomaly with event id" in bad.stderr


def test_an_empty_store_gives_a_page_without_figures(tmp_path):
    AnomalyStore(tmp_path / "st", sensors=("a", "b"))
    report = write_report(tmp_path / "st", tmp_path / "rep")
    page = report.index.read_text()
    assert not report.figures and not images_of(page) and "No anomalies" in page


# ---------------------------------------------------------------------- a Kafka-layout store
@pytest.fixture(scope="module")
def partitioned(embedded, tmp_path_factory):
    """The Kafka detector's layout, built as the service builds it, without a broker.

    Readings go to partition (key group mod 3); each partition has its own
    engine, store (``partition-NNNN``, small chunks) and checkpoint.
    """
    d = tmp_path_factory.mktemp("partitioned")
    root = d / "store"
    config = DetectorConfig()
    with read_recording(embedded / "f.npz") as rec:
        sensors = rec.sensors
        cfg = config_for(config, sensors, "test")
        dets = {p: Detector(cfg) for p in range(3)}
        stores = {
            p: AnomalyStore(
                root / f"partition-{p:04d}", sensors=sensors, config=config, chunk_size=64
            )
            for p in range(3)
        }
        for number, batch in iter_batches(rec, 10):
            part = np.mod(np.mod(batch.turbine_ids, cfg.key_groups), 3)
            for p in range(3):
                sel = np.flatnonzero(part == p)
                r = dets[p].process(
                    batch.timestamps[sel], batch.turbine_ids[sel], batch.values[sel]
                )
                stores[p].append(r, partitions=p, offsets=number)
                stores[p].advance({p: number + 1})
    checkpoints = CheckpointDir(root / "checkpoints", "turbine.readings")
    for p in range(3):
        stores[p].flush()
        checkpoints.save(
            Checkpoint(
                partition=p,
                offset=10_000,
                detector_state=dets[p].state(),
                store_position=stores[p].position(),
                pending=None,
                sensors=sensors,
            )
        )
    return d


def test_report_on_partition_stores_and_checkpoints(partitioned, embedded, tmp_path):
    root = partitioned / "store"
    assert sum(len(AnomalyStore(p).chunks) for p in root.glob("partition-*")) > 6
    with_input = write_report(root, tmp_path / "in", input_path=embedded / "f.npz")
    page = check_report(tmp_path / "in")
    assert not with_input.notes, with_input.notes  # the same anomalies as the embedded run
    assert "3 (partitioned)" in page
    write_report(root, tmp_path / "alone", options=ReportOptions(worst_turbines=3))
    check_report(tmp_path / "alone")
    eid = AnomalyStore(root / "partition-0002").query().event_ids()[-1]
    out = turbine("anomalies", root, "--similar-to", f"turbine.readings:{eid}", "--top", 3)
    assert len(out.stdout.splitlines()) == 4


def test_report_says_when_the_input_is_not_the_stores(partitioned, tmp_path):
    other = tmp_path / "other.npz"
    turbine("simulate", "--turbines", 20, "--steps", 2000, "--seed", 99, "--output", other)
    report = write_report(partitioned / "store", tmp_path / "rep", input_path=other)
    assert report.notes and "may not be the file" in report.notes[0]
    assert "may not be the file" in report.index.read_text()


@pytest.mark.kafka
def test_report_on_the_kafka_detectors_store(kafka_servers, topic_factory, group_id, tmp_path):
    """The real service's store (partition stores, checkpoints, its manifest's config)."""
    topic = topic_factory("report", partitions=4)
    sim = ["--turbines", 20, "--steps", 1000, "--seed", 5, "--start", "2026-01-01T00:00:00Z"]
    turbine("simulate", *sim, "--output", tmp_path / "f.npz")
    turbine("simulate", *sim, "--bootstrap-servers", kafka_servers, "--topic", topic, "--quiet")
    turbine(
        "detect",
        "--bootstrap-servers",
        kafka_servers,
        "--topic",
        topic,
        "--group",
        group_id,
        "--anomalies-topic",
        f"{topic}.anomalies",
        "--dlq-topic",
        f"{topic}.dlq",
        "--store",
        tmp_path / "kafka",
        "--stop-after-idle",
        3,
    )
    manifests = [
        json.loads(m.read_text()) for m in (tmp_path / "kafka").glob("partition-*/manifest.json")
    ]
    assert manifests and all("config" in m for m in manifests)
    report = write_report(tmp_path / "kafka", tmp_path / "rep", input_path=tmp_path / "f.npz")
    assert not report.notes, report.notes  # re-scoring gives what the service stored
    check_report(tmp_path / "rep")
    write_report(tmp_path / "kafka", tmp_path / "rep-alone")
    check_report(tmp_path / "rep-alone")
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(
        f"{topic}.anomalies",
        bootstrap_servers=kafka_servers,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
        consumer_timeout_ms=15_000,
    )
    try:
        events = [json.loads(e.value) for e in consumer]
    finally:
        consumer.close()
    latest = max(events, key=lambda e: e["timestamp"])["event_id"]
    assert latest.startswith(f"{topic}:")
    out = turbine("anomalies", tmp_path / "kafka", "--similar-to", latest, "--top", 3)
    assert len(out.stdout.splitlines()) == 4


# ---------------------------------------------------------------------- a real browser
def chromium() -> str:
    """Debian's chromium: found, or installed with apt-get when root; else skip (fail in CI)."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    why = "no chromium on PATH"
    if hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for cmd in (["apt-get", "install", "-y", "chromium"], ["apt-get", "update"]):
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1800)
            if cmd[1] == "update" and proc.returncode == 0:
                proc = subprocess.run(
                    ["apt-get", "install", "-y", "chromium"],
                    capture_output=True,
                    text=True,
                    env=env,
                    timeout=1800,
                )
            found = shutil.which("chromium")
            if found:
                return found
            why = f"apt-get install -y chromium failed: {proc.stderr.strip()[-300:]}"
    else:
        why += " (and not root, so it cannot be installed with apt-get)"
    if IN_CI:
        pytest.fail(f"CI=true and no headless Chromium: {why}")
    pytest.skip(f"no headless Chromium: {why}")


def run_chromium(browser: str, page: Path, *extra: str) -> subprocess.CompletedProcess:
    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    try:
        return subprocess.run(
            [
                browser,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                f"--user-data-dir={profile}",
                "--enable-logging=stderr",
                "--v=0",
                *extra,
                page.resolve().as_uri(),
            ],
            capture_output=True,
            text=True,
            timeout=300,
        )
    finally:
        shutil.rmtree(profile, ignore_errors=True)


PAGE_ERRORS = re.compile(r"CONSOLE|Failed to load resource|net::ERR_|Uncaught|figure failed")


def page_errors(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if PAGE_ERRORS.search(line)]


def test_chromium_renders_the_report(embedded, tmp_path):
    browser = chromium()
    index = embedded / "rep" / "index.html"
    shot = tmp_path / "shot.png"
    proc = run_chromium(browser, index, f"--screenshot={shot}", "--window-size=1280,2000")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert not page_errors(proc.stderr), page_errors(proc.stderr)
    check_png(shot, min_width=1280, min_height=2000)

    dom = run_chromium(browser, index, "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert not page_errors(dom.stderr), page_errors(dom.stderr)
    loaded = {img["src"]: img.get("data-loaded") for img in images_of(dom.stdout)}
    assert loaded == dict.fromkeys(FIGURES, "yes"), loaded  # every figure decoded by the browser

    # The checks are not vacuous: a missing figure shows up in both.
    broken = tmp_path / "broken"
    shutil.copytree(embedded / "rep", broken)
    (broken / FIGURES[1]).unlink()
    dom = run_chromium(browser, broken / "index.html", "--dump-dom")
    assert any(FIGURES[1] in line for line in page_errors(dom.stderr)), dom.stderr[-2000:]
    assert {img["src"]: img.get("data-loaded") for img in images_of(dom.stdout)}[FIGURES[1]] == "no"


# ---------------------------------------------------------------------- the README figure
def test_readme_figure_is_committed_small_and_valid():
    path = REPO / "docs" / "skab-valve1-timeline.png"
    assert path.stat().st_size < 150_000
    check_png(path, min_width=600, min_height=200)


def test_skab_report_draws_labels_and_scores(skab_dir, tmp_path):
    f = skab_dir / "valve1" / "9.csv"
    opts = [*SKAB_OPTS, "--chart", "mewma", "--mewma-lambda", 0.2]
    turbine("detect", "--input", f, *opts, "--train-rows", 400, "--store", tmp_path / "st")
    turbine(
        "report", "--store", tmp_path / "st", "--input", f, *SKAB_OPTS, "--output", tmp_path / "r"
    )
    page = check_report(tmp_path / "r")
    assert "MEWMA statistic" in page and "labelled faults shaded" in page and "warning" not in page
