#!/usr/bin/env bash
# Build the cached Debian sid root filesystem (.cache/sid-root/rootfs) whose userland is newer than the
# host's: Podman 5 with composefs (mkcomposefs on PATH), crun, skopeo, docker-registry and ostree.
# The real-Podman and ostree tests run it as a fleet host's root. Idempotent: rebuilt only when this
# script or requirements/sid-root.txt changes. Signatures are checked against the Debian archive keyring;
# only the Valid-Until check is relaxed, because sid's InRelease can be older than its Valid-Until
# relative to this machine's clock (see shared notes).
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
req=requirements/sid-root.txt
dest=.cache/sid-root
want=$(cat "$0" "$req" | sha256sum | cut -d' ' -f1)
if [ -f "$dest/rootfs/.composefs-fleet-stamp" ] && [ "$(cat "$dest/rootfs/.composefs-fleet-stamp")" = "$want" ]; then
  exit 0
fi
if ! command -v mmdebstrap >/dev/null; then
  echo "setup-sid-root: mmdebstrap is missing; run scripts/setup-host.sh (requirements/apt.txt lists it)" >&2
  exit 1
fi
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
pkgs=$(grep -v '^\s*#' "$req" | awk 'NF{print $1}' | paste -sd, -)
mkdir -p "$dest"
rm -rf "$dest/rootfs.new"
echo "setup-sid-root: building the sid root ($pkgs)"
# shellcheck disable=SC2016 # the hooks expand $1 inside mmdebstrap, not here
mmdebstrap --quiet --variant=apt --mode=root \
  --keyring=/usr/share/keyrings/debian-archive-keyring.gpg \
  --aptopt='Acquire::Check-Valid-Until "false"' \
  --include="$pkgs" \
  --customize-hook='printf "127.0.0.1 localhost\n::1 localhost ip6-localhost\n" > "$1/etc/hosts"' \
  --customize-hook='rm -f "$1"/etc/ssh/ssh_host_*' \
  sid "$dest/rootfs.new" "$mirror"
echo "$want" > "$dest/rootfs.new/.composefs-fleet-stamp"
rm -rf "$dest/rootfs"
mv "$dest/rootfs.new" "$dest/rootfs"
echo "setup-sid-root: $dest/rootfs ready"
