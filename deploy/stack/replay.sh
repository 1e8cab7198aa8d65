#!/usr/bin/env bash
# `make replay FILE=... [REPLAY_ARGS=...]`: replay a recorded file into the running stack
# (the compose stack or `make stack`), then say where to look and whether the detectors
# refused it.
#
# Settings (environment):
#   FILE          the recorded file (default out/demo/fleet.npz, written by `make demo`)
#   REPLAY_ARGS   more `turbine replay` options (--sep ';' --time-col datetime --speed 10
#                 --site skab ...); without --key-groups or --config, --key-groups 1: each
#                 batch's whole fleet in one record, as the stack's fleet-relative scoring
#                 of the default site needs (any site's detectors group turbines themselves)
#   BOOTSTRAP     the broker (default: the compose stack's 127.0.0.1:$KAFKA_HOST_PORT (29092)
#                 when it answers, else `make stack`'s 127.0.0.1:$KAFKA_PORT (9092))
#   PROMETHEUS    the stack's Prometheus (default http://127.0.0.1:$PROMETHEUS_PORT, 9090)
#   TOPIC         default turbine.readings
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
TURBINE="${TURBINE:-$ROOT/.venv/bin/turbine}"
PY="${PY:-$ROOT/.venv/bin/python}"
FILE="${FILE:-$ROOT/out/demo/fleet.npz}"
TOPIC="${TOPIC:-turbine.readings}"
PROMETHEUS="${PROMETHEUS:-http://127.0.0.1:${PROMETHEUS_PORT:-9090}}"
log() { printf 'replay: %s\n' "$*" >&2; }

answers() { # answers PORT: a broker listens on 127.0.0.1:PORT
  "$PY" -c "import socket,sys; s=socket.socket(); s.settimeout(2); sys.exit(s.connect_ex(('127.0.0.1', int(sys.argv[1]))))" "$1"
}

[ -f "$FILE" ] || { log "no file $FILE (make demo writes out/demo/fleet.npz; FILE=... chooses)"; exit 2; }
if [ -z "${BOOTSTRAP:-}" ]; then
  if answers "${KAFKA_HOST_PORT:-29092}"; then
    BOOTSTRAP="127.0.0.1:${KAFKA_HOST_PORT:-29092}"
    stack="the compose stack"
  elif answers "${KAFKA_PORT:-9092}"; then
    BOOTSTRAP="127.0.0.1:${KAFKA_PORT:-9092}"
    stack="the local stack (make stack)"
  else
    log "no stack answers on 127.0.0.1:${KAFKA_HOST_PORT:-29092} or :${KAFKA_PORT:-9092}: make compose-up or make stack first (or BOOTSTRAP=HOST:PORT)"
    exit 2
  fi
else
  stack="$BOOTSTRAP"
fi

dead_letters() { # sum of turbine_dead_letters_total by reason, as "reason=n ..." (empty: unknown)
  "$PY" - "$PROMETHEUS" <<'PY' 2>/dev/null || true
import json, sys, urllib.parse, urllib.request
url = sys.argv[1] + "/api/v1/query?" + urllib.parse.urlencode(
    {"query": "sum by (reason) (turbine_dead_letters_total)"})
data = json.load(urllib.request.urlopen(url, timeout=5))["data"]["result"]
print(" ".join(f"{r['metric'].get('reason', '')}={float(r['value'][1]):.0f}" for r in data))
PY
}

before="$(dead_letters)"
log "replaying $FILE into $stack ($BOOTSTRAP, topic $TOPIC)"
# REPLAY_ARGS is read as shell words, quotes honoured: REPLAY_ARGS="--sep ';' --speed 10".
eval "extra=(${REPLAY_ARGS:-})"
keys=(--key-groups 1)
for arg in "${extra[@]}"; do
  case "$arg" in --key-groups|--key-groups=*|--config|--config=*) keys=() ;; esac
done
"$TURBINE" replay "$FILE" --bootstrap-servers "$BOOTSTRAP" --topic "$TOPIC" --quiet \
  "${keys[@]}" "${extra[@]}"

cat >&2 <<INFO
replay: where to look
  Prometheus     $PROMETHEUS   sum(turbine_readings_total), turbine_anomalies_total,
                 turbine_dead_letters_total (refused records, by reason)
  Grafana        Pipeline latency (a replay of old data: its Scoring lag is the data's age)
  anomalies      make stack: .venv/bin/turbine anomalies out/stack/store
                 compose: the detectors' store volume (README, Replaying a file into the stack)
  dead letters   topic turbine.readings.dlq, header reason
INFO

if [ -n "$before" ] || curl -fsS "$PROMETHEUS/-/ready" >/dev/null 2>&1; then
  # Prometheus scrapes every 5 s: wait for the detectors' verdict to show.
  sleep "${REPLAY_SETTLE_SECONDS:-12}"
  after="$(dead_letters)"
  "$PY" - "$before" "$after" <<'PY'
import sys
def parse(text):
    return {k: float(v) for k, v in (p.split("=", 1) for p in text.split())}
before, after = parse(sys.argv[1]), parse(sys.argv[2])
grew = {k: v - before.get(k, 0.0) for k, v in after.items() if v > before.get(k, 0.0)}
if grew:
    listed = ", ".join(f"{k} {v:.0f}" for k, v in sorted(grew.items()))
    print(f"replay: the detectors dead-lettered records since the replay began: {listed}",
          file=sys.stderr)
    if "sensor_mismatch" in grew:
        print("replay: sensor_mismatch: the file's sensors are not the stack's model's (the "
              "simulator's); README, Replaying another machine's file", file=sys.stderr)
else:
    print("replay: no dead letters since the replay began", file=sys.stderr)
PY
fi
