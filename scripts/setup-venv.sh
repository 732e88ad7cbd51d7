#!/usr/bin/env bash
# Create the pinned controller venv in .venv and make the collection importable
# as ansible_collections.composefs.fleet from .cache/collections (see ansible.cfg).
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
py=${PYTHON:-python3}
req=requirements/controller.txt
stamp=.venv/.requirements.sha256
want=$(sha256sum "$req" | cut -d' ' -f1)
if [ ! -x .venv/bin/python ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "setup-venv: creating .venv from $req"
  rm -rf .venv
  "$py" -m venv .venv
  .venv/bin/python -m pip install -q --disable-pip-version-check -r "$req" 2>&1 | { grep -v "is ignored" || true; }
  .venv/bin/ansible-playbook --version >/dev/null
  echo "$want" > "$stamp"
fi
mkdir -p .cache/collections/ansible_collections/composefs
ln -sfn ../../../.. .cache/collections/ansible_collections/composefs/fleet
