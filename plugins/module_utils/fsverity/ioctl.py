# -*- coding: utf-8 -*-
# Copyright: composefs.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Asking the kernel about fs-verity: enable, measure, and the FS_VERITY_FL flag.

Every failure becomes a :class:`VerityError` whose message says, in plain words,
why the kernel refused and what fixes it.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import ctypes
import errno
import fcntl
import os
import struct

from ansible_collections.composefs.fleet.plugins.module_utils.common.mountinfo import filesystem_of
from ansible_collections.composefs.fleet.plugins.module_utils.verity_facts.superblock import ext4_has_verity
from ansible_collections.composefs.fleet.plugins.module_utils.fsverity.digest import (
    DEFAULT_BLOCK_SIZE,
    HASH_ALGORITHMS,
    check_params,
)

# From <linux/fsverity.h> and <linux/fs.h>.
FS_IOC_ENABLE_VERITY = 0x40806685   # _IOW('f', 133, struct fsverity_enable_arg)
FS_IOC_MEASURE_VERITY = 0xC0046686  # _IOWR('f', 134, struct fsverity_digest)
FS_IOC_GETFLAGS = 0x80086601        # _IOR('f', 1, long)
FS_VERITY_FL = 0x00100000
_MAX_DIGEST_SIZE = 64

# Filesystems whose kernel code implements fs-verity (as of Linux 6.x).
VERITY_FILESYSTEMS = ("ext4", "btrfs", "f2fs")


class _EnableArg(ctypes.Structure):
    _fields_ = [
        ("version", ctypes.c_uint32),
        ("hash_algorithm", ctypes.c_uint32),
        ("block_size", ctypes.c_uint32),
        ("salt_size", ctypes.c_uint32),
        ("salt_ptr", ctypes.c_uint64),
        ("sig_size", ctypes.c_uint32),
        ("reserved1", ctypes.c_uint32),
        ("sig_ptr", ctypes.c_uint64),
        ("reserved2", ctypes.c_uint64 * 11),
    ]


class VerityError(Exception):
    """The kernel refused an fs-verity operation; ``reason`` says why in plain words."""

    def __init__(self, path, operation, err, reason):
        self.path = path
        self.operation = operation
        self.errno = err
        self.reason = reason
        super(VerityError, self).__init__("%s: cannot %s fs-verity: %s" % (path, operation, reason))

    @property
    def unsupported(self):
        """True when the kernel or filesystem cannot do fs-verity at all here (not a transient or per-file problem)."""
        return self.errno in (errno.EOPNOTSUPP, errno.ENOTTY, errno.ENOSYS, errno.ENOPKG)


def kernel_has_fs_verity():
    """True/False when evident from /sys, else None.

    /sys/fs/<fs>/features/verity exists only when the kernel was built with
    CONFIG_FS_VERITY (and that filesystem is loaded).
    """
    for fs in VERITY_FILESYSTEMS:
        if os.path.exists("/sys/fs/%s/features/verity" % fs):
            return True
    if any(os.path.isdir("/sys/fs/%s/features" % fs) for fs in VERITY_FILESYSTEMS):
        return False
    return None


def explain(path, err, operation="enable"):
    """Plain-language reason for an errno from an fs-verity ioctl on ``path``."""
    fs = filesystem_of(path)
    fstype = fs.fstype if fs else "unknown"
    where = "%s (%s on %s)" % (fs.mountpoint, fstype, fs.source) if fs else "this filesystem"
    if err == errno.EEXIST:
        return "fs-verity is already enabled on the file"
    if err == errno.ETXTBSY:
        return "the file is open for writing; close every writer (fs-verity needs a file nobody is writing to)"
    if err == errno.EROFS:
        return "%s is mounted read-only; enable fs-verity where it can be written, or remount it read-write" % where
    if err in (errno.EACCES, errno.EPERM):
        return ("permission denied: fs-verity can only be enabled by a user with write access to the file, "
                "and not on append-only or immutable files")
    if err == errno.EFBIG:
        return "the file is too large for fs-verity's Merkle tree on this filesystem"
    if err == errno.ENODATA:
        return "fs-verity is not enabled on the file"
    if err == errno.EINVAL:
        return "the kernel rejected the parameters (hash algorithm, block size or salt) or the file type"
    if err == errno.EISDIR:
        return "fs-verity applies to regular files, not directories"
    if err == errno.ENOPKG:
        return "the kernel lacks the crypto driver for the requested hash algorithm"
    if err in (errno.EOPNOTSUPP, errno.ENOTTY, errno.ENOSYS):
        kernel = kernel_has_fs_verity()
        if kernel is False:
            return "kernel built without CONFIG_FS_VERITY: boot a kernel with fs-verity support"
        if fstype == "ext4":
            feature = ext4_has_verity(fs.source) if fs else None
            if feature is False or (feature is None and kernel):
                return ("ext4 without the verity feature: run 'tune2fs -O verity %s' while it is unmounted "
                        "(needs e2fsprogs >= 1.45)" % (fs.source if fs else "<device>"))
            if kernel is None:
                return "the kernel refused fs-verity on ext4; it was probably built without CONFIG_FS_VERITY"
            return "ext4 refused fs-verity: the Merkle tree block size must not exceed the filesystem block size or page size"
        if fstype in ("btrfs", "f2fs"):
            if fstype == "f2fs":
                return "f2fs without the verity feature: 'fsck.f2fs -O verity' on the unmounted device"
            return "kernel built without CONFIG_FS_VERITY: boot a kernel with fs-verity support"
        if fstype in ("nfs", "nfs4", "cifs", "smb3", "9p", "fuse", "ceph", "glusterfs") or fstype.startswith("fuse."):
            return "%s is a network or FUSE filesystem, which has no fs-verity" % fstype
        return "%s has no fs-verity (supported: ext4 with the verity feature, btrfs, f2fs)" % fstype
    return os.strerror(err)


