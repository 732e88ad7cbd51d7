"""Shared bits of the benchmarks: timing, the table format, the collection on sys.path."""
import os
import resource
import subprocess
import sys
import time

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(TOP, ".cache", "collections"))


class Timing(float):
    """A wall time in seconds that also carries the CPU seconds of the same measurement (``cpu``)."""

    def __new__(cls, wall, cpu):
        self = float.__new__(cls, wall)
        self.cpu = cpu
        return self


def cpu_seconds():
    """User + system CPU time of this process and of the children it has waited for.

    Our side runs here (its digest workers are children, reaped when the pool ends), the
    reference tools run as children: on a loaded machine, where wall times mostly measure
    the wait for a core, the CPU time is the steadier figure.
    """
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def best_of(fn, repeat=3):
    """The fastest of ``repeat`` runs of ``fn()`` as a :class:`Timing` (least wall, least CPU), and the last result."""
    best, best_cpu, result = None, None, None
    for _attempt in range(repeat):
        cpu = cpu_seconds()
        start = time.perf_counter()
        result = fn()
        took = time.perf_counter() - start
        cpu = cpu_seconds() - cpu
        best = took if best is None else min(best, took)
        best_cpu = cpu if best_cpu is None else min(best_cpu, cpu)
    return Timing(best, best_cpu), result


def run(argv, **kw):
    return subprocess.run(argv, check=True, stdout=subprocess.PIPE, **kw).stdout


def report(name, ours, theirs, what, ratio_kind="speed"):
    """Print one result row: the ratio is reference time / our time (> 1 means we are faster)."""
    ratio = theirs / ours
    row = {"name": name, "ours_s": round(ours, 3), "reference": what, "reference_s": round(theirs, 3), "ratio": round(ratio, 2)}
    cpu = ""
    if getattr(ours, "cpu", None) and getattr(theirs, "cpu", None):
        row.update(ours_cpu_s=round(ours.cpu, 3), reference_cpu_s=round(theirs.cpu, 3), cpu_ratio=round(theirs.cpu / ours.cpu, 2))
        cpu = "   cpu %.3f s / %.3f s = %.2fx" % (ours.cpu, theirs.cpu, theirs.cpu / ours.cpu)
    print("%-44s ours %8.3f s   %-28s %8.3f s   ratio %.2fx%s" % (name, ours, what, theirs, ratio, cpu), flush=True)
    return row
