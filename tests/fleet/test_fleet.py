"""The SSH test fleet of tests/fleet/harness.py: build it, reach it with Ansible, check that
the hosts' mounts are isolated, tear it down and find nothing left (docs/fleet-tests.md).

A missing prerequisite (root, iproute2, openssh-server, mkfs tools, the guest kernel for the
VM host...) FAILS the test, naming it; nothing here skips.
"""

import base64
import hashlib
import json
import os
import re
import shlex
import subprocess
import sys

import pytest
from glib_helper import serialize, write_ostree_booted

from ansible_collections.composefs.fleet.plugins.module_utils.fsverity.digest import data_digest

HERE = os.path.dirname(os.path.abspath(__file__))


harness = sys.modules["composefs_fleet_harness"]  # loaded by conftest.py
VENV_BIN = os.path.join(harness.TOP, ".venv", "bin")
ANSIBLE = os.path.join(VENV_BIN, "ansible")
PYTHON_HOSTS = ["ns01", "ns02"]
NOPY = "nopy01"


def require(vm=False):
    problems = harness.missing_prerequisites(vm=vm)
    if not os.path.exists(ANSIBLE):
        problems.append("%s is missing: run scripts/setup-venv.sh" % ANSIBLE)
    if problems:
        pytest.fail("the test fleet cannot be built:\n  " + "\n  ".join(problems), pytrace=False)


def ansible(fleet, pattern, *args, output=False):
    """Ad-hoc ansible on the fleet's inventory; returns (exit code, {host: result}) from ``--tree``, and its output if asked."""
    tree = os.path.join(fleet.state_dir, "ansible-tree")
    if os.path.isdir(tree):
        for name in os.listdir(tree):
            os.unlink(os.path.join(tree, name))
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(harness.TOP, "ansible.cfg"), PATH=VENV_BIN + os.pathsep + os.environ.get("PATH", ""))
    proc = subprocess.run([ANSIBLE, "-i", fleet.inventory_path, pattern, "--tree", tree] + list(args), cwd=harness.TOP, env=env,
                          capture_output=True, text=True, timeout=300, check=False)
    results = {}
    for name in sorted(os.listdir(tree)) if os.path.isdir(tree) else []:
        with open(os.path.join(tree, name), encoding="utf-8") as f:
            results[name] = json.load(f)
    if not results:
        pytest.fail("ansible reported no host (exit %d):\n%s\n%s" % (proc.returncode, proc.stdout, proc.stderr), pytrace=False)
    if output:
        return proc.returncode, results, proc.stdout + proc.stderr
    return proc.returncode, results


def independent_leftovers(fleet):
    """What of ``fleet`` is still on the machine, found with the system's tools (not the harness's)."""
    prefix, state = fleet.prefix, fleet.state_dir
    found = []
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    found += ["netns " + line for line in netns.splitlines() if line.startswith(prefix)]
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True, check=True).stdout
    found += ["link " + line.split(":")[1].strip() for line in links.splitlines() if ": %s" % prefix in line]
    loops = subprocess.run(["losetup", "-a"], capture_output=True, text=True, check=True).stdout
    found += ["loop " + line for line in loops.splitlines() if state in line or prefix in line]
    with open("/proc/mounts", encoding="utf-8") as f:
        found += ["mount " + line.strip() for line in f if prefix in line or state in line]
    ps = subprocess.run(["ps", "-eo", "pid=,stat=,args="], capture_output=True, text=True, check=True).stdout
    for line in ps.splitlines():
        pid, stat, args = line.split(None, 2) if len(line.split(None, 2)) == 3 else (line, "", "")
        if stat.startswith("Z") or int(pid) == os.getpid():
            continue
        ours = state in args or "%s/%s" % (harness.SSHD_DIR, prefix) in args or "-name %svm" % prefix in args
        if ours and re.search(r"\b(sshd|ssh|qemu-system-x86_64)\b", args):
            found.append("process " + line.strip())
    return found


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    require()
    fleet = harness.up(str(tmp_path_factory.mktemp("fleet")), hosts=len(PYTHON_HOSTS), no_python=1)
    try:
        yield fleet
    finally:
        fleet.down()  # idempotent: test_teardown_leaves_nothing has usually done it


