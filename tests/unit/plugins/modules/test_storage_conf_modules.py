"""The managed-node halves of storage_conf: storage_conf_info (read) and storage_conf_write (atomic write),
and the storage_conf module file, which only documents the action plugin."""
import json
import os
import stat
import struct

import pytest

from ansible.module_utils.testing import patch_module_args

from ansible_collections.composefs.fleet.plugins.module_utils.common.mountinfo import MountInfo
from ansible_collections.composefs.fleet.plugins.modules import storage_conf, storage_conf_info as info, storage_conf_write as write


def run_main(module, args, capsys):
    with patch_module_args(args):
        with pytest.raises(SystemExit):
            module.main()
    return json.loads(capsys.readouterr().out)


# ---------------------------------------------------------------- storage_conf_info

def test_read_file_record(tmp_path):
    p = tmp_path / "storage.conf"
    p.write_text('[storage]\ndriver = "overlay"\n')
    p.chmod(0o640)
    r = info.read_file_record(str(p), 1024)
    assert r["exists"] and r["content"].startswith("[storage]") and r["mode"] == "0640" and r["error"] is None
    assert len(r["sha256"]) == 64
    missing = info.read_file_record(str(tmp_path / "nope"), 1024)
    assert not missing["exists"] and missing["content"] is None and missing["error"] is None


def test_read_file_record_refuses_dirs_big_and_binary(tmp_path):
    assert "not a regular file" in info.read_file_record(str(tmp_path), 1024)["error"]
    big = tmp_path / "big"
    big.write_text("x" * 100)
    assert "larger than max_size" in info.read_file_record(str(big), 10)["error"]
    binary = tmp_path / "bin"
    binary.write_bytes(b"\xff\xfe")
    r = info.read_file_record(str(binary), 1024)
    assert "not UTF-8" in r["error"] and r["content"] is None


def test_read_dropin_dir_like_containers_storage(tmp_path):
    d = tmp_path / "storage.rootful.conf.d"
    d.mkdir()
    (d / "20-b.conf").write_text("b = 1\n")
    (d / "10-a.conf").write_text("a = 1\n")
    (d / "30-c.conf.rpmnew").write_text("c = 1\n")
    (d / "40-dir.conf").mkdir()
    os.symlink(str(d / "10-a.conf"), str(d / "50-link.conf"))
    r = info.read_dropin_dir(str(d), 1024)
    assert [f["name"] for f in r["files"]] == ["10-a.conf", "20-b.conf"]
    assert not info.read_dropin_dir(str(tmp_path / "none"), 1024)["exists"]


def test_rootless_users(tmp_path):
    p = tmp_path / "subuid"
    p.write_text("alice:100000:65536\nbob:165536:65536\nalice:300000:10\n\n")
    assert info.rootless_users(str(p)) == ["alice", "bob"]
    assert info.rootless_users(str(tmp_path / "none")) == []


def _superblock(path, features):
    data = bytearray(1024 + 0x68)
    struct.pack_into("<H", data, 1024 + 0x38, 0xEF53)
    struct.pack_into("<I", data, 1024 + 0x64, features)
    path.write_bytes(bytes(data))


def test_ext4_verity_flag_from_superblock(tmp_path):
    _superblock(tmp_path / "with", 0x8000 | 0x1)
    _superblock(tmp_path / "without", 0x1)
    (tmp_path / "junk").write_bytes(b"\0" * 2048)
    assert info.ext4_has_verity(str(tmp_path / "with")) is True
    assert info.ext4_has_verity(str(tmp_path / "without")) is False
    assert info.ext4_has_verity(str(tmp_path / "junk")) is None


def _mount(mountpoint, fstype, source="/dev/sdz9"):
    st = os.stat("/")
    return MountInfo(1, 0, os.major(st.st_dev), os.minor(st.st_dev), "/", mountpoint, "rw", fstype, source, "rw")


