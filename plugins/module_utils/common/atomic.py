# -*- coding: utf-8 -*-
# Copyright: composefs.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Atomic file replacement: a temporary file beside the target, fsync, rename, fsync the directory."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import stat


def fsync_dir(path):
    """fsync a directory, making the names created or removed in it durable."""
    dfd = os.open(path or ".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def atomic_write(path, data, mode=0o644, keep_attributes=True, before_rename=None):
    """Replace ``path`` with ``data`` (bytes) so that readers see the old or the new file, never a part.

    With ``keep_attributes`` an existing file's permission bits and owner are
    kept; a new file (or any file without it) gets ``mode``. ``before_rename``,
    if given, is called with the closed, fsynced temporary file's path just
    before it replaces ``path`` (to set an SELinux context, or enable fs-verity).
    """
    directory = os.path.dirname(path) or "."
    owner = None
    if keep_attributes:
        try:
            st = os.stat(path)
            mode = stat.S_IMODE(st.st_mode)
            owner = (st.st_uid, st.st_gid)
        except FileNotFoundError:
            pass
    tmp = os.path.join(directory, ".%s.tmp-%d-%s" % (os.path.basename(path), os.getpid(), os.urandom(4).hex()))
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fchmod(fd, mode)
            if owner is not None and owner != (os.geteuid(), os.getegid()):
                os.fchown(fd, owner[0], owner[1])
            os.fsync(fd)
        finally:
            os.close(fd)
        if before_rename is not None:
            before_rename(tmp)
        os.rename(tmp, path)
        tmp = None
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass
    fsync_dir(directory)


def remove_durably(path):
    """Unlink ``path`` (missing is fine) and fsync its directory. Returns whether it existed."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    fsync_dir(os.path.dirname(path))
    return True