def predict_enable_failure(path):
    """For check mode: the reason enabling would surely fail on ``path``'s filesystem, or None.

    Only clear-cut cases are predicted (no fs-verity in the kernel, a filesystem
    type without fs-verity, ext4 without the feature); anything else may still
    be refused by the real ioctl.
    """
    fs = filesystem_of(path)
    kernel = kernel_has_fs_verity()
    if kernel is False:
        return explain(path, errno.EOPNOTSUPP)
    if fs is None:
        return None
    if fs.fstype not in VERITY_FILESYSTEMS:
        return explain(path, errno.ENOTTY)
    if fs.fstype == "ext4" and ext4_has_verity(fs.source) is False:
        return explain(path, errno.EOPNOTSUPP)
    return None


def _ioctl(path, fd, request, arg, operation):
    try:
        return fcntl.ioctl(fd, request, arg)
    except OSError as exc:
        raise VerityError(path, operation, exc.errno, explain(path, exc.errno, operation))


def verity_enabled(fd, path="<fd>"):
    """True when the file behind ``fd`` has fs-verity (FS_VERITY_FL); False also where GETFLAGS is unsupported."""
    try:
        buf = fcntl.ioctl(fd, FS_IOC_GETFLAGS, struct.pack("l", 0))
    except OSError as exc:
        if exc.errno in (errno.ENOTTY, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
            return False
        raise VerityError(path, "read the flags of", exc.errno, explain(path, exc.errno, "read"))
    return bool(struct.unpack("l", buf)[0] & FS_VERITY_FL)


def measure(fd, path="<fd>"):
    """The kernel's fs-verity digest of the file: ``(hash_algorithm_name, digest_bytes)``.

    Raises VerityError (errno ENODATA) when the file has no fs-verity.
    """
    buf = bytearray(struct.pack("HH", 0, _MAX_DIGEST_SIZE) + b"\0" * _MAX_DIGEST_SIZE)
    _ioctl(path, fd, FS_IOC_MEASURE_VERITY, buf, "measure")
    alg, size = struct.unpack_from("HH", buf)
    names = {number: name for name, (number, _size, _hb) in HASH_ALGORITHMS.items()}
    return names.get(alg, "alg%d" % alg), bytes(buf[4:4 + size])


def enable(fd, path="<fd>", hash_algorithm="sha256", block_size=DEFAULT_BLOCK_SIZE, salt=b""):
    """Enable fs-verity on the file behind ``fd`` (opened read-only). Returns False if it already was."""
    salt = bytes(salt or b"")
    check_params(hash_algorithm, block_size, salt)
    salt_buf = ctypes.create_string_buffer(salt, len(salt) or 1)
    arg = _EnableArg()
    arg.version = 1
    arg.hash_algorithm = HASH_ALGORITHMS[hash_algorithm][0]
    arg.block_size = block_size
    arg.salt_size = len(salt)
    arg.salt_ptr = ctypes.addressof(salt_buf) if salt else 0
    try:
        fcntl.ioctl(fd, FS_IOC_ENABLE_VERITY, arg)
    except OSError as exc:
        if exc.errno == errno.EEXIST:
            return False
        raise VerityError(path, "enable", exc.errno, explain(path, exc.errno, "enable"))
    return True


def enable_path(path, **params):
    """Open ``path`` read-only (not following symlinks) and enable fs-verity; False if it already was."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    try:
        return enable(fd, path, **params)
    finally:
        os.close(fd)
