"""The real-Podman tier's parts: the Podman host of the SSH fleet, a Distribution registry, two images.

Shared by tests/podman/test_podman_real.py and bench/podman.py. Standard library only.

* The fleet is tests/fleet/harness.py with one *Podman host* (``pod01``): its root is the cached Debian sid
  root filesystem (Podman 5.8, composefs, crun) under a throw-away overlay, its own sshd, the machine's kernel.
* The registry is sid's ``docker-registry`` (Distribution 2.8), run inside that host's network and mount
  namespaces on its loopback (``127.0.0.1:5000``), with its storage on the host's ``/srv`` tmpfs. The tier
  starts it and stops it; its access log (Apache combined format: status, bytes) is kept in the state
  directory, which is how the bytes a pull fetched are counted.
* The images are built on the Podman host with no base from outside: ``FROM scratch`` plus one ``COPY`` of a
  tree holding the host's static busybox and a few files of random data, so each image is ONE layer. Image 2
  is image 1 with one file changed (same size, other bytes). They are built in a store of their own
  (``--root /srv/cfsf-build/store``, vfs), so the store under test never sees them before it pulls them.
  One pair is pushed with ``--compression-format zstd:chunked`` (tags 1-zstd, 2-zstd), another pair, of other
  random data, with ``gzip`` (1-gzip, 2-gzip).
"""

import importlib.util
import json
import os
import re
import shlex
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.dirname(os.path.dirname(HERE))
VENV_BIN = os.path.join(TOP, ".venv", "bin")
HOST = "pod01"
REGISTRY = "127.0.0.1:5000"  # the Podman host's own loopback: only that host reaches it
REPO = "%s/cfsf/demo" % REGISTRY
# tag -> (image number, compression)
TAGS = {"1-zstd": (1, "zstd:chunked"), "2-zstd": (2, "zstd:chunked"), "1-gzip": (1, "gzip"), "2-gzip": (2, "gzip")}
DATA_FILES = 12  # files of random data in each image
DATA_FILE_BYTES = 256 * 1024
CHANGED_FILE = "/data/f07.bin"  # the one file image 2 changes
BUILD = "/srv/cfsf-build"
PODMAN_BUILD = "podman --root %s/store --runroot /run/cfsf-build --storage-driver vfs" % BUILD
REGISTRY_DIR = "/srv/cfsf-registry"
ACCESS_RE = re.compile(r'"(GET|HEAD) (\S+) HTTP/[0-9.]+" (\d{3}) (\d+)')


def harness():
    """tests/fleet/harness.py, loaded by path under the name the fleet tier uses."""
    name = "composefs_fleet_harness"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, os.path.join(TOP, "tests", "fleet", "harness.py"))
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def image(tag):
    return "%s:%s" % (REPO, tag)


def missing_prerequisites():
    problems = harness().missing_prerequisites(podman=True)
    if not os.path.exists(os.path.join(VENV_BIN, "ansible-playbook")):
        problems.append("%s/ansible-playbook is missing: run scripts/setup-venv.sh" % VENV_BIN)
    return problems


def ssh(fleet, command, check=True, timeout=300.0):
    """Run ``command`` on the Podman host; return its stdout (raises with stderr when it fails)."""
    return fleet.ssh(HOST, command, check=check, timeout=timeout).stdout


# ------------------------------------------------------------------ the registry
class Registry:
    """docker-registry serving on the Podman host's loopback; ``stop()`` ends it."""

    def __init__(self, fleet):
        self.fleet = fleet
        self.log_path = os.path.join(fleet.state_dir, "registry-access.log")
        self.proc = None

    def start(self, timeout=30.0):
        config = "\n".join([
            "version: 0.1",
            "log:",
            "  level: warn",  # keep the access log (one line per request) and little else
            "  accesslog:",
            "    disabled: false",
            "storage:",
            "  filesystem:",
            "    rootdirectory: %s/data" % REGISTRY_DIR,
            "http:",
            "  addr: %s" % REGISTRY,
            "",
        ])
        ssh(self.fleet, "mkdir -p %s && printf %%s %s > %s/config.yml" % (REGISTRY_DIR, shlex.quote(config), REGISTRY_DIR))
        pid = self.fleet.host(HOST)["pid"]  # the host's sshd: its namespaces are the host
        log = open(self.log_path, "ab")  # pylint: disable=consider-using-with
        try:
            self.proc = subprocess.Popen(
                ["nsenter", "--target", str(pid), "--mount", "--net", "--root", "--wd", "--",
                 "/usr/bin/docker-registry", "serve", "%s/config.yml" % REGISTRY_DIR],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
        finally:
            log.close()
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError("docker-registry exited %s:\n%s" % (self.proc.returncode, self.log_tail()))
            if "ok" in ssh(self.fleet, "busybox wget -q -O /dev/null http://%s/v2/ && echo ok || true" % REGISTRY):
                return self
            if time.monotonic() > deadline:
                raise RuntimeError("docker-registry did not answer on %s within %.0f s:\n%s" % (REGISTRY, timeout, self.log_tail()))
            time.sleep(0.2)

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)

    def log_tail(self, lines=20):
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as f:
                return "".join(f.readlines()[-lines:])
        except OSError:
            return ""

    def log_size(self):
        try:
            return os.path.getsize(self.log_path)
        except OSError:
            return 0

    def requests_since(self, offset, settle=0.3):
        """(method, path, status, bytes) of every request logged after byte ``offset`` of the access log."""
        time.sleep(settle)  # the access log line is written when the response completes
        with open(self.log_path, "rb") as f:
            f.seek(offset)
            text = f.read().decode("utf-8", "replace")
        return [(m.group(1), m.group(2), int(m.group(3)), int(m.group(4))) for m in ACCESS_RE.finditer(text)]