@pytest.mark.parametrize("fstype,kernel,verity,reason", [
    ("xfs", True, "unsupported", "xfs has no fs-verity"),
    ("tmpfs", None, "unsupported", "tmpfs has no fs-verity"),
    ("overlay", True, "unsupported", "overlayfs"),
    ("btrfs", True, "supported", "btrfs supports fs-verity"),
    ("btrfs", False, "unsupported", "kernel built without CONFIG_FS_VERITY"),
    ("ext4", False, "unsupported", "kernel built without CONFIG_FS_VERITY"),
    ("ext4", True, "unknown", "could not read the superblock"),
    ("nfs4", None, "unsupported", "network filesystems"),
    ("weirdfs", None, "unknown", "not known"),
])
def test_probe_filesystem(fstype, kernel, verity, reason):
    r = info.probe_filesystem("/var/lib/containers/storage", [_mount("/", fstype)], kernel)
    assert r["fstype"] == fstype and r["verity"] == verity and reason in r["reason"]
    assert r["looked_up"]  # the nearest existing parent


def test_probe_kernel_shape():
    k = info.probe_kernel()
    assert k["release"] == os.uname().release
    for key in ("erofs", "overlay", "loop"):
        assert k[key] in ("available", "module", "missing", "unknown")
    assert k["fs_verity"] in (True, False, None)


def test_info_main_reads_and_changes_nothing(tmp_path, capsys):
    p = tmp_path / "s.conf"
    p.write_text("[storage]\n")
    res = run_main(info, dict(paths=[str(p), "~/.config/containers/nonexistent.conf"], dropin_dirs=[str(tmp_path)],
                              fs_paths=[str(tmp_path)]), capsys)
    assert res["changed"] is False
    assert res["files"][0]["content"] == "[storage]\n"
    assert res["files"][1]["path"].startswith(os.path.expanduser("~"))
    assert [f["name"] for f in res["dropin_dirs"][0]["files"]] == ["s.conf"]
    assert res["filesystems"][0]["fstype"]
    assert res["euid"] == os.geteuid()


# ---------------------------------------------------------------- storage_conf_write

class FakeModule:
    def selinux_enabled(self):
        return False


def test_write_atomic_new_and_existing(tmp_path):
    p = tmp_path / "storage.conf"
    write.write_atomic(FakeModule(), str(p), b"one\n", 0o644)
    assert p.read_bytes() == b"one\n" and stat.S_IMODE(p.stat().st_mode) == 0o644
    p.chmod(0o600)
    write.write_atomic(FakeModule(), str(p), b"two\n", 0o644)
    assert p.read_bytes() == b"two\n" and stat.S_IMODE(p.stat().st_mode) == 0o600
    assert sorted(os.listdir(str(tmp_path))) == ["storage.conf"]  # no temporary file left behind


def test_write_main_checks_expected_content(tmp_path, capsys):
    p = tmp_path / "storage.conf"
    p.write_text("old\n")
    res = run_main(write, dict(path=str(p), content="new\n", expected_sha256="0" * 64), capsys)
    assert res["failed"] and "changed since it was read" in res["msg"] and p.read_text() == "old\n"
    res = run_main(write, dict(path=str(p), content="new\n", expected_sha256="absent"), capsys)
    assert res["failed"] and "appeared since it was read" in res["msg"]
    import hashlib
    res = run_main(write, dict(path=str(p), content="new\n", expected_sha256=hashlib.sha256(b"old\n").hexdigest(),
                               backup=True), capsys)
    assert res["changed"] and p.read_text() == "new\n" and os.path.exists(res["backup_file"])
    res = run_main(write, dict(path=str(p), content="new\n"), capsys)
    assert not res["changed"]


def test_write_main_creates_dirs_only_when_asked(tmp_path, capsys):
    p = tmp_path / "d" / "x.conf"
    res = run_main(write, dict(path=str(p), content="x\n"), capsys)
    assert res["failed"] and "does not exist" in res["msg"]
    res = run_main(write, dict(path=str(p), content="x\n", create_dirs=True, mode="0640"), capsys)
    assert res["changed"] and res["created"] and stat.S_IMODE(p.stat().st_mode) == 0o640


# ---------------------------------------------------------------- storage_conf (documentation only)

def test_storage_conf_module_refuses_to_run_without_its_action_plugin(capsys):
    res = run_main(storage_conf, dict(use_composefs=True), capsys)
    assert res["failed"] and "runs through its action plugin" in res["msg"]
