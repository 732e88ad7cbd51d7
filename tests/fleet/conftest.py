"""Shared by the fleet tier: the harness loaded once, by path, and ONE VM host for the whole tier.

The QEMU guest is the slowest thing to build here (about a minute to boot), so every test that
needs the fs-verity kernel uses the ``vm_fleet`` fixture instead of booting its own.
"""
import importlib.util
import os
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))


def load(name, path):
    """Import ``path`` as ``name`` once (harness.py and vmhost.py look each other up by these names)."""
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


harness = load("composefs_fleet_harness", os.path.join(HERE, "harness.py"))


@pytest.fixture(scope="session")
def vm_fleet(tmp_path_factory):
    """The VM host alone (vm01, every filesystem kind), torn down after the tier; nothing may be left."""
    problems = harness.missing_prerequisites(vm=True)
    if problems:
        pytest.fail("the test fleet cannot be built:\n  " + "\n  ".join(problems), pytrace=False)
    fleet = harness.up(str(tmp_path_factory.mktemp("vm-fleet") / "fleet"), hosts=0, vm=True)
    try:
        yield fleet
    finally:
        fleet.down()
    assert fleet.leftovers() == []
