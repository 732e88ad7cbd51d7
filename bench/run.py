"""Run every benchmark (make bench); each prints ours against the reference tool measured in the same run.

Results are also written to bench/results/latest.json. Not a test: nothing here asserts timings.
"""
import json
import os
import platform
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import fsverity_digest  # noqa: E402
import image_build  # noqa: E402
import memory  # noqa: E402
import fleet  # noqa: E402
import deploy  # noqa: E402
import podman  # noqa: E402


def fleet_bench(results):
    # Its own tables (and docs/benchmarks-fleet.md when asked): N = 5, 10, 20 hosts, forks = N.
    fleet.main(["--repeat", "3"])


def deploy_bench(results):
    # Its own tables and bench/results/deploy.json: push v1, v2, the no-op rerun against ping, pull against push.
    deploy.main(["--sizes", "20", "--repeat", "3"])  # 50 hosts: bench/deploy.py --sizes 20,50


def podman_bench(results):
    # zstd:chunked + composefs against gzip on the real Podman host, same run (bench/results/podman.json)
    rows = podman.main(["--repeat", "3"])
    results.append({"name": "podman: image 2 after image 1", "zstd_chunked": rows["zstd"], "gzip": rows["gzip"]})


BENCHES = [("fs-verity digest", fsverity_digest.main), ("composefs image", image_build.main),
           ("peak memory", memory.main), ("fleet: verity_report vs ping", fleet_bench),
           ("fleet: deploy (push, no-op rerun vs ping, pull)", deploy_bench),
           ("real Podman: zstd:chunked + composefs vs gzip", podman_bench)]


def main(argv=None):
    """``run.py [WORD...]``: only the benchmarks whose title contains one of the words (default: all)."""
    words = sys.argv[1:] if argv is None else argv
    results = []
    print("machine: %s, %d cores, Python %s" % (platform.platform(), os.cpu_count(), platform.python_version()))
    for title, fn in BENCHES:
        if words and not any(word in title for word in words):
            continue
        print("== %s" % title, flush=True)
        fn(results)
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "latest.json"), "w") as f:
        json.dump({"when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "results": results}, f, indent=1)


if __name__ == "__main__":
    main()
