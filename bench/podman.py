"""Real-Podman benchmark: image 2 after image 1, zstd:chunked + composefs against gzip, on the same host, same run.

The parts are the real-Podman tier's (tests/podman/realpodman.py): the fleet's Podman host (Debian sid's
Podman 5.8 on this machine's kernel), sid's docker-registry on that host's loopback, and two one-layer
images that differ in one file of DATA_FILE_BYTES random bytes. The host is configured by the
composefs.fleet.podman role (use_composefs: true; convert_images stays off, so gzip layers stay gzip).

For each mode, ``--repeat`` times, in the emptied store (``podman rmi -a``): pull image 1, then time the
pull of image 2 and count the blob bytes the registry served for it (its access log); then the disk used by
the store holding both images (``du``). The reference is the gzip pull measured in the same run; the ratio is
gzip / zstd:chunked (> 1: zstd:chunked fetches fewer bytes, takes less time).

    python bench/podman.py [--repeat 3]

Not a test: prints a table and writes bench/results/podman.json.
"""

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(TOP, "tests", "podman"))

import realpodman as rp  # noqa: E402

MODES = (("zstd:chunked + composefs", "zstd"), ("gzip (reference)", "gzip"))


def measure(fleet, registry, suffix):
    """Image 2 after image 1 in the host's store (emptied before and after; the configuration is the role's)."""
    store = "/var/lib/containers/storage"
    rp.ssh(fleet, "podman rmi -a -f >/dev/null 2>&1; podman pull -q --tls-verify=false %s >/dev/null" % rp.image("1-" + suffix))
    start = registry.log_size()
    took_ns = rp.ssh(fleet, "s=$(date +%%s%%N); podman pull -q --tls-verify=false %s >/dev/null; e=$(date +%%s%%N); echo $((e - s))"
                     % rp.image("2-" + suffix))
    fetched, _ranges = rp.blob_bytes(registry.requests_since(start))
    disk_kib = int(rp.ssh(fleet, "du -sk %s/overlay" % store).split()[0])
    composefs = rp.ssh(fleet, "ls -d %s/overlay/*/composefs-data 2>/dev/null | wc -l" % store).strip()
    rp.ssh(fleet, "podman rmi -a -f >/dev/null 2>&1")
    return {"seconds": int(took_ns) / 1e9, "bytes": fetched, "disk_kib": disk_kib, "composefs_layers": int(composefs)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    problems = rp.missing_prerequisites()
    if problems:
        raise SystemExit("bench/podman.py cannot run:\n  " + "\n  ".join(problems))
    state = tempfile.mkdtemp(prefix="cfsf-bench-podman-")
    fleet = rp.harness().up(state, hosts=0, podman=1)
    registry = rp.Registry(fleet)
    try:
        registry.start()
        images = rp.build_and_push(fleet)
        rc, out, _report = rp.run_role(fleet, os.path.join(state, "reports"), podman_use_composefs=True)
        if rc != 0:
            raise SystemExit("bench/podman.py: the podman role failed:\n%s" % out[-3000:])
        runs = {suffix: [] for _title, suffix in MODES}
        for _attempt in range(args.repeat):
            for _title, suffix in MODES:  # alternate, so both see the same machine load
                runs[suffix].append(measure(fleet, registry, suffix))
    finally:
        registry.stop()
        fleet.down()
    rows = {}
    for title, suffix in MODES:
        rows[suffix] = {key: statistics.median(r[key] for r in runs[suffix]) for key in ("seconds", "bytes", "disk_kib", "composefs_layers")}
        rows[suffix]["title"] = title
        rows[suffix]["layer_bytes"] = images["2-" + suffix]["layer_bytes"]
    z, g = rows["zstd"], rows["gzip"]
    print("image 2 after image 1 (one layer of %.1f MiB; one file of %d KiB changed), median of %d, emptied store each:"
          % (g["layer_bytes"] / 2**20, rp.DATA_FILE_BYTES // 1024, args.repeat))
    print("%-28s %14s %10s %16s %10s" % ("mode", "bytes fetched", "pull s", "disk, both KiB", "cfs layers"))
    for suffix in ("zstd", "gzip"):
        r = rows[suffix]
        print("%-28s %14d %10.3f %16d %10d" % (r["title"], r["bytes"], r["seconds"], r["disk_kib"], r["composefs_layers"]))
    print("ratio gzip / zstd:chunked: bytes %.1fx, pull time %.2fx, disk %.2fx"
          % (g["bytes"] / max(z["bytes"], 1), g["seconds"] / z["seconds"], g["disk_kib"] / max(z["disk_kib"], 1)), flush=True)
    out = os.path.join(TOP, "bench", "results")
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "podman.json"), "w", encoding="utf-8") as f:
        json.dump({"when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "repeat": args.repeat, "rows": rows, "runs": runs}, f, indent=1)
    return rows


if __name__ == "__main__":
    main()