def test_inventory_describes_every_host(fleet):
    with open(fleet.inventory_path, encoding="utf-8") as f:
        text = f.read()
    for host in fleet.hosts:
        assert "%s:\n" % host["name"] in text
        assert 'ansible_host: "%s"' % host["address"] in text
    for kind in harness.KINDS:
        assert '"%s": "%s"' % (kind.path, kind.verdict(harness.kernel_has_verity())) in text
    assert "ansible_ssh_private_key_file" in text and "StrictHostKeyChecking=no" in text and "UserKnownHostsFile=/dev/null" in text


def test_ping_across_the_fleet(fleet):
    rc, results = ansible(fleet, "fleet", "-m", "ansible.builtin.ping", "--forks", "5")
    assert sorted(results) == sorted(PYTHON_HOSTS + [NOPY])
    for name in PYTHON_HOSTS:
        assert results[name].get("ping") == "pong", results[name]
    # the host without Python answers SSH but cannot run a module: the failure names the interpreter
    nopy = results[NOPY]
    assert nopy.get("rc") == 127 and "ping" not in nopy, nopy
    assert "not found" in nopy.get("module_stderr", "") and "interpreter" in nopy.get("msg", ""), nopy
    assert rc == 2  # ansible's "some hosts failed"
    # ...while raw works there
    rc, results = ansible(fleet, NOPY, "-m", "ansible.builtin.raw", "-a", "command -v python3 python || echo no-python-here")
    assert rc == 0 and "no-python-here" in results[NOPY]["stdout"], results


def test_no_python_host_has_no_python(fleet):
    probe = "for p in python3 python python3.11 /usr/bin/python3 /usr/local/bin/python3; do command -v $p; done; echo done"
    assert fleet.ssh(NOPY, probe).stdout.split() == ["done"]
    assert "/usr/bin/python3" in fleet.ssh("ns01", probe).stdout


def test_verity_facts_reads_the_host_without_python(fleet):
    """One task for the whole fleet: the host without Python is read with raw commands by the action plugin, not failed."""
    for check in ([], ["--check"]):
        env_args = ["-m", "composefs.fleet.verity_facts", "-a", json.dumps(dict(paths=[k.path for k in harness.KINDS] + ["/nonexistent"])),
                    "--forks", "5"] + check
        rc, results = ansible(fleet, "fleet", *env_args)
        assert rc == 0, (check, results)
        by_source = dict((name, r["ansible_facts"]["composefs"]["source"]) for name, r in results.items())
        assert by_source == dict(ns01="module", ns02="module", nopy01="raw"), by_source
        raw, module = results[NOPY]["ansible_facts"]["composefs"], results["ns01"]["ansible_facts"]["composefs"]
        assert not results[NOPY].get("failed") and raw["note"] == "no python: raw facts only" and "warning" not in raw
        # the same verdicts, path by path, as the module decides on a host with Python
        assert [(e["path"], e["fstype"], e["verity"]) for e in raw["paths"]] == [(e["path"], e["fstype"], e["verity"]) for e in module["paths"]]
        assert raw["missing_paths"] == module["missing_paths"] == ["/nonexistent"]
        assert raw["kernel"]["fs_verity"] == module["kernel"]["fs_verity"]


# An ostree-booted look for a fleet host, all of it in the host's own tmpfs mounts: the sysroot in its /srv,
# /run/ostree-booted in its /run (the harness gives every namespace host both; nothing reaches the machine).
OSTREE_SYSROOT = "/srv/sysroot"
OSTREE_OSNAME = "fleetos"
CFS_IMAGE = b"the fleet test's stand-in for a deployment's composefs image\n" * 100
COMMIT_TYPE = "(a{sv}aya(say)sstayay)"


