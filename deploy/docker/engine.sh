#!/usr/bin/env bash
# Private Docker engine for turbine-watch's compose tests.
#
#   deploy/docker/engine.sh up [--vfs] [--no-iptables]
#   deploy/docker/engine.sh down [--purge]
#   deploy/docker/engine.sh env          # eval "$(deploy/docker/engine.sh env)"
#   deploy/docker/engine.sh status
#   deploy/docker/engine.sh check [IMAGE] # can containers publish on 127.0.0.1
#                                         # and talk over a user-defined bridge?
#
# `up` reuses any engine that already answers ($DOCKER_HOST, then the default
# socket). Otherwise it installs Debian's docker.io/docker-compose/debootstrap
# (root only) and starts its own dockerd whose sockets, pid file, data and log
# live under the state folder, so it never touches a system engine.
#
# Environment:
#   TURBINE_DOCKER_STATE  state folder (default ~/.cache/turbine-watch/docker)
#   TURBINE_DOCKER_STORAGE_DRIVER  force overlay2|vfs
#   TURBINE_DOCKER_IPTABLES        force true|false
#   TURBINE_DOCKER_TIMEOUT         seconds to wait for the engine (default 60)
set -euo pipefail

STATE="${TURBINE_DOCKER_STATE:-${HOME:-/root}/.cache/turbine-watch/docker}"
SOCK="$STATE/docker.sock"
HOST_URL="unix://$SOCK"
PIDFILE="$STATE/dockerd.pid"
LOGFILE="$STATE/dockerd.log"
DATA_ROOT="$STATE/data"
EXEC_ROOT="$STATE/exec"
ENV_FILE="$STATE/env"
FLAGS_FILE="$STATE/flags"
CONFIG_FILE="$STATE/daemon.json"
DEFAULT_SOCK=/var/run/docker.sock
TIMEOUT="${TURBINE_DOCKER_TIMEOUT:-60}"
PACKAGES=(docker.io docker-compose debootstrap)

