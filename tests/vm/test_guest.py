"""The host side of the tests/vm tier: ONE guest boot that runs tests/vm/guest inside.

TCG is slow, so every guest-side test shares this single boot. Without the guest
kernel (scripts/fetch-guest-kernel.sh) the test fails; it never skips.

COMPOSEFS_FLEET_VM_PYTEST_ARGS adds arguments to the guest's pytest (e.g. "-x -k ext4"),
COMPOSEFS_FLEET_VM_TIMEOUT changes the hard timeout (seconds, default 1500).
"""
import importlib.util
import os
import shlex
import sys

import pytest

_HERE = os.path.dirname(os.path.abspath(__file__))


def _load_guest():
    # by path: a plain `import guest` could pick up the tests/vm/guest/ folder
    name = "composefs_fleet_vm_guest"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, os.path.join(_HERE, "guest.py"))
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


guest = _load_guest()


def test_guest_tests():
    python = os.path.join(guest.TOP, ".venv", "bin", "python")
    if not os.path.exists(python):
        pytest.fail("%s is missing: run scripts/setup-venv.sh" % python, pytrace=False)
    missing = guest.missing_prerequisites()
    if missing:
        pytest.fail("the fs-verity guest cannot boot:\n  " + "\n  ".join(missing), pytrace=False)
    argv = [python, "-m", "pytest", "tests/vm/guest", "-p", "no:cacheprovider", "-q"]
    argv += shlex.split(os.environ.get("COMPOSEFS_FLEET_VM_PYTEST_ARGS", ""))
    timeout = float(os.environ.get("COMPOSEFS_FLEET_VM_TIMEOUT", guest.DEFAULT_TIMEOUT))
    try:
        # streamed: shown live with `pytest -s`, else as captured stdout on failure
        result = guest.run_in_guest(argv, timeout=timeout, stream=sys.stdout)
    except guest.GuestError as exc:
        pytest.fail("guest run failed: %s" % exc, pytrace=False)
    returncode = result.returncode
    assert returncode == 0, "pytest in the guest exited %d after %.0f s:\n%s" % (returncode, result.elapsed, guest.tail(result.output, 120))