def _ay(data):
    return "[%s]" % ", ".join("byte 0x%02x" % b for b in data) if data else "@ay []"


def ostree_commit(cfs_digest):
    """A commit object as ostree writes it (GVariant serialized by GLib), carrying the image's composefs digest."""
    text = "({'ostree.composefs.digest.v0': <%s>, 'version': <'1'>}, @ay [], @a(say) [], 'fleet commit', '', uint64 0, %s, %s)" % (
        _ay(cfs_digest), _ay(hashlib.sha256(b"dirtree").digest()), _ay(hashlib.sha256(b"dirmeta").digest()))
    return bytes.fromhex(serialize([[COMMIT_TYPE, text]])[0]["hex"])


def make_ostree_host(fleet, name, tmp_path):
    """One deployment (commit, origin, .ostree.cfs), the repository config and /run/ostree-booted naming it as booted."""
    digest = data_digest(CFS_IMAGE)
    commit = ostree_commit(digest)
    checksum = hashlib.sha256(commit).hexdigest()  # an ostree commit is named by the SHA-256 of its bytes
    deploy = "%s/ostree/deploy/%s/deploy/%s.0" % (OSTREE_SYSROOT, OSTREE_OSNAME, checksum)
    objects = "%s/ostree/repo/objects/%s" % (OSTREE_SYSROOT, checksum[:2])
    files = [(deploy + "/.ostree.cfs", CFS_IMAGE), ("%s/%s.commit" % (objects, checksum[2:]), commit),
             (deploy + ".origin", b"[origin]\nrefspec=fleetos:fleetos/stable\n"),
             (OSTREE_SYSROOT + "/ostree/repo/config", b"[core]\nrepo_version=1\nmode=bare\n\n[ex-integrity]\ncomposefs=true\n")]
    script = ["set -e", "mkdir -p %s %s" % (shlex.quote(deploy), shlex.quote(objects))]
    script += ["echo %s | base64 -d > %s" % (base64.b64encode(data).decode(), shlex.quote(path)) for path, data in files]
    script.append("stat -c '%%d %%i' %s" % shlex.quote(deploy))
    dev, ino = (int(n) for n in fleet.ssh(name, "; ".join(script)).stdout.split())
    booted = tmp_path / ("ostree-booted-" + name)
    write_ostree_booted(booted, {
        "composefs": ["b", "true"], "composefs.verity": ["b", "false"], "sysroot-ro": ["b", "true"],
        "root.transient": ["b", "false"], "root.transient-ro": ["b", "false"],
        "backing-root-device-inode": ["(tt)", "(uint64 %d, uint64 %d)" % (dev, ino)],
    })
    fleet.ssh(name, "echo %s | base64 -d > /run/ostree-booted" % base64.b64encode(booted.read_bytes()).decode())
    return dict(checksum=checksum, digest=digest.hex())


