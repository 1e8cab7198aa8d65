#!/usr/bin/env bash
# The docker-compose stack from local processes: a local Kafka broker (KRaft),
# the simulator, a detector, Prometheus and Alertmanager with the same
# configuration and rules as deploy/prometheus and deploy/alertmanager.
# Prints where to look; Ctrl-C (or SIGTERM) stops everything cleanly.
#
# Settings (environment): KAFKA_PORT (9092), DETECTOR_METRICS_PORT (9400),
# KAFKA_CONTROLLER_PORT (KAFKA_PORT+2), PRODUCER_METRICS_PORT (9401), PROMETHEUS_PORT (9090), ALERTMANAGER_PORT (9093),
# STACK_DIR (out/stack), SIM_TURBINES (100), SIM_STEPS (86400), SIM_SPEED (10), SIM_SEED (42),
# SIM_FAULT_FRACTION (0.02; 0: a fault-free fleet), DETECTOR_CONFIG (the detector's
# configuration; default below), STACK_SECONDS (run that long then stop; default: until
# interrupted).
#
# The detector reads a copy of deploy/configs (sites.toml: the simulator's stream is the
# site "default") with this fleet's simulator.json written beside it: every sensor scored
# against the fleet's median at the same time, so the simulator sends each batch's whole
# fleet in one record (one key group, --fleet-relative).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
KAFKA_PORT="${KAFKA_PORT:-9092}"
DETECTOR_METRICS_PORT="${DETECTOR_METRICS_PORT:-9400}"
PRODUCER_METRICS_PORT="${PRODUCER_METRICS_PORT:-9401}"
PROMETHEUS_PORT="${PROMETHEUS_PORT:-9090}"
ALERTMANAGER_PORT="${ALERTMANAGER_PORT:-9093}"
STACK_DIR="${STACK_DIR:-$ROOT/out/stack}"
TURBINE="${TURBINE:-$ROOT/.venv/bin/turbine}"
BOOTSTRAP="127.0.0.1:$KAFKA_PORT"

log() { printf 'stack: %s\n' "$*" >&2; }

pids=()
# The broker's controller listener must not take Alertmanager's 9093.
KAFKA_CONTROLLER_PORT="${KAFKA_CONTROLLER_PORT:-$((KAFKA_PORT + 2))}"
kafka_env=(KAFKA_PORT="$KAFKA_PORT" KAFKA_CONTROLLER_PORT="$KAFKA_CONTROLLER_PORT" KAFKA_DATA_DIR="$STACK_DIR/kafka")

stop_all() {
  trap - INT TERM EXIT
  log "stopping"
  # Producers first, then the detector (it checkpoints and commits), then the rest.
  for pid in "${pids[@]}"; do
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    kill -KILL "$pid" 2>/dev/null || true
  done
  env "${kafka_env[@]}" bash deploy/kafka/kafka.sh down >/dev/null 2>&1 || true
  log "stopped"
}

[ -x "$TURBINE" ] || make -s venv
mkdir -p "$STACK_DIR"
bash deploy/prometheus/install.sh >/dev/null
ALERTMANAGER_BIN="$(command -v alertmanager || command -v prometheus-alertmanager)"

trap stop_all INT TERM EXIT
log "starting Kafka on $BOOTSTRAP"
env "${kafka_env[@]}" bash deploy/kafka/kafka.sh up >/dev/null

# Prometheus gets a copy of deploy/prometheus plus target files for these processes.
rm -rf "$STACK_DIR/prometheus"
cp -r deploy/prometheus "$STACK_DIR/prometheus"
mkdir -p "$STACK_DIR/prometheus/targets"
# Labelled as the compose stack labels its targets: service and container (here, process).
target() { # target PORT SERVICE
  printf '[{"targets": ["127.0.0.1:%s"], "labels": {"stack": "local", "service": "%s", "container": "local-%s"}}]\n' \
    "$1" "$2" "$2"
}
target "$DETECTOR_METRICS_PORT" detector >"$STACK_DIR/prometheus/targets/detector-local.json"
target "$PRODUCER_METRICS_PORT" simulator >"$STACK_DIR/prometheus/targets/producer-local.json"
printf '[{"targets": ["127.0.0.1:%s"]}]\n' "$ALERTMANAGER_PORT" \
  >"$STACK_DIR/prometheus/targets/alertmanager-local.json"

"$ALERTMANAGER_BIN" --config.file=deploy/alertmanager/alertmanager.yml \
  --storage.path="$STACK_DIR/alertmanager" \
  --web.listen-address="127.0.0.1:$ALERTMANAGER_PORT" --cluster.listen-address= \
  >"$STACK_DIR/alertmanager.log" 2>&1 &
am_pid=$!
prometheus --config.file="$STACK_DIR/prometheus/prometheus.yml" \
  --storage.tsdb.path="$STACK_DIR/tsdb" \
  --web.listen-address="127.0.0.1:$PROMETHEUS_PORT" --web.enable-lifecycle \
  >"$STACK_DIR/prometheus.log" 2>&1 &
prom_pid=$!

# The detectors' configuration: deploy/configs, with this fleet's simulator.json.
fleet=(--turbines "${SIM_TURBINES:-100}" --seed "${SIM_SEED:-42}" --fleet-relative)
rm -rf "$STACK_DIR/configs"
cp -r deploy/configs "$STACK_DIR/configs"
TURBINE_BOOTSTRAP_SERVERS='' "$TURBINE" simulate "${fleet[@]}" \
  --write-config "$STACK_DIR/configs/simulator.json" >/dev/null
"$TURBINE" detect --bootstrap-servers "$BOOTSTRAP" --store "$STACK_DIR/store" \
  --config "${DETECTOR_CONFIG:-$STACK_DIR/configs/sites.toml}" \
  --metrics-port "$DETECTOR_METRICS_PORT" --partitions 6 \
  >"$STACK_DIR/detector.log" 2>&1 &
det_pid=$!
"$TURBINE" simulate --bootstrap-servers "$BOOTSTRAP" --partitions 6 "${fleet[@]}" \
  --steps "${SIM_STEPS:-86400}" --speed "${SIM_SPEED:-10}" \
  --fault-fraction "${SIM_FAULT_FRACTION:-0.02}" \
  --metrics-port "$PRODUCER_METRICS_PORT" --quiet \
  >"$STACK_DIR/simulator.log" 2>&1 &
sim_pid=$!
# Stop order: simulator, detector, Prometheus, Alertmanager.
pids=("$sim_pid" "$det_pid" "$prom_pid" "$am_pid")

cat >&2 <<INFO
stack: running (logs in $STACK_DIR)
  Kafka          $BOOTSTRAP            topics turbine.readings, turbine.anomalies, turbine.readings.dlq
  detector       http://127.0.0.1:$DETECTOR_METRICS_PORT/metrics   store $STACK_DIR/store
                 configuration ${DETECTOR_CONFIG:-$STACK_DIR/configs/sites.toml}
  simulator      http://127.0.0.1:$PRODUCER_METRICS_PORT/metrics
  Prometheus     http://127.0.0.1:$PROMETHEUS_PORT     (targets: /targets, alerts: /alerts)
  Alertmanager   http://127.0.0.1:$ALERTMANAGER_PORT
  anomalies      $TURBINE anomalies $STACK_DIR/store
stack: Ctrl-C stops everything
INFO

if [ -n "${STACK_SECONDS:-}" ]; then
  sleep "$STACK_SECONDS" &
  wait $! || true
else
  # Runs until interrupted (or until the detector or Prometheus exits).
  wait -n "$det_pid" "$prom_pid" || true
fi
