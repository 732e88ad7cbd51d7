#!/usr/bin/env bash
# Fetch a Debian kernel that has CONFIG_FS_VERITY=y and build the initramfs that
# tests/vm boots under QEMU (see docs/vm-tier.md).
#
# Everything lands in .cache/vm/ of the checkout:
#   apt/                     private apt state (own sources.list; lists and caches are
#                            removed after the download); the host's apt configuration
#                            and package state are not touched
#   debs/*.deb               the downloaded linux-image-<version>-amd64-unsigned package
#   kernel/<version>/        vmlinuz, config, decompressed modules (*.ko) and modules.load
#   vmlinuz                  symlink to kernel/<version>/vmlinuz
#   initramfs.cpio.gz        busybox-static + modules + /init
#   guest-kernel.env         what was fetched (version, package, sha256)
#
# Idempotent: with everything cached it checks a few stamps and exits without
# touching the network. The kernel version is pinned by the cache; run with
# --refresh to resolve the newest kernel of the suite again.
#
# Environment overrides:
#   COMPOSEFS_FLEET_VM_MIRROR   Debian mirror (default http://deb.debian.org/debian)
#   COMPOSEFS_FLEET_VM_SUITE    Debian suite (default trixie)
#   COMPOSEFS_FLEET_VM_KERNEL_PACKAGE  exact package, e.g. linux-image-6.12.117+deb13-amd64-unsigned
#   COMPOSEFS_FLEET_VM_KEYRING  keyring the suite's InRelease must verify against
#                               (default /usr/share/keyrings/debian-archive-keyring.gpg)
set -euo pipefail

prog=fetch-guest-kernel
die() {
  echo "$prog: ERROR: $*" >&2
  exit 1
}
say() { echo "$prog: $*"; }

refresh=0
for arg in "$@"; do
  case "$arg" in
    --refresh) refresh=1 ;;
    -h | --help)
      awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"
      exit 0
      ;;
    *) die "unknown argument '$arg' (known: --refresh)" ;;
  esac
done

