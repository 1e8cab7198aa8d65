#!/usr/bin/env bash
# Build the local stand-in images that turbine-watch's compose file uses, with
# no registry but Debian's mirror and Maven Central:
#
#   turbine-watch/debian-base:bookworm   debootstrap minbase + python3 + JRE 17
#   apache/kafka:${KAFKA_VERSION}         Kafka broker + tools from Maven Central
#   prom/prometheus:${PROMETHEUS_VERSION} Debian's prometheus package
#   prom/alertmanager:${ALERTMANAGER_VERSION} Debian's prometheus-alertmanager
#   ${APP_IMAGE} (hook, only once ./Dockerfile exists)
#
# usage: deploy/images/build.sh [--force] [--print-tags] [TARGET...]
#   TARGET: base kafka prometheus alertmanager app all (default: all)
#
# Each image carries the label turbine-watch.input-hash, a sha256 of its inputs
# (scripts, Dockerfile, package and jar lists, versions, the base image's
# hash); an image whose label matches is not rebuilt, so a second run takes
# seconds. Downloads (rootfs tarball, jars, .deb files) are cached under
# ${TURBINE_IMAGES_CACHE:-~/.cache/turbine-watch/images}.
#
# The engine: $DOCKER_HOST or the default socket if one answers, else
# deploy/docker/engine.sh up starts a private dockerd.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
ENGINE="$REPO/deploy/docker/engine.sh"
CACHE="${TURBINE_IMAGES_CACHE:-${HOME:-/root}/.cache/turbine-watch/images}"

# Versions and tags: keep the defaults equal to the compose file's defaults
# (docker-compose.yml: ${KAFKA_IMAGE:-apache/kafka:4.1.1}, ...). A KAFKA_IMAGE
# given without KAFKA_VERSION sets the Kafka version from its tag. Mind that
# deploy/kafka/kafka.sh reads KAFKA_VERSION too (for its local broker).
if [[ -z "${KAFKA_VERSION:-}" && -n "${KAFKA_IMAGE:-}" && "${KAFKA_IMAGE##*:}" =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]]; then
  KAFKA_VERSION="${KAFKA_IMAGE##*:}"
fi
KAFKA_VERSION="${KAFKA_VERSION:-4.1.1}"
PROMETHEUS_VERSION="${PROMETHEUS_VERSION:-v2.42.0}"
ALERTMANAGER_VERSION="${ALERTMANAGER_VERSION:-v0.25.0}"
LOG4J_VERSION="${LOG4J_VERSION:-2.25.3}"
SLF4J_VERSION="${SLF4J_VERSION:-2.0.17}"
BASE_IMAGE="${BASE_IMAGE:-turbine-watch/debian-base:bookworm}"
KAFKA_IMAGE="${KAFKA_IMAGE:-apache/kafka:$KAFKA_VERSION}"
PROMETHEUS_IMAGE="${PROMETHEUS_IMAGE:-prom/prometheus:$PROMETHEUS_VERSION}"
ALERTMANAGER_IMAGE="${ALERTMANAGER_IMAGE:-prom/alertmanager:$ALERTMANAGER_VERSION}"
APP_IMAGE="${APP_IMAGE:-turbine-watch/app:latest}"
SUITE=bookworm
LABEL_KEY=turbine-watch.input-hash

# The legacy builder needs no buildx plugin and resolves FROM against local
# images only, which is what we want with no registry.
export DOCKER_BUILDKIT=0

log() { printf '[build %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

FORCE=0
TARGETS=()
for a in "$@"; do
  case "$a" in
    --force) FORCE=1 ;;
    --print-tags)
      printf '%s\n' "$BASE_IMAGE" "$KAFKA_IMAGE" "$PROMETHEUS_IMAGE" "$ALERTMANAGER_IMAGE"
      exit 0 ;;
    -h|--help) sed -n '2,24p' "$0"; exit 0 ;;
    base|kafka|prometheus|alertmanager|app|all) TARGETS+=("$a") ;;
    *) die "unknown argument $a" ;;
  esac
