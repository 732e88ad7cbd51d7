# -*- coding: utf-8 -*-
# Copyright: composefs.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Opening a file that must be a regular file, without hanging on a FIFO or a device.

``open(2)`` of a FIFO for reading blocks until a writer appears, and a device may
block or have side effects, so a path that should be an image or a dumpfile is
opened with ``O_NONBLOCK`` (which a FIFO and most devices honour at open time),
checked with ``fstat`` on the descriptor itself (no window between the check and
the use), and only then switched back to blocking reads.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import errno
import fcntl
import os
import stat


class NotRegularFile(OSError):
    """The path names something other than a regular file; the message says what it is."""


_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISLNK, "a symlink"),
)


def kind_of(mode):
    for test, name in _KINDS:
        if test(mode):
            return name
    return "not a regular file"


def open_regular(path, follow=True, dir_fd=None, what="file"):
    """A read-only descriptor of the regular file at ``path``; raises NotRegularFile (an OSError) otherwise.

    ``follow=False`` refuses a symlink as the last component (``O_NOFOLLOW``).
    Other OSErrors (ENOENT, EACCES) pass through unchanged.
    """
    flags = os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY
    if not follow:
        flags |= os.O_NOFOLLOW
    try:
        fd = os.open(path, flags, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno == errno.ELOOP and not follow:
            raise NotRegularFile(errno.ELOOP, "%s %s is a symlink, which is not followed" % (what, os.fsdecode(path)))
        if exc.errno == errno.ENXIO:
            # A FIFO without a writer or a socket refuses a non-blocking open with ENXIO on some paths.
            raise NotRegularFile(errno.ENXIO, "%s %s is not a regular file" % (what, os.fsdecode(path)))
        raise
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise NotRegularFile(errno.EINVAL, "%s %s is %s, not a regular file" % (what, os.fsdecode(path), kind_of(mode)))
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_regular(path, follow=True, what="file"):
    """The whole content of the regular file at ``path`` (see :func:`open_regular`)."""
    fd = open_regular(path, follow=follow, what=what)
    try:
        chunks = []
        while True:
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)
