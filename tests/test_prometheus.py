"""Metrics and the deploy configuration against real Prometheus tools and servers."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
import urllib.request

import numpy as np
import pytest
import yaml
from prometheus_client import CollectorRegistry

from pipeline.metrics import DetectorMetrics, ProducerMetrics
from pipeline.store import read_anomalies
from tests.cli_support import spawn, turbine
from tests.conftest import IN_CI, REPO

DEPLOY = REPO / "deploy"
TOOL_ERRORS = None


def tool(name: str, *alternatives: str) -> str:
    from tests.prometheus_support import NoPrometheus, binary

    try:
        return binary(name, *alternatives)
    except NoPrometheus as exc:
        if IN_CI:
            pytest.fail(f"CI=true: {exc}")
        pytest.skip(str(exc))


def exported_names() -> set[str]:
    """Every sample name the detector and producers can export."""
    reg = CollectorRegistry()
    m = DetectorMetrics(reg)
    ProducerMetrics(reg)
    m.count_anomalies(np.array([1]), np.array(["drift"]), labelled=True)
    m.dead_letters.labels(reason="x").inc()
    m.consumer_lag.labels(partition="0").set(1)
    m.model_samples.labels(model="fleet").set(1)
    names = set()
    for family in reg.collect():
        for sample in family.samples:
            names.add(sample.name)
    return names


def exprs_of_rules() -> list[tuple[str, str]]:
    rules = yaml.safe_load((DEPLOY / "prometheus" / "rules" / "turbine.yml").read_text())
    return [(r["alert"], r["expr"]) for g in rules["groups"] for r in g["rules"]]


def exprs_of_dashboard() -> list[tuple[str, str]]:
    dash = json.loads((DEPLOY / "grafana" / "dashboards" / "turbine.json").read_text())
    return [(p["title"], t["expr"]) for p in dash["panels"] for t in p["targets"]]


METRIC = re.compile(r"\b(turbine_[a-z_]+|up)\b")


@pytest.mark.parametrize("source", ["rules", "dashboard"])
def test_every_metric_used_is_exported(source):
    exprs = exprs_of_rules() if source == "rules" else exprs_of_dashboard()
    exported = exported_names() | {"up"}
    assert exprs
    for title, expr in exprs:
        for name in METRIC.findall(re.sub(r'"[^"]*"', '""', expr)):  # not label values
            assert name in exported, f"{source} {title!r} uses {name}, which no code exports"


def test_metric_names_follow_prometheus_conventions():
    reg = CollectorRegistry()
    DetectorMetrics(reg)
    ProducerMetrics(reg)
    for family in reg.collect():
        assert family.name.startswith("turbine_"), family.name
        if family.type == "counter":
            assert not family.name.endswith("_total")  # the client adds _total to samples
        if "seconds" in family.name or "bytes" in family.name:
            assert family.name.endswith(("_seconds", "_bytes")), family.name


def test_promtool_checks_config_and_rules():
    promtool = tool("promtool")
    for config in ("prometheus.yml", "compose.yml"):
        out = subprocess.run(
            [promtool, "check", "config", DEPLOY / "prometheus" / config],
            capture_output=True,
            text=True,
        )
        assert out.returncode == 0, out.stdout + out.stderr
    out = subprocess.run(
        [promtool, "check", "rules", *sorted((DEPLOY / "prometheus" / "rules").glob("*.yml"))],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS: 8 rules found" in out.stdout
    # The rules' own unit tests (synthetic series: an alert fires when it should, and only then).
    out = subprocess.run(
        [promtool, "test", "rules", *sorted((DEPLOY / "prometheus" / "tests").glob("*.yml"))],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_amtool_checks_the_alertmanager_config():
    amtool = tool("amtool")
    out = subprocess.run(
        [amtool, "check-config", DEPLOY / "alertmanager" / "alertmanager.yml"],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_compose_file_mounts_existing_files_and_sets_known_settings():
    from consumers.service import ServiceSettings
    from pipeline.cli import RecordingEnv

    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    settings = {f"TURBINE_{name.upper()}" for name in ServiceSettings.model_fields}
    settings |= {f"TURBINE_RECORDING_{name.upper()}" for name in RecordingEnv.model_fields}
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith((".", "/")) and "${" not in source:
                assert (REPO / source).exists(), f"{name} mounts {source}, which does not exist"
        env = service.get("environment", {})
        for key in env:
            if key.startswith("TURBINE_"):
                assert key in settings, f"{name} sets {key}, which no setting reads"
            elif name == "kafka":
                assert key.startswith("KAFKA_"), key
            elif name == "grafana":
                assert key.startswith("GF_"), key
            elif name == "prometheus":
                assert key == "PROMETHEUS_COMPOSE_PROJECT", key
            else:
                pytest.fail(f"{name} sets {key}: not a turbine-watch setting")
    assert {
        "kafka",
        "kafka-init",
        "simulator",
        "replay",
        "detector",
        "prometheus",
        "alertmanager",
        "grafana",
    } <= compose["services"].keys()
    for service in compose["services"].values():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), port


def test_compose_config_with_a_compose_cli():
    for cmd in (["docker", "compose"], ["docker-compose"]):
        if shutil.which(cmd[0]) is None:
            continue
        out = subprocess.run(
            [*cmd, "-f", REPO / "docker-compose.yml", "config", "--quiet"],
            capture_output=True,
            text=True,
            cwd=REPO,
        )
        if out.returncode == 0:
            return
        if "is not a docker command" in out.stderr or "unknown shorthand flag" in out.stderr:
            continue  # a docker CLI without the compose plugin
        pytest.fail(out.stderr)
    pytest.skip("no docker compose CLI here")


def test_readme_explains_every_panel_and_alert():
    readme = (REPO / "README.md").read_text()
    for title, _ in exprs_of_dashboard():
        assert f"**{title}**" in readme, f"the README does not explain the panel {title!r}"
    for alert, _ in exprs_of_rules():
        assert f"`{alert}`" in readme, f"the README does not explain the alert {alert!r}"


@pytest.mark.kafka
@pytest.mark.prometheus
def test_real_prometheus_scrapes_the_detector(kafka_servers, topic_factory, group_id, tmp_path):
    from tests.kafka_support import free_port
    from tests.prometheus_support import prometheus_server, query

    tool("prometheus")
    topic = topic_factory("prom", partitions=3)
    turbine(
        "simulate",
        "--turbines",
        20,
        "--steps",
        800,
        "--seed",
        8,
        "--bootstrap-servers",
        kafka_servers,
        "--topic",
        topic,
        "--quiet",
        timeout=120,
    )
    metrics_port = free_port()
    detector = spawn(
        "detect",
        "--bootstrap-servers",
        kafka_servers,
        "--topic",
        topic,
        "--group",
        group_id,
        "--store",
        tmp_path / "st",
        "--anomalies-topic",
        f"{topic}.a",
        "--dlq-topic",
        f"{topic}.d",
        "--metrics-port",
        metrics_port,
    )
    try:
        url = f"http://127.0.0.1:{metrics_port}/metrics"
        deadline = time.monotonic() + 120
        text = ""
        while time.monotonic() < deadline:
            try:
                text = urllib.request.urlopen(url, timeout=3).read().decode()
            except OSError:
                text = ""
            if 'turbine_readings_total{site="default"} 16000.0' in text:
                break
            time.sleep(1)
        assert 'turbine_readings_total{site="default"} 16000.0' in text, text[-2000:]
        own = sum(
            float(v) for v in re.findall(r"^turbine_anomalies_total\{[^}]*\} (\S+)$", text, re.M)
        )
        assert own > 0
        # every reading scored is one observation of the lag and the latency (the
        # latency is observed once per Kafka record, counted for each of its readings)
        for name in ("turbine_scoring_lag_seconds", "turbine_pipeline_latency_seconds"):
            assert re.search(rf"^{name}_count 16000\.0$", text, re.M), (name, text[-3000:])
        # Alone in its group, on a topic that existed before it: one assignment,
        # no second rebalance at start.
        assert re.search(r"^turbine_consumer_rebalances_total 1\.0$", text, re.M), text[-3000:]
        # promtool check metrics on the real output
        check = subprocess.run(
            [tool("promtool"), "check", "metrics"], input=text, capture_output=True, text=True
        )
        assert check.returncode == 0, check.stdout + check.stderr
        # a real Prometheus with the project's scrape configuration
        conf = tmp_path / "prometheus"
        shutil.copytree(DEPLOY / "prometheus", conf)
        (conf / "targets").mkdir(exist_ok=True)
        (conf / "targets" / "detector-test.json").write_text(
            json.dumps([{"targets": [f"127.0.0.1:{metrics_port}"]}])
        )
        with prometheus_server(conf, free_port(), tmp_path) as base:
            deadline = time.monotonic() + 60
            result = []
            while time.monotonic() < deadline:
                result = query(base, 'sum(turbine_anomalies_total{job="detector"})')
                if result:
                    break
                time.sleep(1)
            assert result, "Prometheus never scraped the detector"
            assert float(result[0]["value"][1]) == own
            up = query(base, 'up{job="detector"}')
            assert [r["value"][1] for r in up] == ["1"]
    finally:
        detector.terminate()
        _, err = detector.communicate(timeout=60)
    assert detector.returncode == 0, err[-2000:]
    assert len(read_anomalies(tmp_path / "st")) == own  # the store holds what the counter says
