#!/usr/bin/env bash
# turbine-watch stand-in for Kafka's bin/kafka-run-class.sh: runs a Kafka main
# class with every jar of /opt/kafka/libs on the class path and the same
# KAFKA_* option variables (KAFKA_HEAP_OPTS, KAFKA_JVM_PERFORMANCE_OPTS,
# KAFKA_GC_LOG_OPTS, KAFKA_JMX_OPTS, JMX_PORT, KAFKA_LOG4J_OPTS, KAFKA_OPTS,
# LOG_DIR, JAVA_HOME).
if [ $# -lt 1 ]; then
  echo "USAGE: $0 [-daemon] [-name servicename] [-loggc] classname [opts]"
  exit 1
fi
base_dir="$(cd "$(dirname "$(readlink -f "$0")")/.." && pwd)"

DAEMON_MODE=false
DAEMON_NAME=""
GC_LOG_ENABLED=false
while [ $# -gt 0 ]; do
  case "$1" in
    -name) DAEMON_NAME="$2"; shift 2 ;;
    -loggc) GC_LOG_ENABLED=true; shift ;;
    -daemon) DAEMON_MODE=true; shift ;;
    *) break ;;
  esac
done

CLASSPATH="${CLASSPATH:+$CLASSPATH:}$base_dir/libs/*"

LOG_DIR="${LOG_DIR:-$base_dir/logs}"
mkdir -p "$LOG_DIR" 2>/dev/null
[ -w "$LOG_DIR" ] || LOG_DIR=/tmp

if [ -z "${KAFKA_LOG4J_OPTS:-}" ]; then
  KAFKA_LOG4J_OPTS="-Dlog4j2.configurationFile=$base_dir/config/tools-log4j2.yaml"
fi
KAFKA_LOG4J_OPTS="-Dkafka.logs.dir=$LOG_DIR $KAFKA_LOG4J_OPTS"

if [ -z "${KAFKA_JMX_OPTS:-}" ]; then
  KAFKA_JMX_OPTS="-Dcom.sun.management.jmxremote -Dcom.sun.management.jmxremote.authenticate=false -Dcom.sun.management.jmxremote.ssl=false"
fi
if [ -n "${JMX_PORT:-}" ]; then
  KAFKA_JMX_OPTS="$KAFKA_JMX_OPTS -Dcom.sun.management.jmxremote.port=$JMX_PORT"
  [ -n "${JMX_RMI_PORT:-}" ] && KAFKA_JMX_OPTS="$KAFKA_JMX_OPTS -Dcom.sun.management.jmxremote.rmi.port=$JMX_RMI_PORT"
fi

KAFKA_HEAP_OPTS="${KAFKA_HEAP_OPTS:--Xmx256M}"
KAFKA_JVM_PERFORMANCE_OPTS="${KAFKA_JVM_PERFORMANCE_OPTS:--server -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35 -XX:+ExplicitGCInvokesConcurrent -XX:MaxInlineLevel=15 -Djava.awt.headless=true}"

if [ "$GC_LOG_ENABLED" = true ] && [ -n "$DAEMON_NAME" ]; then
  KAFKA_GC_LOG_OPTS="${KAFKA_GC_LOG_OPTS:--Xlog:gc*:file=$LOG_DIR/$DAEMON_NAME-gc.log:time,tags:filecount=10,filesize=100M}"
fi

if [ -n "${JAVA_HOME:-}" ]; then JAVA="$JAVA_HOME/bin/java"; else JAVA=java; fi

# shellcheck disable=SC2086  # the *_OPTS variables are word lists on purpose
if [ "$DAEMON_MODE" = true ]; then
  nohup "$JAVA" $KAFKA_HEAP_OPTS $KAFKA_JVM_PERFORMANCE_OPTS ${KAFKA_GC_LOG_OPTS:-} $KAFKA_JMX_OPTS \
    $KAFKA_LOG4J_OPTS -cp "$CLASSPATH" ${KAFKA_OPTS:-} "$@" >"$LOG_DIR/${DAEMON_NAME:-kafka}.out" 2>&1 </dev/null &
else
  exec "$JAVA" $KAFKA_HEAP_OPTS $KAFKA_JVM_PERFORMANCE_OPTS ${KAFKA_GC_LOG_OPTS:-} $KAFKA_JMX_OPTS \
    $KAFKA_LOG4J_OPTS -cp "$CLASSPATH" ${KAFKA_OPTS:-} "$@"
fi
