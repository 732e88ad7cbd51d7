"""Fleet benchmark: playbooks/verity_report.yml against `ansible -m ping`, on the same SSH test fleet, in the same run.

For each fleet size N (namespace hosts of tests/fleet/harness.py, forks = N) it builds the
fleet, warms both commands up once (ssh ControlPersist masters, the controller's caches),
then times them alternately ``--repeat`` times and keeps the median. ``--fixed-forks F``
adds the same measurement at forks = F for every N, to show the cost per host at fixed
parallelism. The last verity_report run of each size is broken down by task (the
ansible.builtin.junit callback). The bar (docs/benchmarks-fleet.md): the report takes at
most 1.5x the ping at N = 20, and its cost grows close to linearly with N.

    python bench/fleet.py [--sizes 5,10,20] [--repeat 3] [--fixed-forks 5] [--markdown FILE] [--strict]

Not a test: prints a table (and writes bench/results/fleet.json); ``--strict`` exits 1 when the bar is missed.
"""

import argparse
import glob
import json
import os
import platform
import re
import statistics
import sys
import tempfile
import time
import xml.etree.ElementTree as ET

from common import TOP, VENV_BIN, ansible_env, fleet_harness, markdown_table, ping_command, timed_command

PLAYBOOK = os.path.join(TOP, "playbooks", "verity_report.yml")
BAR_RATIO = 1.5
BAR_SIZE = 20


def timed(argv, env):
    return timed_command(argv, env, who="bench/fleet.py")[0]


def task_breakdown(junit_dir):
    """Task name -> seconds (the slowest host's time for it) from the newest junit file."""
    files = sorted(glob.glob(os.path.join(junit_dir, "*.xml")), key=os.path.getmtime)
    if not files:
        return {}
    tasks = {}
    for case in ET.parse(files[-1]).getroot().iter("testcase"):
        # "[host] play name: task name" (the play name has no ": ")
        name = re.sub(r"^\[[^\]]*\] ", "", case.get("name", "")).partition(": ")[2].replace("composefs.fleet.verity_check : ", "")
        name = re.sub(r" - Report which hosts.*$", "", name)  # the arg-spec validation task repeats the role's description
        tasks[name] = max(tasks.get(name, 0.0), float(case.get("time") or 0))
    return tasks


def measure(fleet, forks, repeat, work):
    inventory = fleet.inventory_path
    ping = ping_command(inventory, forks)
    report = [os.path.join(VENV_BIN, "ansible-playbook"), "-i", inventory, PLAYBOOK, "--forks", str(forks)]
    # the role's one module call alone, ad hoc: the floor of what the playbook can cost
    facts = [os.path.join(VENV_BIN, "ansible"), "-i", inventory, "fleet", "-m", "composefs.fleet.verity_facts",
             "-a", "paths={{ verity_check_paths }}", "--forks", str(forks)]
    junit_dir = os.path.join(work, "junit-%d-%d" % (len(fleet.hosts), forks))
    ping_env = ansible_env()
    report_env = ansible_env(COMPOSEFS_FLEET_REPORT_DIR=os.path.join(work, "report"), ANSIBLE_CALLBACKS_ENABLED="ansible.builtin.junit",
                             JUNIT_OUTPUT_DIR=junit_dir, JUNIT_HIDE_TASK_ARGUMENTS="true")
    cold_ping = timed(ping, ping_env)  # the first connections: ssh handshakes, ControlPersist masters
    cold_report = timed(report, report_env)
    timed(facts, ping_env)
    pings, reports, factss = [], [], []
    for _run in range(repeat):
        pings.append(timed(ping, ping_env))
        reports.append(timed(report, report_env))
        factss.append(timed(facts, ping_env))
    return {
        "hosts": len(fleet.hosts), "forks": forks,
        "ping_s": round(statistics.median(pings), 2), "report_s": round(statistics.median(reports), 2),
        "facts_s": round(statistics.median(factss), 2),
        "ping_runs": [round(t, 2) for t in pings], "report_runs": [round(t, 2) for t in reports], "facts_runs": [round(t, 2) for t in factss],
        "cold_ping_s": round(cold_ping, 2), "cold_report_s": round(cold_report, 2),
        "ratio": round(statistics.median(reports) / statistics.median(pings), 2),
        "report_tasks": dict((k, round(v, 2)) for k, v in task_breakdown(junit_dir).items()),
    }


def table(rows):
    header = ["hosts", "forks", "ping (s)", "verity_report (s)", "ratio", "verity_facts ad hoc (s)", "ping per host (ms)",
              "report per host (ms)", "cold ping / report (s)"]
    return markdown_table(header, [[
        r["hosts"], r["forks"], "%.2f" % r["ping_s"], "%.2f" % r["report_s"], "%.2fx" % r["ratio"],
        "%.2f (%.2fx)" % (r["facts_s"], r["facts_s"] / r["ping_s"]), "%.0f" % (1000 * r["ping_s"] / r["hosts"]),
        "%.0f" % (1000 * r["report_s"] / r["hosts"]), "%.2f / %.2f" % (r["cold_ping_s"], r["cold_report_s"])] for r in rows])


