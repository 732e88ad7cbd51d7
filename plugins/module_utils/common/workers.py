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
import pickle
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


class ForkedWorkerError(RuntimeError):
    """A forked worker died or sent back something unreadable."""


# Chunk numbers wait in a pipe; each process takes the next one with a read of 4 bytes
# (pipe reads of at most PIPE_BUF bytes are atomic), so a process that got easier files
# simply takes more: everyone finishes at about the same time.
_TICKET = 4
_PIPE_CAPACITY = 1 << 16  # Linux's default pipe buffer: the tickets are written before any read


def _take_tickets(work, count, chunk, tickets):
    """``work``'s results for every chunk this process takes from the ``tickets`` pipe: {number: results}."""
    done = {}
    while True:
        ticket = os.read(tickets, _TICKET)
        if not ticket:
            return done
        number = int.from_bytes(ticket, "little")
        start = number * chunk
        done[number] = work(start, min(start + chunk, count))


def _child(work, count, chunk, tickets, parent, write_fd):
    """In a forked worker: take chunks, send the results back as one pickle, and leave without cleanup."""
    status = 0
    try:
        die_with_parent(parent)
        try:
            payload = pickle.dumps((True, _take_tickets(work, count, chunk, tickets)), pickle.HIGHEST_PROTOCOL)
        except Exception as exc:  # pylint: disable=broad-exception-caught  # re-raised in the parent
            try:
                payload = pickle.dumps((False, exc), pickle.HIGHEST_PROTOCOL)
            except Exception:  # pylint: disable=broad-exception-caught
                payload = pickle.dumps((False, ForkedWorkerError("%s: %s" % (type(exc).__name__, exc))))
        view = memoryview(payload)
        while view:
            view = view[os.write(write_fd, view):]
    except BaseException:  # pylint: disable=broad-exception-caught  # the parent sees a short read and says so
        status = 1
    finally:
        os._exit(status)  # never the parent's atexit handlers or buffered output


def _read_all(fd):
    parts = []
    while True:
        data = os.read(fd, 1 << 20)
        if not data:
            return b"".join(parts)
        parts.append(data)


def split_among_forks(work, count, workers, chunk=64):
    """``work(start, stop)`` (a list of results for items ``start:stop``) over ``count`` items, in order.

    This process and ``workers - 1`` forked children share the items by chunks, each
    taking the next chunk when it is done with one. The children inherit ``work`` and
    its data, so nothing is pickled on the way in, and each sends its results back as one
    pickle; this process works meanwhile instead of waiting on a pool. Children die with
    this process; an exception in a child is raised here.
    """
    chunk = max(chunk, -(-count // (_PIPE_CAPACITY // _TICKET)))  # every ticket fits in the pipe
    numbers = (count + chunk - 1) // chunk
    parent = os.getpid()
    children = []  # (pid, read fd)
    finished = False
    tickets, fill = os.pipe()
    try:
        os.write(fill, b"".join(number.to_bytes(_TICKET, "little") for number in range(numbers)))
        os.close(fill)
        fill = None
        for _index in range(1, workers):
            read_fd, write_fd = os.pipe()
            pid = os.fork()
            if pid == 0:
                os.close(read_fd)
                _child(work, count, chunk, tickets, parent, write_fd)
            os.close(write_fd)
            children.append((pid, read_fd))
        done = _take_tickets(work, count, chunk, tickets)
        for pid, read_fd in children:
            data = _read_all(read_fd)
            try:
                ok, share = pickle.loads(data)
            except Exception:  # pylint: disable=broad-exception-caught
                raise ForkedWorkerError("a worker process (pid %d) died before it sent its results" % pid) from None
            if not ok:
                raise share
            done.update(share)
        finished = True
    finally:
        os.close(tickets)
        if fill is not None:
            os.close(fill)
        for pid, read_fd in children:
            os.close(read_fd)
            if not finished:
                os.kill(pid, signal.SIGKILL)  # leaving early: the rest of its work is not wanted
            os.waitpid(pid, 0)
    if len(done) != numbers:
        raise ForkedWorkerError("%d of %d chunks came back from the workers" % (len(done), numbers))
    out = []
    for number in range(numbers):
        out.extend(done[number])
    return out
