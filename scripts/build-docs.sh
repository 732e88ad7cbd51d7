#!/usr/bin/env bash
# Build the collection's docs site, as Galaxy users read it: every module's options, examples and
# return values, the filters, and the roles' argument specs, rendered by antsibull-docs and Sphinx
# (docs/site/conf.py). Needs .venv-docs (scripts/setup-venv.sh docs). Output:
# .cache/docs/build/html/index.html. Any Sphinx warning fails the build.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
venv=$top/.venv-docs
if [ ! -x "$venv/bin/antsibull-docs" ]; then
  echo "build-docs: $venv/bin/antsibull-docs is missing: run scripts/setup-venv.sh docs (make setup-docs)" >&2
  exit 1
fi
export PATH=$venv/bin:$PATH
# antsibull-docs documents the collection as installed for this ansible-core: the checkout, through
# the link scripts/setup-venv.sh makes in .cache/collections (ansible.cfg's collections_path).
export ANSIBLE_CONFIG=$top/ansible.cfg ANSIBLE_COLLECTIONS_PATH=$top/.cache/collections
out=$top/.cache/docs
rm -rf "$out"
# antsibull-docs wants its destination readable and writable only by its owner.
mkdir -p "$out"
mkdir -m 700 "$out/rst"
antsibull-docs --config-file docs/site/antsibull-docs.cfg collection --use-current --squash-hierarchy \
  --fail-on-error --cleanup everything --dest-dir "$out/rst" composefs.fleet
sphinx-build -M html "$out/rst" "$out/build" -c docs/site -W --keep-going -q
echo "build-docs: $out/build/html/index.html"
