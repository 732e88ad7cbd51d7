#!/usr/bin/env bash
# Create a pinned venv and make the collection importable as ansible_collections.composefs.fleet
# from .cache/collections (see ansible.cfg).
#   scripts/setup-venv.sh         .venv       requirements/controller.txt       ansible-core 2.19, $PYTHON or python3
#   scripts/setup-venv.sh 2.21    .venv-2.21  requirements/controller-2.21.txt  (likewise 2.20)
#   scripts/setup-venv.sh docs    .venv-docs  requirements/docs.txt             antsibull-docs, Sphinx
# A named venv runs the Python its requirements file names on a "# python: X.Y" line: $PYTHON_X_Y
# if set, else pyenv's X.Y, else pythonX.Y on PATH. Idempotent: a venv is rebuilt only when its
# requirements file (or the Python named there) changes; a sha256 stamp in the venv records it.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
name=${1:-}
if [ -z "$name" ]; then
  venv=.venv
  req=requirements/controller.txt
  py=${PYTHON:-python3}
else
  case "$name" in
    docs) req=requirements/docs.txt ;;
    *) req=requirements/controller-$name.txt ;;
  esac
  venv=.venv-$name
  if [ ! -f "$req" ]; then
    echo "setup-venv: no $req: name a controller version that has one (ls requirements/) or 'docs'" >&2
    exit 2
  fi
  want_py=$(sed -nE 's/^# python: *([0-9]+\.[0-9]+) *$/\1/p' "$req" | head -1)
  if [ -z "$want_py" ]; then
    echo "setup-venv: $req names no Python (a '# python: X.Y' line)" >&2
    exit 2
  fi
  override=PYTHON_${want_py//./_}
  py=${!override:-}
  if [ -z "$py" ]; then
    for cand in "$(pyenv prefix "$want_py" 2>/dev/null)/bin/python$want_py" /root/.pyenv/versions/"$want_py".*/bin/python"$want_py" \
        "$(command -v "python$want_py" || true)"; do
      if [ -x "$cand" ] && "$cand" -c "import sys; assert '%d.%d' % sys.version_info[:2] == '$want_py'" 2>/dev/null; then
        py=$cand
        break
      fi
    done
  fi
  if [ -z "$py" ]; then
    echo "setup-venv: $venv needs Python $want_py and none was found (pyenv $want_py.x or python$want_py on PATH);" \
      "set $override=/path/to/python$want_py (see docs/development.md, 'Controller matrix')" >&2
    exit 1
  fi
fi
stamp=$venv/.requirements.sha256
want=$(sha256sum "$req" | cut -d' ' -f1)
if [ ! -x "$venv/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "setup-venv: creating $venv from $req with $("$py" -c 'import sys; print(sys.executable, sys.version.split()[0])')"
  rm -rf "$venv"
  "$py" -m venv "$venv"
  "$venv/bin/python" -m pip install -q --disable-pip-version-check -r "$req" 2>&1 | { grep -v "is ignored" || true; }
  if [ -x "$venv/bin/ansible-playbook" ]; then
    "$venv/bin/ansible-playbook" --version >/dev/null
  fi
  echo "$want" > "$stamp"
fi
mkdir -p .cache/collections/ansible_collections/composefs
ln -sfn ../../../.. .cache/collections/ansible_collections/composefs/fleet
