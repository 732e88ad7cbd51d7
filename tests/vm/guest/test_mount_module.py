"""The mount module where the kernel enforces fs-verity (runs inside the guest): verity=require.

Images and objects live on the guest's ext4 (-O verity) or btrfs disk, with fs-verity
enabled on every object and on the image, as a deployment would have them. Modules run
through tests/module_exec.py (a full ansible controller is slow under TCG).
"""
import errno
import os
import shutil
import subprocess

import pytest

import cfs_oracle
from blockdev import corrupt_file_block
from module_exec import exec_module

from ansible_collections.composefs.fleet.plugins.module_utils.common.mountinfo import read_mountinfo
from ansible_collections.composefs.fleet.plugins.module_utils.fsverity import ioctl
from ansible_collections.composefs.fleet.plugins.module_utils.fsverity.digest import file_digest
from ansible_collections.composefs.fleet.plugins.module_utils.mount import manager, state, syscalls


def _write(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
        os.fsync(f.fileno())


def _read(path):
    with open(path, "rb") as f:
        return f.read()


def _has_verity(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        return ioctl.verity_enabled(fd, path)
    finally:
        os.close(fd)


def _enable_tree(top):
    for root, _dirs, names in os.walk(top):
        for name in names:
            ioctl.enable_path(os.path.join(root, name))


class Deployment:
    """Images A and B of two small trees, one object store, fs-verity on all of it."""

    def __init__(self, base):
        self.base = base
        self.store = os.path.join(base, "store")
        self.mnt = os.path.join(base, "mnt")
        self.src, self.image, self.digest = {}, {}, {}
        for name in ("a", "b"):
            src = os.path.join(base, "src-" + name)
            _write(os.path.join(src, "hello.txt"), ("hello from %s\n" % name.upper()).encode())
            _write(os.path.join(src, "big"), os.urandom(5 * 4096))
            _write(os.path.join(src, "sub", "medium"), (name * 3000).encode())
            self.src[name] = src
            self.image[name] = os.path.join(base, "%s.cfs" % name)
            out = cfs_oracle.mkcomposefs_dir(src, self.image[name], "--digest-store=%s" % self.store, "--print-digest")
            self.digest[name] = out.decode().strip()
            ioctl.enable_path(self.image[name])
        _enable_tree(self.store)

    def args(self, name="a", **extra):
        args = {"path": self.mnt, "image": self.image[name], "basedir": [self.store], "digest": self.digest[name],
                "verity": "require", "helper": "never", "state": "ephemeral"}
        args.update(extra)
        return args

    def object_of(self, name, relpath):
        digest = file_digest(os.path.join(self.src[name], relpath)).hex()
        return os.path.join(self.store, digest[:2], digest[2:])


def _composefs_at(path):
    return [e for e in read_mountinfo() if e.mountpoint == path and e.source == "composefs"]


def _ok(res):
    assert not res["failed"], res.get("msg", res)
    return res


@pytest.fixture(params=["ext4_verity_dir", "btrfs_dir"])
def dep(request):
    base = request.getfixturevalue(request.param)
    deployment = Deployment(base)
    yield deployment
    for entry in sorted((e for e in read_mountinfo() if e.mountpoint.startswith(base)), key=lambda e: -len(e.mountpoint)):
        subprocess.run(["umount", "-l", entry.mountpoint], check=False)
    state.remove_record(deployment.mnt)


@pytest.fixture
def ext4_dep(ext4_verity_dir):
    deployment = Deployment(ext4_verity_dir)
    yield deployment
    for entry in (e for e in read_mountinfo() if e.mountpoint.startswith(ext4_verity_dir)):
        subprocess.run(["umount", "-l", entry.mountpoint], check=False)
    state.remove_record(deployment.mnt)


def _unmount_clean(dep):
    assert _ok(exec_module("mount", {"path": dep.mnt, "state": "unmounted"}))["changed"]
    assert _composefs_at(dep.mnt) == [] and state.load_record(dep.mnt) is None
    assert not os.listdir(state.TMP_DIR)
    assert not [f for f in syscalls.loop_backing_files().values() if f.startswith(dep.base)]


def test_require_with_pinned_digest_reads_content(dep):
    res = _ok(exec_module("mount", dep.args(), diff=True))
    assert res["changed"] and res["verity"] == "kernel" and res["digest"] == dep.digest["a"]
    assert "verity=require" in res["options"] and res["objects"] == 2
    assert "runtime will not be detected" not in str(res.get("warnings"))
    for rel in ("hello.txt", "big", "sub/medium"):
        assert _read(os.path.join(dep.mnt, rel)) == _read(os.path.join(dep.src["a"], rel))
    assert not _ok(exec_module("mount", dep.args()))["changed"]
    swapped = _ok(exec_module("mount", dep.args("b")))
    assert swapped["changed"] and _read(os.path.join(dep.mnt, "hello.txt")) == b"hello from B\n"
    assert len(_composefs_at(dep.mnt)) == 1
    _unmount_clean(dep)


def test_wrong_pinned_digest_is_refused(ext4_dep):
    res = exec_module("mount", ext4_dep.args(digest=ext4_dep.digest["b"]))
    assert res["failed"] and res["error"] == "digest-mismatch"
    assert "image digest %s, pinned %s" % (ext4_dep.digest["a"], ext4_dep.digest["b"]) in res["msg"]
    assert _composefs_at(ext4_dep.mnt) == [] and not os.listdir(state.TMP_DIR)


def test_swapped_object_gives_eio(dep):
    # Another file, with fs-verity, in the place of big's object: it exists, so the mount goes ahead,
    # and the kernel refuses it at open because its digest is not the one the image records.
    obj = dep.object_of("a", "big")
    fake = obj + ".fake"
    _write(fake, os.urandom(5 * 4096))
    ioctl.enable_path(fake)
    os.rename(fake, obj)
    _ok(exec_module("mount", dep.args()))
    with pytest.raises(OSError) as exc:
        _read(os.path.join(dep.mnt, "big"))
    assert exc.value.errno == errno.EIO
    assert _read(os.path.join(dep.mnt, "sub", "medium")) == _read(os.path.join(dep.src["a"], "sub", "medium"))
    _unmount_clean(dep)


def test_object_without_fs_verity_gives_eio(ext4_dep):
    obj = ext4_dep.object_of("a", "sub/medium")
    plain = obj + ".plain"
    shutil.copyfile(obj, plain)  # the same bytes, but no fs-verity
    os.rename(plain, obj)
    assert not _has_verity(obj)
    _ok(exec_module("mount", ext4_dep.args()))
    with pytest.raises(OSError) as exc:
        _read(os.path.join(ext4_dep.mnt, "sub", "medium"))
    assert exc.value.errno == errno.EIO
    assert _read(os.path.join(ext4_dep.mnt, "big")) == _read(os.path.join(ext4_dep.src["a"], "big"))
    _unmount_clean(ext4_dep)


def test_tampered_object_block_gives_eio(ext4_dep, vm_disk):
    _ok(exec_module("mount", ext4_dep.args()))
    corrupt_file_block(ext4_dep.object_of("a", "big"), vm_disk("ext4-verity"), 3 * 4096)
    with open(os.path.join(ext4_dep.mnt, "big"), "rb") as f:
        assert f.read(4096) == _read(os.path.join(ext4_dep.src["a"], "big"))[:4096]
        f.seek(3 * 4096)
        with pytest.raises(OSError) as exc:
            f.read(4096)
    assert exc.value.errno == errno.EIO
    _unmount_clean(ext4_dep)


def test_replaced_image_is_refused(ext4_dep):
    d = ext4_dep
    _ok(exec_module("mount", d.args()))
    [mounted] = _composefs_at(d.mnt)
    # Someone puts image B (with fs-verity) where A was: re-running with A's pin reports it and keeps A mounted.
    os.rename(d.image["b"], d.image["a"])
    res = exec_module("mount", d.args())
    assert res["failed"] and "image digest %s, pinned %s" % (d.digest["b"], d.digest["a"]) in res["msg"]
    assert [e.mount_id for e in _composefs_at(d.mnt)] == [mounted.mount_id]
    assert _read(os.path.join(d.mnt, "hello.txt")) == b"hello from A\n"
    _unmount_clean(d)
    res = exec_module("mount", d.args())
    assert res["failed"] and res["error"] == "digest-mismatch" and _composefs_at(d.mnt) == []
    # A copy of the right image, but without fs-verity: verity=require refuses it.
    plain = os.path.join(d.base, "a-plain.cfs")
    cfs_oracle.mkcomposefs_dir(d.src["a"], plain, "--digest-store=%s" % d.store)
    assert not _has_verity(plain)
    res = exec_module("mount", d.args(image=plain))
    assert res["failed"] and res["error"] == "no-verity" and "has no fs-verity" in res["msg"], res
    assert _composefs_at(d.mnt) == [] and not os.listdir(state.TMP_DIR)


def test_loop_device_and_helper_with_kernel_verity(ext4_dep, monkeypatch):
    d = ext4_dep
    request = manager.Request(d.mnt, d.image["a"], [d.store], d.digest["a"], verity="require", helper="never")
    res = manager.MountRun(request, backing="loop").run()
    assert res["backing"] == "loop" and "verity=require" in res["options"]
    assert list(f for f in syscalls.loop_backing_files().values() if f.startswith(d.base)) == [d.image["a"]]
    assert _read(os.path.join(d.mnt, "big")) == _read(os.path.join(d.src["a"], "big"))
    _unmount_clean(d)
    monkeypatch.setenv("PATH", cfs_oracle.BIN + os.pathsep + os.environ["PATH"])
    res = _ok(exec_module("mount", d.args(helper="always")))
    assert res["backing"] == "helper" and "verity=require" in res["options"] and res["verity"] == "kernel"
    assert _read(os.path.join(d.mnt, "hello.txt")) == b"hello from A\n"
    _unmount_clean(d)
