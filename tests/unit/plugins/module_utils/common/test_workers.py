"""split_among_forks: work shared between this process and forked children, results in order.

Who takes which chunk depends on who is free first; where a test needs a child to take
some, this process waits (at most a minute) for a marker file the child writes.
"""
import os
import time

import pytest

from ansible_collections.composefs.fleet.plugins.module_utils.common.workers import ForkedWorkerError, split_among_forks


def _no_children_left():
    with pytest.raises(ChildProcessError):
        os.waitpid(-1, os.WNOHANG)


def _wait_for(path):
    deadline = time.monotonic() + 60
    while not os.path.exists(path):
        assert time.monotonic() < deadline, "no child took a chunk within a minute"
        time.sleep(0.001)


@pytest.mark.parametrize("count,workers,chunk", [(0, 2, 4), (1, 2, 4), (10, 2, 4), (1001, 3, 7), (64, 4, 64), (5, 1, 2)])
def test_results_in_order_whoever_computed_them(count, workers, chunk, tmp_path):
    parent = os.getpid()
    marker = str(tmp_path / "child")
    shared = workers > 1 and (count + chunk - 1) // chunk >= 3

    def work(start, stop):
        if os.getpid() != parent:
            open(marker, "w").close()
        elif start > 0 and shared:
            _wait_for(marker)  # leave a chunk to a child (there is one left)
        return [(i, os.getpid()) for i in range(start, stop)]

    out = split_among_forks(work, count, workers, chunk)
    assert [i for i, _pid in out] == list(range(count))
    if shared:
        assert set(pid for _i, pid in out) - set([parent])  # a child took some
    _no_children_left()


def test_many_items_use_larger_chunks_so_every_ticket_fits_the_pipe():
    out = split_among_forks(lambda start, stop: list(range(start, stop)), 2000000, 2, 4)
    assert out == list(range(2000000))
    _no_children_left()


def test_an_exception_in_a_child_is_raised_here(tmp_path):
    parent = os.getpid()
    marker = str(tmp_path / "raised")

    def work(start, stop):
        if os.getpid() != parent and start >= 8:
            open(marker, "w").close()
            raise ValueError("bad item %d" % start)
        if os.getpid() == parent and start >= 8:
            _wait_for(marker)  # the child gets to a chunk from 8 on
        return list(range(start, stop))

    with pytest.raises(ValueError, match=r"bad item \d+"):
        split_among_forks(work, 40, 2, 4)
    _no_children_left()


def test_a_child_that_dies_is_reported(tmp_path):
    parent = os.getpid()
    marker = str(tmp_path / "died")

    def work(start, stop):
        if os.getpid() != parent:
            open(marker, "w").close()
            os._exit(3)
        if start > 0:
            _wait_for(marker)
        return list(range(start, stop))

    with pytest.raises(ForkedWorkerError, match="died before it sent its results"):
        split_among_forks(work, 40, 2, 4)
    _no_children_left()


def test_an_exception_here_takes_the_children_down(tmp_path):
    parent = os.getpid()

    def work(start, stop):
        if os.getpid() == parent:
            raise KeyError("here")
        _wait_for(str(tmp_path / "never"))  # a child holds its chunk until it is killed
        return list(range(start, stop))

    with pytest.raises(KeyError):
        split_among_forks(work, 40, 3, 4)
    _no_children_left()
