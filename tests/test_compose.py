"""The real docker-compose.yml, run on a Docker engine: Kafka, topics, the simulator, two
detectors, Prometheus, Alertmanager; readings counted, anomalies reconciled, an alert
delivered to a webhook; SKAB and a Parquet copy of part of La Haute Borne replayed
from the host under their own sites (deploy/configs/sites.toml) and scored; and nothing
left behind."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from pipeline.store import AnomalyStore, read_anomalies, store_paths
from tests.cli_support import turbine
from tests.conftest import IN_CI, REPO, lhb_head_parquet
from tests.kafka_support import free_port
from tests.prometheus_support import get_json, query

pytestmark = [pytest.mark.docker, pytest.mark.slow]
ENGINE = REPO / "deploy" / "docker" / "engine.sh"
IMAGES = REPO / "deploy" / "images" / "build.sh"
SERVICES = [
    "kafka",
    "kafka-init",
    "simulator",
    "detector",
    "prometheus",
    "alertmanager",
    "webhook-sink",
]


def _unavailable(reason: str) -> None:
    if IN_CI:
        pytest.fail(f"CI=true: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def docker_env() -> Iterator[dict[str, str]]:
    """An engine that answers (started by deploy/docker/engine.sh when none does) and the
    images docker-compose.yml names (built as local stand-ins where none can be pulled)."""
    if shutil.which("docker-compose") is None and os.geteuid() != 0:
        _unavailable("no docker-compose, and not root to install it")
    up = subprocess.run(["bash", str(ENGINE), "up"], capture_output=True, text=True, timeout=600)
    if up.returncode != 0:
        _unavailable(f"no Docker engine: {up.stderr.strip()[-800:]}")
    started_here = "starting dockerd" in up.stderr
    host = next(
        (ln.split("=", 1)[1] for ln in up.stdout.splitlines() if ln.startswith("DOCKER_HOST=")),
        None,
    )
    env = {**os.environ, **({"DOCKER_HOST": host} if host else {})}
    # This clone's own app image: another clone building on the same engine keeps its own.
    tag = os.environ.get("TURBINE_IMAGE") or f"turbine-watch/app:test-{REPO.name.lower()}"
    env |= {"TURBINE_IMAGE": tag, "APP_IMAGE": tag}
    socket = (host or "unix:///var/run/docker.sock").removeprefix("unix://")
    env["DOCKER_SOCKET"] = socket  # Prometheus's Docker discovery
    build = subprocess.run(
        ["bash", str(IMAGES)], capture_output=True, text=True, env=env, timeout=1800
    )
    if build.returncode != 0:
        _unavailable(f"images could not be built: {build.stderr.strip()[-800:]}")
    try:
        yield env
    finally:
        if started_here:
            subprocess.run(["bash", str(ENGINE), "down"], capture_output=True, timeout=300)


def short_rules(target: Path) -> Path:
    """deploy/prometheus with every alert's `for:` shortened (tests only)."""
    shutil.copytree(REPO / "deploy" / "prometheus", target)
    for path in (target / "rules").glob("*.yml"):
        rules = yaml.safe_load(path.read_text())
        for group in rules["groups"]:
            for rule in group["rules"]:
                if "for" in rule:
                    rule["for"] = "5s"
        path.write_text(yaml.safe_dump(rules, sort_keys=False))
    return target


def compose_cli(env: dict[str, str]) -> list[str]:
    """The compose command `make compose-up` uses (deploy/docker/compose.sh cli)."""
    out = subprocess.run(
        ["bash", str(REPO / "deploy" / "docker" / "compose.sh"), "cli"],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    return out.stdout.split()


def compose(
    env: dict[str, str], project: str, *args: str, timeout: float = 600
) -> subprocess.CompletedProcess:
    env = {**env, "COMPOSE_PROJECT_NAME": project}  # Prometheus's discovery reads it
    cmd = [
        *compose_cli(env),
        "-p",
        project,
        "-f",
        str(REPO / "docker-compose.yml"),
        "-f",
        str(REPO / "tests" / "compose" / "docker-compose.test.yml"),
        *args,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO, timeout=timeout)


def docker(env: dict[str, str], *args: str) -> str:
    return subprocess.run(
        ["docker", *args], capture_output=True, text=True, env=env, check=True
    ).stdout


def wait_for(what: str, check, timeout: float = 240, every: float = 2.0):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except OSError as exc:
            last = exc
        if last and not isinstance(last, Exception):
            return last
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what}: last {last!r}")


