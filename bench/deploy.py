"""Deploy benchmark: playbooks/deploy.yml on the SSH test fleet; the no-op rerun against `ansible -m ping`, pull against push.

For each fleet size N (namespace hosts of tests/fleet/harness.py with one ext4 data
filesystem each, forks = N) it builds the fleet and, on it:

1. push mode: v1 to every host, then v2 (one file of the large tree changed), each timed
   once; then the no-op rerun of v2 and ``ansible -m ping``, alternately ``--repeat`` times
   (medians kept; the rerun must report changed=0 on every host);
2. resets the hosts (the mount and its fstab line removed by composefs.fleet.mount, the
   repository deleted), and does the same in pull mode: nginx (tests/nginx_server.py) serves
   the source repository on the fleet's bridge address, each host fetches what it lacks.

The trees are the deploy scenario's (extensions/molecule/deploy/make_trees.py: 200 files
of 32 KiB; v2 changes one). Both images are built once into a controller-side repository
before anything is timed, so the times are the distribution and the switch-over. The
bytes are summed over the hosts from each host's deploy_result (the transfer modules' own
return values: repository_push's bytes_sent, repository_pull's bytes_fetched; 0 for a host
left alone), recorded by bench/callback_plugins/deploy_results.py, so the timed run is
playbooks/deploy.yml alone. The bar: the no-op rerun takes at most 2x the ping at every size.

    python bench/deploy.py [--sizes 20,50] [--repeat 3] [--serial 100%] [--markdown FILE] [--strict]

Not a test: prints a table (and writes bench/results/deploy.json); ``--strict`` exits 1 when the bar is missed.
"""

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time

from common import TOP, VENV_BIN, ansible_env, fleet_harness, load_module, markdown_table, ping_command, play_recap, timed_command

PLAYBOOK = os.path.join(TOP, "playbooks", "deploy.yml")
BAR_RATIO = 2.0
KIND = "ext4-plain"  # one data filesystem per host: the repository lives there
VERSIONS = ("v1", "v2")
SOURCE = """---
- name: The source repository and the images, built once
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Ensure the source repository
      composefs.fleet.repository:
        path: %(source)s
        algorithm: sha256
        insecure: true
    - name: Build the images into it
      composefs.fleet.image:
        src: %(trees)s/{{ item }}
        repository: %(source)s
        ref: app/{{ item }}
      loop: %(versions)s
"""


def _write(path, text):
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    return path


def make_trees():
    return load_module("composefs_fleet_make_trees", os.path.join("extensions", "molecule", "deploy", "make_trees.py"))


def prepare_source(work):
    """The trees and the controller-side repository holding app/v1 and app/v2; returns (repository, seconds to build)."""
    for version in VERSIONS:
        make_trees().make(os.path.join(work, "trees", version), version)
    source = os.path.join(work, "source")
    playbook = _write(os.path.join(work, "source.yml"), SOURCE % {
        "source": json.dumps(source), "trees": os.path.join(work, "trees"), "versions": json.dumps(list(VERSIONS))})
    # the default inventory (ansible.cfg): localhost, local connection, the controller's Python
    took, _proc = timed_command([os.path.join(VENV_BIN, "ansible-playbook"), playbook],
                                ansible_env(), who="bench/deploy.py")
    for path in (work, source):
        os.chmod(path, 0o755)  # nginx serves the repository
    return source, took


def image_size(source, version):
    """The image's bytes (the ref resolves, through images/<digest>, to the object)."""
    target = os.path.realpath(os.path.join(source, "images", "refs", "app", version))
    return os.path.getsize(target)


