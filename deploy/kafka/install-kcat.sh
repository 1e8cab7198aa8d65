#!/usr/bin/env bash
# Install kcat (the librdkafka command-line client, Debian package `kcat`),
# used by the tests as a third-party Kafka client. No-op when it is present.
# apt-get update runs only when the install fails without it.
set -euo pipefail

if command -v kcat >/dev/null 2>&1; then
  echo "kcat already installed: $(command -v kcat)" >&2
  exit 0
fi

sudo=()
if [[ "$(id -u)" -ne 0 ]]; then
  command -v sudo >/dev/null 2>&1 || { echo "install-kcat.sh: need root or sudo" >&2; exit 1; }
  sudo=(sudo)
fi

install() {
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -q --no-install-recommends kcat >&2
}

if ! install; then
  "${sudo[@]}" apt-get update -q >&2
  install
fi
command -v kcat >/dev/null 2>&1 || { echo "install-kcat.sh: kcat still missing" >&2; exit 1; }
echo "installed $(command -v kcat)" >&2
