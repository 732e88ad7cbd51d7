# -*- coding: utf-8 -*-
# Copyright: composefs.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Worker processes that die with the module that forked them.

A ``kill -9`` of the module process leaves multiprocessing's workers running
(they are reparented to init and keep hashing and copying). Each worker asks the
kernel for SIGKILL when its parent dies (``prctl(PR_SET_PDEATHSIG)``), and checks
once that the parent did not die before the request was made. Where prctl is not
reachable (no libc through ctypes), a watcher thread polls ``getppid()``.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import signal
import threading
import time

PR_SET_PDEATHSIG = 1
_PARENT_POLL_SECONDS = 0.5


def _set_pdeathsig(sig):
    """prctl(PR_SET_PDEATHSIG, sig) through libc; False where it cannot be called."""
    try:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        prctl = libc.prctl
    except (OSError, AttributeError):
        return False
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    return prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0) == 0


def _watch_parent(parent):
    while True:
        if os.getppid() != parent:
            os._exit(1)
        time.sleep(_PARENT_POLL_SECONDS)


def die_with_parent(parent):
    """Pool initializer: end this worker when ``parent`` (the pid that forked it) ends."""
    if not _set_pdeathsig(signal.SIGKILL):
        watcher = threading.Thread(target=_watch_parent, args=(parent,))
        watcher.daemon = True
        watcher.start()
    # The parent may have died between fork() and prctl(): then we are already orphaned.
    if os.getppid() != parent:
        os._exit(1)


def fork_pool(workers):
    """A fork-context multiprocessing Pool of ``workers`` processes that die with this process."""
    import multiprocessing
    return multiprocessing.get_context("fork").Pool(workers, initializer=die_with_parent, initargs=(os.getpid(),))