class Deployer:
    """ansible-playbook playbooks/deploy.yml on one fleet, with the transfer results recorded."""

    def __init__(self, fleet, source, work, serial):
        self.fleet = fleet
        self.work = work
        self.forks = len(fleet.hosts)
        self.common = _write(os.path.join(work, "vars.json"), json.dumps({
            "deploy_name": "app", "deploy_source_repository": source, "deploy_become": False, "deploy_hosts": "fleet",
            # namespace hosts share this kernel (no fs-verity): the repository on each host's own ext4, userspace verity
            "deploy_repository": "{{ fleet_paths['%s'] }}/repo" % KIND, "deploy_repository_insecure": True,
            "deploy_verity": "userspace", "deploy_mount_point": "/srv/app", "deploy_fstab": "/srv/fstab",
            "deploy_keep": 1, "deploy_serial": serial, "deploy_max_fail_percentage": 0,
            "deploy_health_command": "test -e /srv/app/healthy", "deploy_health_retries": 1, "deploy_health_delay": 0}))
        # bench/callback_plugins/deploy_results.py records each host's deploy_result (the role's last set_fact), so
        # the timed run is playbooks/deploy.yml and nothing else
        self.out = os.path.join(work, "deploy-results.json")
        self.env = ansible_env(ANSIBLE_CALLBACK_PLUGINS=os.path.join(TOP, "bench", "callback_plugins"),
                               ANSIBLE_CALLBACKS_ENABLED="deploy_results", COMPOSEFS_FLEET_BENCH_RESULTS=self.out)

    def deploy(self, version, transfer="push", url=""):
        """One run: {seconds, bytes (summed over the hosts), objects, changed (summed task count)}."""
        extra = {"deploy_version": version, "deploy_ref": "app/" + version, "deploy_transfer": transfer, "deploy_pull_url": url}
        argv = [os.path.join(VENV_BIN, "ansible-playbook"), "-i", self.fleet.inventory_path, PLAYBOOK, "-e", "@" + self.common,
                "-e", json.dumps(extra), "--forks", str(self.forks)]
        took, proc = timed_command(argv, self.env, who="bench/deploy.py")
        with open(self.out, encoding="utf-8") as f:
            transferred = json.load(f)
        os.unlink(self.out)
        names = [h["name"] for h in self.fleet.hosts]
        missing = [n for n in names if "bytes_sent" not in transferred.get(n, {})]
        if missing:
            raise SystemExit("bench/deploy.py: no deploy result from %s:\n%s" % (", ".join(missing), proc.stdout[-3000:]))
        recap = play_recap(proc.stdout)
        # deploy_result's bytes_sent / objects_sent: the push's, or the pull's bytes_fetched / objects_fetched
        return {"s": round(took, 2), "bytes": sum(int(transferred[n]["bytes_sent"]) for n in names),
                "objects": sum(int(transferred[n]["objects_sent"]) for n in names),
                "changed": sum(recap.get(n, {}).get("changed", 0) for n in names)}

    def adhoc(self, module, args):
        argv = [os.path.join(VENV_BIN, "ansible"), "-i", self.fleet.inventory_path, "fleet", "-m", module, "-a", args,
                "--forks", str(self.forks)]
        return timed_command(argv, self.env, who="bench/deploy.py")[0]

    def ping(self):
        return timed_command(ping_command(self.fleet.inventory_path, self.forks), self.env, who="bench/deploy.py")[0]

    def reset(self):
        """Every host back to nothing deployed: the mount and its fstab line gone, the repository deleted."""
        self.adhoc("composefs.fleet.mount", "path=/srv/app state=absent fstab=/srv/fstab")
        self.adhoc("ansible.builtin.file", "path={{ fleet_paths['%s'] }}/repo state=absent" % KIND)


def measure_mode(deployer, transfer, repeat, url="", pings=None):
    """v1, v2, then the no-op rerun ``repeat`` times (alternating with ping when ``pings`` is a list)."""
    row = {"transfer": transfer}
    for version in VERSIONS:
        row[version] = deployer.deploy(version, transfer, url)
        print("  %s %s: %.2f s, %d bytes (%d objects), changed tasks %d" % (
            transfer, version, row[version]["s"], row[version]["bytes"], row[version]["objects"], row[version]["changed"]), flush=True)
    noops = []
    for _run in range(repeat):
        noops.append(deployer.deploy("v2", transfer, url))
        if pings is not None:
            pings.append(deployer.ping())
    changed = max(r["changed"] for r in noops)
    if changed or any(r["bytes"] for r in noops):
        raise SystemExit("bench/deploy.py: the %s no-op rerun changed something: %s" % (transfer, noops))
    row["noop"] = {"s": round(statistics.median(r["s"] for r in noops), 2), "runs": [r["s"] for r in noops], "bytes": 0, "objects": 0, "changed": 0}
    print("  %s no-op rerun: %.2f s (runs %s)" % (transfer, row["noop"]["s"], row["noop"]["runs"]), flush=True)
    return row


def measure(harness, n, source, work, repeat, serial, nginx_server):
    state = os.path.join(work, "fleet-%d" % n)
    start = time.perf_counter()
    fleet = harness.up(state, hosts=n, kinds=[KIND])
    built = time.perf_counter() - start
    try:
        print("N=%d: fleet up in %.1f s, load %.2f" % (n, built, os.getloadavg()[0]), flush=True)
        deployer = Deployer(fleet, source, state, serial)
        cold_ping = deployer.ping()  # the first connections: ssh handshakes, ControlPersist masters
        pings = []
        push = measure_mode(deployer, "push", repeat, pings=pings)
        ping = round(statistics.median(pings), 2)
        print("  ping: %.2f s (runs %s); no-op / ping %.2fx" % (ping, [round(p, 2) for p in pings], push["noop"]["s"] / ping), flush=True)
        deployer.reset()
        bridge = "%s.%d.1" % (harness.SUBNET, fleet.slot)
        # every host fetches with deploy_pull_workers (4) connections at once
        with nginx_server(source, os.path.join(work, "nginx-%d" % n), address=bridge, connections=max(64, 8 * n)) as url:
            pull = measure_mode(deployer, "pull", 1, url=url)
        deployer.reset()
    finally:
        start = time.perf_counter()
        fleet.down()
        down = time.perf_counter() - start
    return {"hosts": n, "forks": n, "serial": serial, "ping_s": ping, "ping_runs": [round(p, 2) for p in pings],
            "cold_ping_s": round(cold_ping, 2), "push": push, "pull": pull, "noop_ratio": round(push["noop"]["s"] / ping, 2),
            "pull_push_v2_time": round(pull["v2"]["s"] / push["v2"]["s"], 2),
            "pull_push_v2_bytes": round(pull["v2"]["bytes"] / push["v2"]["bytes"], 3) if push["v2"]["bytes"] else None,
            "up_s": round(built, 2), "down_s": round(down, 2)}


