"""Verdicts from injected inputs: mountinfo text, kernel facts and superblock bytes."""
import errno
import os
import struct

import pytest

from ansible_collections.composefs.fleet.plugins.module_utils.common.mountinfo import mount_of, parse_mountinfo
from ansible_collections.composefs.fleet.plugins.module_utils.verity_facts.paths import (
    KERNEL_WITHOUT_VERITY,
    apply_probe,
    block_facts,
    classify,
    is_network,
    path_entry,
)

KERNEL_YES = dict(fs_verity=True, verity_filesystems=["btrfs", "ext4"])
KERNEL_NO = dict(fs_verity=False, verity_filesystems=[])
KERNEL_UNKNOWN = dict(fs_verity=None, verity_filesystems=[])

MOUNTINFO = (
    "22 1 254:1 / / rw,relatime - ext4 /dev/vda1 rw\n"
    "30 22 7:0 / /srv/verity rw,relatime - ext4 /dev/loop0 rw\n"
    "31 22 7:1 / /srv/plain rw,relatime - ext4 /dev/loop1 rw\n"
    "32 22 0:45 / /srv/btrfs rw,relatime - btrfs /dev/loop2 rw,space_cache=v2\n"
    "33 22 7:3 / /srv/xfs rw,relatime - xfs /dev/loop3 rw\n"
    "34 22 0:50 / /srv/tmp rw,relatime - tmpfs tmpfs rw\n"
    "35 22 0:51 / /srv/ovl rw,relatime - overlay overlay rw,lowerdir=/a,upperdir=/b,workdir=/c\n"
    "36 22 0:52 / /srv/nfs rw,relatime - nfs4 server:/export rw,vers=4.2\n"
    "37 22 0:53 / /srv/fuse rw,relatime - fuse.sshfs host:/x rw\n"
    "38 22 259:0 / /srv/f2fs rw,relatime - f2fs /dev/nvme0n1p3 rw\n"
    "39 22 0:54 / /srv/odd ro,relatime - weirdfs none ro\n"
    "40 22 7:5 / /srv/ext4-ro ro,relatime - ext4 /dev/loop5 ro\n"
)


def superblock(verity=True, log_block_size=2):
    data = bytearray(1024)
    struct.pack_into("<I", data, 0x18, log_block_size)
    struct.pack_into("<H", data, 0x38, 0xEF53)
    struct.pack_into("<III", data, 0x5C, 0x3C, 0x2C2, 0x47B | (0x8000 if verity else 0))
    return bytes(data)


def entry_for(path, kernel, superblock_bytes=None, superblock_error=None, f2fs=None, probe=None):
    mounts = parse_mountinfo(MOUNTINFO)
    mount = mount_of(path, None, mounts)
    block = block_facts(mount, superblock_bytes, superblock_error, "/dev/sdx" if mount.source.startswith("/dev/") else None, f2fs)
    return path_entry(path, mount, kernel, block, probe)


def test_ext4_with_verity_feature():
    entry = entry_for("/srv/verity/objects", KERNEL_YES, superblock(True))
    assert (entry["verity"], entry["reason"]) == ("supported", "ext4 with the verity feature")
    assert entry["mountpoint"] == "/srv/verity" and entry["fstype"] == "ext4" and entry["major_minor"] == "7:0"
    assert entry["ext4"]["verity_feature"] is True and "verity" in entry["ext4"]["features"]
    assert entry["read_only"] is False


def test_ext4_without_verity_feature_names_the_fix():
    entry = entry_for("/srv/plain", KERNEL_YES, superblock(False))
    assert entry["verity"] == "unsupported"
    assert entry["reason"] == "ext4 without the verity feature: tune2fs -O verity /dev/sdx while unmounted (e2fsprogs >= 1.45)"


def test_ext4_small_blocks():
    entry = entry_for("/srv/verity", KERNEL_YES, superblock(True, log_block_size=0))
    assert entry["verity"] == "unsupported" and "block size 1024" in entry["reason"]


