"""The fsverity module on real loop-mounted filesystems of this host (a kernel without fs-verity).

The guest tier (tests/vm/guest) covers the same module where the kernel enforces fs-verity.
"""
import os
import subprocess

import pytest

from ansible_run import run_module
from loopfs import loop_filesystem

NO_KERNEL = "kernel built without CONFIG_FS_VERITY"
FOO = b"foo.txt" + b"_" * 60 + b"\n"
FOO_DIGEST = "85d600d462f5c3738b55c3ebf570c31263353dc6aa35448c6a8f9aa519429c8a"


def _host_has_fs_verity():
    return os.path.exists("/sys/fs/ext4/features/verity")


@pytest.fixture(scope="module", autouse=True)
def _host_kernel_without_verity():
    # These expectations hold for this machine kind's kernel; the VM tier covers the other case.
    if _host_has_fs_verity():
        raise RuntimeError("this host kernel has fs-verity; tests/integration expects the machine kind's kernel without it")


@pytest.fixture(params=["ext4-plain", "ext4-verity", "xfs", "btrfs", "tmpfs"])
def fs(request, tmp_path):
    with loop_filesystem(request.param, str(tmp_path)) as mounted:
        yield request.param, mounted.mountpoint


def _cli(path):
    return subprocess.check_output(["fsverity", "digest", "--compact", path]).decode().strip()


def test_measured_equals_fsverity_utils(fs):
    _kind, mnt = fs
    paths = []
    for i, size in enumerate([0, 1, 4096, 70000, 1 << 20]):
        p = os.path.join(mnt, "f%d" % i)
        with open(p, "wb") as f:
            f.write(os.urandom(size))
        paths.append(p)
    res = run_module("composefs.fleet.fsverity", {"path": [mnt], "recurse": True})
    assert not res["failed"] and not res["changed"]
    got = {f["path"]: f["digest"] for f in res["files"]}
    assert got == {p: _cli(p) for p in paths}
    assert not any(f["verity"] for f in res["files"])


def test_enable_fails_with_reason_and_changes_nothing(fs):
    _kind, mnt = fs
    p = os.path.join(mnt, "foo.txt")
    with open(p, "wb") as f:
        f.write(FOO)
    for check in (True, False):
        res = run_module("composefs.fleet.fsverity", {"path": [p], "state": "enabled"}, check=check)
        assert res["failed"], res
        assert NO_KERNEL in res["msg"] and p in res["msg"]
    with open(p, "ab") as f:  # still writable: nothing was enabled
        f.write(b"")


def test_allow_unsupported_returns_userspace_digest(fs):
    _kind, mnt = fs
    p = os.path.join(mnt, "foo.txt")
    with open(p, "wb") as f:
        f.write(FOO)
    for check in (True, False, False):
        res = run_module("composefs.fleet.fsverity", {"path": [p], "state": "enabled", "allow_unsupported": True}, check=check, diff=True)
        assert not res["failed"] and not res["changed"]
        assert res["digest"] == FOO_DIGEST
        assert res["files"] == [{"path": p, "digest": FOO_DIGEST, "verity": False, "changed": False}]
        assert NO_KERNEL in res["_stderr"]


def test_expected_digest(tmp_path):
    p = tmp_path / "foo.txt"
    p.write_bytes(FOO)
    ok = run_module("composefs.fleet.fsverity", {"path": [str(p)], "expected_digest": "sha256:" + FOO_DIGEST.upper()})
    assert not ok["failed"] and ok["digest"] == FOO_DIGEST
    bad = run_module("composefs.fleet.fsverity", {"path": [str(p)], "state": "enabled", "allow_unsupported": True, "expected_digest": "0" * 64})
    assert bad["failed"] and str(p) in bad["msg"] and "does not match expected_digest" in bad["msg"]
    two = run_module("composefs.fleet.fsverity", {"path": [str(tmp_path)], "recurse": True, "expected_digest": FOO_DIGEST})
    assert not two["failed"]  # one file below the directory
    (tmp_path / "other").write_bytes(b"x")
    two = run_module("composefs.fleet.fsverity", {"path": [str(tmp_path)], "recurse": True, "expected_digest": FOO_DIGEST})
    assert two["failed"] and "exactly one file" in two["msg"]
    alg = run_module("composefs.fleet.fsverity", {"path": [str(p)], "expected_digest": "sha512:" + FOO_DIGEST})
    assert alg["failed"] and "sha512" in alg["msg"]


def test_bad_paths_named(tmp_path):
    (tmp_path / "f").write_bytes(b"x")
    os.symlink("f", str(tmp_path / "link"))
    os.mkfifo(str(tmp_path / "fifo"))
    cases = {
        str(tmp_path / "missing"): "no such file",
        str(tmp_path / "link"): "is a symlink",
        str(tmp_path / "fifo"): "not a regular file",
        str(tmp_path): "is a directory",
    }
    for path, words in cases.items():
        res = run_module("composefs.fleet.fsverity", {"path": [str(tmp_path / "f"), path]})
        assert res["failed"] and path in res["msg"] and words in res["msg"], res
    followed = run_module("composefs.fleet.fsverity", {"path": [str(tmp_path / "link")], "follow": True})
    assert not followed["failed"] and followed["files"][0]["path"] == str(tmp_path / "f")
    # Recursing skips symlinks and special files below the directory.
    walked = run_module("composefs.fleet.fsverity", {"path": [str(tmp_path)], "recurse": True})
    assert [f["path"] for f in walked["files"]] == [str(tmp_path / "f")]


def test_bad_parameters(tmp_path):
    (tmp_path / "f").write_bytes(b"x")
    for args, words in [
        ({"block_size": 3000}, "power of two"),
        ({"salt": "zz"}, "not hex"),
        ({"salt": "00" * 33}, "salt"),
        ({"hash_algorithm": "md5"}, "md5"),
    ]:
        res = run_module("composefs.fleet.fsverity", dict({"path": [str(tmp_path / "f")]}, **args))
        assert res["failed"] and words in res["msg"], res
