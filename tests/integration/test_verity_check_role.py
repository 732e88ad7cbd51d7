"""The verity_check role and playbooks/verity_report.yml, run for real with ansible-playbook.

A small "fleet" on this host: two hosts with Python over the local connection, each
examining different loop-mounted filesystems, one host whose Python is missing (the
raw fallback), and one unreachable host (ssh to a closed loopback port). The report
must cover all four; a second run must change nothing (idempotence); check mode must
not write on the hosts; enforcing fails the hosts that fall short.
"""
import json
import os
import re
import subprocess
import sys

import loopfs
import pytest
from support import TOP

from ansible_collections.composefs.fleet.plugins.module_utils.verity_facts.paths import KERNEL_WITHOUT_VERITY
from ansible_collections.composefs.fleet.plugins.plugin_utils.report_render import md
from ansible_collections.composefs.fleet.plugins.plugin_utils.verity_report import RAW_NOTE

fleet_filesystems = loopfs.fleet_filesystems  # the fixture
BIN = os.path.dirname(sys.executable)
PLAYBOOK = os.path.join(TOP, "playbooks", "verity_report.yml")
_RECAP = re.compile(r"^(\S+)\s+:\s+ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)\s+skipped=(\d+)\s+rescued=(\d+)\s+ignored=(\d+)")


def _env():
    return dict(os.environ, ANSIBLE_CONFIG=os.path.join(TOP, "ansible.cfg"), ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0")


def run_playbook(inventory, *args, cwd=TOP, playbook=PLAYBOOK, env=None):
    argv = [os.path.join(BIN, "ansible-playbook"), "-i", str(inventory), playbook] + list(args)
    proc = subprocess.run(argv, cwd=str(cwd), env=env or _env(), stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False)
    recap = {}
    for line in proc.stdout.splitlines():
        match = _RECAP.match(line)
        if match:
            keys = ("ok", "changed", "unreachable", "failed", "skipped", "rescued", "ignored")
            recap[match.group(1)] = dict(zip(keys, (int(g) for g in match.groups()[1:])))
    return proc, recap


@pytest.fixture(scope="module")
def fleet(fleet_filesystems, tmp_path_factory):
    work = tmp_path_factory.mktemp("verity-check")
    m = dict((kind, mounted.mountpoint) for kind, mounted in fleet_filesystems.items())
    local = dict(ansible_connection="local", ansible_python_interpreter=sys.executable)
    inventory = dict(all=dict(hosts={
        "verity-fs": dict(local, verity_check_paths=[m["ext4-verity"], m["btrfs"]]),
        "other-fs": dict(local, verity_check_paths=[m["xfs"], m["tmpfs"], m["overlay"], m["ext4-plain"]],
                         verity_check_required_paths=[m["xfs"], "/no/such/store"]),
        "coreos-like": dict(ansible_connection="local", ansible_python_interpreter="/nonexistent/bin/python3",
                            verity_check_paths=[m["ext4-verity"], m["ext4-plain"], "/"]),
        "gone": dict(ansible_host="127.0.0.1", ansible_port=1, ansible_connection="ssh", ansible_ssh_common_args="-o ConnectTimeout=5"),
    }))
    path = work / "inventory.json"
    path.write_text(json.dumps(inventory), encoding="utf-8")
    return dict(inventory=path, mounts=m, work=work)


def _report(directory):
    with open(os.path.join(str(directory), "report.json"), encoding="utf-8") as f:
        return json.load(f)


def test_report_covers_every_host(fleet):
    report_dir = fleet["work"] / "report"
    proc, recap = run_playbook(fleet["inventory"], "-e", "verity_check_report_dir=%s" % report_dir)
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-3000:]
    assert set(recap) == {"verity-fs", "other-fs", "coreos-like", "gone"}
    assert "report: {0}/report.json, {0}/report.md, {0}/report.html".format(report_dir) in proc.stdout
    report = _report(report_dir)
    hosts = dict((h["host"], h) for h in report["hosts"])
    assert [h["host"] for h in report["hosts"]] == ["verity-fs", "other-fs", "coreos-like", "gone"]
    m = fleet["mounts"]

    # this host's kernel has no fs-verity: every reachable host fails, every path is unsupported
    for name in ("verity-fs", "other-fs", "coreos-like"):
        host = hosts[name]
        assert host["verdict"] == "fail", name
        assert host["kernel"]["fs_verity"] is False and host["kernel"]["release"] == os.uname().release
        assert host["problems"][0]["message"] == "kernel lacks fs-verity (CONFIG_FS_VERITY)"
        assert all(p["verity"] == "unsupported" and p["reason"] == KERNEL_WITHOUT_VERITY for p in host["paths"]), name
    assert [(p["path"], p["fstype"]) for p in hosts["verity-fs"]["paths"]] == [(m["ext4-verity"], "ext4"), (m["btrfs"], "btrfs")]
    # per-host policy: other-fs requires the xfs path and a store that does not exist
    other = hosts["other-fs"]
    assert other["policy"]["required_paths"] == [m["xfs"], "/no/such/store"]
    assert [p["path"] for p in other["paths"] if p["required"]] == [m["xfs"]]
    assert "/no/such/store does not exist" in [p["message"] for p in other["problems"]]
    assert [p["fstype"] for p in other["paths"]] == ["xfs", "tmpfs", "overlay", "ext4"]
    # no Python: raw facts, same verdicts
    coreos = hosts["coreos-like"]
    assert coreos["status"] == "raw" and coreos["note"] == RAW_NOTE
    assert [(p["path"], p["fstype"]) for p in coreos["paths"]] == [(m["ext4-verity"], "ext4"), (m["ext4-plain"], "ext4"), ("/", os_root_fstype())]
    gone = hosts["gone"]
    assert gone["verdict"] == "unreachable" and "port 1" in gone["message"]
    assert report["counts"] == dict(total=4, fail=3, unreachable=1, error=0, unknown=0, **{"pass": 0})
    assert report["groups"]["fail"] == ["verity-fs", "other-fs", "coreos-like"] and report["raw_only"] == ["coreos-like"]

    # the boot column (read by the same verity_facts task, boot: true): this machine boots neither ostree nor bootc; the
    # host without Python is read with raw commands too; the unreachable host's cell says why it is empty
    boots = dict((name, (h["boot"]["status"], h["boot"].get("kind"), h["boot"].get("summary"))) for name, h in hosts.items())
    assert boots == {"verity-fs": ("ok", "none", "none"), "other-fs": ("ok", "none", "none"), "coreos-like": ("raw", "none", "none"),
                     "gone": ("unreachable", None, None)}, boots
    assert report["boot_counts"] == {"none": 3, "not read": 1}
    assert "boot: 3 none, 1 not read" in proc.stdout

    markdown = (report_dir / "report.md").read_text(encoding="utf-8")
    assert "| coreos-like | fail (no python: raw facts only) | %s | no | none |" % os.uname().release in markdown
    assert "| gone | unreachable (" in markdown and "| not read: unreachable |" in markdown
    # the path is a mkdtemp name: a "_" at its edge ("xfs-1d9sl39_/mnt") is escaped in report.md
    assert "| %s | xfs | unsupported | kernel built without CONFIG_FS_VERITY |" % md(m["xfs"]) in markdown
    page = (report_dir / "report.html").read_text(encoding="utf-8")
    for name in hosts:
        assert 'data-host="%s"' % name in page

    # idempotence: the second run changes nothing anywhere (the report's content is the same)
    before = dict((f, (report_dir / f).read_bytes()) for f in ("report.json", "report.md", "report.html"))
    proc, recap = run_playbook(fleet["inventory"], "-e", "verity_check_report_dir=%s" % report_dir)
    assert proc.returncode == 0, proc.stdout[-5000:]
    assert dict((h, r["changed"]) for h, r in recap.items()) == dict((h, 0) for h in recap), recap
    assert before == dict((f, (report_dir / f).read_bytes()) for f in before)


