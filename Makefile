# composefs.fleet — the two commands of the contract are `make demo` and `make test`.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

VENV := .venv
PY := $(VENV)/bin/python
PYTEST := $(PY) -m pytest -p no:cacheprovider
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export ANSIBLE_FORCE_COLOR := 0
export PY_COLORS := 0

.PHONY: help setup setup-host setup-venv setup-py39 setup-vm setup-oracle setup-sid-root demo test test-unit test-unit-py39 \
        test-integration test-fleet test-podman test-vm sanity lint molecule bench clean

help:
	@echo "make demo   set up, then run playbooks/demo.yml on localhost"
	@echo "make test   set up, then run every test tier and gate"
	@echo "make bench  benchmarks against the reference tools (see docs/benchmarks.md)"

# ---- set-up (idempotent; downloads are cached in .cache/ and the venvs) ----
setup-host:
	scripts/setup-host.sh
setup-venv: setup-host
	scripts/setup-venv.sh
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
demo: setup
	$(VENV)/bin/ansible-playbook playbooks/demo.yml

# ---- every tier and gate ----
test: setup setup-py39 setup-vm setup-oracle setup-sid-root
	$(MAKE) --no-print-directory test-unit test-unit-py39 test-integration test-fleet test-podman sanity lint molecule test-vm
	@echo "make test: every tier and gate passed"

test-unit:
	$(PYTEST) tests/unit

# module_utils must run on Python 3.9 (RHEL 9): the same unit tests, without ansible.
test-unit-py39:
	.venv39/bin/python -m pytest -p no:cacheprovider tests/unit/plugins/module_utils

test-integration:
	$(PYTEST) tests/integration

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

sanity:
	scripts/sanity.sh

lint:
	$(VENV)/bin/ansible-lint --profile production

molecule:
	molecule test --all

bench: setup setup-oracle setup-sid-root
	$(PY) bench/run.py

clean:
	rm -rf .cache/stage tests/output
