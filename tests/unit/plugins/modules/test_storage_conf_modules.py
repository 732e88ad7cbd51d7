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


# ---------------------------------------------------------------- issue 9 item 6: what storage_conf_info reads

SECRET = "root:$6$Zq8marker$Hx0SECRETHASHmarker:19000:0:99999:7:::\n"


@pytest.fixture
def shadow_like(tmp_path):
    """A root:shadow 0640 file shaped like /etc/shadow."""
    p = tmp_path / "shadow"
    p.write_text(SECRET)
    os.chown(str(p), 0, 42)
    p.chmod(0o640)
    return p


def _leaks(record):
    return "marker" in json.dumps(record)


def test_info_link_to_a_shadow_file_leaks_nothing(tmp_path, shadow_like):
    link = tmp_path / "storage.conf"
    link.symlink_to(str(shadow_like))
    r = info.read_file_record(str(link), 1 << 20)
    assert r["link"] and r["target"] == str(shadow_like)
    assert r["content"] is None and r["sha256"] is None
    assert "does not look like a TOML file (line 1 is not a TOML table header" in r["error"]
    assert not _leaks(r)


def test_info_link_to_the_real_etc_shadow_leaks_nothing(tmp_path):
    link = tmp_path / "storage.conf"
    link.symlink_to("/etc/shadow")
    r = info.read_file_record(str(link), 1 << 20)
    assert r["content"] is None and r["sha256"] is None and "not returned" in r["error"]
    with open("/etc/shadow") as f:
        first = f.readline().split(":")
    assert first[1] not in json.dumps(r)


def test_info_refuses_a_link_another_user_planted(tmp_path):
    real = tmp_path / "real.conf"
    real.write_text("[storage]\n")
    link = tmp_path / "storage.conf"
    link.symlink_to(str(real))
    os.lchown(str(link), 65534, 65534)
    r = info.read_file_record(str(link), 1024)
    assert r["content"] is None and "symlink owned by uid 65534" in r["error"] and "not followed" in r["error"]


def test_info_refuses_a_file_another_user_owns(tmp_path):
    p = tmp_path / "storage.conf"
    p.write_text("[storage]\n")
    os.chown(str(p), 65534, 65534)
    r = info.read_file_record(str(p), 1024)
    assert r["content"] is None and "owned by uid 65534" in r["error"]


def test_info_does_not_hang_on_a_fifo_and_never_opens_devices(tmp_path):
    fifo = tmp_path / "fifo.conf"
    os.mkfifo(str(fifo))
    assert "not a regular file" in info.read_file_record(str(fifo), 1024)["error"]
    link = tmp_path / "dev.conf"
    link.symlink_to("/dev/zero")
    assert "not a regular file" in info.read_file_record(str(link), 1024)["error"]


@pytest.mark.parametrize("data,why", [
    (b"a = 1\n\0\0\0secretmarker", "binary data (a NUL byte at offset 6)"),
    (b"a = 1\n\xffsecretmarker", "not UTF-8 text (byte 0xff at offset 6)"),
    (b"a = 1\nsecretmarker: yes\n", "line 2 is not a TOML table header, key = value or comment"),
])
def test_info_refuses_what_is_not_toml_text_quoting_nothing(tmp_path, data, why):
    p = tmp_path / "x.conf"
    p.write_bytes(data)
    r = info.read_file_record(str(p), 1024)
    assert why in r["error"] and r["content"] is None and not _leaks(r)


def test_info_dangling_link_is_an_error(tmp_path):
    link = tmp_path / "storage.conf"
    link.symlink_to(str(tmp_path / "nowhere.conf"))
    r = info.read_file_record(str(link), 1024)
    assert r["exists"] and "which does not exist" in r["error"]


# ---------------------------------------------------------------- storage_conf_write: follow, attributes, preflight