def test_boot_facts_reads_the_host_without_python(fleet, tmp_path):
    """composefs.fleet.boot_facts over the fleet: the host without Python gets the full facts via raw, as the module reads them."""
    ostree_hosts = ["ns01", NOPY]
    try:
        made = dict((name, make_ostree_host(fleet, name, tmp_path)) for name in ostree_hosts)
        for check in ([], ["--check"]):
            rc, results, out = ansible(fleet, "fleet", "-m", "composefs.fleet.boot_facts", "-a",
                                       json.dumps(dict(sysroot=OSTREE_SYSROOT)), "--forks", "5", *check, output=True)
            assert rc == 0, (check, out)
            # one task, no red output: the host without Python succeeds, and nothing is warned (but the harness's own
            # use of --tree, which ansible-core 2.19 deprecates)
            assert "nopy01 | SUCCESS => " in out and not re.search(r"FAILED|fatal|UNREACHABLE|ignoring|\[ERROR\]", out), out
            warnings = [line for line in out.splitlines() if "WARNING]" in line and "--tree" not in line and "tree callback" not in line
                        and "Deprecation warnings can be disabled" not in line]
            assert warnings == [], warnings
            facts = dict((name, r["ansible_facts"]["composefs_boot"]) for name, r in results.items())
            assert dict((name, f["source"]) for name, f in facts.items()) == dict(ns01="module", ns02="module", nopy01="raw")
            assert not results[NOPY].get("failed") and results[NOPY]["changed"] is False
            assert (facts["ns02"]["kind"], facts["ns02"]["summary"]) == ("none", "none")
            raw, module = facts[NOPY], facts["ns01"]
            # the full facts via raw: the booted deployment (by the device and inode /run/ostree-booted records), its
            # commit and its image's digest (fsverity digest on the host) equal to the commit's composefs digest
            assert raw["errors"] == [] and raw["kind"] == "ostree" and raw["summary"] == "ostree: best-effort"
            assert raw["booted_deployment"] == made[NOPY]["checksum"] + ".0"
            cfs = raw["composefs"]
            assert (cfs["enabled"], cfs["mode"], cfs["decided_by"], cfs["verity_enforced"], cfs["signed"]) == (
                True, "yes", "/run/ostree-booted", False, False)
            # no prepare-root.conf on this host: ostree's default (no) differs from what this boot did
            assert (cfs["configured_mode"], cfs["configured_by"], cfs["pending"]) == ("no", "default", True)
            assert cfs["image_digest"] == cfs["image_digest_expected"] == made[NOPY]["digest"] and cfs["image_matches_commit"] is True
            [dep] = raw["deployments"]
            assert dep["booted"] and dep["commit"]["subject"] == "fleet commit" and dep["origin"] == {"origin": {"refspec": "fleetos:fleetos/stable"}}
            assert dep["composefs_image"]["enabled"] is False  # this machine's kernel has no fs-verity: measured by nobody
            assert raw["run_ostree_booted"]["composefs"] is True and raw["run_ostree_booted"]["sysroot-ro"] is True
            assert raw["repository"]["config"]["composefs"] == "yes"
            # the same facts as the module decides on a host with Python and the same sysroot
            for key in ("kind", "summary", "errors"):
                assert raw[key] == module[key], key
            assert raw["booted_deployment"].split(".")[0] == made[NOPY]["checksum"] == made["ns01"]["checksum"]
            assert raw["composefs"] == module["composefs"]
            assert [(d["checksum"], d["booted"], d["commit"], d["origin"]) for d in raw["deployments"]] == \
                [(d["checksum"], d["booted"], d["commit"], d["origin"]) for d in module["deployments"]]
            assert raw["repository"]["config"] == module["repository"]["config"]
    finally:
        for name in ostree_hosts:
            fleet.ssh(name, "rm -rf %s /run/ostree-booted" % OSTREE_SYSROOT, check=False)


def test_each_host_has_its_own_filesystems(fleet):
    devices = {}
    for name in PYTHON_HOSTS + [NOPY]:
        out = fleet.ssh(name, "findmnt -rn -o TARGET,SOURCE,FSTYPE").stdout
        mounts = dict((line.split()[0], line.split()[1:]) for line in out.splitlines() if line.startswith(harness.DATA_ROOT + "/"))
        for kind in harness.KINDS:
            source, fstype = mounts[kind.mountpoint]
            assert fstype == kind.fstype, (name, kind, mounts)
            if kind.size_mib:
                assert source == fleet.host(name)["loops"][kind.name]["device"]
                devices.setdefault(kind.name, set()).add(source)
        assert fleet.ssh(name, "test -d %s && echo yes" % harness.KINDS[0].path).stdout.strip() == "yes"
    # one loop device per host and kind
    assert all(len(devs) == 3 for devs in devices.values()), devices


