# -*- coding: utf-8 -*-
# Copyright: composefs.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The opt-in probe: create a scratch file, try FS_IOC_ENABLE_VERITY on it, remove it, report the errno.

This is the only part of verity_facts that writes. It leaves a trace on btrfs: the
first file that ever gets fs-verity sets the ``VERITY`` compat_ro flag in the
superblock, after which kernels without fs-verity support in btrfs (before 5.15)
mount the filesystem read-only only. ext4's ``verity`` feature is set by
mkfs/tune2fs, never by the probe.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import errno
import os
import tempfile

from ansible_collections.composefs.fleet.plugins.module_utils.fsverity import ioctl

SCRATCH_PREFIX = ".composefs-fleet-verity-probe-"
SCRATCH_SIZE = 4096


def _errno_name(number):
    if number is None:
        return None
    if number == errno.EOPNOTSUPP:
        return "EOPNOTSUPP"  # errorcode says ENOTSUP, its alias on Linux
    return errno.errorcode.get(number, "E%d" % number)


def not_run(directory, message):
    return dict(performed=False, result="not_run", directory=directory, errno=None, errno_name=None, message=message)


def _reopen_read_only(fd):
    """A read-only fd of the same open file, through /proc/self/fd (the inode, never a name lookup).

    FS_IOC_ENABLE_VERITY wants a read-only fd and no writer open, so the
    scratch file cannot be written and enabled through its O_RDWR fd; reopening
    by its name would follow whatever symlink was swapped in meanwhile.
    """
    rfd = os.open("/proc/self/fd/%d" % fd, os.O_RDONLY | os.O_CLOEXEC)
    a, b = os.fstat(fd), os.fstat(rfd)
    if (a.st_dev, a.st_ino) != (b.st_dev, b.st_ino):
        os.close(rfd)
        raise OSError(errno.EXDEV, "/proc/self/fd/%d is not the scratch file (is /proc mounted?)" % fd)
    return rfd


def probe_directory(directory):
    """Try fs-verity on a scratch file in ``directory``; the file is removed whatever happens.

    The scratch file is created (O_EXCL: never through a symlink), written and
    enabled through descriptors of that one inode; its name is used only to
    remove it, and only while it still names that inode. A symlink swapped in at
    the name can therefore never get fs-verity enabled on its target.

    Returns ``dict(performed, result, directory, errno, errno_name, message)`` where
    ``result`` is ``enabled``, ``refused`` (the ioctl failed: see errno) or ``error``
    (no scratch file could be made, so the ioctl was not tried).
    """
    try:
        fd, scratch = tempfile.mkstemp(prefix=SCRATCH_PREFIX, dir=directory)
    except OSError as exc:
        return dict(performed=False, result="error", directory=directory, errno=exc.errno, errno_name=_errno_name(exc.errno),
                    message="cannot create a scratch file in %s: %s" % (directory, exc.strerror or exc))
    identity = None
    try:
        try:
            st = os.fstat(fd)
            identity = (st.st_dev, st.st_ino)
            os.write(fd, b"\0" * SCRATCH_SIZE)
            os.fsync(fd)
            rfd = _reopen_read_only(fd)
        finally:
            os.close(fd)
        try:
            ioctl.enable(rfd, scratch)
        except ioctl.VerityError as exc:
            return dict(performed=True, result="refused", directory=directory, errno=exc.errno, errno_name=_errno_name(exc.errno),
                        message="FS_IOC_ENABLE_VERITY failed with %s: %s" % (_errno_name(exc.errno), exc.reason))
        finally:
            os.close(rfd)
        return dict(performed=True, result="enabled", directory=directory, errno=0, errno_name=None,
                    message="FS_IOC_ENABLE_VERITY succeeded on a scratch file")
    except OSError as exc:
        return dict(performed=False, result="error", directory=directory, errno=exc.errno, errno_name=_errno_name(exc.errno),
                    message="probe in %s failed: %s" % (directory, exc.strerror or exc))
    finally:
        _remove_scratch(scratch, identity)


def _remove_scratch(scratch, identity):
    """Unlink the scratch name if it still names our file (a swapped-in name is left alone)."""
    try:
        st = os.lstat(scratch)
        if identity is None or (st.st_dev, st.st_ino) == identity:
            os.unlink(scratch)
    except OSError:
        pass
