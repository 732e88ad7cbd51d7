#!/usr/bin/env bash
# Copy the collection's files (tracked and untracked-but-not-ignored) into
# STAGE/ansible_collections/composefs/fleet, the layout ansible-test needs.
#   scripts/stage-collection.sh [STAGE]    STAGE defaults to .cache/stage
# Prints the staged path.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
dest="${1:-$top/.cache/stage}/ansible_collections/composefs/fleet"
rm -rf "$dest"
mkdir -p "$dest"
cd "$top"
git ls-files -z --cached --others --exclude-standard | while IFS= read -r -d '' f; do
  [ -e "$f" ] || continue  # deleted but not yet committed
  printf '%s\0' "$f"
done | tar --null -T - -cf - | tar -C "$dest" -xf -
# ansible-test lists files through git; the stage sits inside our ignored .cache,
# so give it a repository of its own.
git -C "$dest" init -q
git -C "$dest" add -A
echo "$dest"