def test_ext4_unreadable_superblock_is_unknown():
    entry = entry_for("/srv/verity", KERNEL_YES, None, "cannot read /dev/loop0: Permission denied")
    assert entry["verity"] == "unknown"
    assert "Permission denied" in entry["reason"] and entry["ext4"] is None
    assert entry["ext4_error"] == "cannot read /dev/loop0: Permission denied"


def test_ext4_garbage_superblock():
    entry = entry_for("/srv/verity", KERNEL_YES, b"\0" * 1024)
    assert entry["verity"] == "unknown" and "magic" in entry["reason"]


def test_read_only_mount_is_reported():
    entry = entry_for("/srv/ext4-ro", KERNEL_YES, superblock(True))
    assert entry["read_only"] is True and entry["verity"] == "supported"


@pytest.mark.parametrize("path, verdict, reason", [
    ("/srv/btrfs/x", "supported", "btrfs (fs-verity needs no feature flag)"),
    ("/srv/xfs", "unsupported", "xfs has no fs-verity"),
    ("/srv/tmp", "unsupported", "tmpfs has no fs-verity"),
    ("/srv/ovl/a/b", "unsupported", "overlay has no fs-verity of its own (composefs checks the digests of the files in its data layers)"),
    ("/srv/odd", "unknown", "unknown filesystem type weirdfs: set probe to find out"),
])
def test_filesystems_with_fs_verity_kernel(path, verdict, reason):
    entry = entry_for(path, KERNEL_YES)
    assert (entry["verity"], entry["reason"]) == (verdict, reason)


def test_network_and_fuse_are_unknown():
    nfs = entry_for("/srv/nfs/data", KERNEL_YES)
    assert nfs["verity"] == "unknown" and nfs["reason"].startswith("nfs4 is a network filesystem")
    assert nfs["device"] is None and nfs["source"] == "server:/export"
    fuse = entry_for("/srv/fuse", KERNEL_YES)
    assert fuse["verity"] == "unknown" and fuse["reason"].startswith("fuse.sshfs is a FUSE filesystem")
    assert is_network("cifs") and is_network("fuseblk") and not is_network("ext4")


def test_f2fs_features():
    assert entry_for("/srv/f2fs", KERNEL_YES, f2fs=["extra_attr", "verity"])["verity"] == "supported"
    without = entry_for("/srv/f2fs", KERNEL_YES, f2fs=["extra_attr"])
    assert without["verity"] == "unsupported" and "fsck.f2fs -O verity" in without["reason"]
    assert entry_for("/srv/f2fs", KERNEL_YES, f2fs=None)["verity"] == "unknown"


@pytest.mark.parametrize("path, sb, also", [
    ("/srv/verity", superblock(True), None),
    ("/srv/btrfs", None, None),
    ("/srv/plain", superblock(False), "ext4 without the verity feature"),
    ("/srv/xfs", None, "xfs has no fs-verity"),
    ("/srv/tmp", None, "tmpfs has no fs-verity"),
    ("/srv/nfs", None, None),  # unknown on its own: the kernel's reason stands alone
])
def test_kernel_without_fs_verity_decides(path, sb, also):
    entry = entry_for(path, KERNEL_NO, sb)
    assert entry["verity"] == "unsupported"
    assert entry["reason"] == KERNEL_WITHOUT_VERITY
    if also:
        assert len(entry["reasons"]) == 2 and entry["reasons"][1].startswith(also)
    else:
        assert entry["reasons"] == [KERNEL_WITHOUT_VERITY]


@pytest.mark.parametrize("path, sb, verdict", [
    ("/srv/verity", superblock(True), "unknown"),
    ("/srv/btrfs", None, "unknown"),
    ("/srv/plain", superblock(False), "unsupported"),
    ("/srv/xfs", None, "unsupported"),
])
def test_unknown_kernel(path, sb, verdict):
    entry = entry_for(path, KERNEL_UNKNOWN, sb)
    assert entry["verity"] == verdict
    if verdict == "unknown":
        assert "whether the kernel has CONFIG_FS_VERITY is unknown" in entry["reason"]


