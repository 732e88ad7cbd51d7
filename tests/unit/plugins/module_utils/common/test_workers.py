"""split_among_forks: work shared between this process and forked children, results in order."""
import os

import pytest

from ansible_collections.composefs.fleet.plugins.module_utils.common.workers import ForkedWorkerError, split_among_forks


def _no_children_left():
    with pytest.raises(ChildProcessError):
        os.waitpid(-1, os.WNOHANG)


@pytest.mark.parametrize("count,workers,chunk", [(0, 2, 4), (1, 2, 4), (10, 2, 4), (1001, 3, 7), (64, 4, 64), (5, 1, 2)])
def test_results_in_order_whoever_computed_them(count, workers, chunk):
    out = split_among_forks(lambda start, stop: [(i, os.getpid()) for i in range(start, stop)], count, workers, chunk)
    assert [i for i, _pid in out] == list(range(count))
    pids = set(pid for _i, pid in out)
    # this process did its share; the others came from children
    assert (os.getpid() in pids) == (count > 0) and len(pids) == min(workers, (count + chunk - 1) // chunk)
    _no_children_left()


def test_an_exception_in_a_child_is_raised_here():
    parent = os.getpid()

    def work(start, stop):
        if os.getpid() != parent and start >= 8:
            raise ValueError("bad item %d" % start)  # its chunks start at 4, 12, 20, ...
        return list(range(start, stop))

    with pytest.raises(ValueError, match="bad item 12"):
        split_among_forks(work, 40, 2, 4)
    _no_children_left()


def test_a_child_that_dies_is_reported():
    parent = os.getpid()

    def work(start, stop):
        if os.getpid() != parent:
            os._exit(3)
        return list(range(start, stop))

    with pytest.raises(ForkedWorkerError, match="died before it sent its results"):
        split_among_forks(work, 40, 2, 4)
    _no_children_left()


def test_an_exception_here_takes_the_children_down():
    parent = os.getpid()

    def work(start, stop):
        if os.getpid() == parent:
            raise KeyError("here")
        return list(range(start, stop))

    with pytest.raises(KeyError):
        split_among_forks(work, 40, 3, 4)
    _no_children_left()
