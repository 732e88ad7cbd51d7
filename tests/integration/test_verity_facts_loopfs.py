"""verity_facts on real filesystems on this host (a kernel without CONFIG_FS_VERITY).

Every path must be unsupported with the reason "kernel built without CONFIG_FS_VERITY",
and everything else read from the filesystems (type, device, ext4 feature flags) must
be right. The same facts read through the raw fallback script must agree.
"""
import errno
import os
import subprocess

import loopfs
import pytest

from ansible_collections.composefs.fleet.plugins.module_utils.verity_facts import gather as gather_mod
from ansible_collections.composefs.fleet.plugins.module_utils.verity_facts.kernel import kernel_facts, read_sources
from ansible_collections.composefs.fleet.plugins.module_utils.verity_facts.paths import KERNEL_WITHOUT_VERITY
from ansible_collections.composefs.fleet.plugins.module_utils.verity_facts.probe import SCRATCH_PREFIX
from ansible_collections.composefs.fleet.plugins.plugin_utils.verity_report import parse_raw, raw_script

fleet_filesystems = loopfs.fleet_filesystems  # the fixture


def _host_has_fs_verity():
    return any(os.path.exists("/sys/fs/%s/features/verity" % fs) for fs in ("ext4", "btrfs", "f2fs"))


@pytest.fixture(scope="module", autouse=True)
def _kernel_without_fs_verity():
    if _host_has_fs_verity():
        pytest.fail("this tier expects a host kernel without CONFIG_FS_VERITY (the fs-verity kernel is tests/vm's)", pytrace=False)


def _by_path(facts):
    return dict((entry["path"], entry) for entry in facts["paths"])


def test_kernel_facts_of_this_host():
    kernel = kernel_facts(read_sources())
    assert kernel["fs_verity"] is False
    assert kernel["release"] == os.uname().release
    assert kernel["fs_verity_evidence"], "the decision must name its evidence"
    assert kernel["overlay"]["available"] is True  # the overlay fixture mounts one
    assert kernel["loop"]["available"] is True


def test_every_filesystem_unsupported_for_the_kernel(fleet_filesystems):
    paths = [m.mountpoint for m in fleet_filesystems.values()]
    facts = gather_mod.gather(paths)
    entries = _by_path(facts)
    assert facts["missing_paths"] == []
    for kind, mounted in fleet_filesystems.items():
        entry = entries[mounted.mountpoint]
        assert entry["fstype"] == mounted.fstype, kind
        assert entry["mountpoint"] == mounted.mountpoint, kind
        assert entry["verity"] == "unsupported", kind
        assert entry["reason"] == KERNEL_WITHOUT_VERITY, kind
        if mounted.device:
            assert entry["device"] == os.path.realpath(mounted.device), kind
        else:
            assert entry["device"] is None, kind
    # the filesystem's own reason follows where it would be unsupported anyway
    assert entries[fleet_filesystems["xfs"].mountpoint]["reasons"] == [KERNEL_WITHOUT_VERITY, "xfs has no fs-verity"]
    assert entries[fleet_filesystems["tmpfs"].mountpoint]["reasons"] == [KERNEL_WITHOUT_VERITY, "tmpfs has no fs-verity"]
    assert entries[fleet_filesystems["overlay"].mountpoint]["reasons"][1].startswith("overlay has no fs-verity")
    assert entries[fleet_filesystems["ext4-plain"].mountpoint]["reasons"][1].startswith("ext4 without the verity feature: tune2fs -O verity")
    assert entries[fleet_filesystems["btrfs"].mountpoint]["reasons"] == [KERNEL_WITHOUT_VERITY]
    assert entries[fleet_filesystems["ext4-verity"].mountpoint]["reasons"] == [KERNEL_WITHOUT_VERITY]


