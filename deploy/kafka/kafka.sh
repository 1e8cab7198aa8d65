#!/usr/bin/env bash
# Run a real single-node Apache Kafka 4.x broker (KRaft, combined broker+controller)
# on 127.0.0.1 without Docker, from Maven Central artifacts (or a $KAFKA_HOME
# binary distribution).
#
# Usage: deploy/kafka/kafka.sh {fetch|up|down [--purge]|clean|status|help}
#
# `up` prints exactly one line on stdout, KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:<port>;
# all progress goes to stderr, so `eval "$(deploy/kafka/kafka.sh up)"` works.
# See deploy/kafka/README.md for the settings.
set -euo pipefail

readonly DEFAULT_KAFKA_VERSION=4.4.0
readonly LOG4J_VERSION=2.26.1
readonly SLF4J_VERSION=2.0.17
readonly DEPENDENCY_PLUGIN=org.apache.maven.plugins:maven-dependency-plugin:3.8.1
readonly PROBE_CLIENT_ID=turbine-watch-kafka-sh

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/../.." && pwd)"

KAFKA_VERSION="${KAFKA_VERSION:-$DEFAULT_KAFKA_VERSION}"
KAFKA_CACHE="${KAFKA_CACHE:-$HOME/.cache/turbine-watch/kafka}"
KAFKA_PORT="${KAFKA_PORT:-9092}"
# Derived from the broker port so that several brokers can run side by side
# (9092 -> 9093, 19092 -> 19093); set it explicitly to override.
KAFKA_CONTROLLER_PORT="${KAFKA_CONTROLLER_PORT:-$((KAFKA_PORT + 1))}"
KAFKA_DATA_DIR="${KAFKA_DATA_DIR:-$KAFKA_CACHE/data-$KAFKA_PORT}"
KAFKA_HEAP_OPTS="${KAFKA_HEAP_OPTS:--Xms256m -Xmx512m}"
KAFKA_OPTS="${KAFKA_OPTS:-}"
KAFKA_START_TIMEOUT="${KAFKA_START_TIMEOUT:-90}"
KAFKA_STOP_TIMEOUT="${KAFKA_STOP_TIMEOUT:-30}"
KAFKA_MESSAGE_MAX_BYTES="${KAFKA_MESSAGE_MAX_BYTES:-16777216}"
KAFKA_PYTHON="${KAFKA_PYTHON:-$REPO_ROOT/.venv/bin/python}"

# Absolute paths: the pid check compares them with the broker's command line.
KAFKA_CACHE="$(realpath -m -- "$KAFKA_CACHE")"
KAFKA_DATA_DIR="$(realpath -m -- "$KAFKA_DATA_DIR")"
[[ -z "${KAFKA_HOME:-}" ]] || KAFKA_HOME="$(realpath -m -- "$KAFKA_HOME")"

BOOTSTRAP="127.0.0.1:$KAFKA_PORT"
PID_FILE="$KAFKA_DATA_DIR/kafka.pid"
PROPS_FILE="$KAFKA_DATA_DIR/server.properties"
LOG_DIR="$KAFKA_DATA_DIR/logs"         # log4j output (server.log, console.log)
KRAFT_DIR="$KAFKA_DATA_DIR/kraft"      # log.dirs: metadata log + topic data
LOG4J_CONFIG="$KAFKA_CACHE/log4j2.properties"
LOG_OFFSET=0                           # size of server.log before this start
BROKER_PID=

