"""Smoke tests of the guest kernel: fs-verity on real filesystems (run inside the guest).

Uses the fsverity CLI (Debian package fsverity) and raw ioctls, nothing of the
collection, so that a failure here points at the tier, not at plugins/.
"""
import errno
import fcntl
import importlib
import os
import stat
import struct
import subprocess

import pytest

from blockdev import drop_caches, physical_offset

BLOCK = 4096
FS_IOC_ENABLE_VERITY = 0x40806685  # _IOW('f', 133, struct fsverity_enable_arg)
FS_IOC_GETFLAGS = 0x80086601  # _IOR('f', 1, long)
FS_VERITY_FL = 0x00100000
FS_VERITY_HASH_ALG_SHA256 = 1
DISKS = {"ext4-verity": "ext4", "ext4-plain": "ext4", "btrfs": "btrfs", "xfs": "xfs", "tmpfs": "tmpfs"}


def _run(*argv):
    return subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False)


def _fsverity(*args):
    proc = _run("fsverity", *args)
    assert proc.returncode == 0, "fsverity %s failed (exit %d): %s%s" % (" ".join(args), proc.returncode, proc.stdout, proc.stderr)
    return proc.stdout


def _write(path, data):
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _enable_ioctl(path):
    arg = struct.pack("<IIIIQIIQ88x", 1, FS_VERITY_HASH_ALG_SHA256, BLOCK, 0, 0, 0, 0, 0)
    assert len(arg) == 128
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.ioctl(fd, FS_IOC_ENABLE_VERITY, arg)
    finally:
        os.close(fd)


def _inode_flags(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        return struct.unpack_from("<i", fcntl.ioctl(fd, FS_IOC_GETFLAGS, bytes(8)))[0]
    finally:
        os.close(fd)


def _verity_file(directory, tmpfs_dir, blocks=16):
    """Write a file, enable fs-verity with the CLI and check what every file system with it must do."""
    data = os.urandom(blocks * BLOCK)
    path = os.path.join(directory, "file")
    _write(path, data)
    # the same bytes on tmpfs: the digest computed in userspace, as on the host
    reference = os.path.join(tmpfs_dir, "reference")
    _write(reference, data)
    expected = _fsverity("digest", reference).split()[0]
    assert expected.startswith("sha256:") and len(expected) == len("sha256:") + 64

    _fsverity("enable", path)
    assert _fsverity("measure", path).split()[0] == expected
    assert _fsverity("digest", path).split()[0] == expected
    assert _inode_flags(path) & FS_VERITY_FL
    with pytest.raises(PermissionError) as exc:
        open(path, "ab").close()
    assert exc.value.errno == errno.EPERM
    with pytest.raises(PermissionError):
        os.open(path, os.O_WRONLY)
    with open(path, "rb") as f:
        assert f.read() == data
    # enabling twice: EEXIST
    with pytest.raises(OSError) as exc:
        _enable_ioctl(path)
    assert exc.value.errno == errno.EEXIST
    return path, data


def test_guest_environment(vm_disk, vm_mount):
    assert os.environ.get("COMPOSEFS_FLEET_IN_GUEST") == "1"
    with open("/proc/self/mounts", encoding="utf-8") as f:
        fstypes = {fields[1]: fields[2] for fields in (line.split() for line in f)}
    for name, fstype in DISKS.items():
        mnt = vm_mount(name)
        assert fstypes.get(mnt) == fstype, "%s is mounted as %r, expected %s" % (mnt, fstypes.get(mnt), fstype)
        if name != "tmpfs":
            assert stat.S_ISBLK(os.stat(vm_disk(name)).st_mode)
    # the guest root is the host's root under a tmpfs overlay: writable
    assert fstypes.get("/") == "overlay"
    top = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
    assert os.path.samefile(os.getcwd(), top)
    # tests/conftest.py makes the collection importable in the guest too
    importlib.import_module("ansible_collections.composefs.fleet.plugins.module_utils")


def test_ext4_verity(ext4_verity_dir, tmpfs_dir, vm_disk):
    path, data = _verity_file(ext4_verity_dir, tmpfs_dir)
    offset = physical_offset(path, 0)
    dev = vm_disk("ext4-verity")
    fd = os.open(dev, os.O_RDWR)
    try:
        original = os.pread(fd, BLOCK, offset)
        assert original == data[:BLOCK], "FIEMAP offset %d of %s is not the file's first block" % (offset, dev)
        corrupted = bytes([original[0] ^ 0xFF]) + original[1:]
        assert os.pwrite(fd, corrupted, offset) == BLOCK
        os.fsync(fd)
        drop_caches()
        rfd = os.open(path, os.O_RDONLY)
        try:
            with pytest.raises(OSError) as exc:
                os.pread(rfd, BLOCK, 0)
            assert exc.value.errno == errno.EIO
            # the other blocks still verify
            assert os.pread(rfd, BLOCK, 5 * BLOCK) == data[5 * BLOCK:6 * BLOCK]
        finally:
            os.close(rfd)
    finally:
        try:
            os.pwrite(fd, original, offset)
            os.fsync(fd)
        finally:
            os.close(fd)
    drop_caches()
    with open(path, "rb") as f:
        assert f.read() == data


def test_btrfs_verity(btrfs_dir, tmpfs_dir):
    _verity_file(btrfs_dir, tmpfs_dir)


@pytest.mark.parametrize(
    "where, errnos",
    [
        ("ext4_plain_dir", {errno.EOPNOTSUPP}),  # ext4 without the verity feature
        ("xfs_dir", {errno.EOPNOTSUPP, errno.ENOTTY}),  # no fs-verity in xfs (6.12)
        ("tmpfs_dir", {errno.EOPNOTSUPP, errno.ENOTTY}),
    ],
)
def test_enable_unsupported(where, errnos, request):
    directory = request.getfixturevalue(where)
    path = os.path.join(directory, "file")
    _write(path, os.urandom(3 * BLOCK))
    proc = _run("fsverity", "enable", path)
    assert proc.returncode != 0, "fsverity enable succeeded on %s: %s" % (where, proc.stdout)
    with pytest.raises(OSError) as exc:
        _enable_ioctl(path)
    assert exc.value.errno in errnos, "FS_IOC_ENABLE_VERITY on %s: %s" % (where, exc.value)
    if where == "ext4_plain_dir":
        assert "Operation not supported" in proc.stderr
    # the file stays writable
    with open(path, "ab") as f:
        f.write(b"more")