def test_mounts_are_isolated_between_hosts(fleet):
    fleet.ssh("ns01", "mkdir -p /srv/probe && mount -t tmpfs cfsf-probe-ns01 /srv/probe && touch /srv/probe/seen "
                      "/srv/composefs-fleet/tmpfs/data/only-on-ns01")
    assert "cfsf-probe-ns01" in fleet.ssh("ns01", "cat /proc/self/mounts").stdout
    for other in ("ns02", NOPY):
        out = fleet.ssh(other, "cat /proc/self/mounts; ls -a /srv /srv/composefs-fleet/tmpfs/data").stdout
        assert "cfsf-probe-ns01" not in out and "probe" not in out and "only-on-ns01" not in out, out
    with open("/proc/mounts", encoding="utf-8") as f:
        root_mounts = f.read()
    # the machine itself sees none of the hosts' mounts: only the nsfs files of `ip netns`
    assert "cfsf-probe" not in root_mounts and "/srv/composefs-fleet" not in root_mounts
    assert [line for line in root_mounts.splitlines() if fleet.prefix in line and not line.startswith("nsfs /run/netns/")] == []
    # and a host's home is its own (no ~/.bashrc of the machine, no shared ~/.ansible)
    assert fleet.ssh("ns02", "ls -A /root").stdout.strip() in ("", ".ansible")


def test_teardown_leaves_nothing(fleet):
    assert independent_leftovers(fleet) != []  # the check sees a fleet that is up
    fleet.down()
    assert independent_leftovers(fleet) == []
    assert fleet.leftovers() == []
    assert not os.path.exists(fleet.inventory_path)
    fleet.down()  # idempotent
    proc = subprocess.run([sys.executable, os.path.join(HERE, "harness.py"), "down", "--state-dir", fleet.state_dir],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr


def test_down_cleans_up_after_a_crashed_up(tmp_path, monkeypatch):
    """`up` dies hard after the hosts started (no teardown of its own): a later `down` from another process cleans up."""
    require()
    crashed = harness.Fleet(str(tmp_path / "fleet"))

    def crash(*_args, **_kwargs):
        raise RuntimeError("simulated crash")

    monkeypatch.setattr(crashed, "_wait_ready", crash)
    monkeypatch.setattr(crashed, "down", lambda: None)  # as after SIGKILL: nothing unwinds
    with pytest.raises(RuntimeError, match="simulated crash"):
        crashed.up(hosts=2)
    try:
        assert len(independent_leftovers(crashed)) >= 5  # netns, veths, bridge, loops, sshd...
        proc = subprocess.run([sys.executable, os.path.join(HERE, "harness.py"), "down", "--state-dir", crashed.state_dir],
                              capture_output=True, text=True, check=False, timeout=120)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert independent_leftovers(crashed) == []
    finally:
        harness.Fleet(crashed.state_dir).down()


def test_vm_host_has_fs_verity(vm_fleet):
    """The QEMU guest of tests/vm as a fleet host: SSH through a loopback hostfwd, a kernel with fs-verity."""
    require(vm=True)
    vm = vm_fleet.host("vm01")
    assert vm["address"] == "127.0.0.1" and vm["kernel_verity"] is True
    rc, results = ansible(vm_fleet, "fleet", "-m", "ansible.builtin.ping")
    assert rc == 0 and results["vm01"].get("ping") == "pong", results
    out = vm_fleet.ssh("vm01", "ls /sys/fs/ext4/features/verity /sys/fs/btrfs/features/verity; findmnt -rn -o TARGET,FSTYPE").stdout
    assert "/sys/fs/ext4/features/verity" in out and "/sys/fs/btrfs/features/verity" in out
    for kind in harness.KINDS:
        assert "%s %s" % (kind.mountpoint, kind.fstype) in out, out