log() { printf 'engine: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

docker_cli() {
  # Any docker client works against the engine (Debian's 20.10 or a newer one
  # on PATH: it negotiates the API version down).
  command -v docker >/dev/null 2>&1 || die "no docker client on PATH (apt-get install docker.io)"
  docker "$@"
}

answers() { # answers HOST_URL -> 0 when an engine replies there
  command -v docker >/dev/null 2>&1 || return 1
  timeout 10 docker -H "$1" info >/dev/null 2>&1
}

our_pid() { # prints the pid of our dockerd if its pid file names a live dockerd
  [[ -f "$PIDFILE" ]] || return 1
  local pid
  pid="$(tr -dc '0-9' <"$PIDFILE")"
  [[ -n "$pid" ]] || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  [[ "$(cat "/proc/$pid/comm" 2>/dev/null)" == dockerd ]] || return 1
  echo "$pid"
}

stray_pids() { # dockerd processes running on OUR data root (pid file lost)
  local d pid
  for d in /proc/[0-9]*; do
    pid="${d#/proc/}"
    [[ "$(cat "$d/comm" 2>/dev/null)" == dockerd ]] || continue
    tr '\0' '\n' <"$d/cmdline" 2>/dev/null | grep -qxF -- "$DATA_ROOT" && echo "$pid"
  done
  return 0
}

lock_state() { # one up/down at a time per state folder
  mkdir -p "$STATE"
  exec 9>"$STATE/.lock"
  flock -w 120 9 || die "another engine.sh holds $STATE/.lock"
}

existing_engine() { # prints a DOCKER_HOST that already answers, if any
  if [[ -n "${DOCKER_HOST:-}" ]] && answers "$DOCKER_HOST"; then
    echo "$DOCKER_HOST"; return 0
  fi
  if [[ -S "$SOCK" ]] && answers "$HOST_URL"; then
    echo "$HOST_URL"; return 0
  fi
  if [[ -S "$DEFAULT_SOCK" ]] && answers "unix://$DEFAULT_SOCK"; then
    echo "unix://$DEFAULT_SOCK"; return 0
  fi
  return 1
}

install_packages() {
  local missing=() p
  for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  command -v iptables >/dev/null 2>&1 || missing+=(iptables)
  [[ ${#missing[@]} -eq 0 ]] && return 0
  [[ $EUID -eq 0 ]] || die "need root to apt-get install ${missing[*]}"
  log "installing ${missing[*]}"
  # Keep the package's init scripts from starting a system dockerd.
  local made_policy=0
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
    made_policy=1
  fi
  local rc=0
  if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >"$STATE/apt.log" 2>&1; then
    log "apt-get install failed; running apt-get update and retrying"
    apt-get update -q >>"$STATE/apt.log" 2>&1 || true
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >>"$STATE/apt.log" 2>&1 || rc=$?
  fi
  [[ $made_policy -eq 1 ]] && rm -f /usr/sbin/policy-rc.d
  [[ $rc -eq 0 ]] || die "apt-get install ${missing[*]} failed (see $STATE/apt.log)"
}

iptables_usable() {
  command -v iptables >/dev/null 2>&1 || return 1
  iptables -t nat -L -n >/dev/null 2>&1 && iptables -t filter -L -n >/dev/null 2>&1
}

overlay_usable() {
  grep -qw overlay /proc/filesystems 2>/dev/null || modprobe overlay 2>/dev/null || return 1
  local t
  t="$(mktemp -d "$STATE/.ovl.XXXXXX")"
  mkdir -p "$t/l" "$t/u" "$t/w" "$t/m"
  local ok=1
  if mount -t overlay overlay -o "lowerdir=$t/l,upperdir=$t/u,workdir=$t/w" "$t/m" 2>/dev/null; then
    umount "$t/m"; ok=0
  fi
  rm -rf "$t"
  return $ok
}

unmount_under() { # lazily unmount anything left mounted below $1, deepest first
  local dir="$1"
  awk -v d="$dir" '$5 == d || index($5, d "/") == 1 {print $5}' /proc/self/mountinfo \
    | sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done
}

start_dockerd() { # start_dockerd DRIVER IPTABLES -> 0 when it answers
  local driver="$1" ipt="$2"
  local flags=(
    --data-root "$DATA_ROOT"
    --exec-root "$EXEC_ROOT"
    --pidfile "$PIDFILE"
    -H "$HOST_URL"
    --config-file "$CONFIG_FILE"
    --storage-driver "$driver"
    --exec-opt native.cgroupdriver=cgroupfs
    --userland-proxy=true
    --iptables="$ipt"
    --ip-forward="$ipt"
    --log-level info
  )
  if [[ "$ipt" == false ]]; then
    flags+=(--ip-masq=false)
    # Without its iptables rules dockerd cannot open the FORWARD chain for
    # bridged traffic; with br_netfilter on, a DROP policy there (left by an
    # earlier engine, say) silently cuts container-to-container traffic on
    # user-defined networks. Bridged frames then skip iptables altogether.
    local f
    for f in /proc/sys/net/bridge/bridge-nf-call-iptables /proc/sys/net/bridge/bridge-nf-call-ip6tables; do
      if [[ -w "$f" && "$(cat "$f")" == 1 ]]; then
        log "no iptables: setting ${f#/proc/sys/} = 0 so bridged container traffic is not filtered"
        echo 0 >"$f"
      fi
    done
  fi
  echo "${flags[*]}" >"$FLAGS_FILE"
  log "starting dockerd ${flags[*]}"
  {
    echo "=== $(date -Is) dockerd ${flags[*]}"
  } >>"$LOGFILE"
  # setsid: the daemon must not die with the calling shell or its session.
  # 9>&-: the daemon must not inherit (and hold) the state lock.
  setsid dockerd "${flags[@]}" >>"$LOGFILE" 2>&1 </dev/null 9>&- &
  local launcher=$! waited=0
  while (( waited < TIMEOUT * 2 )); do
    if [[ -S "$SOCK" ]] && answers "$HOST_URL"; then return 0; fi
    if ! kill -0 "$launcher" 2>/dev/null && ! our_pid >/dev/null; then
      log "dockerd exited during start-up; last log lines:"
      tail -n 15 "$LOGFILE" >&2
      return 1
    fi
    sleep 0.5; waited=$((waited + 1))
  done
  log "dockerd did not answer within ${TIMEOUT}s; stopping it"
  kill -TERM "$launcher" 2>/dev/null || true
  sleep 3
  kill -KILL "$launcher" 2>/dev/null || true
  return 1
}

cmd_up() {
  local force_vfs=0 force_noipt=0
  for a in "$@"; do
    case "$a" in
      --vfs) force_vfs=1 ;;
      --no-iptables) force_noipt=1 ;;
      *) die "up: unknown option $a" ;;
    esac
  done
  local h
  if h="$(existing_engine)"; then
    echo "DOCKER_HOST=$h"
    return 0
  fi
  [[ $EUID -eq 0 ]] || die "no engine answers and starting one needs root"
  mkdir -p "$STATE"
  chmod 700 "$STATE"
  (( ${#SOCK} < 100 )) || die "socket path $SOCK is too long for a unix socket; set TURBINE_DOCKER_STATE to a shorter folder"
  install_packages

  lock_state
  # Somebody may have started it while we waited for the lock.
  if h="$(existing_engine)"; then
    echo "DOCKER_HOST=$h"
    return 0
  fi
  # A dockerd of ours that does not answer (yet): give it the start-up time,
  # then stop it by its pid file.
  local pid i
  if pid="$(our_pid)"; then
    log "dockerd $pid (from $PIDFILE) does not answer yet; waiting up to ${TIMEOUT}s"
    for ((i = 0; i < TIMEOUT; i++)); do
      if answers "$HOST_URL"; then echo "DOCKER_HOST=$HOST_URL"; return 0; fi
      kill -0 "$pid" 2>/dev/null || break
      sleep 1
    done
    log "dockerd $pid does not answer; stopping it"
    stop_daemon >/dev/null
  fi
  local strays
  strays="$(stray_pids | tr '\n' ' ')"
  [[ -z "${strays// /}" ]] || die "dockerd pid(s) $strays run on $DATA_ROOT without our pid file; run: $0 down"
  rm -f "$PIDFILE" "$SOCK"
  mkdir -p "$DATA_ROOT" "$EXEC_ROOT"
  [[ -f "$CONFIG_FILE" ]] || echo '{}' >"$CONFIG_FILE"

  local driver="${TURBINE_DOCKER_STORAGE_DRIVER:-overlay2}"
  [[ $force_vfs -eq 1 ]] && driver=vfs
  if [[ "$driver" == overlay2 ]] && ! overlay_usable; then
    log "overlay mounts fail under $STATE: using the vfs storage driver (slower, more disk)"
    driver=vfs
  fi
  local ipt="${TURBINE_DOCKER_IPTABLES:-true}"
  [[ $force_noipt -eq 1 ]] && ipt=false
  if [[ "$ipt" == true ]] && ! iptables_usable; then
    log "iptables does not work here: starting with --iptables=false (published ports go through docker-proxy)"
    ipt=false
  fi

  if ! start_dockerd "$driver" "$ipt"; then
    if grep -qiE 'iptables|xtables|nat table|ip_forward|bridge' <(tail -n 30 "$LOGFILE") && [[ "$ipt" == true ]]; then
      log "retrying with --iptables=false"
      ipt=false
      start_dockerd "$driver" "$ipt" || die "dockerd failed to start (see $LOGFILE)"
    elif [[ "$driver" == overlay2 ]]; then
      log "retrying with the vfs storage driver (overlay2 failed)"
      driver=vfs
      start_dockerd "$driver" "$ipt" || {
        [[ "$ipt" == true ]] && { ipt=false; start_dockerd "$driver" "$ipt"; } || die "dockerd failed to start (see $LOGFILE)"
      }
    else
      die "dockerd failed to start (see $LOGFILE)"
    fi
  fi
  echo "DOCKER_HOST=$HOST_URL" >"$ENV_FILE"
  log "engine up: storage=$driver iptables=$ipt log=$LOGFILE"
  echo "DOCKER_HOST=$HOST_URL"
}

stop_pid() { # stop_pid PID: SIGTERM, wait 30 s, SIGKILL
  local pid="$1" i
  log "stopping dockerd $pid"
  kill -TERM "$pid" 2>/dev/null || true
  # dockerd stops its containers first (up to ~15 s each), then containerd.
  for ((i = 0; i < 60; i++)); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.5
  done
  log "dockerd $pid still running after 30 s: SIGKILL"
  kill -KILL "$pid" 2>/dev/null || true
  sleep 1
}

stop_daemon() {
  local pid
  if pid="$(our_pid)"; then
    stop_pid "$pid"
  else
    log "no dockerd of ours is running (pid file $PIDFILE)"
  fi
  # A dockerd on our data root whose pid file was lost (removed state folder,
  # a second start): ours by its --data-root argument, stopped by pid.
  for pid in $(stray_pids); do
    log "dockerd $pid runs on $DATA_ROOT without a pid file"
    stop_pid "$pid"
  done
  # The containerd that dockerd spawned has its own pid file under exec-root.
  local cpidf
  for cpidf in "$EXEC_ROOT/containerd/containerd.pid" "$EXEC_ROOT/containerd/daemon/containerd.pid"; do
    [[ -f "$cpidf" ]] || continue
    local cpid
    cpid="$(tr -dc '0-9' <"$cpidf")"
    if [[ -n "$cpid" ]] && kill -0 "$cpid" 2>/dev/null && [[ "$(cat "/proc/$cpid/comm" 2>/dev/null)" == containerd ]]; then
      log "stopping leftover containerd $cpid"
      kill -TERM "$cpid" 2>/dev/null || true
      sleep 2
      kill -0 "$cpid" 2>/dev/null && kill -KILL "$cpid" 2>/dev/null || true
    fi
  done
  rm -f "$PIDFILE" "$ENV_FILE" "$SOCK"
  if [[ -d "$STATE" ]]; then
    unmount_under "$EXEC_ROOT"
    unmount_under "$DATA_ROOT"
  fi
}

cmd_down() {
  local purge=0
  for a in "$@"; do
    case "$a" in
      --purge) purge=1 ;;
      *) die "down: unknown option $a" ;;
    esac
  done
  lock_state
  stop_daemon
  if [[ $purge -eq 1 && -d "$STATE" ]]; then
    log "purging $DATA_ROOT and $EXEC_ROOT (cached images are gone)"
    rm -rf "$DATA_ROOT" "$EXEC_ROOT"
  fi
  echo "engine stopped"
}

cmd_env() {
  local h
  if h="$(existing_engine)"; then
    echo "export DOCKER_HOST=$h"
  elif [[ -f "$ENV_FILE" ]]; then
    echo "export $(cat "$ENV_FILE")"
  else
    log "no engine answers; run: $0 up"
    return 1
  fi
  # No image can be pulled here, so testcontainers must not start Ryuk, and it
  # should reach published ports on loopback.
  echo "export TESTCONTAINERS_RYUK_DISABLED=true"
  echo "export TESTCONTAINERS_HOST_OVERRIDE=127.0.0.1"
  echo "export TESTCONTAINERS_CONNECTION_MODE=docker_host"
}

cmd_status() {
  local h pid
  if pid="$(our_pid)"; then
    echo "dockerd: running, pid $pid (state $STATE)"
    [[ -f "$FLAGS_FILE" ]] && echo "flags: $(cat "$FLAGS_FILE")"
  else
    echo "dockerd: not running from $STATE"
  fi
  if h="$(existing_engine)"; then
    echo "DOCKER_HOST=$h"
    docker_cli -H "$h" info --format 'server {{.ServerVersion}}, storage {{.Driver}}, cgroup {{.CgroupDriver}}, containers {{.Containers}} ({{.ContainersRunning}} running), images {{.Images}}' 2>/dev/null || true
    return 0
  fi
  echo "no engine answers"
  return 1
}

cmd_check() {
  # Proves the two things compose needs: a port published on 127.0.0.1 reaches
  # a container, and containers reach each other by name on a user network.
  local image="${1:-turbine-watch/debian-base:bookworm}" h
  h="$(existing_engine)" || die "no engine answers; run: $0 up"
  export DOCKER_HOST="$h"
  docker_cli image inspect "$image" >/dev/null 2>&1 || die "image $image is missing (deploy/images/build.sh base)"
  local net="tw-check-$$" port
  port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
  local rc=0
  docker_cli network create "$net" >/dev/null
  trap 'docker_cli rm -f tw-check-srv-$$ >/dev/null 2>&1; docker_cli network rm '"$net"' >/dev/null 2>&1' RETURN
  docker_cli run -d --name "tw-check-srv-$$" --network "$net" --network-alias srv \
    -p "127.0.0.1:$port:8000" "$image" python3 -m http.server 8000 >/dev/null
  local i ok=0
  for ((i = 0; i < 40; i++)); do
    if python3 -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:$port/', timeout=2)" 2>/dev/null; then ok=1; break; fi
    sleep 0.25
  done
  if [[ $ok -eq 1 ]]; then echo "published port 127.0.0.1:$port -> container: ok"; else echo "published port 127.0.0.1:$port -> container: FAILED"; rc=1; fi
  if docker_cli run --rm --network "$net" "$image" python3 -c \
      "import urllib.request; urllib.request.urlopen('http://srv:8000/', timeout=5)" >/dev/null 2>&1; then
    echo "container -> container by name on user-defined bridge: ok"
  else
    echo "container -> container by name on user-defined bridge: FAILED"; rc=1
  fi
  return $rc
}

main() {
  local sub="${1:-}"
  [[ $# -gt 0 ]] && shift
  case "$sub" in
    up) cmd_up "$@" ;;
    down) cmd_down "$@" ;;
    env) cmd_env "$@" ;;
    status) cmd_status "$@" ;;
    check) cmd_check "$@" ;;
    *) echo "usage: $0 {up [--vfs] [--no-iptables]|down [--purge]|env|status|check [IMAGE]}" >&2; exit 2 ;;
  esac
}

main "$@"
