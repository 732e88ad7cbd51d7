#!/usr/bin/env bash
# Create .venv39: Python 3.9 (pyenv) with pytest, to run the module_utils unit
# tests on the oldest Python a managed node may have.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
py39=${PYTHON39:-}
if [ -z "$py39" ]; then
  for cand in "$(pyenv prefix 3.9 2>/dev/null)/bin/python3.9" /root/.pyenv/versions/3.9*/bin/python3.9 "$(command -v python3.9 || true)"; do
    if [ -x "$cand" ] && "$cand" -c 'import sys; assert sys.version_info[:2] == (3, 9)' 2>/dev/null; then py39=$cand; break; fi
  done
fi
if [ -z "$py39" ]; then
  echo "setup-py39: no Python 3.9 found (pyenv 3.9.x or python3.9 on PATH); set PYTHON39=/path/to/python3.9" >&2
  exit 1
fi
req=requirements/py39.txt
want=$(sha256sum "$req" | cut -d' ' -f1)
if [ ! -x .venv39/bin/python ] || [ "$(cat .venv39/.requirements.sha256 2>/dev/null)" != "$want" ]; then
  echo "setup-py39: creating .venv39 with $py39"
  rm -rf .venv39
  "$py39" -m venv .venv39
  .venv39/bin/python -m pip install -q --disable-pip-version-check -r "$req" 2>&1 | grep -v 'is ignored' || true
  .venv39/bin/python -c 'import pytest' 
  echo "$want" > .venv39/.requirements.sha256
fi
