"""fs-verity races (issue 9 items 4 and 8), where the kernel really seals files (runs inside the guest)."""
import os
import tempfile

from ansible_collections.composefs.fleet.plugins.module_utils.fsverity import ioctl
from ansible_collections.composefs.fleet.plugins.module_utils.fsverity.digest import file_digest
from ansible_collections.composefs.fleet.plugins.module_utils.fsverity.files import FsverityFilesError, FsverityRun
from ansible_collections.composefs.fleet.plugins.module_utils.verity_facts import probe

import pytest


def _has_verity(path):
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    try:
        return ioctl.verity_enabled(fd, path)
    finally:
        os.close(fd)


def test_probe_never_enables_a_swapped_in_symlink_target(ext4_verity_dir, monkeypatch):
    # A local user swaps the scratch name for a symlink to a file of theirs... or of root's:
    # fs-verity on the target would be permanent. The probe must seal only its own inode.
    victim = os.path.join(ext4_verity_dir, "victim")
    with open(victim, "wb") as f:
        f.write(b"important\n" * 1000)
    moved = []
    real_mkstemp = tempfile.mkstemp

    def mkstemp_then_swap(*args, **kwargs):
        fd, name = real_mkstemp(*args, **kwargs)
        os.rename(name, name + ".moved")
        moved.append(name + ".moved")
        os.symlink(victim, name)
        return fd, name

    monkeypatch.setattr(probe.tempfile, "mkstemp", mkstemp_then_swap)
    result = probe.probe_directory(ext4_verity_dir)
    assert result["result"] == "enabled", result
    assert not _has_verity(victim)  # the target of the planted symlink is untouched
    assert _has_verity(moved[0])  # the scratch inode itself was probed
    assert os.path.islink(moved[0][:-len(".moved")])  # the planted name is not ours: left alone


def test_probe_leaves_no_scratch_file(ext4_verity_dir):
    assert probe.probe_directory(ext4_verity_dir)["result"] == "enabled"
    assert not [n for n in os.listdir(ext4_verity_dir) if n.startswith(probe.SCRATCH_PREFIX)]


def test_rewrite_between_check_and_enable_fails_naming_both_digests(ext4_verity_dir, monkeypatch):
    path = os.path.join(ext4_verity_dir, "payload")
    with open(path, "wb") as f:
        f.write(b"A" * 10000)
    good = file_digest(path).hex()
    real_enable = ioctl.enable

    def rewrite_then_enable(fd, p, **params):
        # The attacker's write lands after the expected_digest check, just before the enable.
        with open(path, "r+b") as w:
            w.write(b"B" * 10)
        return real_enable(fd, p, **params)

    monkeypatch.setattr(ioctl, "enable", rewrite_then_enable)
    run = FsverityRun()
    with pytest.raises(FsverityFilesError) as exc:
        run.run([path], state="enabled", expected={path: good})
    sealed = file_digest(path).hex()
    assert sealed != good
    msg = str(exc.value)
    assert good in msg and sealed in msg and "sealed" in msg, msg
    assert _has_verity(path)  # it is sealed either way, and the message says so
