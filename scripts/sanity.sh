#!/usr/bin/env bash
# Run ansible-test sanity on a staged copy of the collection, offline from
# ansible-test's CI host: see docs/development.md ("ansible-test sanity").
#   scripts/sanity.sh [--core VERSION] [ansible-test sanity args...]
# --core 2.21 runs the ansible-test of .venv-2.21 (scripts/setup-venv.sh 2.21) on that venv's
# Python; without it, the default .venv (ansible-core 2.19).
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
venv="$top/.venv"
core=
if [ "${1:-}" = "--core" ]; then
  [ $# -ge 2 ] || { echo "sanity.sh: --core needs a version (2.20, 2.21)" >&2; exit 2; }
  core=$2
  venv="$top/.venv-$core"
  shift 2
fi
if [ ! -x "$venv/bin/ansible-test" ]; then
  echo "sanity.sh: $venv/bin/ansible-test is missing: run scripts/setup-venv.sh $core" >&2
  exit 1
fi
python_version=$("$venv/bin/python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
# One stage per controller, so that the versions can run side by side.
stage=$("$top/scripts/stage-collection.sh" "$top/.cache/stage${core:+-$core}")
# ansible-test keeps its sanity venvs and download cache under ~/.ansible/test;
# a HOME inside .cache keeps them with the project's other caches. Its venvs are keyed by
# Python version and requirements, so the controller versions share one HOME.
export HOME="$top/.cache/ansible-test-home"
# The pip version this ansible-test bootstraps into its venvs (get_venv_packages()).
pip_version=$(grep -oE "pip='[0-9.]+'" "$venv"/lib/python3*/site-packages/ansible_test/_internal/python_requirements.py | head -1 | grep -oE '[0-9.]+[0-9]')
mkdir -p "$HOME/.ansible/test/cache"
cp "$top/scripts/get-pip-standin.py" "$HOME/.ansible/test/cache/get_pip_${pip_version//./_}.py"
cd "$stage"
echo "sanity.sh: $("$venv/bin/ansible-test" --version) on Python $python_version"
exec "$venv/bin/ansible-test" sanity --local --python "$python_version" --color no "$@"
