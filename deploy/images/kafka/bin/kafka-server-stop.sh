#!/usr/bin/env bash
# turbine-watch stand-in for Kafka's bin/kafka-server-stop.sh: SIGTERM to the
# broker JVM(s) of this container (found by main class, inside the container).
SIGNAL=${SIGNAL:-TERM}
PIDS=$(ps ax -o pid= -o args= | grep -E 'java .*kafka\.Kafka( |$)' | grep -v grep | awk '{print $1}')
if [ -z "$PIDS" ]; then
  echo "No kafka server to stop"
  exit 1
fi
# shellcheck disable=SC2086
kill -s "$SIGNAL" $PIDS