top=$(cd "$(dirname "$0")/.." && pwd)
self="$top/scripts/$(basename "$0")"
cache="$top/.cache/vm"
mirror=${COMPOSEFS_FLEET_VM_MIRROR:-http://deb.debian.org/debian}
suite=${COMPOSEFS_FLEET_VM_SUITE:-trixie}
pinned_pkg=${COMPOSEFS_FLEET_VM_KERNEL_PACKAGE:-}
keyring=${COMPOSEFS_FLEET_VM_KEYRING:-/usr/share/keyrings/debian-archive-keyring.gpg}
busybox=/bin/busybox
# Modules the guest needs; their dependencies (modules.dep) and soft dependencies
# (modules.softdep, e.g. crc32c for ext4/btrfs) are resolved with modprobe.
want_modules=(virtio_blk loop 9p 9pnet_virtio overlay erofs ext4 btrfs xfs)

# --- checks of the host tools ----------------------------------------------
need_cmds=(apt-get apt-cache dpkg-deb depmod modprobe xz cpio gzip sha256sum flock find sort ldd)
missing=()
for c in "${need_cmds[@]}"; do
  command -v "$c" >/dev/null 2>&1 || missing+=("$c")
done
[ ${#missing[@]} -eq 0 ] || die "missing host commands: ${missing[*]} (run scripts/setup-host.sh; see requirements/apt.txt)"
[ -x "$busybox" ] || die "$busybox is missing: install busybox-static (scripts/setup-host.sh)"
if ldd "$busybox" >/dev/null 2>&1; then
  die "$busybox is dynamically linked: install busybox-static instead of busybox"
fi
[ -r "$keyring" ] || die "$keyring is missing: install debian-archive-keyring"

mkdir -p "$cache"
exec 9>"$cache/.lock"
flock 9 || die "cannot lock $cache/.lock"

tmp=$(mktemp -d "$cache/tmp.XXXXXX")
cleanup() { rm -rf "$tmp"; }
trap cleanup EXIT

manifest="$cache/guest-kernel.env"
kernel_stamp_want=$(printf '%s\n' "modules: ${want_modules[*]}" | sha256sum | cut -d' ' -f1)

# --- private apt (scripts/lib/private-apt.sh) -------------------------------
# shellcheck source=scripts/lib/private-apt.sh
. "$top/scripts/lib/private-apt.sh"
apt_dir="$cache/apt"
PRIVATE_APT_KEYRING=$keyring

fetch_deb() {
  private_apt_setup "$apt_dir" "$suite" "$mirror"
  say "apt-get update ($suite from $mirror, private state in ${apt_dir#"$top"/})"
  private_apt_update || die "apt-get update of $suite failed (network, mirror or signature problem; see above)"
  local pkg=$pinned_pkg
  if [ -z "$pkg" ]; then
    # linux-image-amd64 depends on the current linux-image-<version>-amd64; the
    # unsigned build of the same version has the suffix -unsigned.
    local dep
    dep=$(apt-cache "${private_apt_opts[@]}" depends linux-image-amd64 2>/dev/null |
      awk '$1 == "Depends:" && $2 ~ /^linux-image-[0-9]/ {print $2; exit}')
    [ -n "$dep" ] || die "cannot resolve the kernel version: linux-image-amd64 in $suite names no linux-image-<version>"
    pkg="$dep-unsigned"
  fi
  apt-cache "${private_apt_opts[@]}" show "$pkg" >/dev/null 2>&1 || die "package $pkg is not in $suite on $mirror"
  say "downloading $pkg"
  mkdir -p "$cache/debs" "$tmp/dl"
  private_apt_download "$tmp/dl" "$pkg" 2>"$tmp/apt-download.log" || {
    cat "$tmp/apt-download.log" >&2
    die "apt-get download $pkg failed"
  }
  local deb
  deb=$(find "$tmp/dl" -maxdepth 1 -name "${pkg}_*.deb" -print -quit)
  [ -n "$deb" ] || die "apt-get download $pkg left no .deb"
  # the .deb is verified by apt (SHA256 from the signed Packages index)
  rm -f "$cache/debs/${pkg}_"*.deb
  mv "$deb" "$cache/debs/"
  deb_path="$cache/debs/$(basename "$deb")"
  deb_pkg=$pkg
  # the indexes (~100 MB with apt's caches) are needed only for this download
  rm -rf "$apt_dir/lists" "$apt_dir/cache"
}

# Extract vmlinuz and the needed modules from $deb_path into kernel/<version>.
build_kernel() {
  local x="$tmp/x"
  say "extracting $(basename "$deb_path")"
  mkdir -p "$x"
  dpkg-deb -x "$deb_path" "$x" || die "dpkg-deb -x $deb_path failed (corrupt download? remove it and rerun)"
  local moddir
  moddir=$(find "$x/usr/lib/modules" "$x/lib/modules" -mindepth 1 -maxdepth 1 -type d -print -quit 2>/dev/null || true)
  [ -n "$moddir" ] || die "no lib/modules/<version> in $deb_path"
  local ver
  ver=$(basename "$moddir")
  [ -f "$x/boot/vmlinuz-$ver" ] || die "no boot/vmlinuz-$ver in $deb_path"
  grep -qx 'CONFIG_FS_VERITY=y' "$x/boot/config-$ver" || die "kernel $ver lacks CONFIG_FS_VERITY=y"
  # depmod/modprobe look in <base>/lib/modules; Debian ships usr/lib/modules
  [ -e "$x/lib" ] || ln -s usr/lib "$x/lib"
  depmod -b "$x" "$ver" || die "depmod for $ver failed"
  local out="$tmp/kernel-$ver"
  mkdir -p "$out/modules"
  : >"$out/modules.load"
  local m line path name
  declare -A seen=()
  for m in "${want_modules[@]}"; do
    modprobe -d "$x" -S "$ver" --show-depends "$m" >"$tmp/deps" 2>&1 || {
      cat "$tmp/deps" >&2
      die "module $m cannot be resolved in kernel $ver"
    }
    while read -r line; do
      case "$line" in
        insmod\ *)
          path=$(echo "$line" | awk '{print $2}')
          name=$(basename "$path")
          name=${name%.xz}
          name=${name%.zst}
          name=${name%.gz}
          [ -z "${seen[$name]:-}" ] || continue
          seen[$name]=1
          case "$path" in
            *.ko.xz) xz -dc "$path" >"$out/modules/$name" ;;
            *.ko.zst) zstd -qdc "$path" >"$out/modules/$name" ;;
            *.ko.gz) gzip -dc "$path" >"$out/modules/$name" ;;
            *.ko) cp "$path" "$out/modules/$name" ;;
            *) die "unexpected module file $path" ;;
          esac
          echo "$name" >>"$out/modules.load"
          ;;
        builtin\ *) ;;
        *) die "unexpected modprobe output for $m: $line" ;;
      esac
    done <"$tmp/deps"
  done
  cp "$x/boot/vmlinuz-$ver" "$out/vmlinuz"
  cp "$x/boot/config-$ver" "$out/config"
  echo "$kernel_stamp_want" >"$out/stamp"
  rm -rf "$cache/kernel/$ver"
  mkdir -p "$cache/kernel"
  mv "$out" "$cache/kernel/$ver"
  rm -rf "$x"
  kernel_version=$ver
}

