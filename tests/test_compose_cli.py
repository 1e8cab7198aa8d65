"""`make compose-up`/`compose-down` through deploy/docker/compose.sh: Compose v2 or v1, one
project name whatever the clone is called, and the private engine stopped only when
compose-up started it (KEEP_ENGINE=1 keeps it)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import REPO

COMPOSE_SH = REPO / "deploy" / "docker" / "compose.sh"


def run_compose_sh(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(COMPOSE_SH), *args], capture_output=True, text=True, env=env, timeout=120
    )


def has_v2(env: dict[str, str]) -> bool:
    probe = subprocess.run(["docker", "compose", "version"], capture_output=True, env=env)
    return shutil.which("docker", path=env.get("PATH")) is not None and probe.returncode == 0


def v1_only_path(tmp_path: Path) -> dict[str, str]:
    """An environment whose docker CLI has no compose plugin (an empty DOCKER_CONFIG)."""
    return {**os.environ, "DOCKER_CONFIG": str(tmp_path / "no-plugins")}


def test_the_project_name_is_fixed_for_v1_and_v2_alike(tmp_path: Path) -> None:
    assert "COMPOSE_PROJECT_NAME=turbine-watch" in (REPO / ".env").read_text().splitlines()
    assert 'COMPOSE_PROJECT_NAME="${COMPOSE_PROJECT_NAME:-turbine-watch}"' in (
        COMPOSE_SH.read_text()
    )
    # A clone under another folder name: the .env beside the compose file names the project.
    clone = tmp_path / "some-clone"
    clone.mkdir()
    for name in ("docker-compose.yml", ".env"):
        shutil.copy(REPO / name, clone / name)
    env = {k: v for k, v in os.environ.items() if k != "COMPOSE_PROJECT_NAME"}
    tried = []
    if shutil.which("docker-compose"):
        tried.append("v1")
        out = subprocess.run(
            ["docker-compose", "config", "-q"], cwd=clone, env=env, capture_output=True
        )
        assert out.returncode == 0, out.stderr
    if shutil.which("docker") and has_v2(env):
        tried.append("v2")
        out = subprocess.run(
            ["docker", "compose", "config"], cwd=clone, env=env, capture_output=True, text=True
        )
        assert out.returncode == 0, out.stderr
        assert out.stdout.splitlines()[0] == "name: turbine-watch", out.stdout[:200]
    assert tried, "neither docker-compose (v1) nor docker compose (v2) here"


def test_make_uses_v2_when_the_docker_cli_has_it_else_v1(tmp_path: Path) -> None:
    if shutil.which("docker-compose") is None:
        pytest.fail("no docker-compose (v1): deploy/docker/engine.sh up installs it")
    env = v1_only_path(tmp_path)
    if not has_v2(env):
        assert run_compose_sh("cli", env=env).stdout.split() == ["docker-compose"]
    assert run_compose_sh("cli", env={**env, "COMPOSE": "docker-compose"}).stdout.split() == [
        "docker-compose"
    ]
    if has_v2(dict(os.environ)):  # the plugin is installed: compose.sh picks it
        assert run_compose_sh("cli", env=dict(os.environ)).stdout.split() == ["docker", "compose"]


@pytest.mark.parametrize(
    ("marked", "keep", "says"),
    [
        (True, "0", "stopping the private Docker engine make compose-up started"),
        (True, "1", "keeps running (KEEP_ENGINE=1"),
        (False, "0", "keeps running: make compose-up did not start it"),
    ],
)
def test_compose_down_stops_the_engine_only_when_compose_up_started_it(
    tmp_path: Path, marked: bool, keep: str, says: str
) -> None:
    # A state folder of its own (never the real engine's): its engine is gone, and
    # compose-up's mark says whether compose-up started it.
    state = tmp_path / "docker"
    state.mkdir()
    (state / "env").write_text(f"DOCKER_HOST=unix://{tmp_path}/gone.sock\n")
    if marked:
        (state / "started-by-compose-up").write_text("turbine-watch\n")
    env = {
        **os.environ,
        "TURBINE_DOCKER_STATE": str(state),
        "DOCKER_HOST": f"unix://{tmp_path}/gone.sock",
        "KEEP_ENGINE": keep,
        "COMPOSE_PROJECT_NAME": "twdown-test",
    }
    out = run_compose_sh("down", env=env)
    assert out.returncode == 0, out.stderr
    assert says in out.stderr, out.stderr
    assert (state / "started-by-compose-up").exists() == (marked and keep == "1")