def os_root_fstype():
    with open("/proc/self/mountinfo", encoding="utf-8") as f:
        fstype = None
        for line in f:
            fields = line.split(" ")
            if fields[4] == "/":
                fstype = fields[fields.index("-") + 1]
    return fstype


def test_first_run_changes_only_the_report(fleet):
    report_dir = fleet["work"] / "fresh-report"
    proc, recap = run_playbook(fleet["inventory"], "-e", "verity_check_report_dir=%s" % report_dir)
    assert proc.returncode == 0, proc.stdout[-5000:]
    # the run_once report task (on the controller) counts for the first host; nothing changes on the hosts
    assert recap["verity-fs"]["changed"] == 1 and all(recap[h]["changed"] == 0 for h in ("other-fs", "coreos-like", "gone")), recap
    # the host without Python is read by the facts task itself: not failed, not "ignored", no red output
    assert recap["coreos-like"]["ignored"] == 0 and recap["coreos-like"]["failed"] == 0 and recap["gone"]["ignored"] == 1
    coreos_lines = [line for line in (proc.stdout + proc.stderr).splitlines() if "coreos-like" in line]
    assert coreos_lines and not [line for line in coreos_lines if re.search(r"fatal|ERROR|ignoring|FAILED", line)], coreos_lines
    # the only fatal (and "...ignoring") is the unreachable host's
    assert proc.stdout.count("...ignoring") == 1 and proc.stdout.count("fatal: [") == 1 and "fatal: [gone]" in proc.stdout, proc.stdout
    errors = [line for line in (proc.stdout + proc.stderr).splitlines() if "[ERROR]" in line or "[WARNING]" in line]
    assert len(errors) == 1 and "port 1: Connection refused" in errors[0], errors


def test_check_mode_writes_the_same_report(fleet):
    """Check mode reads the same facts (the raw reads of the host without Python too): the report does not get worse."""
    report_dir = fleet["work"] / "check-report"
    proc, recap = run_playbook(fleet["inventory"], "-e", "verity_check_report_dir=%s" % report_dir)
    assert proc.returncode == 0, proc.stdout[-5000:]
    before = dict((f, (report_dir / f).read_bytes()) for f in ("report.json", "report.md", "report.html"))
    proc, recap = run_playbook(fleet["inventory"], "--check", "-e", "verity_check_report_dir=%s" % report_dir)
    assert proc.returncode == 0, proc.stdout[-5000:]
    assert "skipping: [coreos-like]" not in proc.stdout
    assert before == dict((f, (report_dir / f).read_bytes()) for f in before)
    assert dict((h, r["changed"]) for h, r in recap.items()) == dict((h, 0) for h in recap), recap
    assert _report(report_dir)["hosts"][2]["status"] == "raw"


