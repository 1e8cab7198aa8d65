#!/usr/bin/env bash
# `make compose-up` / `make compose-down`: the docker-compose stack, on a normal
# machine (images pulled from Docker Hub, the app image built) or on one where no
# registry answers (local stand-ins built by deploy/images/build.sh under the same
# names; Grafana, which has no stand-in, is left out unless its image is present).
#
#   deploy/docker/compose.sh up | down | cli
#
# Compose v1 and v2 alike: `docker compose` (v2) when the docker CLI has it, else
# `docker-compose` (v1, Debian's); COMPOSE="docker-compose" (or "docker compose")
# chooses. The project name is fixed (COMPOSE_PROJECT_NAME, default turbine-watch, as
# .env sets it for a bare docker compose in this folder), whatever the clone is called.
#
# `up` starts the private Docker engine (deploy/docker/engine.sh) when none answers and
# remembers it did; `down` then stops it too, unless KEEP_ENGINE=1.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
export COMPOSE_PROJECT_NAME="${COMPOSE_PROJECT_NAME:-turbine-watch}"
STATE="${TURBINE_DOCKER_STATE:-${HOME:-/root}/.cache/turbine-watch/docker}"
STARTED_MARK="$STATE/started-by-compose-up"
log() { printf 'compose: %s\n' "$*" >&2; }

compose_cli() { # sets COMPOSE_CMD to the compose command line, v2 first
  if [ -n "${COMPOSE:-}" ]; then
    read -r -a COMPOSE_CMD <<<"$COMPOSE"
  elif docker compose version >/dev/null 2>&1; then
    COMPOSE_CMD=(docker compose)
  elif command -v docker-compose >/dev/null 2>&1; then
    COMPOSE_CMD=(docker-compose)
  else
    log "no docker compose: install Debian's docker-compose (deploy/docker/engine.sh up does)"
    exit 1
  fi
}

engine_env() { # an engine that answers: the one in use, or the private one (started here)
  if ! docker info >/dev/null 2>&1; then
    local before=0
    bash deploy/docker/engine.sh status >/dev/null 2>&1 && before=1
    bash deploy/docker/engine.sh up >/dev/null
    eval "$(bash deploy/docker/engine.sh env)"
    if [ "$before" = 0 ]; then
      mkdir -p "$STATE"
      echo "$COMPOSE_PROJECT_NAME" >"$STARTED_MARK"
      log "started the private Docker engine ($DOCKER_HOST); make compose-down stops it"
    fi
  fi
}

docker_socket() { # the engine's socket, mounted into Prometheus for its Docker discovery
  case "${DOCKER_HOST:-}" in
    unix://*) export DOCKER_SOCKET="${DOCKER_SOCKET:-${DOCKER_HOST#unix://}}" ;;
    "") export DOCKER_SOCKET="${DOCKER_SOCKET:-/var/run/docker.sock}" ;;
    *) log "DOCKER_HOST=$DOCKER_HOST is not a socket here: set DOCKER_SOCKET for Prometheus" ;;
  esac
}

registry_answers() {
  timeout 40 docker pull -q "${KAFKA_IMAGE:-apache/kafka:4.1.1}" >/dev/null 2>&1
}

up() {
  engine_env
  compose_cli
  docker_socket
  make -s wheelhouse
  services=(kafka kafka-init simulator detector prometheus alertmanager grafana)
  grafana=1
  if registry_answers; then
    log "a registry answers: pulling the upstream images, building the app image"
    "${COMPOSE_CMD[@]}" build
  else
    log "no registry answers: building local stand-ins (cached; deploy/images/README.md)"
    bash deploy/images/build.sh
    if ! docker image inspect "${GRAFANA_IMAGE:-grafana/grafana:11.3.0}" >/dev/null 2>&1; then
      log "no Grafana image here (and no stand-in): starting the stack without it"
      services=(kafka kafka-init simulator detector prometheus alertmanager)
      grafana=0
    fi
  fi
  "${COMPOSE_CMD[@]}" up -d --scale "detector=${DETECTORS:-2}" "${services[@]}"
  {
    echo "compose: up (project $COMPOSE_PROJECT_NAME, ${DETECTORS:-2} detectors, ${COMPOSE_CMD[*]})"
    echo "  Prometheus     http://127.0.0.1:${PROMETHEUS_PORT:-9090}   (targets: /targets, alerts: /alerts)"
    echo "  Alertmanager   http://127.0.0.1:${ALERTMANAGER_PORT:-9093}"
    if [ "$grafana" = 1 ]; then
      echo "  Grafana        http://127.0.0.1:${GRAFANA_PORT:-3000}"
    else
      echo "  Grafana        not started (no image here): the dashboard's queries work in Prometheus"
    fi
    echo "  Kafka          127.0.0.1:${KAFKA_HOST_PORT:-29092}"
    echo "  replay a file  make replay FILE=... (README, Replaying a file into the stack)"
    echo "  stop with      make compose-down   (KEEP_ENGINE=1 keeps the Docker engine)"
  } >&2
  if [ -n "${DOCKER_HOST:-}" ]; then
    log "this engine: export DOCKER_HOST=$DOCKER_HOST"
  fi
}

down() {
  if ! docker info >/dev/null 2>&1; then
    [ -f "$STATE/env" ] || { log "no engine runs"; rm -f "$STARTED_MARK"; return 0; }
    eval "$(bash deploy/docker/engine.sh env)"
  fi
  if docker info >/dev/null 2>&1; then
    compose_cli
    docker_socket
    # the replay profile's container too: v2's down leaves those of profiles not named
    "${COMPOSE_CMD[@]}" --profile replay down -v --remove-orphans
  fi
  if [ ! -f "$STARTED_MARK" ]; then
    log "the Docker engine keeps running: make compose-up did not start it"
  elif [ "${KEEP_ENGINE:-0}" = 1 ]; then
    log "the private Docker engine keeps running (KEEP_ENGINE=1; make docker-engine-down stops it)"
  else
    log "stopping the private Docker engine make compose-up started (KEEP_ENGINE=1 keeps it)"
    bash deploy/docker/engine.sh down >/dev/null
    rm -f "$STARTED_MARK"
  fi
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  cli) compose_cli; echo "${COMPOSE_CMD[*]}" ;;
  *) echo "usage: $0 up|down|cli" >&2; exit 2 ;;
esac