def blob_bytes(requests):
    """Bytes of blob bodies served (layers and configs), and how many of those were range (206) answers."""
    blobs = [r for r in requests if r[0] == "GET" and "/blobs/" in r[1]]
    return sum(r[3] for r in blobs), sum(1 for r in blobs if r[2] == 206)


# ------------------------------------------------------------------ the images
def build_and_push(fleet):
    """Build images 1 and 2 on the Podman host (own store) and push each tag of TAGS; return their facts.

    The zstd:chunked pair and the gzip pair are built from different random data: a store that holds a layer
    reuses it for any pull of the same uncompressed content, whatever its compression, so pairs sharing
    content would never show a gzip pull (or a gzip layer without composefs)."""
    script = "set -eu\nrm -rf {build}; mkdir -p {build}\n".format(build=BUILD)
    for variant in ("zstd", "gzip"):
        script += r"""
mkdir -p {build}/{v}/tree/bin {build}/{v}/tree/data
cd {build}/{v}
cp /usr/bin/busybox tree/bin/busybox
ln -s busybox tree/bin/sh
i=1; while [ $i -le {n} ]; do head -c {size} /dev/urandom > tree/data/f$(printf %02d $i).bin; i=$((i+1)); done
printf 'FROM scratch\nCOPY tree /\nCMD ["/bin/busybox", "sh"]\n' > Containerfile
{podman} build -q -t cfsf-demo:1-{v} . >/dev/null
(cd tree && busybox sha256sum bin/busybox data/*.bin) > {build}/sums-1-{v}
head -c {size} /dev/urandom > tree{changed}
{podman} build -q -t cfsf-demo:2-{v} . >/dev/null
(cd tree && busybox sha256sum bin/busybox data/*.bin) > {build}/sums-2-{v}
""".format(build=BUILD, v=variant, n=DATA_FILES, size=DATA_FILE_BYTES, podman=PODMAN_BUILD, changed=CHANGED_FILE)
    for tag, (_number, compression) in TAGS.items():
        script += "{podman} push -q --tls-verify=false --compression-format {c} --force-compression cfsf-demo:{tag} {ref}\n".format(
            podman=PODMAN_BUILD, c=compression, tag=tag, ref=image(tag))
    ssh(fleet, script, timeout=600)
    facts = {}
    for tag in TAGS:
        manifest = json.loads(ssh(fleet, "skopeo inspect --raw --tls-verify=false docker://%s" % image(tag)))
        layers = manifest["layers"]
        facts[tag] = {"layers": len(layers), "layer_bytes": sum(layer["size"] for layer in layers),
                      "media_types": sorted({layer["mediaType"] for layer in layers}),
                      "annotations": sorted({key for layer in layers for key in (layer.get("annotations") or {})})}
    return facts


def expected_files(fleet, tag):
    """sha256 of each file of image ``tag``'s tree, as built: {"/data/f01.bin": digest, ...}."""
    out = ssh(fleet, "cat %s/sums-%s" % (BUILD, tag))
    return {"/" + line.split(None, 1)[1].strip(): line.split()[0] for line in out.splitlines() if line.strip()}


# ------------------------------------------------------------------ the role
def run_role(fleet, report_dir, check=False, **variables):
    """Run the composefs.fleet.podman role on the Podman host through tests/podman/role.yml (which imports
    playbooks/podman.yml); return (exit code, output, the host's podman_verify_report)."""
    os.makedirs(report_dir, exist_ok=True)
    report = os.path.join(report_dir, "%s.json" % HOST)
    if os.path.exists(report):
        os.unlink(report)
    variables = dict(dict(podman_hosts="fleet_podman", podman_become=False, podman_install=False,
                          cfsf_report_dir=report_dir), **variables)
    argv = [os.path.join(VENV_BIN, "ansible-playbook"), "-i", fleet.inventory_path, os.path.join(HERE, "role.yml"),
            "-e", json.dumps(variables)]
    if check:
        argv.append("--check")
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(TOP, "ansible.cfg"), ANSIBLE_FORCE_COLOR="0", ANSIBLE_NOCOLOR="1",
               PATH=VENV_BIN + os.pathsep + os.environ.get("PATH", ""))
    proc = subprocess.run(argv, cwd=TOP, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=600, check=False)
    result = None
    if os.path.exists(report):
        with open(report, encoding="utf-8") as f:
            result = json.load(f)
    return proc.returncode, proc.stdout + proc.stderr, result


def recap(output):
    """{'ok': n, 'changed': n, 'failed': n, ...} of the Podman host from a PLAY RECAP."""
    m = re.search(r"^%s\s*:\s*(.*)$" % HOST, output, re.M)
    return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", m.group(1))} if m else {}