done
[[ ${#TARGETS[@]} -eq 0 ]] && TARGETS=(all)
want() {
  local t
  for t in "${TARGETS[@]}"; do
    [[ "$t" == "$1" ]] && return 0
    # "all" means the four stand-ins, plus the app image once it has a Dockerfile.
    [[ "$t" == all && "$1" != app ]] && return 0
    [[ "$t" == all && "$1" == app && -f "$REPO/Dockerfile" ]] && return 0
  done
  return 1
}

mkdir -p "$CACHE"

# ---------------------------------------------------------------- helpers ---

debian_mirror() {
  # The machine's own Debian mirror (deb822 or one-line sources), not -security.
  local m=""
  if [[ -n "${DEBIAN_MIRROR:-}" ]]; then echo "$DEBIAN_MIRROR"; return; fi
  m="$(cat /etc/apt/sources.list.d/*.sources 2>/dev/null \
        | awk '/^URIs:/ {for (i = 2; i <= NF; i++) print $i}' | grep -v -- '-security' | head -n1 || true)"
  if [[ -z "$m" ]]; then
    m="$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null \
          | awk '$1 == "deb" {for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) {print $i; break}}' \
          | grep -v -- '-security' | head -n1 || true)"
  fi
  echo "${m:-http://deb.debian.org/debian}"
}

hash_inputs() {
  # hash_inputs PATH... -- STRING...: sha256 over files (path + content,
  # sorted; folders recursively) and the strings.
  local paths=() strings=() seen_sep=0 a
  for a in "$@"; do
    if [[ "$a" == -- ]]; then seen_sep=1; continue; fi
    if [[ $seen_sep -eq 0 ]]; then paths+=("$a"); else strings+=("$a"); fi
  done
  {
    local f
    while IFS= read -r f; do
      printf 'file %s %s\n' "${f#"$REPO"/}" "$(sha256sum <"$f" | cut -d' ' -f1)"
      # Modes matter too (entry-point scripts must stay executable).
      printf 'mode %s %s\n' "${f#"$REPO"/}" "$(stat -c %a "$f")"
    done < <(find "${paths[@]}" -type f ! -name '*.pyc' ! -path '*/__pycache__/*' | LC_ALL=C sort)
    printf 'str %s\n' "${strings[@]}"
  } | sha256sum | cut -c1-32
}

image_hash() { # image_hash TAG -> value of the input-hash label, or nothing
  docker image inspect -f "{{ index .Config.Labels \"$LABEL_KEY\" }}" "$1" 2>/dev/null || true
}

up_to_date() { # up_to_date TAG HASH
  [[ $FORCE -eq 0 && "$(image_hash "$1")" == "$2" ]]
}

ensure_engine() {
  if docker info >/dev/null 2>&1; then return 0; fi
  local line
  line="$("$ENGINE" up)" || die "no Docker engine (deploy/docker/engine.sh up failed)"
  export "${line?}"
  docker info >/dev/null 2>&1 || die "engine at $DOCKER_HOST does not answer"
}

ensure_pkgs() { # ensure_pkgs DEB... (host tools)
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  [[ ${#missing[@]} -eq 0 ]] && return 0
  [[ $EUID -eq 0 ]] || die "need root to apt-get install ${missing[*]}"
  log "apt-get install ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >"$CACHE/apt.log" 2>&1 || {
    apt-get update -q >>"$CACHE/apt.log" 2>&1
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >>"$CACHE/apt.log" 2>&1
  } || die "apt-get install failed (see $CACHE/apt.log)"
}

APT_UPDATED=0
candidate_version() { # candidate_version PKG -> Debian version apt would fetch
  local v
  v="$(apt-cache policy "$1" 2>/dev/null | awk '/Candidate:/ {print $2}')"
  if [[ -z "$v" || "$v" == "(none)" ]] && [[ $APT_UPDATED -eq 0 ]]; then
    log "apt-cache knows no $1: apt-get update"
    apt-get update -q >"$CACHE/apt-update.log" 2>&1 || true
    APT_UPDATED=1
    v="$(apt-cache policy "$1" 2>/dev/null | awk '/Candidate:/ {print $2}')"
  fi
  [[ -n "$v" && "$v" != "(none)" ]] || die "Debian package $1 is not available"
  echo "$v"
}

deb_closure() { # deb_closure LISTFILE [EXTRA_REGEX] -> "pkg=version" lines
  # The listed packages, plus those of their (recursive) Depends matching
  # EXTRA_REGEX: pure asset packages such as libjs-* that the base lacks.
  local list="$1" re="${2:-}" p
  local pkgs
  pkgs="$(grep -vE '^\s*(#|$)' "$list")"
  if [[ -n "$re" ]]; then
    pkgs="$pkgs"$'\n'"$(apt-cache depends --recurse --no-recommends --no-suggests --no-conflicts \
        --no-breaks --no-replaces --no-enhances --no-pre-depends $pkgs 2>/dev/null \
        | grep -E "^($re)" || true)"
  fi
  pkgs="$(printf '%s\n' $pkgs | LC_ALL=C sort -u)"
  # One apt-cache call for all candidates; per package only when one is unknown.
  local table
  table="$(apt-cache policy $pkgs 2>/dev/null | awk '/^[^ ].*:$/ {sub(":$", ""); p = $0} /Candidate:/ {print p "=" $2}')"
  for p in $pkgs; do
    local line
    line="$(grep -m1 "^$p=" <<<"$table" || true)"
    if [[ -z "$line" || "$line" == *"=(none)" ]]; then line="$p=$(candidate_version "$p")"; fi
    echo "$line"
  done
}

fetch_debs() { # fetch_debs DIR pkg=ver... -> .deb files in DIR (cached)
  local dir="$1"; shift
  mkdir -p "$dir"
  local pv p v missing=()
  for pv in "$@"; do
    p="${pv%%=*}"; v="${pv#*=}"
    compgen -G "$dir/${p}_${v//:/%3a}_*.deb" >/dev/null || missing+=("$pv")
  done
  [[ ${#missing[@]} -eq 0 ]] && return 0
  log "apt-get download ${missing[*]}"
  (cd "$dir" && apt-get download -q -o APT::Sandbox::User=root "${missing[@]}" >"$CACHE/apt-download.log" 2>&1) \
    || die "apt-get download failed (see $CACHE/apt-download.log)"
}

deb_path() { # deb_path DIR pkg=ver
  local p="${2%%=*}" v="${2#*=}"
  compgen -G "$1/${p}_${v//:/%3a}_*.deb" | head -n1
}

docker_build() { # docker_build CONTEXT TAG HASH [--build-arg ...]
  local ctx="$1" tag="$2" hash="$3"; shift 3
  local t0=$SECONDS
  docker build --rm --force-rm -q \
    --build-arg "BASE_IMAGE=$BASE_IMAGE" --build-arg "INPUT_HASH=$hash" "$@" \
    -t "$tag" "$ctx" >"$CACHE/build-${tag//[\/:]/_}.log" 2>&1 || {
    tail -n 40 "$CACHE/build-${tag//[\/:]/_}.log" >&2
    die "docker build of $tag failed (log: $CACHE/build-${tag//[\/:]/_}.log)"
  }
  log "built $tag in $((SECONDS - t0)) s ($(docker image inspect -f '{{.Size}}' "$tag" | awk '{printf "%.0f MB", $1/1e6}'))"
}

# ------------------------------------------------------------- input hashes ---

MIRROR="$(debian_mirror)"
BASE_HASH="$(hash_inputs "$HERE/base" -- "suite=$SUITE" "mirror=$MIRROR" "import=v1")"
KAFKA_HASH="$(hash_inputs "$HERE/kafka" "$HERE/build.sh" -- "base=$BASE_HASH" "kafka=$KAFKA_VERSION" \
  "log4j=$LOG4J_VERSION" "slf4j=$SLF4J_VERSION" "tag=$KAFKA_IMAGE")"

ensure_engine
log "engine: ${DOCKER_HOST:-default socket}; cache: $CACHE"

# ------------------------------------------------------------------- base ---

build_base() {
  if up_to_date "$BASE_IMAGE" "$BASE_HASH"; then
    log "$BASE_IMAGE is up to date ($BASE_HASH)"
    return 0
  fi
  local tarball="$CACHE/debian-base-$BASE_HASH.tar"
  if [[ ! -f "$tarball" ]]; then
    [[ $EUID -eq 0 ]] || die "debootstrap needs root"
    ensure_pkgs debootstrap
    log "debootstrap $SUITE rootfs from $MIRROR (about a minute)"
    local t0=$SECONDS
    "$HERE/base/mkrootfs.sh" "$tarball" "$MIRROR"
    log "rootfs tarball in $((SECONDS - t0)) s"
    # Keep only the current tarball.
    find "$CACHE" -maxdepth 1 -name 'debian-base-*.tar' ! -name "debian-base-$BASE_HASH.tar" -delete
  fi
  local t0=$SECONDS
  docker import \
    -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    -c 'ENV LANG=C.UTF-8' \
    -c 'ENV JAVA_HOME=/usr/lib/jvm/java-17-openjdk-amd64' \
    -c "LABEL $LABEL_KEY=$BASE_HASH" \
    -c 'LABEL turbine-watch.image=debian-base' \
    -c 'CMD ["bash"]' \
    -m "turbine-watch debian-base ($SUITE minbase, $MIRROR)" \
    - "$BASE_IMAGE" <"$tarball" >/dev/null
  log "imported $BASE_IMAGE in $((SECONDS - t0)) s"
}

# ------------------------------------------------------------------ kafka ---

resolve_kafka_jars() { # -> prints the folder holding the jars
  local key dir
  key="$(hash_inputs "$HERE/kafka/pom.xml" -- "$KAFKA_VERSION" "$LOG4J_VERSION" "$SLF4J_VERSION")"
  dir="$CACHE/kafka-jars-$KAFKA_VERSION-$key"
  if [[ ! -d "$dir" ]]; then
    command -v mvn >/dev/null || ensure_pkgs maven
    log "resolving org.apache.kafka:kafka_2.13:$KAFKA_VERSION + kafka-tools + log4j $LOG4J_VERSION with mvn"
    local work="$CACHE/mvn-work"
    rm -rf "$work" "$dir.part"
    mkdir -p "$work"
    cp "$HERE/kafka/pom.xml" "$work/pom.xml"
    (cd "$work" && mvn -q -B dependency:copy-dependencies -DincludeScope=runtime \
        -Dkafka.version="$KAFKA_VERSION" -Dlog4j.version="$LOG4J_VERSION" -Dslf4j.version="$SLF4J_VERSION" \
        -DoutputDirectory="$dir.part" >"$CACHE/mvn.log" 2>&1) \
      || { tail -n 30 "$CACHE/mvn.log" >&2; die "mvn could not resolve the Kafka jars (log: $CACHE/mvn.log)"; }
    rm -rf "$work"
    # Exactly one slf4j-api, the 2.x one that log4j-slf4j2-impl binds to.
    [[ $(find "$dir.part" -name 'slf4j-api-*.jar' | wc -l) -eq 1 ]] || die "more than one slf4j-api jar resolved"
    mv "$dir.part" "$dir"
  fi
  # Every script of tools.list must find its main class.
  python3 - "$dir" "$HERE/kafka/tools.list" <<'PY' || die "a class of tools.list is missing from the jars"
import sys, zipfile, pathlib
jars, listfile = pathlib.Path(sys.argv[1]), sys.argv[2]
names = set()
for j in jars.glob("*.jar"):
    with zipfile.ZipFile(j) as z:
        names.update(n for n in z.namelist() if n.endswith(".class"))
wanted = ["kafka.Kafka", "kafka.docker.KafkaDockerWrapper"]
for line in open(listfile):
    line = line.strip()
    if line and not line.startswith("#"):
        wanted.append(line.split()[1])
missing = [c for c in wanted if c.replace(".", "/") + ".class" not in names]
if missing:
    print("missing classes:", *missing, file=sys.stderr)
    sys.exit(1)
PY
  echo "$dir"
}

build_kafka() {
  if up_to_date "$KAFKA_IMAGE" "$KAFKA_HASH"; then
    log "$KAFKA_IMAGE is up to date ($KAFKA_HASH)"
    return 0
  fi
  local jars ctx="$CACHE/ctx-kafka"
  jars="$(resolve_kafka_jars)"
  rm -rf "$ctx"
  mkdir -p "$ctx"
  cp -a "$HERE/kafka/Dockerfile" "$HERE/kafka/tools.list" "$HERE/kafka/bin" \
        "$HERE/kafka/docker" "$HERE/kafka/confluent" "$ctx/"
  cp -al "$jars" "$ctx/libs" 2>/dev/null || cp -a "$jars" "$ctx/libs"
  docker_build "$ctx" "$KAFKA_IMAGE" "$KAFKA_HASH" --build-arg "KAFKA_VERSION=$KAFKA_VERSION" \
    --label "turbine-watch.jars=$(ls "$jars" | sha256sum | cut -c1-16)"
  rm -rf "$ctx"
}

# ------------------------------------------------- prometheus, alertmanager ---

stage_debs() { # stage_debs OUTDIR pkg=ver... -> unpacked into OUTDIR/x
  local out="$1"; shift
  fetch_debs "$CACHE/debs" "$@"
  mkdir -p "$out/x"
  local pv
  for pv in "$@"; do dpkg-deb -x "$(deb_path "$CACHE/debs" "$pv")" "$out/x"; done
}

copy_share() { # copy_share SRC_ROOT DST_ROOT: usr/share without docs
  local src="$1/usr/share" dst="$2/usr/share"
  [[ -d "$src" ]] || return 0
  mkdir -p "$dst"
  (cd "$src" && find . -mindepth 1 -maxdepth 1 ! -name doc ! -name man ! -name lintian \
      ! -name bash-completion ! -name doc-base ! -name info -exec cp -a {} "$dst/" \;)
}

build_prometheus() {
  local pkgs hash ctx="$CACHE/ctx-prometheus"
  mapfile -t pkgs < <(deb_closure "$HERE/prometheus/packages.txt" 'libjs-|fonts-')
  hash="$(hash_inputs "$HERE/prometheus" "$HERE/build.sh" -- "base=$BASE_HASH" "tag=$PROMETHEUS_IMAGE" "${pkgs[@]}")"
  if up_to_date "$PROMETHEUS_IMAGE" "$hash"; then
    log "$PROMETHEUS_IMAGE is up to date ($hash)"
    return 0
  fi
  rm -rf "$ctx"
  # usr/bin, not bin: the base is merged-/usr (/bin -> usr/bin) and COPY of a
  # bin/ folder would replace that symlink.
  mkdir -p "$ctx/rootfs/usr/bin"
  stage_debs "$ctx" "${pkgs[@]}"
  cp -a "$ctx/x/usr/bin/prometheus" "$ctx/x/usr/bin/promtool" "$ctx/rootfs/usr/bin/"
  copy_share "$ctx/x" "$ctx/rootfs"
  # Sources for node/sass users and moment-timezone's 200 MB of per-zone data:
  # the UI loads only moment-timezone-with-data.min.js.
  rm -rf "$ctx/rootfs/usr/share/nodejs" "$ctx/rootfs/usr/share/sass" \
         "$ctx/rootfs/usr/share/javascript/moment-timezone/data"
  # The official image's console templates (Debian ships them as examples).
  mkdir -p "$ctx/rootfs/usr/share/prometheus"
  cp -a "$ctx/x/usr/share/doc/prometheus/examples/console_libraries" \
        "$ctx/x/usr/share/doc/prometheus/examples/consoles" "$ctx/rootfs/usr/share/prometheus/"
  rm -rf "$ctx/x"
  cp -a "$HERE/prometheus/Dockerfile" "$HERE/prometheus/prometheus.yml" "$ctx/"
  docker_build "$ctx" "$PROMETHEUS_IMAGE" "$hash" --build-arg "PROMETHEUS_VERSION=$PROMETHEUS_VERSION" \
    --label "turbine-watch.debs=$(printf '%s ' "${pkgs[@]}" | cut -c1-200)"
  rm -rf "$ctx"
}

build_alertmanager() {
  local pkgs hash ctx="$CACHE/ctx-alertmanager"
  mapfile -t pkgs < <(deb_closure "$HERE/alertmanager/packages.txt")
  hash="$(hash_inputs "$HERE/alertmanager" "$HERE/build.sh" -- "base=$BASE_HASH" "tag=$ALERTMANAGER_IMAGE" "${pkgs[@]}")"
  if up_to_date "$ALERTMANAGER_IMAGE" "$hash"; then
    log "$ALERTMANAGER_IMAGE is up to date ($hash)"
    return 0
  fi
  rm -rf "$ctx"
  mkdir -p "$ctx/rootfs/usr/bin"
  stage_debs "$ctx" "${pkgs[@]}"
  cp -a "$ctx/x/usr/bin/prometheus-alertmanager" "$ctx/rootfs/usr/bin/alertmanager"
  cp -a "$ctx/x/usr/bin/amtool" "$ctx/rootfs/usr/bin/amtool"
  copy_share "$ctx/x" "$ctx/rootfs"
  rm -rf "$ctx/x"
  cp -a "$HERE/alertmanager/Dockerfile" "$HERE/alertmanager/alertmanager.yml" "$ctx/"
  docker_build "$ctx" "$ALERTMANAGER_IMAGE" "$hash" --build-arg "ALERTMANAGER_VERSION=$ALERTMANAGER_VERSION" \
    --label "turbine-watch.debs=$(printf '%s ' "${pkgs[@]}")"
  rm -rf "$ctx"
}

# ===================================================== HOOK: project image ===
# The project's own Python image, from the repository's ./Dockerfile (owned by
# whoever maintains it; not written here). Contract this hook follows:
#   - build context: the repository root, filtered by ./.dockerignore;
#   - the wheelhouse (the project and all its dependencies) is built on the
#     host with `pip wheel` into dist/wheelhouse/ (git-ignored; the same as
#     `make wheelhouse`), so the image installs with --no-index, offline;
#   - build args: BASE_IMAGE=turbine-watch/debian-base:bookworm (python3 3.11
#     + venv, so the host's cp311 wheels fit) and INPUT_HASH; the image also
#     gets the label turbine-watch.input-hash (docker build --label), which is
#     how a second run knows it is up to date;
#   - tag: $APP_IMAGE (default turbine-watch/app:latest).
# `all` runs this only when ./Dockerfile exists; `build.sh app` asks for it.
build_app() {
  local dockerfile="$REPO/Dockerfile"
  if [[ ! -f "$dockerfile" ]]; then
    log "app: no $dockerfile yet, nothing to build (hook in deploy/images/build.sh)"
    return 0
  fi
  local hash srcs=() d
  for d in pyproject.toml Dockerfile .dockerignore pipeline producers consumers; do
    [[ -e "$REPO/$d" ]] && srcs+=("$REPO/$d")
  done
  hash="$(hash_inputs "${srcs[@]}" "$HERE/build.sh" -- "base=$BASE_HASH" "tag=$APP_IMAGE")"
  if up_to_date "$APP_IMAGE" "$hash"; then
    log "$APP_IMAGE is up to date ($hash)"
    return 0
  fi
  local py="$REPO/.venv/bin/python"
  [[ -x "$py" ]] || py=python3
  local wheelhouse="$REPO/dist/wheelhouse"
  rm -rf "$wheelhouse"
  mkdir -p "$wheelhouse"
  log "pip wheel $REPO -> $wheelhouse"
  (cd "$REPO" && "$py" -m pip wheel -q --wheel-dir "$wheelhouse" .) >"$CACHE/pip-wheel.log" 2>&1 \
    || { tail -n 30 "$CACHE/pip-wheel.log" >&2; die "pip wheel failed (log: $CACHE/pip-wheel.log)"; }
  docker_build "$REPO" "$APP_IMAGE" "$hash" -f "$dockerfile" --label "$LABEL_KEY=$hash"
}

# -------------------------------------------------------------------- run ---

T0=$SECONDS
if want base || want kafka || want prometheus || want alertmanager || want app; then
  # Everything is built FROM the base image.
  build_base
fi
want kafka && build_kafka
want prometheus && build_prometheus
want alertmanager && build_alertmanager
want app && build_app
# Old builds of our images that lost their tag.
docker image prune -f --filter "label=$LABEL_KEY" >/dev/null 2>&1 || true
log "done in $((SECONDS - T0)) s"
docker images --format '{{.Repository}}:{{.Tag}}\t{{.Size}}\t{{.CreatedSince}}' \
  | grep -E "^(${BASE_IMAGE%%:*}|${KAFKA_IMAGE%%:*}|${PROMETHEUS_IMAGE%%:*}|${ALERTMANAGER_IMAGE%%:*}|${APP_IMAGE%%:*}):" >&2 || true
