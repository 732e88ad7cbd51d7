"""Guest-side fixtures of the tests/vm tier.

The tests in this folder run only inside the QEMU guest that tests/vm/test_guest.py
boots (tests/vm/guest.py sets COMPOSEFS_FLEET_IN_GUEST=1 and attaches the disks).
On the host they are left out of a broader collection (``pytest tests``,
``pytest tests/vm``), and fail when asked for by name.

Fixtures: ``ext4_verity_dir``, ``ext4_plain_dir``, ``btrfs_dir``, ``xfs_dir`` and
``tmpfs_dir`` give a fresh, empty directory on that filesystem for each test
(removed afterwards); the ``vm_disk`` fixture is a function from a disk name
(ext4-verity, ext4-plain, btrfs, xfs) to its block device, ``vm_mount`` one to
its mount point (also for ``tmpfs``).
"""
import os
import shutil
import tempfile

import pytest

IN_GUEST = os.environ.get("COMPOSEFS_FLEET_IN_GUEST") == "1"


def _named_on_command_line(config):
    """Whether an argument of this pytest run is this folder or inside it."""
    here = os.path.dirname(os.path.abspath(__file__))
    for arg in config.args:
        path = os.path.abspath(os.path.join(str(config.invocation_params.dir), arg.split("::")[0]))
        if path == here or path.startswith(here + os.sep):
            return True
    return False


def pytest_ignore_collect(collection_path, config):
    # Outside the guest, a broader run (`pytest tests/vm`) leaves these tests out;
    # naming them (`pytest tests/vm/guest`) collects them, and they fail.
    if IN_GUEST or _named_on_command_line(config):
        return None
    return True


@pytest.fixture(autouse=True, scope="session")
def _refuse_outside_guest():
    if not IN_GUEST:
        pytest.fail(
            "tests/vm/guest runs only inside the fs-verity QEMU guest (COMPOSEFS_FLEET_IN_GUEST is not set): "
            "run `pytest tests/vm/test_guest.py` on the host, which boots the guest and runs them there",
            pytrace=False,
        )


def _env_name(kind, name):
    return "VM_%s_%s" % (kind, name.upper().replace("-", "_"))


def _vm_disk(name):
    """The block device of the guest disk ``name`` (e.g. ``/dev/vda``)."""
    var = _env_name("DISK", name)
    dev = os.environ.get(var)
    if not dev:
        pytest.fail("%s is not set: the guest has no disk %r" % (var, name), pytrace=False)
    return dev


def _vm_mount(name):
    """The mount point of the guest disk ``name`` (or of ``tmpfs``)."""
    var = _env_name("MNT", name)
    mnt = os.environ.get(var)
    if not mnt or not os.path.ismount(mnt):
        pytest.fail("%s=%r is not a mount point in the guest" % (var, mnt), pytrace=False)
    return mnt


def _fresh_dir(name, request):
    path = tempfile.mkdtemp(prefix="%s-" % request.node.name[:40].replace("/", "_"), dir=_vm_mount(name))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def vm_disk():
    """``vm_disk("ext4-verity")`` -> ``/dev/vda``: the block device of a guest disk."""
    return _vm_disk


@pytest.fixture
def vm_mount():
    """``vm_mount("btrfs")`` -> ``/mnt/vm/btrfs``: where a guest disk (or ``tmpfs``) is mounted."""
    return _vm_mount


@pytest.fixture
def ext4_verity_dir(request):
    yield from _fresh_dir("ext4-verity", request)


@pytest.fixture
def ext4_plain_dir(request):
    yield from _fresh_dir("ext4-plain", request)


@pytest.fixture
def btrfs_dir(request):
    yield from _fresh_dir("btrfs", request)


@pytest.fixture
def xfs_dir(request):
    yield from _fresh_dir("xfs", request)


@pytest.fixture
def tmpfs_dir(request):
    yield from _fresh_dir("tmpfs", request)
