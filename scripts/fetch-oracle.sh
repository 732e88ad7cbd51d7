#!/usr/bin/env bash
# Fetch mkcomposefs 1.0.x (the reference tool, "the oracle") from Debian forky and
# unpack it, with the glibc and libssl it needs, into .cache/oracle/ (git-ignored);
# and upstream's test assets (tests/assets of the same source package: dumpfiles and
# their expected image checksums) into .cache/oracle/assets/, for the benchmarks and
# the upstream-asset tests beyond ../shared/test-vectors.
# Nothing is installed on the host: .cache/oracle/bin/mkcomposefs (and
# composefs-info, mount.composefs) are wrappers that run the unpacked binaries
# through the unpacked dynamic loader. See docs/image.md ("The oracle").
set -euo pipefail
prog=fetch-oracle
die() { echo "$prog: ERROR: $*" >&2; exit 1; }
top=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=scripts/lib/private-apt.sh
. "$top/scripts/lib/private-apt.sh"
cache="$top/.cache/oracle"
suite=${COMPOSEFS_FLEET_ORACLE_SUITE:-forky}
packages=(composefs libcomposefs1 libc6 libssl3t64)
stamp_want=$(printf '%s\n' "$suite" "${packages[*]}" assets | sha256sum | cut -d' ' -f1)

if [ -x "$cache/bin/mkcomposefs" ] && [ -d "$cache/assets" ] && [ "$(cat "$cache/stamp" 2>/dev/null)" = "$stamp_want" ]; then
  exit 0
fi
for c in apt-get dpkg-deb sha256sum flock; do
  command -v "$c" >/dev/null || die "missing host command $c"
done
mkdir -p "$cache"
exec 9>"$cache/.lock"
flock 9
tmp=$(mktemp -d "$cache/tmp.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

private_apt_setup "$cache/apt" "$suite" http://deb.debian.org/debian with-sources
echo "$prog: apt-get update ($suite, private state in ${cache#"$top"/}/apt)"
private_apt_update || die "apt-get update of $suite failed (network, mirror or signature problem; see above)"
echo "$prog: downloading ${packages[*]}"
private_apt_download "$tmp/debs" "${packages[@]}" || die "apt-get download failed"
root="$tmp/root"
for deb in "$tmp"/debs/*.deb; do
  dpkg-deb -x "$deb" "$root" || die "dpkg-deb -x $deb failed"
done
lib="$root/usr/lib/x86_64-linux-gnu"
[ -x "$lib/ld-linux-x86-64.so.2" ] || die "no dynamic loader in the unpacked libc6"
mkdir -p "$tmp/bin"
for tool in mkcomposefs composefs-info mount.composefs; do
  real=$(find "$root/usr/bin" "$root/usr/sbin" "$root/sbin" -name "$tool" -type f 2>/dev/null | head -1 || true)
  [ -n "$real" ] || die "$tool is not in the composefs package"
  rel=${real#"$root"/}
  cat >"$tmp/bin/$tool" <<WRAP
#!/bin/sh
# Runs the unpacked $tool (Debian $suite) through its own loader and libraries.
d=\$(cd "\$(dirname "\$0")/../root" && pwd)
exec "\$d/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2" --library-path "\$d/usr/lib/x86_64-linux-gnu" "\$d/$rel" "\$@"
WRAP
  chmod 0755 "$tmp/bin/$tool"
done
version=$(dpkg-deb -f "$tmp"/debs/composefs_*.deb Version)
echo "$prog: downloading the composefs $version source package (for upstream's tests/assets)"
private_apt_source "$tmp/src" "composefs=$version" || die "apt-get source composefs=$version failed"
mkdir -p "$tmp/assets"
tar -xf "$tmp"/src/composefs_*.orig.tar.* -C "$tmp/assets" --strip-components=3 --wildcards '*/tests/assets/*' \
  || die "no tests/assets in the composefs source tarball"
[ -s "$tmp/assets/cs9-x86_64-developer.dump.gz" ] || die "tests/assets/cs9-x86_64-developer.dump.gz missing from the source"
rm -rf "${cache:?}/root" "${cache:?}/bin" "${cache:?}/assets"
# the package lists are only needed to download; keep the cache small
rm -rf "${cache:?}/apt/lists" "${cache:?}/apt/cache"
mv "$root" "$cache/root"
mv "$tmp/bin" "$cache/bin"
mv "$tmp/assets" "$cache/assets"
printf "/ 0 40755 2 0 0 0 0.0 - - -\n" >"$tmp/probe.dump"
"$cache/bin/mkcomposefs" --from-file --print-digest-only "$tmp/probe.dump" >/dev/null || die "the unpacked mkcomposefs does not run"
echo "$version" >"$cache/version"
echo "$stamp_want" >"$cache/stamp"
echo "$prog: ready: mkcomposefs $version in ${cache#"$top"/}/bin"