def test_write_follows_a_link_by_default_and_keeps_it(tmp_path, capsys):
    real = tmp_path / "real.conf"
    real.write_text("old\n")
    link = tmp_path / "storage.conf"
    link.symlink_to("real.conf")
    res = run_main(write, dict(path=str(link), content="new\n"), capsys)
    assert res["changed"] and res["target"] == str(real) and not res["replaced_link"]
    assert link.is_symlink() and real.read_text() == "new\n"
    assert sorted(os.listdir(str(tmp_path))) == ["real.conf", "storage.conf"]


def test_write_follow_false_replaces_only_the_link(tmp_path, capsys):
    real = tmp_path / "real.conf"
    real.write_text("same\n")
    link = tmp_path / "storage.conf"
    link.symlink_to("real.conf")
    res = run_main(write, dict(path=str(link), content="same\n", follow=False), capsys)
    assert res["changed"] and res["replaced_link"] and res["target"] == str(link)
    assert not link.is_symlink() and link.read_text() == "same\n" and real.read_text() == "same\n"
    res = run_main(write, dict(path=str(link), content="same\n", follow=False), capsys)
    assert not res["changed"]


def test_write_refuses_a_planted_link(tmp_path, capsys):
    real = tmp_path / "real.conf"
    real.write_text("old\n")
    link = tmp_path / "storage.conf"
    link.symlink_to("real.conf")
    os.lchown(str(link), 65534, 65534)
    res = run_main(write, dict(path=str(link), content="new\n"), capsys)
    assert res["failed"] and "owned by uid 65534" in res["msg"] and real.read_text() == "old\n"


def test_write_sets_mode_owner_group_atomically_and_idempotently(tmp_path, capsys):
    p = tmp_path / "storage.conf"
    p.write_text("old\n")
    p.chmod(0o644)
    args = dict(path=str(p), content="new\n", mode="0640", owner="root", group="shadow", _ansible_diff=True)
    res = run_main(write, args, capsys)
    st = p.stat()
    assert res["changed"] and stat.S_IMODE(st.st_mode) == 0o640 and (st.st_uid, st.st_gid) == (0, 42)
    assert res["attributes"] == dict(before=dict(mode="0644", owner="root", group="root"),
                                     after=dict(mode="0640", owner="root", group="shadow"))
    assert [d["before_header"] for d in res["diff"]] == [str(p), "%s (attributes)" % p]
    res = run_main(write, args, capsys)
    assert not res["changed"]
    # Attributes alone: changed in place, in check mode only predicted.
    res = run_main(write, dict(args, mode="u=rw,g=,o=", _ansible_check_mode=True), capsys)
    assert res["changed"] and res["attributes"]["after"]["mode"] == "0600" and stat.S_IMODE(p.stat().st_mode) == 0o640
    res = run_main(write, dict(args, mode="u=rw,g=,o="), capsys)
    assert res["changed"] and stat.S_IMODE(p.stat().st_mode) == 0o600 and p.read_text() == "new\n"


@pytest.mark.parametrize("bad,why", [
    (dict(mode=420), "not the number 420"),
    (dict(mode="rwx"), "neither an octal mode"),
    (dict(owner="no-such-user-here"), "no such user"),
    (dict(group="no-such-group-here"), "no such group"),
])
def test_write_bad_attributes_fail_before_writing_also_in_check_mode(tmp_path, capsys, bad, why):
    p = tmp_path / "storage.conf"
    p.write_text("old\n")
    for check in (True, False):
        res = run_main(write, dict(path=str(p), content="new\n", _ansible_check_mode=check, **bad), capsys)
        assert res["failed"] and why in res["msg"] and p.read_text() == "old\n"


def test_write_check_mode_fails_on_a_missing_directory_like_the_real_run(tmp_path, capsys):
    p = tmp_path / "missing" / "storage.conf"
    for check in (True, False):
        res = run_main(write, dict(path=str(p), content="x\n", _ansible_check_mode=check), capsys)
        assert res["failed"] and "directory %s does not exist" % p.parent in res["msg"]
    res = run_main(write, dict(path=str(p), content="x\n", create_dirs=True, _ansible_check_mode=True), capsys)
    assert res["changed"] and not p.parent.exists()