log() { printf 'kafka.sh: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

usage() {
  cat <<EOF
usage: ${0##*/} COMMAND

commands:
  fetch           resolve the broker jars into \$KAFKA_CACHE (or use \$KAFKA_HOME/libs)
  up              install java/maven if missing, fetch, format storage, start the
                  broker and wait until it answers a metadata request
  down [--purge]  stop the broker (SIGTERM, SIGKILL after ${KAFKA_STOP_TIMEOUT}s);
                  --purge also deletes the data dir
  clean           same as: down --purge
  status          tell whether the broker on \$KAFKA_PORT runs (exit 0 if so, 3 if not)

settings (environment): KAFKA_HOME KAFKA_VERSION KAFKA_CACHE KAFKA_PORT
  KAFKA_CONTROLLER_PORT KAFKA_DATA_DIR KAFKA_HEAP_OPTS KAFKA_OPTS
  KAFKA_START_TIMEOUT KAFKA_STOP_TIMEOUT KAFKA_MESSAGE_MAX_BYTES KAFKA_PYTHON
EOF
}

validate_port() {
  if [[ ! "$2" =~ ^[0-9]+$ ]] || (( $2 < 1 || $2 > 65535 )); then
    die "$1 must be a TCP port, got '$2'"
  fi
}

# ---------------------------------------------------------------- installs --

apt_install() {
  local -a sudo=()
  if [[ "$(id -u)" -ne 0 ]]; then
    command -v sudo >/dev/null 2>&1 || die "need root or sudo to apt-get install $*"
    sudo=(sudo)
  fi
  log "installing $* with apt-get"
  # Only refresh the package lists when the install fails without it.
  if ! "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
      apt-get install -y -q --no-install-recommends "$@" >&2; then
    "${sudo[@]}" apt-get update -q >&2
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
      apt-get install -y -q --no-install-recommends "$@" >&2
  fi
}

java_major() {
  local line
  line="$("$JAVA" -version 2>&1 | head -n 1)" || return 1
  line="${line#*\"}"
  line="${line%%\"*}"
  line="${line#1.}"
  printf '%s\n' "${line%%[.+-]*}"
}

ensure_java() {
  if [[ -n "${JAVA_HOME:-}" && -x "$JAVA_HOME/bin/java" ]]; then
    JAVA="$JAVA_HOME/bin/java"
  else
    JAVA=java
  fi
  if ! command -v "$JAVA" >/dev/null 2>&1; then
    apt_install openjdk-17-jre-headless
    JAVA=java
  fi
  local major
  major="$(java_major || echo 0)"
  if [[ ! "$major" =~ ^[0-9]+$ ]] || (( major < 17 )); then
    log "java '$JAVA' is version '$major'; Kafka 4 needs Java 17+"
    apt_install openjdk-17-jre-headless
    JAVA="$(find /usr/lib/jvm -maxdepth 3 -path '*17*' -name java -type f 2>/dev/null | head -n 1)"
    [[ -n "$JAVA" ]] || die "no Java 17 found after installing openjdk-17-jre-headless"
  fi
}

ensure_mvn() {
  command -v mvn >/dev/null 2>&1 || apt_install maven
}

# ------------------------------------------------------------------- fetch --

write_log4j_config() {
  mkdir -p "$KAFKA_CACHE"
  local tmp
  tmp="$(mktemp "$KAFKA_CACHE/.log4j2.XXXXXX")"
  # kafka.logs.dir is set per broker by `up`; INFO and up to a file, WARN and
  # up to the console (the console goes to logs/console.log under nohup).
  cat >"$tmp" <<'EOF'
# Written by deploy/kafka/kafka.sh
status = warn
name = turbine-watch-kafka
property.logDir = ${sys:kafka.logs.dir:-logs}
property.pattern = [%d] %p %m (%c)%n

appender.console.type = Console
appender.console.name = CONSOLE
appender.console.target = SYSTEM_OUT
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = ${pattern}
appender.console.filter.threshold.type = ThresholdFilter
appender.console.filter.threshold.level = warn

appender.file.type = RollingFile
appender.file.name = FILE
appender.file.fileName = ${logDir}/server.log
appender.file.filePattern = ${logDir}/server.log.%i
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = ${pattern}
appender.file.policies.type = Policies
appender.file.policies.size.type = SizeBasedTriggeringPolicy
appender.file.policies.size.size = 50MB
appender.file.strategy.type = DefaultRolloverStrategy
appender.file.strategy.max = 3

rootLogger.level = info
rootLogger.appenderRef.console.ref = CONSOLE
rootLogger.appenderRef.file.ref = FILE

# Chatty at INFO, like Kafka's own default config.
logger.request.name = kafka.request.logger
logger.request.level = warn
EOF
  if cmp -s "$tmp" "$LOG4J_CONFIG"; then
    rm -f "$tmp"
  else
    chmod 644 "$tmp"
    mv -f "$tmp" "$LOG4J_CONFIG"
  fi
}

write_pom() {
  cat >"$1" <<EOF
<?xml version="1.0" encoding="UTF-8"?>
<!-- Written by deploy/kafka/kafka.sh: the jars a Kafka ${KAFKA_VERSION} KRaft broker runs on. -->
<project xmlns="http://maven.apache.org/POM/4.0.0"
         xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"
         xsi:schemaLocation="http://maven.apache.org/POM/4.0.0 https://maven.apache.org/xsd/maven-4.0.0.xsd">
  <modelVersion>4.0.0</modelVersion>
  <groupId>turbine-watch</groupId>
  <artifactId>kafka-broker-runtime</artifactId>
  <version>${KAFKA_VERSION}</version>
  <packaging>pom</packaging>
  <dependencies>
    <!-- the broker (kafka.Kafka, kafka.tools.StorageTool) and, transitively,
         kafka-clients, -server, -raft, -metadata, -storage, scala, jackson -->
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka_2.13</artifactId>
      <version>${KAFKA_VERSION}</version>
    </dependency>
    <!-- logging backend: the broker only depends on the slf4j API (1.7.x);
         log4j-slf4j2-impl needs slf4j-api 2.x, so pin it -->
    <dependency>
      <groupId>org.slf4j</groupId>
      <artifactId>slf4j-api</artifactId>
      <version>${SLF4J_VERSION}</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-api</artifactId>
      <version>${LOG4J_VERSION}</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-core</artifactId>
      <version>${LOG4J_VERSION}</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-slf4j2-impl</artifactId>
      <version>${LOG4J_VERSION}</version>
    </dependency>
  </dependencies>
</project>
EOF
}

# Sets LIBS_DIR to a folder holding every jar the broker needs.
cmd_fetch() {
  write_log4j_config
  if [[ -n "${KAFKA_HOME:-}" ]]; then
    LIBS_DIR="$KAFKA_HOME/libs"
    compgen -G "$LIBS_DIR/kafka_2.13-*.jar" >/dev/null \
      || die "KAFKA_HOME=$KAFKA_HOME has no libs/kafka_2.13-*.jar: not a Kafka binary distribution"
    log "using the jars of KAFKA_HOME=$KAFKA_HOME"
    return 0
  fi

  local vdir="$KAFKA_CACHE/$KAFKA_VERSION"
  LIBS_DIR="$vdir/libs"
  local marker="$vdir/.resolved"
  mkdir -p "$vdir"

  # Serialise concurrent fetches (tests may start several brokers at once).
  if command -v flock >/dev/null 2>&1; then
    exec 9>"$vdir/.lock"
    flock 9
  fi

  local pom_tmp sum
  pom_tmp="$(mktemp "$vdir/.pom.XXXXXX")"
  write_pom "$pom_tmp"
  sum="$(sha256sum "$pom_tmp" | cut -d' ' -f1)"
  if [[ -f "$marker" && "$(cat "$marker")" == "$sum" ]] \
      && compgen -G "$LIBS_DIR/kafka_2.13-$KAFKA_VERSION.jar" >/dev/null; then
    rm -f "$pom_tmp"
    log "Kafka $KAFKA_VERSION already resolved in $LIBS_DIR"
    exec 9>&-
    return 0
  fi

  ensure_mvn
  mv -f "$pom_tmp" "$vdir/pom.xml"
  rm -rf "$LIBS_DIR" "$marker"
  log "resolving org.apache.kafka:kafka_2.13:$KAFKA_VERSION from Maven into $LIBS_DIR"
  # (sed drops the colour resets Maven 3.8 prints even in batch/quiet mode)
  if ! mvn -B -q -Dstyle.color=never -f "$vdir/pom.xml" "$DEPENDENCY_PLUGIN:copy-dependencies" \
      -DincludeScope=runtime -DoutputDirectory="$LIBS_DIR" 2>&1 \
      | sed -e 's/\x1b\[[0-9;]*m//g' -e '/^$/d' >&2; then
    die "maven could not resolve Kafka $KAFKA_VERSION (see above)"
  fi
  compgen -G "$LIBS_DIR/kafka_2.13-$KAFKA_VERSION.jar" >/dev/null \
    || die "maven ran but $LIBS_DIR has no kafka_2.13-$KAFKA_VERSION.jar"
  printf '%s\n' "$sum" >"$marker"
  exec 9>&-
  log "resolved $(find "$LIBS_DIR" -name '*.jar' | wc -l) jars"
}

# ------------------------------------------------------------ broker state --

read_pid() {
  [[ -f "$PID_FILE" ]] || return 1
  local pid
  pid="$(tr -dc '0-9' <"$PID_FILE")"
  [[ -n "$pid" ]] || return 1
  printf '%s\n' "$pid"
}

# True when $1 is a live kafka.Kafka process started on this data dir's
# server.properties (guards against a stale pid file whose pid was reused).
is_our_broker() {
  local pid="$1" cmdline
  [[ -r "/proc/$pid/cmdline" ]] || return 1
  cmdline="$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null)" || return 1
  [[ "$cmdline" == *" kafka.Kafka $PROPS_FILE"* ]]
}

running_pid() {
  local pid
  pid="$(read_pid)" || return 1
  is_our_broker "$pid" || return 1
  printf '%s\n' "$pid"
}

port_in_use() {
  # shellcheck disable=SC2016  # $1 is expanded by the inner bash
  timeout 2 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1"' _ "$1" >/dev/null 2>&1
}

# Kafka's cluster ids are 16 random bytes in unpadded base64url (22 chars);
# like Uuid.randomUuid(), avoid one starting with '-' (it reads as an option).
random_cluster_id() {
  local id
  while :; do
    id="$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n')"
    [[ "$id" != -* && "$id" != AAAAAAAAAAAAAAAAAAAAA* ]] && break
  done
  printf '%s\n' "$id"
}

# Kafka >= 3.9 can bootstrap a dynamic quorum (--standalone); older KRaft
# releases need static controller.quorum.voters.
kafka_version_in_use() {
  if [[ -n "${KAFKA_HOME:-}" ]]; then
    local jar
    jar="$(compgen -G "$KAFKA_HOME/libs/kafka_2.13-*.jar" | grep -v -e '-test' -e '-sources' | head -n 1)"
    jar="${jar##*/kafka_2.13-}"
    printf '%s\n' "${jar%.jar}"
  else
    printf '%s\n' "$KAFKA_VERSION"
  fi
}

dynamic_quorum() {
  local v major minor
  v="$(kafka_version_in_use)"
  major="${v%%.*}"
  minor="${v#*.}"
  minor="${minor%%.*}"
  [[ "$major" =~ ^[0-9]+$ && "$minor" =~ ^[0-9]+$ ]] || return 0
  (( major > 3 || (major == 3 && minor >= 9) ))
}

write_server_properties() {
  local quorum
  if dynamic_quorum; then
    quorum="controller.quorum.bootstrap.servers=127.0.0.1:$KAFKA_CONTROLLER_PORT"
  else
    quorum="controller.quorum.voters=1@127.0.0.1:$KAFKA_CONTROLLER_PORT"
  fi
  cat >"$PROPS_FILE" <<EOF
# Written by deploy/kafka/kafka.sh: single-node KRaft broker+controller.
process.roles=broker,controller
node.id=1
$quorum
listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT,CONTROLLER://127.0.0.1:$KAFKA_CONTROLLER_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT

log.dirs=$KRAFT_DIR
num.partitions=6
default.replication.factor=1
auto.create.topics.enable=true

offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0

# room for 16 MiB records
message.max.bytes=$KAFKA_MESSAGE_MAX_BYTES
replica.fetch.max.bytes=$KAFKA_MESSAGE_MAX_BYTES
replica.fetch.response.max.bytes=$(( KAFKA_MESSAGE_MAX_BYTES > 10485760 ? KAFKA_MESSAGE_MAX_BYTES : 10485760 ))
EOF
}

format_storage() {
  if [[ -f "$KRAFT_DIR/meta.properties" ]]; then
    log "storage in $KRAFT_DIR already formatted"
    return 0
  fi
  local cluster_id
  cluster_id="$(random_cluster_id)"
  local -a args=(format -t "$cluster_id" -c "$PROPS_FILE")
  if dynamic_quorum; then
    args+=(--standalone)
  fi
  log "formatting $KRAFT_DIR with cluster id $cluster_id"
  if ! "$JAVA" -Xmx256m -Dlog4j2.configurationFile="file:$LOG4J_CONFIG" \
      -Dkafka.logs.dir="$LOG_DIR" -cp "$LIBS_DIR/*" \
      kafka.tools.StorageTool "${args[@]}" >"$LOG_DIR/format.log" 2>&1; then
    cat "$LOG_DIR/format.log" >&2
    die "formatting the storage failed"
  fi
}

# ------------------------------------------------------------ readiness ----

probe_method() {
  if [[ -x "$KAFKA_PYTHON" ]] && "$KAFKA_PYTHON" -c 'import kafka.admin' >/dev/null 2>&1; then
    echo python
  elif command -v kcat >/dev/null 2>&1; then
    echo kcat
  elif command -v kafkacat >/dev/null 2>&1; then
    echo kafkacat
  else
    echo log
  fi
}

# One real metadata round trip: the broker lists itself (node 1).
probe_once() {
  case "$1" in
    python)
      timeout 20 "$KAFKA_PYTHON" - "$BOOTSTRAP" "$PROBE_CLIENT_ID" >/dev/null 2>&1 <<'PY'
import sys
from kafka import KafkaAdminClient
admin = KafkaAdminClient(bootstrap_servers=sys.argv[1], client_id=sys.argv[2],
                         request_timeout_ms=5000)
try:
    brokers = admin.describe_cluster().get("brokers") or []
finally:
    admin.close()
sys.exit(0 if any(b.get("broker_id", b.get("node_id")) == 1 for b in brokers) else 1)
PY
      ;;
    kcat | kafkacat)
      timeout 10 "$1" -L -b "$BOOTSTRAP" -m 5 2>/dev/null | grep -q "broker 1 at"
      ;;
    log)
      # Only the part of server.log written since this start.
      local size
      size="$(stat -c %s "$LOG_DIR/server.log" 2>/dev/null || echo 0)"
      (( size >= LOG_OFFSET )) || LOG_OFFSET=0
      tail -c "+$(( LOG_OFFSET + 1 ))" "$LOG_DIR/server.log" 2>/dev/null \
        | grep -q "Kafka Server started"
      ;;
  esac
}

