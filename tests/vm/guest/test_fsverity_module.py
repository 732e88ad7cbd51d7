"""The fsverity module where the kernel enforces fs-verity (runs inside the guest)."""
import errno
import os

import pytest

from ansible_collections.composefs.fleet.plugins.module_utils.fsverity.digest import file_digest
from module_exec import exec_module
from blockdev import corrupt_file_block

FOO = b"foo.txt" + b"_" * 60 + b"\n"
FOO_DIGEST = "85d600d462f5c3738b55c3ebf570c31263353dc6aa35448c6a8f9aa519429c8a"


def _write(path, data):
    with open(path, "wb") as f:
        f.write(data)
        os.fsync(f.fileno())


@pytest.mark.parametrize("fs", ["ext4_verity_dir", "btrfs_dir"])
def test_enable_measure_idempotent(fs, request):
    d = request.getfixturevalue(fs)
    files = {os.path.join(d, "foo.txt"): FOO, os.path.join(d, "big"): os.urandom(300000), os.path.join(d, "empty"): b""}
    for p, data in files.items():
        _write(p, data)
    want = {p: file_digest(p).hex() for p in files}
    assert want[os.path.join(d, "foo.txt")] == FOO_DIGEST

    check = exec_module("fsverity", {"path": [d], "recurse": True, "state": "enabled"}, check=True, diff=True)
    assert check["changed"] and not check["failed"]
    assert all(f["changed"] and f["verity"] for f in check["files"])
    assert not any(f["verity"] for f in exec_module("fsverity", {"path": [d], "recurse": True})["files"])  # check mode changed nothing

    first = exec_module("fsverity", {"path": [d], "recurse": True, "state": "enabled"}, diff=True)
    assert first["changed"] and not first["failed"], first
    assert {f["path"]: f["digest"] for f in first["files"]} == want  # kernel digests equal the userspace ones
    assert all(f["verity"] and f["changed"] for f in first["files"])
    assert first["diff"]["before"]["verity"] == {p: False for p in files}
    assert first["diff"]["after"]["verity"] == {p: True for p in files}

    again = exec_module("fsverity", {"path": [d], "recurse": True, "state": "enabled"})
    assert not again["changed"] and all(f["verity"] and not f["changed"] for f in again["files"])
    measured = exec_module("fsverity", {"path": [os.path.join(d, "foo.txt")], "expected_digest": FOO_DIGEST})
    assert measured["digest"] == FOO_DIGEST and measured["files"][0]["verity"]

    with pytest.raises(PermissionError):
        open(os.path.join(d, "foo.txt"), "ab").close()


def test_tampered_block_gives_eio(ext4_verity_dir, vm_disk):
    p = os.path.join(ext4_verity_dir, "data")
    _write(p, os.urandom(5 * 4096))
    res = exec_module("fsverity", {"path": [p], "state": "enabled"})
    assert res["changed"] and res["files"][0]["verity"]
    corrupt_file_block(p, vm_disk("ext4-verity"), 4096 * 2)
    with open(p, "rb") as f:
        f.read(4096)  # an untouched block still reads
        with pytest.raises(OSError) as exc:
            f.seek(2 * 4096)
            f.read(4096)
    assert exc.value.errno == errno.EIO


def test_expected_digest_mismatch_enables_nothing(ext4_verity_dir):
    p = os.path.join(ext4_verity_dir, "foo.txt")
    _write(p, FOO)
    res = exec_module("fsverity", {"path": [p], "state": "enabled", "expected_digest": "0" * 64})
    assert res["failed"] and p in res["msg"] and "does not match" in res["msg"]
    assert not exec_module("fsverity", {"path": [p]})["files"][0]["verity"]


@pytest.mark.parametrize("fs,words", [
    ("ext4_plain_dir", "ext4 without the verity feature: run 'tune2fs -O verity"),
    ("xfs_dir", "xfs has no fs-verity"),
    ("tmpfs_dir", "tmpfs has no fs-verity"),
])
def test_unsupported_filesystems_give_their_reason(fs, words, request):
    d = request.getfixturevalue(fs)
    p = os.path.join(d, "foo.txt")
    _write(p, FOO)
    for check in (True, False):
        res = exec_module("fsverity", {"path": [p], "state": "enabled"}, check=check)
        assert res["failed"] and words in res["msg"] and p in res["msg"], res
    res = exec_module("fsverity", {"path": [p], "state": "enabled", "allow_unsupported": True})
    assert not res["failed"] and not res["changed"] and res["digest"] == FOO_DIGEST and not res["files"][0]["verity"]


def test_open_for_writing_is_named(ext4_verity_dir):
    p = os.path.join(ext4_verity_dir, "busy")
    _write(p, b"x" * 100)
    with open(p, "ab"):
        res = exec_module("fsverity", {"path": [p], "state": "enabled"})
    assert res["failed"] and "open for writing" in res["msg"], res


FOO_SHA512 = ("0c261e3b9fde9716d54e380d9232c2a6dc8583efb2dbcf261f42b48d6ffa046a"
              "746ce2a56f326542dd8d73d4202941fefb52564a380d43b3716aeba475d83d6d")


@pytest.mark.parametrize("fs", ["ext4_verity_dir", "btrfs_dir"])
def test_sha512_enable_and_measure(fs, request):
    # composefs-rs repositories default to SHA-512 fs-verity: the kernel must seal and
    # measure 64-byte digests equal to the userspace ones.
    import subprocess
    from ansible_collections.composefs.fleet.plugins.module_utils.fsverity import ioctl

    d = request.getfixturevalue(fs)
    small, big = os.path.join(d, "small.txt"), os.path.join(d, "big")
    _write(small, FOO)
    _write(big, os.urandom(5 * 4096 * 64 + 123))
    want_big = file_digest(big, "sha512").hex()
    res = exec_module("fsverity", {"paths": [small, big], "state": "enabled", "algorithm": "sha512"})
    assert res["changed"] and not res["failed"] and res["hash_algorithm"] == "sha512", res
    assert {f["path"]: f["digest"] for f in res["files"]} == {small: FOO_SHA512, big: want_big}
    for path, want in ((small, FOO_SHA512), (big, want_big)):
        fd = os.open(path, os.O_RDONLY)
        try:
            alg, raw = ioctl.measure(fd, path)
        finally:
            os.close(fd)
        assert alg == "sha512" and len(raw) == 64 and raw.hex() == want
        # the reference tool reads the same from the kernel
        assert subprocess.check_output(["fsverity", "measure", path]).decode().split()[0] == "sha512:" + want
    again = exec_module("fsverity", {"paths": [small], "state": "enabled", "hash_algorithm": "sha512",
                                     "expected_digest": "sha512:" + FOO_SHA512})
    assert not again["changed"] and again["digest"] == FOO_SHA512 and not again.get("warnings"), again
