#!/usr/bin/env bash
# Install a real Prometheus (with promtool) and Alertmanager (with amtool) from
# Debian's packages, where they are not on PATH yet. Their system services are
# not started (tests and `make stack` run the binaries themselves).
set -euo pipefail

need=()
command -v prometheus >/dev/null 2>&1 || need+=(prometheus)
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
# Debian names the Alertmanager binary prometheus-alertmanager.
command -v alertmanager >/dev/null 2>&1 || command -v prometheus-alertmanager >/dev/null 2>&1 ||
  need+=(prometheus-alertmanager)
command -v amtool >/dev/null 2>&1 || need+=(prometheus-alertmanager)
if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "install.sh: prometheus/alertmanager missing and not root: install Debian's" \
    "'prometheus' and 'prometheus-alertmanager' packages (or put the binaries on PATH)" >&2
  exit 1
fi
mapfile -t pkgs < <(printf '%s\n' "${need[@]}" | sort -u)
# Keep the packages' init scripts from starting services (no init system here).
policy=/usr/sbin/policy-rc.d
created_policy=0
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' >"$policy"
  chmod +x "$policy"
  created_policy=1
fi
export DEBIAN_FRONTEND=noninteractive
if ! apt-get install -y --no-install-recommends "${pkgs[@]}" >/dev/null 2>&1; then
  apt-get update -qq
  apt-get install -y --no-install-recommends "${pkgs[@]}" >/dev/null
fi
if [ "$created_policy" -eq 1 ]; then
  rm -f "$policy"
fi
# A package's postinst may have started a daemon anyway: stop exactly those pids.
for name in prometheus prometheus-alertmanager; do
  pidfile=/run/$name.pid
  if [ -f "$pidfile" ]; then
    kill "$(cat "$pidfile")" 2>/dev/null || true
  fi
done
command -v prometheus promtool amtool
command -v alertmanager || command -v prometheus-alertmanager