show_logs() {
  local f
  for f in "$LOG_DIR/console.log" "$LOG_DIR/server.log"; do
    [[ -s "$f" ]] || continue
    log "---- last lines of $f ----"
    tail -n 40 "$f" >&2
  done
}

# ------------------------------------------------------------------ up -----

cmd_up() {
  validate_port KAFKA_PORT "$KAFKA_PORT"
  validate_port KAFKA_CONTROLLER_PORT "$KAFKA_CONTROLLER_PORT"
  [[ "$KAFKA_PORT" != "$KAFKA_CONTROLLER_PORT" ]] || die "KAFKA_PORT and KAFKA_CONTROLLER_PORT must differ"

  local pid
  if pid="$(running_pid)"; then
    log "a broker from this script already runs on $BOOTSTRAP (pid $pid, data $KAFKA_DATA_DIR)"
    echo "KAFKA_BOOTSTRAP_SERVERS=$BOOTSTRAP"
    return 0
  fi

  local p
  for p in "$KAFKA_PORT" "$KAFKA_CONTROLLER_PORT"; do
    if port_in_use "$p"; then
      die "127.0.0.1:$p is already in use by another process (not a broker of this script on $KAFKA_DATA_DIR)"
    fi
  done

  ensure_java
  cmd_fetch

  mkdir -p "$KAFKA_DATA_DIR" "$LOG_DIR" "$KRAFT_DIR"
  rm -f "$PID_FILE"
  write_server_properties
  format_storage

  local attempt rc=0
  for attempt in 1 2 3; do
    start_broker && rc=0 || rc=$?
    case "$rc" in
      0)
        log "up: pid $BROKER_PID, server log $LOG_DIR/server.log"
        echo "KAFKA_BOOTSTRAP_SERVERS=$BOOTSTRAP"
        return 0
        ;;
      1)
        # A port in the ephemeral range can be taken for a moment by an
        # outgoing connection (even the broker's own one to its controller).
        if (( attempt < 3 )) && grep -qs "Address already in use" "$LOG_DIR/console.log"; then
          log "a port was taken while the broker started (attempt $attempt);" \
            "waiting for 127.0.0.1:$KAFKA_PORT/$KAFKA_CONTROLLER_PORT to be released, then retrying"
          wait_port_released "$KAFKA_PORT"
          wait_port_released "$KAFKA_CONTROLLER_PORT"
          continue
        fi
        show_logs
        die "the broker (pid $BROKER_PID) exited during startup"
        ;;
      *)
        show_logs
        die "the broker did not answer on $BOOTSTRAP within ${KAFKA_START_TIMEOUT}s (stopped it)"
        ;;
    esac
  done
}

