# shellcheck shell=bash
# Private apt state for downloading packages of another Debian suite without
# touching the host's apt configuration or package state. Source this file,
# then: private_apt_setup DIR SUITE [MIRROR]; private_apt_update; private_apt_download DEST PKG...
# (private_apt_setup DIR SUITE MIRROR with-sources also indexes the source packages, for
# private_apt_source DEST PKG).
# Signature checking stays on: InRelease must verify against the Debian archive keyring.

PRIVATE_APT_KEYRING=${PRIVATE_APT_KEYRING:-/usr/share/keyrings/debian-archive-keyring.gpg}
private_apt_opts=()

private_apt_setup() {
  local dir=$1 suite=$2 mirror=${3:-http://deb.debian.org/debian} sources=${4:-}
  mkdir -p "$dir/lists/partial" "$dir/cache/archives/partial" \
    "$dir/empty/sources.list.d" "$dir/empty/preferences.d" "$dir/empty/trusted.gpg.d"
  echo "deb [signed-by=$PRIVATE_APT_KEYRING] $mirror $suite main" >"$dir/sources.list"
  if [ "$sources" = with-sources ]; then
    echo "deb-src [signed-by=$PRIVATE_APT_KEYRING] $mirror $suite main" >>"$dir/sources.list"
  fi
  : >"$dir/status"
  private_apt_opts=(
    -o "Dir::Etc::SourceList=$dir/sources.list"
    -o "Dir::Etc::SourceParts=$dir/empty/sources.list.d"
    -o "Dir::Etc::Preferences=/dev/null"
    -o "Dir::Etc::PreferencesParts=$dir/empty/preferences.d"
    -o "Dir::Etc::Trusted=/dev/null"
    -o "Dir::Etc::TrustedParts=$dir/empty/trusted.gpg.d"
    -o "Dir::State::Lists=$dir/lists"
    -o "Dir::State::Status=$dir/status"
    -o "Dir::Cache=$dir/cache"
    -o "Dir::Cache::archives=$dir/cache/archives"
    -o "Dir::Cache::pkgcache=$dir/cache/pkgcache.bin"
    -o "Dir::Cache::srcpkgcache=$dir/cache/srcpkgcache.bin"
    -o "APT::Architectures::=amd64"
    # downloads land in the checkout, which apt's _apt sandbox user may not write
    -o "APT::Sandbox::User=root"
  )
}

private_apt_update() {
  local log
  log=$(mktemp)
  if ! apt-get "${private_apt_opts[@]}" -q --error-on=any update >"$log" 2>&1; then
    cat "$log" >&2
    rm -f "$log"
    return 1
  fi
  rm -f "$log"
}

# private_apt_download DEST PKG...: the .debs (verified by apt against the signed index) into DEST.
private_apt_download() {
  local dest=$1
  shift
  mkdir -p "$dest"
  (cd "$dest" && apt-get "${private_apt_opts[@]}" -q download "$@") >&2
}

# private_apt_source DEST PKG: the source package's files (.dsc, tarballs; checked by apt
# against the signed Sources index) into DEST, not unpacked.
private_apt_source() {
  local dest=$1 pkg=$2
  mkdir -p "$dest"
  (cd "$dest" && apt-get "${private_apt_opts[@]}" -q source --download-only "$pkg") >&2
}