# The guest's /init (busybox sh). tests/vm/guest.py writes job.sh into the
# writable share; /init runs it chrooted into the host's root.
write_init() {
  cat >"$1" <<'INIT'
#!/bin/busybox sh
# /init of the composefs.fleet tests/vm guest (built by scripts/fetch-guest-kernel.sh).
/bin/busybox mount -t devtmpfs devtmpfs /dev
exec </dev/console >/dev/console 2>&1
/bin/busybox --install -s /bin
export PATH=/bin
die() {
    echo "vm-init: FATAL: $*"
    sync
    poweroff -f
    sleep 10
}
mount -t proc proc /proc || die "mount /proc"
mount -t sysfs sysfs /sys || die "mount /sys"
while read -r m; do
    insmod "/lib/modules/$m" || die "insmod $m failed"
done </etc/modules.load
# the host's / read-only over 9p, made writable by a tmpfs overlay
mount -t 9p -o ro,trans=virtio,version=9p2000.L,cache=loose,msize=512000 hostroot /lower || die "mount 9p hostroot"
mount -t tmpfs -o mode=0755 overlay-rw /rw || die "mount tmpfs /rw"
mkdir -p /rw/upper /rw/work
mount -t overlay -o lowerdir=/lower,upperdir=/rw/upper,workdir=/rw/work overlay /newroot || die "mount overlay root"
mount -t devtmpfs devtmpfs /newroot/dev || die "mount /newroot/dev"
mkdir -p /newroot/dev/pts /newroot/dev/shm
mount -t devpts -o gid=5,mode=620 devpts /newroot/dev/pts || die "mount devpts"
mount -t tmpfs -o mode=1777 shm /newroot/dev/shm || die "mount /dev/shm"
mount -t proc proc /newroot/proc || die "mount /newroot/proc"
mount -t sysfs sysfs /newroot/sys || die "mount /newroot/sys"
# /tmp stays the host's (through the overlay: readable, writes land in RAM): the checkout
# under test may live there, as a CI clone can.
mount -t tmpfs -o mode=0755 run /newroot/run || die "mount /newroot/run"
share=/run/composefs-fleet-vm
mkdir -p "/newroot$share"
mount -t 9p -o trans=virtio,version=9p2000.L,cache=none,msize=512000 vmshare "/newroot$share" || die "mount 9p vmshare"
[ -f "/newroot$share/job.sh" ] || die "no job.sh in the share"
echo "vm-init: running job.sh"
chroot /newroot /bin/sh "$share/job.sh"
echo "vm-init: job.sh exited $?"
sync
poweroff -f
sleep 10
INIT
  chmod 0755 "$1"
}

build_initramfs() {
  local kdir="$cache/kernel/$kernel_version"
  local stage="$tmp/initramfs"
  say "building initramfs for $kernel_version"
  mkdir -p "$stage"/{bin,dev,proc,sys,lower,rw,newroot,etc,lib/modules}
  cp "$busybox" "$stage/bin/busybox"
  cp "$kdir"/modules/*.ko "$stage/lib/modules/"
  cp "$kdir/modules.load" "$stage/etc/modules.load"
  write_init "$stage/init"
  # /dev/console for the kernel's initial console (init mounts devtmpfs anyway)
  mknod -m 0600 "$stage/dev/console" c 5 1 2>/dev/null || true
  (cd "$stage" && find . -print0 | LC_ALL=C sort -z | cpio --null -o -H newc --owner=0:0 --quiet) |
    gzip -6 -n >"$tmp/initramfs.cpio.gz" || die "building the initramfs failed"
  mv "$tmp/initramfs.cpio.gz" "$cache/initramfs.cpio.gz"
  echo "$initramfs_key" >"$cache/initramfs.stamp"
}

# --- main -------------------------------------------------------------------
kernel_version=
deb_path=
deb_pkg=
if [ "$refresh" = 0 ] && [ -f "$manifest" ]; then
  kernel_version=$(sed -n 's/^KERNEL_VERSION=//p' "$manifest")
  deb_path="$cache/debs/$(sed -n 's/^DEB=//p' "$manifest")"
  deb_pkg=$(sed -n 's/^PACKAGE=//p' "$manifest")
fi

kdir=${kernel_version:+$cache/kernel/$kernel_version}
if [ -z "$kernel_version" ] || [ ! -f "$kdir/vmlinuz" ] || [ "$(cat "$kdir/stamp" 2>/dev/null)" != "$kernel_stamp_want" ]; then
  if [ -z "$kernel_version" ] || [ ! -f "$deb_path" ]; then
    fetch_deb
  fi
  build_kernel
  {
    echo "KERNEL_VERSION=$kernel_version"
    echo "PACKAGE=$deb_pkg"
    echo "DEB=$(basename "$deb_path")"
    echo "DEB_SHA256=$(sha256sum "$deb_path" | cut -d' ' -f1)"
    echo "SUITE=$suite"
    echo "MIRROR=$mirror"
  } >"$tmp/manifest"
  mv "$tmp/manifest" "$manifest"
  # drop kernels of other versions
  for d in "$cache/kernel"/*; do
    [ "$(basename "$d")" = "$kernel_version" ] || rm -rf "$d"
  done
fi
ln -sfn "kernel/$kernel_version/vmlinuz" "$cache/vmlinuz"

initramfs_key=$(
  {
    sha256sum "$self" "$busybox" "$cache/kernel/$kernel_version/modules.load" | cut -d' ' -f1
    echo "$kernel_version"
  } | sha256sum | cut -d' ' -f1
)
if [ ! -f "$cache/initramfs.cpio.gz" ] || [ "$(cat "$cache/initramfs.stamp" 2>/dev/null)" != "$initramfs_key" ]; then
  build_initramfs
fi
say "ready: kernel $kernel_version, ${cache#"$top"/}/vmlinuz, ${cache#"$top"/}/initramfs.cpio.gz"