# Waits (up to 70 s) until no socket uses local port $1: an outgoing
# connection that took it as its ephemeral port blocks a bind(), and after it
# closes its TIME-WAIT state does so for another 60 s.
wait_port_released() {
  command -v ss >/dev/null 2>&1 || { sleep 1; return 0; }
  local deadline=$(( SECONDS + 70 ))
  while [[ -n "$(ss -Htan "( sport = :$1 )" 2>/dev/null)" ]]; do
    (( SECONDS < deadline )) || return 0
    sleep 1
  done
}

# Starts kafka.Kafka in the background and waits for a metadata answer.
# Sets BROKER_PID. Returns 0 when ready, 1 when the process exited during
# startup, 2 on timeout (the process is stopped then).
start_broker() {
  local -a heap_opts extra_opts launcher=(nohup)
  read -r -a heap_opts <<<"$KAFKA_HEAP_OPTS"
  read -r -a extra_opts <<<"$KAFKA_OPTS"
  # Own session, so a Ctrl-C / SIGHUP aimed at the caller's group leaves it alone.
  if command -v setsid >/dev/null 2>&1; then
    launcher=(setsid nohup)
  fi

  LOG_OFFSET="$(stat -c %s "$LOG_DIR/server.log" 2>/dev/null || echo 0)"
  log "starting Kafka $(kafka_version_in_use) on $BOOTSTRAP (controller 127.0.0.1:$KAFKA_CONTROLLER_PORT, data $KAFKA_DATA_DIR)"
  "${launcher[@]}" "$JAVA" "${heap_opts[@]}" -server -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
    -XX:+ExitOnOutOfMemoryError -Djava.awt.headless=true -Dlog4j2.shutdownHookEnabled=false \
    -Dlog4j2.configurationFile="file:$LOG4J_CONFIG" -Dkafka.logs.dir="$LOG_DIR" \
    "${extra_opts[@]}" -cp "$LIBS_DIR/*" kafka.Kafka "$PROPS_FILE" \
    >"$LOG_DIR/console.log" 2>&1 </dev/null &
  BROKER_PID=$!
  printf '%s\n' "$BROKER_PID" >"$PID_FILE"

  local method deadline
  method="$(probe_method)"
  deadline=$(( SECONDS + KAFKA_START_TIMEOUT ))
  log "waiting up to ${KAFKA_START_TIMEOUT}s for a metadata answer (probe: $method)"
  while :; do
    if ! kill -0 "$BROKER_PID" 2>/dev/null; then
      wait "$BROKER_PID" 2>/dev/null || true
      rm -f "$PID_FILE"
      return 1
    fi
    if port_in_use "$KAFKA_PORT" && probe_once "$method" && is_our_broker "$BROKER_PID"; then
      return 0
    fi
    if (( SECONDS >= deadline )); then
      log "no answer after ${KAFKA_START_TIMEOUT}s; stopping pid $BROKER_PID"
      stop_pid "$BROKER_PID"
      rm -f "$PID_FILE"
      return 2
    fi
    sleep 0.5
  done
}

