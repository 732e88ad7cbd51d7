# composefs.fleet — the two commands of the contract are `make demo` and `make test`.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

# The controller: CORE= (empty) is .venv, ansible-core 2.19 on Python 3.11; CORE=2.21 is .venv-2.21
# (Python 3.13), CORE=2.20 is .venv-2.20 (Python 3.12). `make test-unit CORE=2.21` runs a tier on 2.21.
CORE ?=
VENV := $(if $(CORE),.venv-$(CORE),.venv)
# `make demo` runs on the ansible-core users run today.
DEMO_CORE := 2.21
PY := $(VENV)/bin/python
PYTEST := $(PY) -m pytest -p no:cacheprovider
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export ANSIBLE_FORCE_COLOR := 0
export PY_COLORS := 0

.PHONY: help setup setup-host setup-venv setup-matrix setup-docs setup-py39 setup-vm setup-oracle setup-sid-root demo docs test \
        test-unit test-unit-py39 test-integration test-integration-playbooks test-fleet test-podman test-vm test-galaxy test-2.21 sanity sanity-2.21 sanity-matrix lint \
        docs-lint changelog-lint molecule molecule-default bench clean static-gates

help:
	@echo "make demo   set up, then run playbooks/demo.yml on localhost (ansible-core $(DEMO_CORE))"
	@echo "make test   set up, then run every test tier and gate (ansible-core 2.19 and 2.21; sanity on 2.20 too)"
	@echo "make docs   the collection's docs site (antsibull-docs + Sphinx) in .cache/docs/build/html"
	@echo "make bench  benchmarks against the reference tools (see docs/benchmarks.md)"

# ---- set-up (idempotent; downloads are cached in .cache/ and the venvs) ----
setup-host:
	scripts/setup-host.sh
# the venv of CORE (.venv by default), and the collection link in .cache/collections
setup-venv: setup-host
	scripts/setup-venv.sh $(CORE)
# the other controllers of the matrix: ansible-core 2.20 (sanity only) and 2.21
setup-matrix: setup-host
	scripts/setup-venv.sh 2.20
	scripts/setup-venv.sh 2.21
# antsibull-docs, Sphinx and the theme, for make docs and docs-lint
setup-docs:
	scripts/setup-venv.sh docs
setup-py39:
	scripts/setup-py39.sh
setup-vm: setup-host
	scripts/fetch-guest-kernel.sh
# mkcomposefs 1.0.8, the reference the image tests compare bytes with
setup-oracle: setup-host
	scripts/fetch-oracle.sh
# Debian sid root filesystem (Podman 5, composefs, ostree) for the real-Podman and ostree tiers
setup-sid-root: setup-host
	scripts/setup-sid-root.sh
setup: setup-host setup-venv

# ---- the demo ----
demo: setup-host
	scripts/setup-venv.sh $(DEMO_CORE)
	PATH=$(CURDIR)/.venv-$(DEMO_CORE)/bin:$$PATH .venv-$(DEMO_CORE)/bin/ansible-playbook playbooks/demo.yml

# ---- the docs site ----
docs: setup-docs
	scripts/build-docs.sh

# ---- every tier and gate ----
# The deploy role's localhost test (tests/integration/test_deploy_role.py) runs once in make test: on
# 2.21, in test-integration-playbooks; on 2.19 the molecule `deploy` scenario runs the same role over SSH.
DEPLOY_ROLE_ONCE := --ignore=tests/integration/test_deploy_role.py
# The VM tier's guest has one vCPU (TCG: one host core), so the static gates run beside it on the
# other core (-j2; --output-sync keeps each one's output together).
test: setup setup-py39 setup-vm setup-oracle setup-sid-root setup-matrix setup-docs
	$(MAKE) --no-print-directory INTEGRATION_ARGS=$(DEPLOY_ROLE_ONCE) changelog-lint docs-lint test-unit test-unit-py39 \
	  test-integration test-fleet test-podman molecule test-2.21
	$(MAKE) --no-print-directory -j2 --output-sync=recurse test-vm static-gates
	@echo "make test: every tier and gate passed"

# ansible-test sanity on 2.19 and 2.21, ansible-lint: one after the other
static-gates:
	$(MAKE) --no-print-directory sanity lint sanity-2.21

test-unit:
	$(PYTEST) tests/unit

# module_utils must run on Python 3.9 (RHEL 9): the same unit tests, without ansible.
test-unit-py39:
	.venv39/bin/python -m pytest -p no:cacheprovider tests/unit/plugins/module_utils

INTEGRATION_ARGS ?=
test-integration:
	$(PYTEST) tests/integration $(INTEGRATION_ARGS)

test-vm:
	$(PYTEST) tests/vm

# The SSH fleet of namespace hosts (and the fs-verity QEMU host), torn down after.
test-fleet:
	$(PYTEST) tests/fleet

# A real Podman 5 (the sid root as a fleet host), a real registry: composefs after the podman role.
SID_ROOT := .cache/sid-root/rootfs
test-podman:
	@test -x $(SID_ROOT)/usr/bin/podman || { echo "test-podman: $(SID_ROOT) has no Podman: run make setup-sid-root" >&2; exit 1; }
	$(PYTEST) tests/podman

# Build the tarball, install it into a fresh path, run composefs.fleet.demo from there.
test-galaxy:
	$(PYTEST) tests/galaxy

# The newest ansible-core (Python 3.13): the unit tier, the integration tier's playbooks, roles and
# action plugins (what differs between ansible-core releases: templating, argument specs, action and
# callback plugins), the localhost molecule scenario, and the user's build-install-run. The rest of the
# integration tier runs modules through the `ansible` CLI on 2.19 (make test-integration CORE=2.21 runs
# all of it on 2.21); module_utils itself runs on Python 3.13 in the unit tier.
INTEGRATION_PLAYBOOKS := $(addprefix tests/integration/,test_demo_playbook.py test_storage_conf_playbook.py \
  test_verity_check_role.py test_coreos_role.py test_deploy_role.py test_repository_push.py)
test-integration-playbooks:
	$(PYTEST) $(INTEGRATION_PLAYBOOKS)

test-2.21:
	$(MAKE) --no-print-directory CORE=2.21 test-unit test-integration-playbooks molecule-default test-galaxy

# ansible-test sanity, empty ignore files, on the ansible-core of CORE
sanity:
	scripts/sanity.sh $(if $(CORE),--core $(CORE))

# make test runs sanity on 2.19 and 2.21; 2.20 too with sanity-matrix (passed, see docs/development.md)
sanity-2.21:
	scripts/sanity.sh --core 2.21

sanity-matrix: sanity-2.21
	scripts/sanity.sh --core 2.20

lint:
	$(VENV)/bin/ansible-lint --profile production

# The docs as antsibull-docs renders them for the docs site: schemas, markup, references.
docs-lint:
	PATH=$(CURDIR)/.venv-docs/bin:$$PATH .venv-docs/bin/antsibull-docs lint-collection-docs --plugin-docs .

changelog-lint:
	.venv/bin/antsibull-changelog lint

molecule:
	molecule test --all

molecule-default:
	molecule test -s default

bench: setup setup-oracle setup-sid-root
	$(PY) bench/run.py

clean:
	rm -rf .cache/stage .cache/stage-* .cache/docs tests/output