def test_kernel_listing_verity_for_another_filesystem():
    kernel = dict(fs_verity=True, verity_filesystems=["btrfs", "ext4", "xfs"])
    entry = entry_for("/srv/xfs", kernel)
    assert entry["verity"] == "unknown" and "the kernel lists fs-verity for xfs" in entry["reason"]


def test_no_mount():
    entry = path_entry("/x", None, KERNEL_YES)
    assert entry["verity"] == "unknown" and entry["mountpoint"] is None


def test_classify_directly():
    assert classify("btrfs", KERNEL_YES) == ("supported", ["btrfs (fs-verity needs no feature flag)"])
    assert classify("ext3", KERNEL_YES)[0] == "unsupported"


def _probe(result, err=None, message="m"):
    return dict(performed=result in ("enabled", "refused"), result=result, errno=err, errno_name=None, directory="/d", message=message)


def test_probe_success_wins():
    verdict, reasons = apply_probe("unknown", ["nfs4 is a network filesystem"], _probe("enabled", 0))
    assert verdict == "supported" and reasons[0].startswith("probe: FS_IOC_ENABLE_VERITY succeeded")


@pytest.mark.parametrize("err", [errno.EOPNOTSUPP, errno.ENOTTY, errno.ENOSYS])
def test_probe_unsupported_errnos(err):
    verdict, reasons = apply_probe("supported", ["ext4 with the verity feature"], _probe("refused", err, "FS_IOC_ENABLE_VERITY failed"))
    assert verdict == "unsupported" and reasons == ["probe: FS_IOC_ENABLE_VERITY failed", "ext4 with the verity feature"]


def test_probe_inconclusive_and_not_run():
    verdict, reasons = apply_probe("supported", ["r"], _probe("refused", errno.EACCES, "permission denied"))
    assert verdict == "supported" and reasons == ["r", "probe inconclusive: permission denied"]
    verdict, reasons = apply_probe("unknown", ["r"], _probe("error", errno.EROFS, "read-only"))
    assert verdict == "unknown" and reasons == ["r", "probe could not run: read-only"]
    assert apply_probe("unknown", ["r"], _probe("not_run")) == ("unknown", ["r"])
    assert apply_probe("unknown", ["r"], None) == ("unknown", ["r"])


def test_probe_in_entry():
    entry = entry_for("/srv/nfs", KERNEL_YES, probe=_probe("refused", errno.EOPNOTSUPP, "FS_IOC_ENABLE_VERITY failed with EOPNOTSUPP"))
    assert entry["verity"] == "unsupported" and entry["probe"]["errno"] == errno.EOPNOTSUPP


def test_mount_of_prefers_matching_device_on_overmount():
    mounts = parse_mountinfo("22 1 254:1 / / rw - ext4 /dev/vda1 rw\n30 22 7:0 / /m rw - xfs /dev/loop0 rw\n31 22 7:1 / /m rw - btrfs /dev/loop1 rw\n")
    assert mount_of("/m/x", None, mounts).fstype == "btrfs"
    assert mount_of("/m/x", os.makedev(7, 0), mounts).fstype == "xfs"
    assert mount_of("/mx", None, mounts).fstype == "ext4"


def test_composefs_mount_points_at_its_data_directory():
    mounts = parse_mountinfo("21 1 0:30 / / ro,relatime - overlay composefs ro,lowerdir+=/run/l,datadir+=/sysroot/ostree/repo/objects,verity=require\n")
    mount = mounts[0]
    entry = path_entry("/", mount, KERNEL_YES, block_facts(mount))
    assert entry["verity"] == "unsupported" and entry["reason"].startswith("a composefs mount: fs-verity is enforced on the files of its data directory")