REPLAY_STEPS = 200


def replay_file(tmp_path: Path, turbines: int) -> Path:
    """A simulated fleet as Parquet with other column names than the defaults (`datetime`,
    `anomaly`, a `changepoint` to drop), after the live stream, under a name with no
    extension (as the replay service mounts it)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    csv = tmp_path / "replay.csv"
    start = str(int(time.time()) + 86_400)
    turbine("simulate", "--turbines", turbines, "--steps", REPLAY_STEPS, "--seed", 5,
            "--start", start, "--output", csv)  # fmt: skip
    from pyarrow import csv as pacsv

    table = pacsv.read_csv(csv)
    table = table.rename_columns(
        ["datetime" if n == "timestamp" else "anomaly" if n == "label" else n
         for n in table.column_names]
    )  # fmt: skip
    table = table.append_column("changepoint", pa.array([0] * table.num_rows))
    out = tmp_path / "recording"
    pq.write_table(table, out)
    assert out.read_bytes()[:4] == b"PAR1"
    return out


SITES_CONFIG = REPO / "deploy" / "configs"
SKAB_OPTIONS = ("--sep", ";", "--time-col", "datetime", "--label-col", "anomaly",
                "--drop-col", "changepoint")  # fmt: skip
LHB_ROWS = 20_000  # about 5 weeks of the four turbines


def test_compose_stack_end_to_end(docker_env, tmp_path, skab_dir, lhb_csv):
    project = f"twtest{uuid.uuid4().hex[:6]}"
    turbines, steps = 20, 1500
    ports = {
        name: free_port()
        for name in ("PROMETHEUS_PORT", "ALERTMANAGER_PORT", "KAFKA_HOST_PORT", "SINK_PORT")
    }
    env = {
        **docker_env,
        **{k: str(v) for k, v in ports.items()},
        "TEST_PROMETHEUS_DIR": str(short_rules(tmp_path / "prometheus")),
        "SIM_TURBINES": str(turbines),
        "SIM_STEPS": str(steps),
        "SIM_SPEED": "25",  # 1,500 steps in a minute
    }
    prom = f"http://127.0.0.1:{ports['PROMETHEUS_PORT']}"
    try:
        up = compose(env, project, "up", "-d", "--scale", "detector=2", *SERVICES)
        assert up.returncode == 0, up.stderr[-3000:]

        # every target up: both detectors and the producer
        def targets_up():
            active = get_json(f"{prom}/api/v1/targets")["data"]["activeTargets"]
            jobs = [(t["labels"]["job"], t["health"]) for t in active]
            ok = sorted(jobs) == [("detector", "up"), ("detector", "up"), ("producer", "up")]
            return active if ok else None

        active = wait_for("two detectors and the producer up in Prometheus", targets_up)
        # named by service and container (relabelled from the Docker discovery), not by IP
        named = sorted((t["labels"]["service"], t["labels"]["container"]) for t in active)
        assert [n[0] for n in named] == ["detector", "detector", "simulator"], named
        for service, container in named:
            assert container.startswith(project) and service in container, named
        assert all(t["labels"]["instance"].startswith(project) for t in active), active

        # readings processed, summed over the detectors, equal what the simulator sent
        sent = turbines * steps

        def all_processed():
            r = query(prom, "sum(turbine_readings_total)")
            return r and float(r[0]["value"][1]) == sent

        wait_for(f"{sent} readings processed", all_processed, timeout=300)

        # ... and what the simulator says it sent, in its last log line
        def simulator_done():
            logs = compose(env, project, "logs", "--no-color", "simulator").stdout
            return [ln for ln in logs.splitlines() if "sent " in ln and "acknowledged" in ln]

        line = wait_for("the simulator's final report", simulator_done, timeout=120)[-1]
        assert f"sent {sent:,} readings" in line and "0 delivery errors" in line, line

        # the replay profile: a Parquet file mounted without its name (format from its
        # content), with its column options and its site from the environment
        replayed = replay_file(tmp_path, turbines)
        env_replay = {
            **env,
            "REPLAY_FILE": str(replayed),
            "REPLAY_TIME_COL": "datetime",
            "REPLAY_LABEL_COL": "anomaly",
            "REPLAY_DROP_COLS": "changepoint",
            "REPLAY_SITE": "replayed",
        }
        run = compose(env_replay, project, "--profile", "replay", "up", "--no-deps", "replay")
        assert run.returncode == 0, run.stderr[-3000:]
        logs = compose(env_replay, project, "logs", "--no-color", "replay").stdout
        assert f"sent {turbines * REPLAY_STEPS:,} readings" in logs, logs[-3000:]
        assert "0 delivery errors" in logs and "(site replayed)" in logs, logs[-3000:]
        default_sent = sent  # the simulator's stream: the site "default"
        sent += turbines * REPLAY_STEPS
        wait_for(f"{sent} readings processed with the replay", all_processed, timeout=180)
        on_site = query(prom, 'sum(turbine_readings_total{site="replayed"})')
        assert float(on_site[0]["value"][1]) == turbines * REPLAY_STEPS, on_site
        dead = query(prom, "sum(turbine_dead_letters_total)")
        assert float(dead[0]["value"][1]) == 0, dead  # scored, none refused

        # `make replay` from the host finds the compose stack's broker and reports
        more = tmp_path / "more.npz"
        turbine("simulate", "--turbines", turbines, "--steps", 50, "--seed", 6,
                "--start", str(int(time.time()) + 3 * 86_400), "--output", more)  # fmt: skip
        made = subprocess.run(
            ["make", "-s", "replay", f"FILE={more}"],
            cwd=REPO,
            env={**env, "KAFKA_PORT": str(free_port())},  # no make stack there
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert made.returncode == 0, made.stderr[-3000:]
        assert "into the compose stack" in made.stderr, made.stderr
        assert "no dead letters since the replay began" in made.stderr, made.stderr
        sent += turbines * 50
        default_sent += turbines * 50
        wait_for(f"{sent} readings processed with make replay", all_processed, timeout=180)

        # an alert on an injected fault fires, goes through Alertmanager, reaches the sink
        sink = f"http://127.0.0.1:{ports['SINK_PORT']}/"

        def delivered():
            payloads = get_json(sink)
            alerts = [a for p in payloads for a in p.get("alerts", [])]
            hits = [a for a in alerts if a["labels"].get("alertname") == "TurbineAnomalyRateHigh"]
            return hits

        hits = wait_for("TurbineAnomalyRateHigh delivered to the webhook", delivered, timeout=300)
        assert all(a["labels"]["turbine"].isdigit() for a in hits)
        firing = query(prom, 'ALERTS{alertname="TurbineAnomalyRateHigh", alertstate="firing"}')
        assert firing

        # two sites replayed from the host through the 127.0.0.1 listener, each scored
        # under its own configuration (the detectors run with deploy/configs/sites.toml)
        kafka = f"127.0.0.1:{ports['KAFKA_HOST_PORT']}"
        turbine("replay", skab_dir / "valve1" / "3.csv", *SKAB_OPTIONS, "--site", "skab",
                "--bootstrap-servers", kafka, "--quiet", timeout=600)  # fmt: skip
        turbine("replay", lhb_head_parquet(lhb_csv, tmp_path, LHB_ROWS), "--config",
                SITES_CONFIG / "la-haute-borne.toml", "--batch-steps", 1008, "--site", "lhb",
                "--bootstrap-servers", kafka, "--quiet", timeout=600)  # fmt: skip

        def value(expr: str) -> float:
            r = query(prom, expr)
            return float(r[0]["value"][1]) if r else 0.0

        def sites_scored():
            seen = {
                "skab": value('sum(turbine_readings_total{site="skab"})'),
                "lhb": value('sum(turbine_readings_total{site="lhb"})'),
                "skab anomalies": value('sum(turbine_anomalies_total{site="skab"})'),
            }
            return seen if all(v > 0 for v in seen.values()) else None

        wait_for("SKAB and LHB readings and SKAB anomalies in Prometheus", sites_scored,
                 timeout=240)  # fmt: skip
        # each file's sensors are its site's schema: none refused as another site's
        refused = (
            'sum(turbine_dead_letters_total{reason=~"sensor_mismatch|too_many_sites|bad_site"})'
        )
        assert value(refused) == 0
        # the simulator's stream (and make replay's file) stayed the default site's
        assert value('sum(turbine_readings_total{site="default"})') == default_sent

        counted = value('sum(turbine_anomalies_total{site="default"})')
        # the default site's anomalies on the topic (read through the 127.0.0.1 listener)
        from tests.test_kafka import consume_all

        events = consume_all(kafka, "turbine.anomalies", timeout_s=10)
        payloads = [json.loads(e.value) for e in events]
        ids = {p["event_id"] for p in payloads if p.get("site", "default") == "default"}
        assert any(p.get("site") == "skab" for p in payloads)
        # stop the detectors (SIGTERM: checkpoint, flush the stores) and read the store volume
        stop = compose(env, project, "stop", "detector")
        assert stop.returncode == 0, stop.stderr[-2000:]
        volume = json.loads(docker(env, "volume", "inspect", f"{project}_store"))[0]["Mountpoint"]
        stored = read_anomalies(Path(volume) / "store")
        assert len(stored) == counted == len(ids) > 0
        # each site's stores: STORE/sites/NAME/partition-NNNN
        sites = Path(volume) / "store" / "sites"
        assert {"lhb", "skab"} <= {p.name for p in sites.iterdir()}, list(sites.iterdir())
        assert list((sites / "lhb").glob("partition-*")), list((sites / "lhb").iterdir())
        assert len(read_anomalies(sites / "skab")) > 0
        # ... each written under its own configuration (recorded in its manifests): the
        # default site's (simulator.json of this fleet), [sites.skab]'s, la-haute-borne.toml's
        charts = {
            site: {AnomalyStore(p).config.chart for p in store_paths(root)}  # type: ignore[union-attr]
            for site, root in (("default", sites.parent), ("skab", sites / "skab"),
                               ("lhb", sites / "lhb"))
        }  # fmt: skip
        assert charts == {"default": {"none"}, "skab": {"mewma"}, "lhb": {"residual"}}, charts
        # ... scored fleet-relative: each batch's whole fleet in one record (one key
        # group), so on one partition. (Not "by one detector": the partition may move
        # from one detector to the other at a rebalance, when the second one joins.)
        read_by = {
            p.name: json.loads((p / "manifest.json").read_text())["readings"]
            for p in store_paths(sites.parent)
        }
        assert max(read_by.values()) == sum(read_by.values()) == default_sent, read_by
        (default_store,) = [
            p for p in store_paths(sites.parent) if read_anomalies(p).timestamps.size
        ]
        manifest = AnomalyStore(default_store).config
        assert manifest is not None and manifest.key_groups == 1
        assert manifest.fleet_relative == manifest.sensors and len(manifest.turbines) == turbines
        assert all("wind_vs_fleet" in AnomalyStore(p).sensors for p in store_paths(sites / "lhb"))
    finally:
        logs = compose(env, project, "logs", "--no-color", "--tail", "30")
        # every profile's services too (v2's down leaves those of profiles not named)
        down = compose(env, project, "--profile", "replay", "down", "-v", "--remove-orphans")
    assert down.returncode == 0, down.stderr[-2000:] + logs.stdout[-3000:]
    label = f"label=com.docker.compose.project={project}"
    assert docker(env, "ps", "-a", "-q", "--filter", label).strip() == ""
    assert docker(env, "network", "ls", "-q", "--filter", label).strip() == ""
    assert docker(env, "volume", "ls", "-q", "--filter", label).strip() == ""
