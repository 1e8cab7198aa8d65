#!/usr/bin/env bash
# `make compose-up` / `make compose-down`: the docker-compose stack, on a normal
# machine (images pulled from Docker Hub, the app image built) or on one where no
# registry answers (local stand-ins built by deploy/images/build.sh under the same
# names; Grafana, which has no stand-in, is left out unless its image is present).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
export COMPOSE_PROJECT_NAME="${COMPOSE_PROJECT_NAME:-turbine-watch}"
COMPOSE=(docker-compose)
if ! command -v docker-compose >/dev/null 2>&1 && docker compose version >/dev/null 2>&1; then
  COMPOSE=(docker compose)
fi
log() { printf 'compose: %s\n' "$*" >&2; }

engine_env() {
  if ! docker info >/dev/null 2>&1; then
    bash deploy/docker/engine.sh up >/dev/null
    eval "$(bash deploy/docker/engine.sh env)"
  fi
  command -v docker-compose >/dev/null 2>&1 || docker compose version >/dev/null 2>&1 || {
    log "no docker compose: install Debian's docker-compose (deploy/docker/engine.sh up does)"
    exit 1
  }
}

registry_answers() {
  timeout 40 docker pull -q "${KAFKA_IMAGE:-apache/kafka:4.1.1}" >/dev/null 2>&1
}

up() {
  engine_env
  make -s wheelhouse
  services=(kafka kafka-init simulator detector prometheus alertmanager grafana)
  if registry_answers; then
    log "a registry answers: pulling the upstream images, building the app image"
    "${COMPOSE[@]}" build
  else
    log "no registry answers: building local stand-ins (cached; deploy/images/README.md)"
    bash deploy/images/build.sh
    if ! docker image inspect "${GRAFANA_IMAGE:-grafana/grafana:11.3.0}" >/dev/null 2>&1; then
      log "no Grafana image here (and no stand-in): starting the stack without it"
      services=(kafka kafka-init simulator detector prometheus alertmanager)
    fi
  fi
  "${COMPOSE[@]}" up -d --scale "detector=${DETECTORS:-2}" "${services[@]}"
  cat >&2 <<INFO
compose: up (project $COMPOSE_PROJECT_NAME, ${DETECTORS:-2} detectors)
  Prometheus     http://127.0.0.1:${PROMETHEUS_PORT:-9090}
  Alertmanager   http://127.0.0.1:${ALERTMANAGER_PORT:-9093}
  Grafana        http://127.0.0.1:${GRAFANA_PORT:-3000}   (when started)
  Kafka          127.0.0.1:${KAFKA_HOST_PORT:-29092}
  stop with      make compose-down
INFO
  if [ -n "${DOCKER_HOST:-}" ]; then
    log "this engine: export DOCKER_HOST=$DOCKER_HOST"
  fi
}

down() {
  if ! docker info >/dev/null 2>&1; then
    [ -f "${TURBINE_DOCKER_STATE:-$HOME/.cache/turbine-watch/docker}/env" ] || { log "no engine runs"; return 0; }
    eval "$(bash deploy/docker/engine.sh env)"
  fi
  "${COMPOSE[@]}" down -v --remove-orphans
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  *) echo "usage: $0 up|down" >&2; exit 2 ;;
esac
