"""Fixtures shared by the integration tests."""
import os
import shutil

import pytest

import cfs_oracle
from loopfs import LoopFsError, loop_filesystem


@pytest.fixture(scope="module", name="ext4")
def ext4_source_fs(tmp_path_factory):
    """The mountpoint of an ext4 loop filesystem for the source trees (module scope)."""
    if os.geteuid() != 0:
        pytest.fail("the image tests make loop filesystems and mounts: they need root")
    cfs_oracle.check_available()
    for tool in ("fsck.erofs", "mount", "umount"):
        if shutil.which(tool) is None:
            pytest.fail("%s is missing: run scripts/setup-host.sh (requirements/apt.txt)" % tool)
    try:
        with loop_filesystem("ext4-plain", str(tmp_path_factory.mktemp("loopfs"))) as mounted:
            yield mounted.mountpoint
    except LoopFsError as exc:
        pytest.fail(str(exc), pytrace=False)
