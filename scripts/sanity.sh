#!/usr/bin/env bash
# Run ansible-test sanity on a staged copy of the collection, offline from
# ansible-test's CI host: see docs/development.md ("ansible-test sanity").
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
venv="$top/.venv"
stage=$("$top/scripts/stage-collection.sh")
# ansible-test keeps its sanity venvs and download cache under ~/.ansible/test;
# a HOME inside .cache keeps them with the project's other caches.
export HOME="$top/.cache/ansible-test-home"
# The pip version ansible-test bootstraps into its venvs (get_venv_packages()).
pip_version=$(grep -oE "pip='[0-9.]+'" "$venv"/lib/python3*/site-packages/ansible_test/_internal/python_requirements.py | head -1 | grep -oE '[0-9.]+[0-9]')
mkdir -p "$HOME/.ansible/test/cache"
cp "$top/scripts/get-pip-standin.py" "$HOME/.ansible/test/cache/get_pip_${pip_version//./_}.py"
cd "$stage"
exec "$venv/bin/ansible-test" sanity --local --python 3.11 --color no "$@"
