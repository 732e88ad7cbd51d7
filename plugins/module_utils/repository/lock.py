# -*- coding: utf-8 -*-
# Copyright: composefs.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The repository lock, as composefs-rs takes it: ``flock`` on the repository directory itself.

Every writer (a commit, a ref change, ``cfsctl`` opening the repository) holds
it shared; garbage collection holds it exclusive, so it waits for every writer
and no writer starts while it runs. There is no lock file: the directory's own
inode is the lock, so ``cfsctl transaction`` and this collection exclude each
other.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import errno
import fcntl
import os
import time

from ansible_collections.composefs.fleet.plugins.module_utils.repository.errors import RepositoryLocked

POLL = 0.05


def acquire(fd, exclusive, timeout=None, where="the repository"):
    """flock ``fd`` shared or exclusive; wait up to ``timeout`` seconds (None: forever)."""
    op = fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH
    if timeout is None:
        fcntl.flock(fd, op)
        return
    deadline = time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(fd, op | fcntl.LOCK_NB)
            return
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise
        if time.monotonic() >= deadline:
            raise RepositoryLocked(
                "%s is locked %s: %s; wait for it to finish, or raise lock_timeout" % (
                    where, "by a writer (a commit or cfsctl holds it shared)" if exclusive else "for garbage collection",
                    "no %s lock within %.0f s" % ("exclusive" if exclusive else "shared", timeout)))
        time.sleep(POLL)


class RepositoryLock:
    """A context manager holding the lock on an open directory descriptor of its own."""

    def __init__(self, path, exclusive=False, timeout=None):
        self.path = path
        self.exclusive = exclusive
        self.timeout = timeout
        self.fd = None

    def __enter__(self):
        self.fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            acquire(self.fd, self.exclusive, self.timeout, self.path)
        except BaseException:
            os.close(self.fd)
            self.fd = None
            raise
        return self

    def __exit__(self, *exc_info):
        if self.fd is not None:
            os.close(self.fd)  # releases the flock
            self.fd = None