def _dumpe2fs_features(device):
    out = subprocess.run([loopfs.which("dumpe2fs"), "-h", device], capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        if line.startswith("Filesystem features:"):
            return line.split(":", 1)[1].split()
    raise AssertionError("no features line in dumpe2fs -h %s" % device)


@pytest.mark.parametrize("kind, verity, block_size", [("ext4-verity", True, 4096), ("ext4-plain", False, 4096), ("ext4-1k", True, 1024)])
def test_ext4_superblock_matches_dumpe2fs(fleet_filesystems, kind, verity, block_size):
    mounted = fleet_filesystems[kind]
    entry = gather_mod.gather([mounted.mountpoint])["paths"][0]
    assert entry["ext4"]["verity_feature"] is verity
    assert entry["ext4"]["block_size"] == block_size
    assert entry["ext4"]["features"] == _dumpe2fs_features(mounted.device)


def test_file_below_mountpoint_and_symlink(fleet_filesystems, tmp_path):
    mounted = fleet_filesystems["btrfs"]
    sub = os.path.join(mounted.mountpoint, "store", "objects")
    os.makedirs(sub)
    link = tmp_path / "link-to-store"
    link.symlink_to(sub)
    facts = gather_mod.gather([sub, str(link), os.path.join(mounted.mountpoint, "nope")])
    entries = _by_path(facts)
    assert entries[sub]["fstype"] == "btrfs" and entries[sub]["mountpoint"] == mounted.mountpoint
    assert entries[str(link)]["real_path"] == sub and entries[str(link)]["fstype"] == "btrfs"
    assert facts["missing_paths"] == [os.path.join(mounted.mountpoint, "nope")]


def test_network_filesystem_from_injected_mountinfo(fleet_filesystems):
    # No NFS server here: the mountinfo text gets an nfs4 mount on a real directory.
    where = os.path.join(fleet_filesystems["tmpfs"].mountpoint, "nfs")
    os.makedirs(where, exist_ok=True)
    with open("/proc/self/mountinfo", encoding="utf-8") as f:
        text = f.read()
    text += "9999 1 0:999 / %s rw,relatime - nfs4 server.example:/export rw,vers=4.2\n" % where
    entry = gather_mod.gather([where], mountinfo_text=text)["paths"][0]
    assert entry["fstype"] == "nfs4"
    # a kernel without fs-verity decides; the network filesystem's own verdict (unknown) is not "unsupported"
    assert entry["verity"] == "unsupported" and entry["reasons"] == [KERNEL_WITHOUT_VERITY]


def test_probe_refused_and_scratch_removed(fleet_filesystems):
    paths = [m.mountpoint for m in fleet_filesystems.values()]
    facts = gather_mod.gather(paths, probe=True)
    assert facts["probe"]["performed"] is True
    for kind, mounted in fleet_filesystems.items():
        entry = _by_path(facts)[mounted.mountpoint]
        probe = entry["probe"]
        assert probe["performed"] is True and probe["result"] == "refused", (kind, probe)
        assert probe["errno"] in (errno.EOPNOTSUPP, errno.ENOTTY), (kind, probe)
        assert entry["verity"] == "unsupported"
        assert entry["reason"].startswith("probe: FS_IOC_ENABLE_VERITY failed with")
        assert KERNEL_WITHOUT_VERITY in entry["reason"]
        assert not [n for n in os.listdir(mounted.mountpoint) if n.startswith(SCRATCH_PREFIX)], kind


def test_probe_in_check_mode_does_not_write(fleet_filesystems):
    mounted = fleet_filesystems["ext4-plain"]
    before = sorted(os.listdir(mounted.mountpoint))
    facts = gather_mod.gather([mounted.mountpoint], probe=True, check_mode=True)
    assert facts["probe"] == dict(requested=True, performed=False, note=gather_mod.CHECK_MODE_NOTE)
    assert facts["paths"][0]["probe"]["result"] == "not_run"
    assert facts["paths"][0]["reason"] == KERNEL_WITHOUT_VERITY
    assert sorted(os.listdir(mounted.mountpoint)) == before


def test_raw_fallback_agrees_with_the_module(fleet_filesystems):
    paths = [m.mountpoint for m in fleet_filesystems.values()] + ["/", "/does/not/exist"]
    module = gather_mod.gather(paths)
    proc = subprocess.run(["/bin/sh", "-c", raw_script(paths)], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    raw = parse_raw(proc.stdout, paths)
    assert raw["source"] == "raw" and raw["note"] == "no python: raw facts only"
    assert "warning" not in raw
    for key in ("release", "version", "fs_verity", "fs_verity_evidence", "config_source", "verity_filesystems"):
        assert raw["kernel"][key] == module["kernel"][key], key
    for part in ("overlay", "erofs"):
        assert raw["kernel"][part] == module["kernel"][part], part
    assert raw["kernel"]["loop"]["available"] == module["kernel"]["loop"]["available"]
    assert raw["missing_paths"] == module["missing_paths"] == ["/does/not/exist"]
    compared = ("path", "real_path", "mountpoint", "device", "source", "fstype", "verity", "reason", "reasons", "ext4", "ext4_error")
    for raw_entry, module_entry in zip(raw["paths"], module["paths"]):
        for key in compared:
            if key == "ext4_error" and module_entry.get(key):
                assert raw_entry.get(key), key  # both failed to read it; the wording differs
                continue
            assert raw_entry.get(key) == module_entry.get(key), (module_entry["path"], key)
    for key in ("composefs", "fstype", "source", "verity", "verity_required", "ostree_booted"):
        assert raw["root"][key] == module["root"][key], key
    assert dict((k, v["version"]) for k, v in raw["tools"].items()) == dict((k, v["version"]) for k, v in module["tools"].items())