def marginal(rows, forks_of):
    """Seconds each extra host adds (least-squares slope over the sizes), for ping and report."""
    sel = [r for r in rows if forks_of(r)]
    if len(sel) < 2:
        return None
    xs = [r["hosts"] for r in sel]
    out = {}
    for key in ("ping_s", "report_s"):
        ys = [r[key] for r in sel]
        mx, my = statistics.mean(xs), statistics.mean(ys)
        slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
        out[key] = (slope, my - slope * mx)
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--sizes", default="5,10,20", help="fleet sizes (default 5,10,20)")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs of each command per size (median kept)")
    parser.add_argument("--fixed-forks", type=int, default=0, help="also measure every size at this many forks")
    parser.add_argument("--markdown", help="write the tables to this file as well")
    parser.add_argument("--strict", action="store_true", help="exit 1 when the bar (<= %.1fx ping at N = %d) is missed" % (BAR_RATIO, BAR_SIZE))
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",") if s]
    harness = fleet_harness()
    problems = harness.missing_prerequisites()
    if problems:
        raise SystemExit("bench/fleet.py: the fleet cannot be built:\n  " + "\n  ".join(problems))
    header = "machine: %s, %d cores, Python %s, load average %.2f at start" % (
        platform.platform(), os.cpu_count(), platform.python_version(), os.getloadavg()[0])
    print(header, flush=True)
    rows, fixed_rows, builds = [], [], []
    with tempfile.TemporaryDirectory(prefix="cfsf-bench-") as work:
        for n in sizes:
            state = os.path.join(work, "fleet-%d" % n)
            start = time.perf_counter()
            fleet = harness.up(state, hosts=n)
            built = time.perf_counter() - start
            try:
                print("N=%d: fleet up in %.1f s, load %.2f" % (n, built, os.getloadavg()[0]), flush=True)
                row = measure(fleet, n, args.repeat, state)
                rows.append(row)
                print("  forks=%d: ping %.2f s, verity_report %.2f s, ratio %.2fx" % (n, row["ping_s"], row["report_s"], row["ratio"]), flush=True)
                if args.fixed_forks and args.fixed_forks != n:
                    frow = measure(fleet, args.fixed_forks, args.repeat, state)
                    fixed_rows.append(frow)
                    print("  forks=%d: ping %.2f s, verity_report %.2f s, ratio %.2fx" % (
                        args.fixed_forks, frow["ping_s"], frow["report_s"], frow["ratio"]), flush=True)
                elif args.fixed_forks:
                    fixed_rows.append(row)
            finally:
                start = time.perf_counter()
                fleet.down()
                builds.append({"hosts": n, "up_s": round(built, 2), "down_s": round(time.perf_counter() - start, 2)})
    out = [header, "", "### forks = N", "", table(rows)]
    fit = marginal(rows, lambda r: True)
    if fit:
        out += ["", "Cost per extra host at forks = N (least-squares slope): ping %.0f ms, verity_report %.0f ms; fixed part: ping %.2f s, "
                "verity_report %.2f s." % (1000 * fit["ping_s"][0], 1000 * fit["report_s"][0], fit["ping_s"][1], fit["report_s"][1])]
    if fixed_rows:
        out += ["", "### forks = %d" % args.fixed_forks, "", table(fixed_rows)]
        fit = marginal(fixed_rows, lambda r: True)
        if fit:
            out += ["", "Cost per extra host at forks = %d: ping %.0f ms, verity_report %.0f ms; fixed part: ping %.2f s, verity_report %.2f s." % (
                args.fixed_forks, 1000 * fit["ping_s"][0], 1000 * fit["report_s"][0], fit["ping_s"][1], fit["report_s"][1])]
    last = rows[-1]
    out += ["", "### verity_report by task (N = %d, forks = %d, slowest host per task)" % (last["hosts"], last["forks"]), "",
            "| task | s |", "| --- | ---: |"]
    out += ["| %s | %.2f |" % (name, secs) for name, secs in last["report_tasks"].items()]
    out += ["", "Fleet set-up and teardown: " + ", ".join("N=%d up %.1f s / down %.1f s" % (b["hosts"], b["up_s"], b["down_s"]) for b in builds) + "."]
    at_bar = [r for r in rows if r["hosts"] == BAR_SIZE]
    verdict = None
    if at_bar:
        verdict = at_bar[0]["ratio"] <= BAR_RATIO
        out += ["", "Bar: verity_report <= %.1fx ping at N = %d: %s (%.2fx)." % (BAR_RATIO, BAR_SIZE, "met" if verdict else "MISSED", at_bar[0]["ratio"])]
    text = "\n".join(out) + "\n"
    print("\n" + text)
    results_dir = os.path.join(TOP, "bench", "results")
    os.makedirs(results_dir, exist_ok=True)
    with open(os.path.join(results_dir, "fleet.json"), "w", encoding="utf-8") as f:
        json.dump({"when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "machine": header, "forks_n": rows,
                   "fixed_forks": fixed_rows, "builds": builds}, f, indent=1)
    if args.markdown:
        with open(args.markdown, "w", encoding="utf-8") as f:
            f.write(text)
    return 1 if args.strict and verdict is False else 0


if __name__ == "__main__":
    sys.exit(main())
