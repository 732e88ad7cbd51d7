"""verity_facts inside the fs-verity guest (run by tests/vm/test_guest.py; COMPOSEFS_FLEET_IN_GUEST=1).

The guest kernel has CONFIG_FS_VERITY, so ext4 with the verity feature and btrfs are
supported; ext4 without the feature, xfs, tmpfs and the overlay root are not; a
network filesystem is unknown. The probe must agree, the raw fallback must agree
with the module, and the verity_check report must pass a host whose required paths
are on ext4-verity and btrfs.
"""
import errno
import os
import subprocess

import pytest

from ansible_collections.composefs.fleet.plugins.module_utils.verity_facts.gather import gather
from ansible_collections.composefs.fleet.plugins.module_utils.verity_facts.probe import SCRATCH_PREFIX
from ansible_collections.composefs.fleet.plugins.plugin_utils.verity_report import fleet_report, host_record, parse_raw, raw_script

EXPECTED = {
    "EXT4_VERITY": ("ext4", "supported", "ext4 with the verity feature"),
    "EXT4_PLAIN": ("ext4", "unsupported", "ext4 without the verity feature: tune2fs -O verity"),
    "BTRFS": ("btrfs", "supported", "btrfs"),
    "XFS": ("xfs", "unsupported", "xfs has no fs-verity"),
    "TMPFS": ("tmpfs", "unsupported", "tmpfs has no fs-verity"),
}


@pytest.fixture(scope="module")
def mounts():
    out = {}
    for name in EXPECTED:
        path = os.environ.get("VM_MNT_%s" % name)
        if not path or not os.path.ismount(path):
            pytest.fail("VM_MNT_%s=%r is not a mount point in the guest" % (name, path), pytrace=False)
        out[name] = path
    return out


def _by_path(facts):
    return dict((entry["path"], entry) for entry in facts["paths"])


def test_kernel_has_fs_verity():
    kernel = gather(["/"])["kernel"]
    assert kernel["fs_verity"] is True, kernel["fs_verity_evidence"]
    assert "ext4" in kernel["verity_filesystems"] and "btrfs" in kernel["verity_filesystems"]
    assert kernel["overlay"]["available"] is True and kernel["overlay"]["verity"] is True  # 6.12
    assert kernel["erofs"]["available"] is True


def test_verdicts(mounts):
    facts = gather(list(mounts.values()) + ["/"])
    entries = _by_path(facts)
    for name, (fstype, verdict, reason) in EXPECTED.items():
        entry = entries[mounts[name]]
        assert entry["fstype"] == fstype, name
        assert entry["verity"] == verdict, (name, entry["reasons"])
        assert entry["reason"].startswith(reason), (name, entry["reason"])
    assert entries[mounts["EXT4_VERITY"]]["ext4"]["verity_feature"] is True
    assert entries[mounts["EXT4_PLAIN"]]["ext4"]["verity_feature"] is False
    # the guest's root is the host's / over 9p under a tmpfs overlay
    assert entries["/"]["fstype"] == "overlay" and entries["/"]["verity"] == "unsupported"


def test_network_filesystem_is_unknown(mounts):
    where = os.path.join(mounts["TMPFS"], "nfs")
    os.makedirs(where, exist_ok=True)
    with open("/proc/self/mountinfo", encoding="utf-8") as f:
        text = f.read() + "9999 1 0:999 / %s rw,relatime - nfs4 server.example:/export rw,vers=4.2\n" % where
    entry = gather([where], mountinfo_text=text)["paths"][0]
    assert entry["fstype"] == "nfs4"
    assert entry["verity"] == "unknown" and "network filesystem" in entry["reason"]


def test_probe_agrees(mounts):
    facts = gather(list(mounts.values()), probe=True)
    entries = _by_path(facts)
    for name, (dummy, verdict, dummy2) in EXPECTED.items():
        entry = entries[mounts[name]]
        probe = entry["probe"]
        assert probe["performed"], (name, probe)
        if verdict == "supported":
            assert probe["result"] == "enabled", (name, probe)
            assert entry["reason"] == "probe: FS_IOC_ENABLE_VERITY succeeded on a scratch file"
        else:
            assert probe["result"] == "refused" and probe["errno"] in (errno.EOPNOTSUPP, errno.ENOTTY), (name, probe)
        assert entry["verity"] == verdict, name
        assert not [n for n in os.listdir(mounts[name]) if n.startswith(SCRATCH_PREFIX)], name


def test_raw_fallback_agrees(mounts):
    paths = list(mounts.values()) + ["/"]
    module = gather(paths)
    proc = subprocess.run(["/bin/sh", "-c", raw_script(paths)], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    raw = parse_raw(proc.stdout, paths)
    assert raw["kernel"]["fs_verity"] is True
    for raw_entry, module_entry in zip(raw["paths"], module["paths"]):
        for key in ("path", "mountpoint", "fstype", "verity", "reason", "ext4"):
            assert raw_entry.get(key) == module_entry.get(key), (module_entry["path"], key)


def test_report_passes_a_host_on_verity_filesystems(mounts):
    # The role's controller-side logic on this kernel's real facts (the role itself runs
    # against the guest over SSH in the fleet tier; ansible-playbook under TCG is slow).
    facts = gather(list(mounts.values()))
    required = [mounts["EXT4_VERITY"], mounts["BTRFS"]]
    record = host_record("guest", dict(changed=False, ansible_facts=dict(composefs=facts)))
    report = fleet_report([record], dict(required_paths=required))
    host = report["hosts"][0]
    assert host["verdict"] == "pass", host["problems"]
    assert report["counts"]["pass"] == 1 and report["groups"]["pass"] == ["guest"]
    verdicts = dict((p["path"], p["verity"]) for p in host["paths"])
    assert [verdicts[p] for p in required] == ["supported", "supported"]
    assert verdicts[mounts["XFS"]] == "unsupported"
    # every examined path required: ext4 without verity, xfs and tmpfs make it fail
    assert fleet_report([record], dict(required_paths=[]))["hosts"][0]["verdict"] == "fail"
