"""Shared bits of the benchmarks: timing, the table format, the collection on sys.path."""
import os
import subprocess
import sys
import time

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(TOP, ".cache", "collections"))


def best_of(fn, repeat=3):
    """Wall time of the fastest of ``repeat`` runs of ``fn()`` (seconds), and its last result."""
    best, result = None, None
    for _attempt in range(repeat):
        start = time.perf_counter()
        result = fn()
        took = time.perf_counter() - start
        best = took if best is None else min(best, took)
    return best, result


def run(argv, **kw):
    return subprocess.run(argv, check=True, stdout=subprocess.PIPE, **kw).stdout


def report(name, ours, theirs, what, ratio_kind="speed"):
    """Print one result row: the ratio is reference time / our time (> 1 means we are faster)."""
    ratio = theirs / ours
    print("%-44s ours %8.3f s   %-28s %8.3f s   ratio %.2fx" % (name, ours, what, theirs, ratio), flush=True)
    return {"name": name, "ours_s": round(ours, 3), "reference": what, "reference_s": round(theirs, 3), "ratio": round(ratio, 2)}