def test_check_mode_with_the_probe_writes_nothing(fleet):
    report_dir = fleet["work"] / "check-probe-report"
    proc, recap = run_playbook(fleet["inventory"], "--check", "-e", "verity_check_report_dir=%s" % report_dir,
                               "-e", '{"verity_check_probe": true}')
    assert proc.returncode == 0, proc.stdout[-5000:]
    # probed verdicts need the probe, which check mode does not run: the report is only predicted
    assert not os.path.exists(str(report_dir)) and "report: %s/report.json" % report_dir in proc.stdout
    assert recap["verity-fs"]["changed"] == 1
    for mounted in fleet["mounts"].values():
        assert not [n for n in os.listdir(mounted) if n.startswith(".composefs-fleet-verity-probe-")]


def test_report_dir_defaults_to_the_current_directory(fleet, tmp_path):
    """Run as the installed collection's playbook would be: the report lands in ./verity-report, not in the collection."""
    env = dict(_env())
    env.pop("COMPOSEFS_FLEET_REPORT_DIR", None)
    collection_cache = os.path.join(TOP, ".cache", "verity-report")
    had_cache = os.path.exists(collection_cache)
    proc, recap = run_playbook(fleet["inventory"], cwd=tmp_path, playbook="composefs.fleet.verity_report", env=env)
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-3000:]
    assert "report: {0}/report.json".format(tmp_path / "verity-report") in proc.stdout
    assert _report(tmp_path / "verity-report")["counts"]["total"] == 4
    assert os.path.exists(collection_cache) == had_cache


@pytest.mark.parametrize("extra, message", [
    ('{"verity_check_report_mode": 644}', "mode must be a quoted octal string such as '0644', not the number 644"),
    ('{"verity_check_report_mode": "rw-r--r--"}', "is not an octal file mode"),
])
def test_report_mode_must_be_a_quoted_octal_string(fleet, extra, message):
    report_dir = fleet["work"] / "mode-report"
    proc, recap = run_playbook(fleet["inventory"], "-e", "verity_check_report_dir=%s" % report_dir, "-e", extra)
    assert proc.returncode != 0 and message in proc.stdout, proc.stdout[-3000:]
    assert not os.path.exists(str(report_dir / "report.json"))


def test_report_mode_as_a_quoted_string(fleet):
    report_dir = fleet["work"] / "mode-600-report"
    proc, recap = run_playbook(fleet["inventory"], "-e", "verity_check_report_dir=%s" % report_dir, "-e", '{"verity_check_report_mode": "600"}')
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert all(os.stat(str(report_dir / f)).st_mode & 0o7777 == 0o600 for f in ("report.json", "report.md", "report.html"))


def test_enforce_fails_the_hosts_that_fall_short(fleet):
    report_dir = fleet["work"] / "enforce-report"
    proc, recap = run_playbook(fleet["inventory"], "-e", "verity_check_report_dir=%s" % report_dir, "-e", '{"verity_check_enforce": true}')
    assert proc.returncode != 0
    assert all(recap[h]["failed"] == 1 for h in recap), recap
    assert "kernel lacks fs-verity (CONFIG_FS_VERITY)" in proc.stdout
    # the report was written before the hosts were failed
    assert _report(report_dir)["counts"]["total"] == 4
    # only unreachable hosts fail when that is the only verdict that counts
    proc, recap = run_playbook(fleet["inventory"], "-e", "verity_check_report_dir=%s" % report_dir,
                               "-e", '{"verity_check_enforce": true, "verity_check_fail_verdicts": ["unreachable"]}')
    assert dict((h, r["failed"]) for h, r in recap.items()) == {"verity-fs": 0, "other-fs": 0, "coreos-like": 0, "gone": 1}


def test_module_through_ansible_in_check_mode_does_not_probe(fleet):
    m = fleet["mounts"]
    argv = [os.path.join(BIN, "ansible"), "localhost", "-m", "composefs.fleet.verity_facts", "--check",
            "-a", json.dumps(dict(paths=[m["btrfs"], m["xfs"]], probe=True))]
    proc = subprocess.run(argv, cwd=TOP, env=_env(), stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(proc.stdout.partition(" => ")[2])
    facts = result["ansible_facts"]["composefs"]
    assert result["changed"] is False
    assert facts["probe"]["performed"] is False and "check mode" in facts["probe"]["note"]
    assert [(p["fstype"], p["verity"], p["probe"]["result"]) for p in facts["paths"]] == [
        ("btrfs", "unsupported", "not_run"), ("xfs", "unsupported", "not_run")]
    assert "check mode: the probe was not run" in proc.stdout + proc.stderr