# ----------------------------------------------------------------- down ----

stop_pid() {
  local pid="$1" waited=0
  kill -TERM "$pid" 2>/dev/null || return 0
  while kill -0 "$pid" 2>/dev/null; do
    if (( waited >= KAFKA_STOP_TIMEOUT * 2 )); then
      log "pid $pid still alive after ${KAFKA_STOP_TIMEOUT}s; sending SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      break
    fi
    sleep 0.5
    waited=$(( waited + 1 ))
  done
  # Reap / wait for the kernel to drop it after SIGKILL.
  local _
  for _ in 1 2 3 4 5 6 7 8 9 10; do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.2
  done
}

cmd_down() {
  local purge=0 arg
  for arg in "$@"; do
    case "$arg" in
      --purge) purge=1 ;;
      *) die "down: unknown option '$arg'" ;;
    esac
  done

  local pid
  if pid="$(running_pid)"; then
    log "stopping the broker on $BOOTSTRAP (pid $pid)"
    stop_pid "$pid"
    log "stopped"
  elif pid="$(read_pid)"; then
    log "stale pid file (pid $pid is not this broker); removing it"
  else
    log "no broker of this script runs on $BOOTSTRAP"
  fi
  rm -f "$PID_FILE"

  if (( purge )); then
    case "$KAFKA_DATA_DIR" in
      "" | / | "$HOME" | "$KAFKA_CACHE") die "refusing to delete '$KAFKA_DATA_DIR'" ;;
    esac
    if [[ -d "$KAFKA_DATA_DIR" ]]; then
      rm -rf -- "$KAFKA_DATA_DIR"
      log "deleted $KAFKA_DATA_DIR"
    fi
  fi
}

cmd_status() {
  local pid
  if pid="$(running_pid)"; then
    echo "kafka on $BOOTSTRAP: running (pid $pid, data $KAFKA_DATA_DIR)"
    return 0
  fi
  echo "kafka on $BOOTSTRAP: not running (data $KAFKA_DATA_DIR)"
  return 3
}

main() {
  local cmd="${1:-help}"
  [[ $# -gt 0 ]] && shift
  case "$cmd" in
    fetch) cmd_fetch ;;
    up) cmd_up ;;
    down | stop) cmd_down "$@" ;;
    clean) cmd_down --purge ;;
    status) cmd_status ;;
    help | -h | --help) usage ;;
    *) usage >&2; exit 2 ;;
  esac
}

main "$@"