def tables(rows, v2_changed, v2_image):
    runs = []
    for r in rows:
        for mode in ("push", "pull"):
            for step in ("v1", "v2", "noop"):
                m = r[mode][step]
                runs.append([r["hosts"], mode, {"noop": "no-op rerun", "v1": "v1 (empty hosts)", "v2": "v2 (one file changed)"}[step],
                             "%.2f" % m["s"], "{:,}".format(m["bytes"]), "{:,}".format(m["bytes"] // r["hosts"]), m["objects"], m["changed"]])
    out = ["### Each run (forks = N)", "", markdown_table(
        ["hosts", "mode", "run", "wall (s)", "bytes, all hosts", "bytes per host", "objects", "changed tasks"], runs,
        ["r", "l", "l", "r", "r", "r", "r", "r"])]
    out += ["", "v2 per host at best: the changed file (%s B) + the v2 image (%s B) = %s B." % (
        "{:,}".format(v2_changed), "{:,}".format(v2_image), "{:,}".format(v2_changed + v2_image))]
    ratios = [[r["hosts"], "%.2f" % r["ping_s"], "%.2f" % r["push"]["noop"]["s"], "**%.2fx**" % r["noop_ratio"],
               "%.2f / %.2f" % (r["push"]["v2"]["s"], r["pull"]["v2"]["s"]), "%.2fx" % r["pull_push_v2_time"],
               "{:,} / {:,}".format(r["push"]["v2"]["bytes"], r["pull"]["v2"]["bytes"]),
               "%.3fx" % r["pull_push_v2_bytes"] if r["pull_push_v2_bytes"] is not None else "-"] for r in rows]
    out += ["", "### Ratios", "", markdown_table(
        ["hosts", "ping (s)", "no-op push rerun (s)", "no-op / ping", "v2 push / pull (s)", "pull / push time", "v2 bytes push / pull",
         "pull / push bytes"], ratios)]
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--sizes", default="20,50", help="fleet sizes (default 20,50)")
    parser.add_argument("--repeat", type=int, default=3, help="timed no-op reruns and pings per size (median kept)")
    parser.add_argument("--serial", default="100%", help="deploy_serial: hosts per batch (default 100%%: one batch)")
    parser.add_argument("--markdown", help="write the tables to this file as well")
    parser.add_argument("--strict", action="store_true", help="exit 1 when the no-op rerun takes more than %.1fx ping" % BAR_RATIO)
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",") if s]
    harness = fleet_harness()
    problems = harness.missing_prerequisites()
    if problems:
        raise SystemExit("bench/deploy.py: the fleet cannot be built:\n  " + "\n  ".join(problems))
    nginx_server = load_module("composefs_fleet_nginx_server", os.path.join("tests", "nginx_server.py"))
    nginx_server.nginx_binary()  # fails now, naming the package, rather than after the push runs
    header = "machine: %s, %d cores, Python %s, load average %.2f at start" % (
        platform.platform(), os.cpu_count(), platform.python_version(), os.getloadavg()[0])
    print(header, flush=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="cfsf-bench-deploy-") as work:
        source, built = prepare_source(work)
        v2_image = image_size(source, "v2")
        print("images v1, v2 built into %s in %.1f s (v2 image %d B)" % (source, built, v2_image), flush=True)
        for n in sizes:
            rows.append(measure(harness, n, source, work, args.repeat, args.serial, nginx_server.nginx_server))
    out = [header, "", "deploy_serial %s, forks = N, %d no-op reruns and pings alternating (medians), one run of each of the others." % (
        args.serial, args.repeat), ""]
    out += tables(rows, make_trees().FILE_SIZE, v2_image)
    out += ["", "Fleet set-up and teardown: " + ", ".join("N=%d up %.1f s / down %.1f s" % (r["hosts"], r["up_s"], r["down_s"]) for r in rows) + "."]
    verdict = all(r["noop_ratio"] <= BAR_RATIO for r in rows)
    out += ["", "Bar: the no-op rerun <= %.1fx ping: %s (%s)." % (BAR_RATIO, "met" if verdict else "MISSED", ", ".join(
        "N=%d %.2fx" % (r["hosts"], r["noop_ratio"]) for r in rows))]
    text = "\n".join(out) + "\n"
    print("\n" + text)
    results_dir = os.path.join(TOP, "bench", "results")
    os.makedirs(results_dir, exist_ok=True)
    with open(os.path.join(results_dir, "deploy.json"), "w", encoding="utf-8") as f:
        json.dump({"when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "machine": header, "serial": args.serial,
                   "v2_image_bytes": v2_image, "changed_file_bytes": make_trees().FILE_SIZE, "sizes": rows}, f, indent=1)
    if args.markdown:
        with open(args.markdown, "w", encoding="utf-8") as f:
            f.write(text)
    return 1 if args.strict and not verdict else 0


if __name__ == "__main__":
    sys.exit(main())
