"""Shared bits of the benchmarks: timing, the table format, the collection on sys.path, the SSH test fleet."""
import gc
import importlib.util
import os
import re
import resource
import subprocess
import sys
import time

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VENV_BIN = os.path.join(TOP, ".venv", "bin")
sys.path.insert(0, os.path.join(TOP, ".cache", "collections"))
_RECAP = re.compile(r"^(\S+)\s+:\s+ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)\s+skipped=(\d+)\s+rescued=(\d+)\s+ignored=(\d+)")
_RECAP_KEYS = ("ok", "changed", "unreachable", "failed", "skipped", "rescued", "ignored")


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


def _timed(fn):
    """(wall seconds, CPU seconds, result) of one run of ``fn()``, after an untimed collection of garbage."""
    gc.collect()  # no run pays for the garbage of the one before
    cpu = cpu_seconds()
    start = time.perf_counter()
    result = fn()
    took = time.perf_counter() - start
    return took, cpu_seconds() - cpu, result


def best_of(fn, repeat=3):
    """The fastest of ``repeat`` runs of ``fn()`` as a :class:`Timing` (least wall, least CPU), and the last result."""
    return best_of_each(fn, repeat=repeat)[0]


def best_of_each(*fns, repeat=3):
    """:func:`best_of` for several sides run in turn (theirs, ours, theirs, ...): a slow spell of the machine hits all.

    Returns ``(Timing, last result)`` for each of ``fns``, in their order.
    """
    best = [[None, None, None] for _fn in fns]  # wall, cpu, result per side
    for _attempt in range(repeat):
        for side, fn in enumerate(fns):
            took, cpu, result = _timed(fn)
            wall0, cpu0, _result = best[side]
            best[side] = [took if wall0 is None else min(wall0, took), cpu if cpu0 is None else min(cpu0, cpu), result]
    return tuple((Timing(wall, cpu), result) for wall, cpu, result in best)


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


# ---------------------------------------------------------------------------- the SSH test fleet (bench/fleet.py, bench/deploy.py)
def load_module(name, relpath):
    """The project's file ``relpath`` (e.g. tests/fleet/harness.py) as module ``name``, loaded once."""
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, os.path.join(TOP, relpath))
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def fleet_harness():
    """tests/fleet/harness.py as a module: ``up(state_dir, hosts=N, kinds=[...])``, ``Fleet.down()``."""
    return load_module("composefs_fleet_harness", os.path.join("tests", "fleet", "harness.py"))


def ansible_env(**extra):
    """The environment of an ansible or ansible-playbook run from the project's venv, with its ansible.cfg."""
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(TOP, "ansible.cfg"), ANSIBLE_FORCE_COLOR="0",
               PATH=VENV_BIN + os.pathsep + os.environ.get("PATH", ""))
    env.update(extra)
    return env


def timed_command(argv, env, who="bench"):
    """Run ``argv`` in the project's top directory: (wall seconds, the CompletedProcess); a failure ends the bench."""
    start = time.perf_counter()
    proc = subprocess.run(argv, cwd=TOP, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False)
    took = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit("%s: %s failed (exit %d):\n%s\n%s" % (who, " ".join(argv), proc.returncode, proc.stdout[-3000:], proc.stderr[-3000:]))
    return took, proc


def ping_command(inventory, forks, pattern="fleet"):
    """``ansible PATTERN -m ping``: the reference of the fleet benchmarks."""
    return [os.path.join(VENV_BIN, "ansible"), "-i", inventory, pattern, "-m", "ansible.builtin.ping", "--forks", str(forks)]


def play_recap(stdout):
    """host -> {ok, changed, unreachable, failed, skipped, rescued, ignored} from ansible-playbook's PLAY RECAP."""
    recap = {}
    for line in stdout.splitlines():
        match = _RECAP.match(line)
        if match:
            recap[match.group(1)] = dict(zip(_RECAP_KEYS, (int(g) for g in match.groups()[1:])))
    return recap


def markdown_table(header, rows, align=None):
    """A Markdown table: ``header`` a list of titles, ``rows`` lists of cells (str() of each); ``align`` "l"/"r" per column."""
    align = align or ["r"] * len(header)
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---:" if a == "r" else "---" for a in align) + " |"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)
