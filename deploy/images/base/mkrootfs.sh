#!/usr/bin/env bash
# Make the turbine-watch/debian-base root filesystem tarball.
#
#   mkrootfs.sh OUT.tar [MIRROR]
#
# debootstrap --variant=minbase bookworm with the packages of packages.txt,
# then drops apt caches, docs, man pages and locales, and writes OUT.tar
# (suitable for `docker import`). Needs root and debootstrap.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out="${1:?usage: mkrootfs.sh OUT.tar [MIRROR]}"
mirror="${2:-http://deb.debian.org/debian}"
suite=bookworm

pkgs="$(grep -vE '^\s*(#|$)' "$here/packages.txt" | tr -s ' \n' ',' | sed 's/,$//')"
work="$(mktemp -d "${out%/*}/rootfs.XXXXXX")"
rootfs="$work/rootfs"
cleanup() {
  # debootstrap may leave /proc, /sys mounted inside the target on failure.
  for m in proc sys dev/pts dev; do
    mountpoint -q "$rootfs/$m" 2>/dev/null && umount -l "$rootfs/$m" || true
  done
  rm -rf "$work"
}
trap cleanup EXIT

echo "mkrootfs: debootstrap $suite from $mirror with: $pkgs" >&2
debootstrap --variant=minbase --include="$pkgs" --components=main \
  "$suite" "$rootfs" "$mirror" >"$work/debootstrap.log" 2>&1 || {
  tail -n 30 "$work/debootstrap.log" >&2
  [[ -f "$rootfs/debootstrap/debootstrap.log" ]] && tail -n 30 "$rootfs/debootstrap/debootstrap.log" >&2
  exit 1
}

# Slim it down: nothing here needs apt's caches, docs or translations.
chroot "$rootfs" apt-get clean
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin \
  "$rootfs"/var/cache/debconf/*-old "$rootfs"/var/lib/dpkg/*-old \
  "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* \
  "$rootfs"/usr/share/lintian "$rootfs"/usr/share/linda \
  "$rootfs"/var/log/*.log "$rootfs"/var/log/apt/* "$rootfs"/tmp/* "$rootfs"/var/tmp/* \
  "$rootfs"/root/.cache
find "$rootfs/usr/share/locale" -mindepth 1 -maxdepth 1 ! -name 'locale.alias' -exec rm -rf {} + 2>/dev/null || true
find "$rootfs" -xdev -name '__pycache__' -type d -prune -exec rm -rf {} +
# Files the engine manages per container.
: >"$rootfs/etc/resolv.conf"
echo localhost >"$rootfs/etc/hostname"
# Let apt work again inside a container that has network (it does not here).
cat >"$rootfs/etc/apt/sources.list" <<SRC
deb $mirror $suite main
deb $mirror $suite-updates main
SRC
printf 'path-exclude /usr/share/doc/*\npath-exclude /usr/share/man/*\npath-exclude /usr/share/info/*\n' \
  >"$rootfs/etc/dpkg/dpkg.cfg.d/01-turbine-nodoc"

tar --numeric-owner --xattrs -C "$rootfs" -cf "$out.part" .
mv "$out.part" "$out"
echo "mkrootfs: wrote $out ($(du -h "$out" | cut -f1))" >&2
