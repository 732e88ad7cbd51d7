"""The mount module with real mounts on this host (a kernel without fs-verity: verity=userspace and off).

Images are built by the mkcomposefs oracle (--digest-store) and by composefs.fleet.image.
The main flows run through ansible; the error matrix runs the module file directly
(tests/module_exec.py), and the kernel-feature paths run the module_utils in-process,
where a missing feature can be simulated. tests/vm/guest/test_mount_module.py covers
verity=require on a kernel that enforces fs-verity.

Every test ends with nothing left behind: no mount below its tmp_path, no loop device
bound to its files, no temporary directory in /run/composefs-fleet/tmp, no record.
"""
import errno
import json
import os
import shlex
import shutil
import stat
import subprocess
import sys
import tempfile
import time

import ansible
import pytest

import cfs_oracle
from ansible_run import run_module
from module_exec import exec_module
from support import TOP

from ansible_collections.composefs.fleet.plugins.module_utils.common.mountinfo import read_mountinfo
from ansible_collections.composefs.fleet.plugins.module_utils.mount import composefs_mount, image_copy, manager, state, syscalls
from ansible_collections.composefs.fleet.plugins.module_utils.mount.errors import MountError

ORACLE_HELPER = os.path.join(cfs_oracle.BIN, "mount.composefs")
RUN_TMP = state.TMP_DIR
USERSPACE_WARNING = "tampering with the image or the objects at runtime will not be detected"


@pytest.fixture(scope="module", autouse=True)
def _host_prerequisites():
    if os.geteuid() != 0:
        raise RuntimeError("tests/integration/test_mount_module.py mounts filesystems: run it as root")
    if os.path.exists("/sys/fs/ext4/features/verity"):
        raise RuntimeError("this host kernel has fs-verity; these tests expect the machine kind's kernel without it")
    cfs_oracle.check_available()


class Images:
    """Two trees A and B, their oracle images sharing one object store, and a mount point."""

    def __init__(self, base):
        self.base = base
        self.store = os.path.join(base, "store")
        self.mnt = os.path.join(base, "mnt")
        self.src = {}
        self.image = {}
        self.digest = {}
        for name in ("a", "b"):
            src = os.path.join(base, "src-" + name)
            _write(os.path.join(src, "hello.txt"), ("hello from %s\n" % name.upper()).encode())
            _write(os.path.join(src, "big"), os.urandom(100000))
            _write(os.path.join(src, "sub", "medium"), b"m" * 5000)
            for i in range(7):
                _write(os.path.join(src, "objs", "f%d" % i), (("%s-%d " % (name, i)) * 40).encode())
            os.symlink("../hello.txt", os.path.join(src, "sub", "link"))
            self.src[name] = src
            self.image[name] = os.path.join(base, "%s.cfs" % name)
            out = cfs_oracle.mkcomposefs_dir(src, self.image[name], "--digest-store=%s" % self.store, "--print-digest")
            self.digest[name] = out.decode().strip()

    def args(self, name="a", **extra):
        args = {"path": self.mnt, "image": self.image[name], "basedir": [self.store], "digest": self.digest[name],
                "verity": "userspace", "helper": "never", "state": "ephemeral"}
        args.update(extra)
        return args

    def object_of(self, name, relpath):
        """The store path of the object holding ``relpath`` of tree ``name``."""
        from ansible_collections.composefs.fleet.plugins.module_utils.fsverity.digest import file_digest
        digest = file_digest(os.path.join(self.src[name], relpath)).hex()
        return os.path.join(self.store, digest[:2], digest[2:])


def _write(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def _read(path):
    with open(path, "rb") as f:
        return f.read()


def _mounts_below(base):
    return [e for e in read_mountinfo() if e.mountpoint == base or e.mountpoint.startswith(base + "/")]


def _composefs_at(path):
    return [e for e in read_mountinfo() if e.mountpoint == path and e.fstype == "overlay" and e.source == "composefs"]


def _loops_for(base, wait=5.0):
    """Loop devices bound to files below ``base``; autoclear may take a moment, so wait for them to go."""
    deadline = time.monotonic() + wait
    while True:
        found = dict((dev, f) for dev, f in syscalls.loop_backing_files().items() if f.startswith(base))
        if not found or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


def _losetup_lists(base):
    out = subprocess.run(["losetup", "-a"], stdout=subprocess.PIPE, universal_newlines=True, check=True).stdout
    return [line for line in out.splitlines() if base in line]


def _tmp_entries():
    return os.listdir(RUN_TMP) if os.path.isdir(RUN_TMP) else []


def _copies():
    return os.listdir(image_copy.IMAGES_DIR) if os.path.isdir(image_copy.IMAGES_DIR) else []


def assert_clean(base, path=None):
    """Nothing of ours left: mounts, loop devices, temporary mount points, image copies, records."""
    assert _mounts_below(base) == []
    assert _loops_for(base) == {} and _losetup_lists(base) == []
    assert _loops_for(image_copy.IMAGES_DIR) == {}
    assert _tmp_entries() == []
    assert _copies() == []
    if path is not None:
        assert state.load_record(path) is None


@pytest.fixture
def cfs(tmp_path):
    base = str(tmp_path)
    images = Images(base)
    before = set(_tmp_entries())
    assert before == set(), "stale entries in %s: %s" % (RUN_TMP, before)
    assert _copies() == [], "stale image copies in %s" % image_copy.IMAGES_DIR
    yield images
    # Undo whatever a failed test left mounted, innermost first, then drop records.
    for entry in sorted(_mounts_below(base), key=lambda e: -len(e.mountpoint)):
        subprocess.run(["umount", "-l", entry.mountpoint], check=False)
    for name in os.listdir(state.MOUNTS_DIR) if os.path.isdir(state.MOUNTS_DIR) else []:
        if name.startswith(state.escape_path(base)):
            os.unlink(os.path.join(state.MOUNTS_DIR, name))
    for name in _copies():
        image_copy.remove_if_unused(os.path.join(image_copy.IMAGES_DIR, name))


def _ok(res):
    assert not res["failed"], res.get("msg", res)
    return res


def _failed(res, *words):
    assert res["failed"], res
    for word in words:
        assert word in res["msg"], (word, res["msg"])
    return res


# --- mounting, reading, idempotence ---------------------------------------------------------------


def test_oracle_image_mounts_reads_back_and_is_idempotent(cfs):
    check = _ok(run_module("composefs.fleet.mount", cfs.args(), check=True))
    assert check["changed"] and check["mounted"] and check["digest"] == cfs.digest["a"]
    assert not os.path.exists(cfs.mnt) and _composefs_at(cfs.mnt) == []  # check mode made nothing
    # (the ansible CLI prints diffs instead of returning them: diff mode is checked on the module itself)
    check = _ok(exec_module("mount", cfs.args(), check=True, diff=True))
    assert check["diff"]["before"]["mounted"] is False and check["diff"]["after"]["mounted"] is True
    assert check["diff"]["after"]["digest"] == cfs.digest["a"] and not os.path.exists(cfs.mnt)

    first = _ok(run_module("composefs.fleet.mount", cfs.args()))
    assert first["changed"] and first["mounted"] and first["digest"] == cfs.digest["a"]
    assert first["verity"] == "userspace" and first["backing"] == "file" and first["objects"] == 9
    assert USERSPACE_WARNING in first["_stderr"]
    assert "datadir+=%s" % cfs.store in first["options"] and "metacopy=on" in first["options"]
    assert "redirect_dir=on" in first["options"] and not any(o.startswith("verity=") for o in first["options"])
    for rel in ("hello.txt", "big", "sub/medium", "objs/f3"):
        assert _read(os.path.join(cfs.mnt, rel)) == _read(os.path.join(cfs.src["a"], rel))
    assert os.readlink(os.path.join(cfs.mnt, "sub", "link")) == "../hello.txt"
    assert sorted(os.listdir(cfs.mnt)) == ["big", "hello.txt", "objs", "sub"]  # the store's 00..ff are whited out
    [entry] = _composefs_at(cfs.mnt)
    assert "ro" in entry.options.split(",")
    assert _tmp_entries() == []  # the temporary EROFS mount point is gone once the overlay holds it

    again = _ok(run_module("composefs.fleet.mount", cfs.args()))
    assert not again["changed"] and again["mounted"] and again["digest"] == cfs.digest["a"]
    assert [e.mount_id for e in _composefs_at(cfs.mnt)] == [entry.mount_id]
    assert not _ok(run_module("composefs.fleet.mount", cfs.args(), check=True))["changed"]

    gone = _ok(run_module("composefs.fleet.mount", {"path": cfs.mnt, "state": "unmounted"}))
    assert gone["changed"] and not gone["mounted"] and gone["digest"] is None
    assert not _ok(run_module("composefs.fleet.mount", {"path": cfs.mnt, "state": "unmounted"}))["changed"]
    assert_clean(cfs.base, cfs.mnt)


def test_image_module_image_mounts_with_verity_off(cfs, tmp_path):
    store = str(tmp_path / "store2")
    image = str(tmp_path / "ours.cfs")
    built = _ok(run_module("composefs.fleet.image", {"src": cfs.src["b"], "dest": image, "digest_store": store}))
    assert built["digest"] == cfs.digest["b"]  # byte-identical to the oracle's
    res = _ok(run_module("composefs.fleet.mount", {"path": cfs.mnt, "image": image, "basedir": [store],
                                                   "digest": "sha256:" + built["digest"], "verity": "off",
                                                   "state": "ephemeral"}))
    assert res["changed"] and res["verity"] == "none" and res["objects"] is None
    assert USERSPACE_WARNING not in res["_stderr"]
    assert _read(os.path.join(cfs.mnt, "hello.txt")) == b"hello from B\n"
    assert _read(os.path.join(cfs.mnt, "big")) == _read(os.path.join(cfs.src["b"], "big"))
    _ok(exec_module("mount", {"path": cfs.mnt, "state": "absent", "fstab": str(tmp_path / "fstab")}))
    assert_clean(cfs.base, cfs.mnt)


def test_insecure_mount_without_pin_follows_the_image_file(cfs):
    args = cfs.args(digest=None, insecure=True)
    del args["digest"]
    first = _ok(exec_module("mount", args))
    assert first["changed"] and first["digest"] == cfs.digest["a"]
    assert not _ok(exec_module("mount", args))["changed"]
    shutil.copyfile(cfs.image["b"], cfs.image["a"])  # the file changes: the next run mounts what it now holds
    moved = _ok(exec_module("mount", args))
    assert moved["changed"] and moved["digest"] == cfs.digest["b"]
    assert _read(os.path.join(cfs.mnt, "hello.txt")) == b"hello from B\n"
    _ok(exec_module("mount", {"path": cfs.mnt, "state": "unmounted"}))
    assert_clean(cfs.base, cfs.mnt)


def test_digest_change_replaces_the_mount_in_place(cfs):
    _ok(exec_module("mount", cfs.args("a")))
    [old] = _composefs_at(cfs.mnt)
    held = open(os.path.join(cfs.mnt, "big"), "rb")  # a process using the old image
    try:
        res = _ok(exec_module("mount", cfs.args("b"), diff=True))
        assert res["changed"] and res["digest"] == cfs.digest["b"]
        assert res["diff"]["before"]["digest"] == cfs.digest["a"] and res["diff"]["after"]["digest"] == cfs.digest["b"]
        [new] = _composefs_at(cfs.mnt)  # exactly one: the old one was detached
        assert new.mount_id != old.mount_id
        assert _read(os.path.join(cfs.mnt, "hello.txt")) == b"hello from B\n"
        assert _read(os.path.join(cfs.mnt, "big")) == _read(os.path.join(cfs.src["b"], "big"))
        assert held.read() == _read(os.path.join(cfs.src["a"], "big"))  # still the old image, until closed
    finally:
        held.close()
    assert _tmp_entries() == []
    again = _ok(exec_module("mount", cfs.args("b")))
    assert not again["changed"]
    remount = _ok(exec_module("mount", cfs.args("b", state="remounted")))
    assert remount["changed"] and _composefs_at(cfs.mnt)[0].mount_id != new.mount_id
    _ok(exec_module("mount", {"path": cfs.mnt, "state": "unmounted"}))
    assert_clean(cfs.base, cfs.mnt)


def test_option_change_remounts(cfs, tmp_path):
    upper, work = str(tmp_path / "upper"), str(tmp_path / "work")
    os.mkdir(upper)
    os.mkdir(work)
    rw = _ok(exec_module("mount", cfs.args(upperdir=upper, workdir=work)))
    assert rw["changed"] and "upperdir=%s" % upper in rw["options"]
    _write(os.path.join(cfs.mnt, "new-file"), b"written through the overlay")
    assert _read(os.path.join(upper, "new-file")) == b"written through the overlay"
    assert not _ok(exec_module("mount", cfs.args(upperdir=upper, workdir=work)))["changed"]
    ro = _ok(exec_module("mount", cfs.args(upperdir=upper, workdir=work, ro=True)))
    assert ro["changed"] and "ro" in _composefs_at(cfs.mnt)[0].options.split(",")
    with pytest.raises(OSError) as exc:
        _write(os.path.join(cfs.mnt, "another"), b"x")
    assert exc.value.errno == errno.EROFS
    assert _read(os.path.join(cfs.mnt, "new-file")) == b"written through the overlay"
    plain = _ok(exec_module("mount", cfs.args()))
    assert plain["changed"] and not any(o.startswith("upperdir=") for o in plain["options"])
    _ok(exec_module("mount", {"path": cfs.mnt, "state": "unmounted"}))
    assert_clean(cfs.base, cfs.mnt)


def test_failed_replacement_leaves_the_old_mount(cfs):
    _ok(exec_module("mount", cfs.args("a")))
    [old] = _composefs_at(cfs.mnt)
    _failed(exec_module("mount", cfs.args("b", digest=cfs.digest["a"])), "image digest %s, pinned %s" % (cfs.digest["b"], cfs.digest["a"]))
    os.unlink(cfs.object_of("b", "big"))
    res = _failed(exec_module("mount", cfs.args("b")), "1 of the 9 objects", "missing")
    assert res["error"] == "objects-missing"
    assert [e.mount_id for e in _composefs_at(cfs.mnt)] == [old.mount_id]
    assert _read(os.path.join(cfs.mnt, "hello.txt")) == b"hello from A\n"
    assert state.load_record(cfs.mnt)["digest"] == cfs.digest["a"]
    assert _tmp_entries() == []
    _ok(exec_module("mount", {"path": cfs.mnt, "state": "unmounted"}))
    assert_clean(cfs.base, cfs.mnt)


# --- loop devices, the legacy lowerdir string, the helper ---------------------------------------------


def _run_in_process(images, backing="auto", api="auto", **params):
    request = manager.Request(images.mnt, images.image["a"], params.pop("basedir", [images.store]), images.digest["a"],
                              verity="userspace", helper="never", **params)
    return manager.MountRun(request, backing=backing, api=api).run()


def test_loop_device_and_legacy_lowerdir_string_clean_up(cfs):
    # A basedir whose name holds ':' tests the escaping of the legacy string, both ways.
    colon_store = cfs.store + ":x"
    os.rename(cfs.store, colon_store)
    res = _run_in_process(cfs, backing="loop", api="lowerdir", basedir=[colon_store])
    assert res["changed"] and res["backing"] == "loop"
    legacy = [o for o in res["options"] if o.startswith("lowerdir=")]
    assert legacy and legacy[0].endswith("::" + composefs_mount.escape_lowerdir(colon_store)), res["options"]
    loops = _loops_for(image_copy.IMAGES_DIR, wait=0)
    assert list(loops.values()) == [res["image_copy"]] == [image_copy.copy_path(cfs.digest["a"])], loops
    assert len(_losetup_lists(image_copy.IMAGES_DIR)) == 1
    assert _read(os.path.join(cfs.mnt, "big")) == _read(os.path.join(cfs.src["a"], "big"))
    # The module recognises the legacy mount as its own (idempotent), then unmounts it; autoclear frees the loop.
    again = _ok(exec_module("mount", cfs.args(basedir=[colon_store])))
    assert not again["changed"] and again["backing"] == "loop"
    _ok(exec_module("mount", {"path": cfs.mnt, "state": "unmounted"}))
    assert_clean(cfs.base, cfs.mnt)


def test_helper_mounts_the_checked_file(cfs, monkeypatch):
    monkeypatch.setenv("PATH", cfs_oracle.BIN + os.pathsep + os.environ["PATH"])
    res = _ok(exec_module("mount", cfs.args(helper="always")))
    assert res["changed"] and res["backing"] == "helper" and res["digest"] == cfs.digest["a"]
    assert any(o.startswith("lowerdir+=/tmp/.composefs.") for o in res["options"])  # mount.composefs's own temp dir
    assert _read(os.path.join(cfs.mnt, "hello.txt")) == b"hello from A\n"
    assert not _ok(exec_module("mount", cfs.args(helper="always")))["changed"]
    # auto picks the helper when it is installed; replacing a helper mount works like any other.
    swapped = _ok(exec_module("mount", cfs.args("b", helper="auto")))
    assert swapped["changed"] and swapped["backing"] == "helper" and len(_composefs_at(cfs.mnt)) == 1
    assert _read(os.path.join(cfs.mnt, "hello.txt")) == b"hello from B\n"
    _ok(exec_module("mount", {"path": cfs.mnt, "state": "unmounted"}))
    assert_clean(cfs.base, cfs.mnt)


# --- errors: a clear message, nothing left behind -------------------------------------------------------


def _missing_store(cfs):
    for i in range(7):
        os.unlink(cfs.object_of("a", "objs/f%d" % i))
    return cfs.args()


ERRORS = {
    "image missing": (lambda c: c.args(image=c.image["a"] + ".nope"), "image-missing", ["does not exist"]),
    "digest mismatch": (lambda c: c.args(digest="sha256:" + c.digest["b"]), "digest-mismatch", ["image digest", "pinned"]),
    "require without kernel fs-verity": (lambda c: c.args(verity="require"), "kernel-feature",
                                         ["verity=require needs fs-verity in the kernel (CONFIG_FS_VERITY)", "verity: userspace"]),
    "objects missing": (_missing_store, "objects-missing", ["7 of the 9 objects", "and 2 more"]),
    "not an image": (lambda c: c.args(image=os.path.join(c.src["a"], "big")), "invalid", ["is not a composefs image"]),
    "basedir missing": (lambda c: c.args(basedir=[c.store + "-nope"]), "invalid", ["does not exist"]),
    "no pin": (lambda c: dict((k, v) for k, v in c.args().items() if k != "digest"), "invalid", ["digest is required", "insecure"]),
    "bad pin": (lambda c: c.args(digest="1234"), "invalid", ["not a SHA-256 fs-verity digest"]),
    "helper missing": (lambda c: c.args(helper="always"), "helper", ["mount.composefs is not installed"]),
}


@pytest.mark.parametrize("case", sorted(ERRORS))
def test_errors_are_clear_and_leave_nothing_behind(cfs, case):
    make_args, kind, words = ERRORS[case]
    args = make_args(cfs)
    for check in (True, False):
        res = _failed(exec_module("mount", args, check=check), *words)
        assert res["error"] == kind
        assert_clean(cfs.base, cfs.mnt)
        assert not os.path.exists(cfs.mnt)  # refused before the mount point was even created
    if case == "digest mismatch":
        assert "image digest %s, pinned %s" % (cfs.digest["a"], cfs.digest["b"]) in res["msg"]
    if case == "objects missing":
        named = [w for w in res["msg"].split() if w.count("/") == 1 and len(w.strip(",")) == 65]
        assert len(named) == 5  # a few are named, not all


def test_not_root_is_refused(cfs):
    shared = tempfile.mkdtemp(prefix="cfsf-nobody-")
    try:
        os.chmod(shared, 0o755)
        args_file = os.path.join(shared, "args.json")
        with open(args_file, "w") as f:
            json.dump({"ANSIBLE_MODULE_ARGS": dict(cfs.args(), _ansible_remote_tmp=shared)}, f)
        os.chmod(args_file, 0o644)
        # The system Python, as on a managed node: nobody cannot run an interpreter kept under root's home
        # (pyenv's, which the controller venvs use), so ansible's module_utils come through PYTHONPATH.
        ansible_parent = os.path.dirname(os.path.dirname(ansible.__file__))
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.path.join(TOP, ".cache", "collections"), ansible_parent]), HOME=shared)
        proc = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "/usr/bin/python3",
                               os.path.join(TOP, "plugins", "modules", "mount.py"), args_file],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, env=env, cwd=shared,
                              check=False)
    finally:
        shutil.rmtree(shared)
    res = json.loads(proc.stdout)
    assert res["failed"] and res["error"] == "not-root", res
    assert "needs root" in res["msg"] and "rootless composefs mounts are not supported" in res["msg"]
    assert_clean(cfs.base, cfs.mnt)


def test_busy_mount_point_is_not_unmounted(cfs):
    _ok(exec_module("mount", cfs.args()))
    sleeper = subprocess.Popen(["sleep", "60"], cwd=os.path.join(cfs.mnt, "sub"))
    try:
        res = _failed(exec_module("mount", {"path": cfs.mnt, "state": "unmounted"}), "is busy", "fuser -vm")
        assert res["error"] == "busy"
        assert len(_composefs_at(cfs.mnt)) == 1 and state.load_record(cfs.mnt) is not None
    finally:
        sleeper.kill()
        sleeper.wait()
    assert _ok(exec_module("mount", {"path": cfs.mnt, "state": "unmounted"}))["changed"]
    assert_clean(cfs.base, cfs.mnt)


def test_other_mounts_are_never_touched(cfs):
    os.makedirs(cfs.mnt)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "someone-elses", cfs.mnt], check=True)
    try:
        res = _failed(exec_module("mount", cfs.args()), "did not mount", "tmpfs")
        assert res["error"] == "foreign-mount"
        left = _ok(exec_module("mount", {"path": cfs.mnt, "state": "unmounted"}, diff=True))
        assert not left["changed"] and not left["mounted"]
        assert [e.fstype for e in _mounts_below(cfs.mnt)] == ["tmpfs"]
    finally:
        subprocess.run(["umount", cfs.mnt], check=True)
    # A composefs mount made by someone else (mount.composefs by hand) is not ours either.
    subprocess.run([ORACLE_HELPER, "-o", "basedir=%s" % cfs.store, cfs.image["a"], cfs.mnt], check=True)
    try:
        _failed(exec_module("mount", cfs.args("b")), "did not mount")
        assert not _ok(exec_module("mount", {"path": cfs.mnt, "state": "unmounted"}))["changed"]
        assert len(_composefs_at(cfs.mnt)) == 1
        # Ours on top of nothing else: a stale record (its mount gone) does not make that mount ours.
        state.save_record({"path": cfs.mnt, "digest": cfs.digest["a"], "mount_id": _composefs_at(cfs.mnt)[0].mount_id,
                           "label": "/run/composefs-fleet/tmp/not-this-one"})
        assert not _ok(exec_module("mount", {"path": cfs.mnt, "state": "unmounted"}))["changed"]
        assert len(_composefs_at(cfs.mnt)) == 1 and state.load_record(cfs.mnt) is None
    finally:
        subprocess.run(["umount", cfs.mnt], check=True)
    assert_clean(cfs.base, cfs.mnt)


# --- kernel features, simulated where this kernel has them ------------------------------------------------


def _refuse(monkeypatch, key, err=errno.EINVAL):
    real = syscalls.FsContext.set_string

    def set_string(self, k, value):
        if k == key:
            raise syscalls.SyscallError(err, "fsconfig(%s, %s=%s)" % (self.fstype, k, value), ["e %s: Unknown parameter '%s'" % (self.fstype, k)])
        return real(self, k, value)
    monkeypatch.setattr(syscalls.FsContext, "set_string", set_string)


def test_kernel_without_lowerdir_plus_gets_the_legacy_string(cfs, monkeypatch):
    _refuse(monkeypatch, "lowerdir+")
    res = _run_in_process(cfs)
    assert res["changed"] and any(o.startswith("lowerdir=") and "::" in o for o in res["options"])
    assert _read(os.path.join(cfs.mnt, "hello.txt")) == b"hello from A\n"
    monkeypatch.undo()
    _ok(exec_module("mount", {"path": cfs.mnt, "state": "unmounted"}))
    assert_clean(cfs.base, cfs.mnt)


def test_kernel_without_overlay_verity_is_named(monkeypatch):
    _refuse(monkeypatch, "verity")
    with pytest.raises(MountError) as exc:
        composefs_mount.probe_overlay(kernel_verity=True)
    assert exc.value.kind == "kernel-feature" and "overlayfs verity=require" in str(exc.value)
    assert "Linux 6.6 or later" in str(exc.value) and "Unknown parameter 'verity'" in str(exc.value)
    composefs_mount.probe_overlay(kernel_verity=False)  # not needed, not asked for


def test_kernel_without_data_only_lowers_is_named(monkeypatch):
    real = syscalls.FsContext.set_string
    monkeypatch.setattr(syscalls.FsContext, "set_string",
                        lambda self, k, v: None if k == "unsupported" else real(self, k, v))  # overlayfs < 6.5 takes anything
    with pytest.raises(MountError) as exc:
        composefs_mount.probe_overlay(kernel_verity=False)
    assert "data-only lower layers" in str(exc.value) and "Linux 6.5 or later" in str(exc.value)


def test_kernel_without_file_backed_erofs_uses_a_loop_device(cfs, monkeypatch):
    real = syscalls.FsContext.create

    def create(self):
        source = getattr(self, "_source", "")
        if self.fstype == "erofs" and source.startswith("/proc/self/fd/"):
            raise syscalls.SyscallError(errno.ENOTBLK, "fsconfig(erofs, FSCONFIG_CMD_CREATE)")
        return real(self)
    real_set = syscalls.FsContext.set_string

    def set_string(self, k, v):
        if k == "source":
            self._source = v
        return real_set(self, k, v)
    monkeypatch.setattr(syscalls.FsContext, "create", create)
    monkeypatch.setattr(syscalls.FsContext, "set_string", set_string)
    with pytest.raises(MountError) as exc:
        _run_in_process(cfs, backing="file")
    assert "file-backed EROFS" in str(exc.value) and "Linux 6.12 or later" in str(exc.value)
    assert_clean(cfs.base, cfs.mnt)
    assert not os.path.exists(cfs.mnt)  # the mount point this run created went again
    res = _run_in_process(cfs)
    assert res["backing"] == "loop" and list(_loops_for(image_copy.IMAGES_DIR, wait=0).values()) == [res["image_copy"]]
    monkeypatch.undo()
    _ok(exec_module("mount", {"path": cfs.mnt, "state": "unmounted"}))
    assert_clean(cfs.base, cfs.mnt)


def test_kernel_without_move_beneath_keeps_the_old_mount(cfs, monkeypatch):
    _run_in_process(cfs)
    [old] = _composefs_at(cfs.mnt)
    real = syscalls.move_mount

    def move_mount(fd, target, beneath=False, target_fd=None):
        if beneath:
            raise syscalls.SyscallError(errno.EINVAL, "move_mount(%s, MOVE_MOUNT_BENEATH)" % target)
        return real(fd, target, beneath, target_fd)
    monkeypatch.setattr(syscalls, "move_mount", move_mount)
    monkeypatch.setattr(composefs_mount, "kernel_version", lambda release=None: (6, 1))
    request = manager.Request(cfs.mnt, cfs.image["b"], [cfs.store], cfs.digest["b"], verity="userspace", helper="never")
    with pytest.raises(MountError) as exc:
        manager.MountRun(request).run()
    assert "MOVE_MOUNT_BENEATH" in str(exc.value) and "Linux 6.5 or later" in str(exc.value)
    assert [e.mount_id for e in _composefs_at(cfs.mnt)] == [old.mount_id] and _tmp_entries() == []
    monkeypatch.undo()
    _ok(exec_module("mount", {"path": cfs.mnt, "state": "unmounted"}))
    assert_clean(cfs.base, cfs.mnt)


# --- persistence: the fstab line, and activating it as a booting system does ------------------------------

OTHER_FSTAB = "# /etc/fstab: static file system information.\nUUID=1234 / ext4 errors=remount-ro 0 1\n"


def _in_boot_namespace(cfs, tmp_path, fstab, commands):
    """Run shell ``commands`` in a private mount namespace where ``fstab`` is /etc/fstab and mount(8) finds
    mount.composefs (the oracle) among its helpers, as on a booted system with the composefs package."""
    helpers = tmp_path / "helpers"
    helpers.mkdir(exist_ok=True)
    wrapper = helpers / "mount.composefs"
    wrapper.write_text("#!/bin/sh\nexec %s \"$@\"\n" % ORACLE_HELPER)
    wrapper.chmod(0o755)
    script = "\n".join([
        "set -eu",
        "mount --bind %s /etc/fstab" % fstab,
        "mount -t overlay -o lowerdir=%s:/usr/sbin composefs-fleet-test-helpers /usr/sbin" % helpers,
    ] + commands)
    env = dict(os.environ, PYTHONPATH=os.path.join(TOP, ".cache", "collections"))
    return subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script], env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True, check=False)


def _module_command(tmp_path, name, args):
    path = tmp_path / ("%s.json" % name)
    path.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": dict(args, _ansible_remote_tmp="/tmp")}))
    return "%s %s %s > %s" % (sys.executable, os.path.join(TOP, "plugins", "modules", "mount.py"), path,
                              tmp_path / ("%s.out" % name))


def test_present_writes_fstab_and_boots_from_it(cfs, tmp_path):
    fstab = tmp_path / "fstab"
    fstab.write_text(OTHER_FSTAB)
    args = cfs.args(state="mounted", fstab=str(fstab))
    check = _ok(exec_module("mount", args, check=True, diff=True))
    assert check["changed"] and fstab.read_text() == OTHER_FSTAB and _composefs_at(cfs.mnt) == []
    assert check["diff"]["before"]["fstab"] is None and "composefs basedir=" in check["diff"]["after"]["fstab"]

    res = _ok(run_module("composefs.fleet.mount", args))
    assert res["changed"] and res["mounted"] and res["digest"] == cfs.digest["a"]
    marker = "# composefs.fleet: %s digest=%s verity=userspace" % (cfs.mnt, cfs.digest["a"])
    line = ("%s %s composefs basedir=%s,x-systemd.requires-mounts-for=%s,x-systemd.requires-mounts-for=%s 0 0"
            % (cfs.image["a"], cfs.mnt, cfs.store, cfs.image["a"], cfs.store))
    assert fstab.read_text() == OTHER_FSTAB + marker + "\n" + line + "\n"
    assert res["fstab"] == marker + "\n" + line
    assert "without checking the pinned digest" in res["_stderr"] and "mount.composefs is not installed" in res["_stderr"]
    assert not _ok(run_module("composefs.fleet.mount", args))["changed"]
    assert [n for n in os.listdir(str(tmp_path)) if n.startswith(".fstab")] == []  # atomic write left no temp file

    # Unmounted keeps the line; then boot: mount -a reads it and runs mount.composefs.
    assert _ok(exec_module("mount", {"path": cfs.mnt, "state": "unmounted"}))["changed"]
    assert fstab.read_text().endswith(line + "\n") and _composefs_at(cfs.mnt) == []
    proc = _in_boot_namespace(cfs, tmp_path, fstab, [
        "mount -a -t composefs",
        "cat %s/hello.txt > %s/booted-content" % (cfs.mnt, tmp_path),
        "grep ' %s ' /proc/self/mountinfo > %s/booted-mounts" % (cfs.mnt, tmp_path),
        _module_command(tmp_path, "mounted", args),
        _module_command(tmp_path, "absent", {"path": cfs.mnt, "state": "absent", "fstab": str(fstab)}),
        "! grep -q ' %s ' /proc/self/mountinfo" % cfs.mnt,
    ])
    assert proc.returncode == 0, proc.stdout
    assert (tmp_path / "booted-content").read_text() == "hello from A\n"
    assert " - overlay composefs " in (tmp_path / "booted-mounts").read_text()
    present = json.loads((tmp_path / "mounted.out").read_text())
    assert not present.get("failed") and not present["changed"] and present["mounted"], present  # taken over as ours
    assert present["digest"] == cfs.digest["a"] and present["backing"] == "helper"
    absent = json.loads((tmp_path / "absent.out").read_text())
    assert not absent.get("failed") and absent["changed"] and not absent["mounted"] and absent["fstab"] is None, absent
    assert fstab.read_text() == OTHER_FSTAB
    assert_clean(cfs.base, cfs.mnt)


def test_require_line_and_foreign_fstab_entries(cfs, tmp_path):
    # verity=require cannot mount on this kernel, so the line is checked as the module builds it.
    from ansible_collections.composefs.fleet.plugins.module_utils.mount.persist import FstabEntry
    marker, line = FstabEntry(cfs.mnt, cfs.image["a"], [cfs.store], cfs.digest["a"], "require").lines()
    assert ",digest=%s," % cfs.digest["a"] in line and marker.endswith("verity=require")
    fstab = tmp_path / "fstab"
    foreign = "/srv/x.cfs %s composefs basedir=/srv/o 0 0\n" % cfs.mnt
    fstab.write_text(OTHER_FSTAB + foreign)
    res = _failed(exec_module("mount", cfs.args(state="mounted", fstab=str(fstab))), "did not write", "line 3")
    assert res["error"] == "foreign-mount" and _composefs_at(cfs.mnt) == []
    left = _ok(exec_module("mount", {"path": cfs.mnt, "state": "absent", "fstab": str(fstab)}))
    assert not left["changed"] and fstab.read_text() == OTHER_FSTAB + foreign
    assert_clean(cfs.base, cfs.mnt)


# --- state names as in ansible.posix.mount, persistence checked before mounting -----------------------------


def test_states_mean_what_they_mean_in_ansible_posix_mount(cfs, tmp_path):
    fstab = tmp_path / "fstab"
    fstab.write_text(OTHER_FSTAB)
    args = cfs.args(fstab=str(fstab))
    # present: persisted only, nothing mounted.
    present = _ok(exec_module("mount", dict(args, state="present")))
    assert present["changed"] and not present["mounted"] and _composefs_at(cfs.mnt) == []
    line = present["fstab"].splitlines()[1]
    assert fstab.read_text() == OTHER_FSTAB + present["fstab"] + "\n"
    assert not _ok(exec_module("mount", dict(args, state="present")))["changed"]
    # mounted: mounted now, the line already there (changed because of the mount, from the real state).
    mounted = _ok(exec_module("mount", dict(args, state="mounted")))
    assert mounted["changed"] and mounted["mounted"] and len(_composefs_at(cfs.mnt)) == 1
    assert not _ok(exec_module("mount", dict(args, state="mounted")))["changed"]
    # unmounted: the mount goes, the line stays.
    gone = _ok(exec_module("mount", dict(args, state="unmounted")))
    assert gone["changed"] and _composefs_at(cfs.mnt) == [] and line in fstab.read_text()
    # ephemeral: mounted, fstab untouched (its line stays as it was, nothing added).
    before = fstab.read_text()
    eph = _ok(exec_module("mount", cfs.args("b", fstab=str(fstab), state="ephemeral")))
    assert eph["changed"] and eph["digest"] == cfs.digest["b"] and "fstab" not in eph and fstab.read_text() == before
    # remounted: mounted afresh, fstab untouched.
    [old] = _composefs_at(cfs.mnt)
    again = _ok(exec_module("mount", cfs.args("b", fstab=str(fstab), state="remounted")))
    assert again["changed"] and _composefs_at(cfs.mnt)[0].mount_id != old.mount_id and fstab.read_text() == before
    # absent: unmounted and the line removed; the rest of the file as it was.
    absent = _ok(exec_module("mount", {"path": cfs.mnt, "state": "absent", "fstab": str(fstab)}))
    assert absent["changed"] and not absent["mounted"] and absent["fstab"] is None
    assert fstab.read_text() == OTHER_FSTAB
    assert not _ok(exec_module("mount", {"path": cfs.mnt, "state": "absent", "fstab": str(fstab)}))["changed"]
    # state is required, as in ansible.posix.mount.
    no_state = dict(cfs.args())
    del no_state["state"]
    _failed(exec_module("mount", no_state), "missing required arguments: state")
    assert_clean(cfs.base, cfs.mnt)


def test_backup_of_the_fstab(cfs, tmp_path):
    (tmp_path / "etc").mkdir()
    fstab = tmp_path / "etc" / "fstab"
    fstab.write_text(OTHER_FSTAB)
    args = cfs.args(fstab=str(fstab), state="present", backup=True)
    check = _ok(exec_module("mount", args, check=True))
    assert check["changed"] and "backup_file" not in check and os.listdir(str(fstab.parent)) == ["fstab"]
    res = _ok(exec_module("mount", args))
    assert res["changed"] and res["backup_file"].startswith(str(fstab) + ".") and res["backup_file"].endswith("~")
    assert _read(res["backup_file"]) == OTHER_FSTAB.encode()
    unchanged = _ok(exec_module("mount", args))
    assert not unchanged["changed"] and "backup_file" not in unchanged  # nothing written, nothing backed up
    _ok(exec_module("mount", {"path": cfs.mnt, "state": "absent", "fstab": str(fstab)}))
    assert fstab.read_text() == OTHER_FSTAB
    assert_clean(cfs.base, cfs.mnt)


@pytest.fixture
def readonly_dir(tmp_path):
    """A directory on a read-only bind mount (the fstab's directory on a read-only /etc)."""
    path = tmp_path / "ro-etc"
    path.mkdir()
    (path / "fstab").write_text(OTHER_FSTAB)
    subprocess.run(["mount", "--bind", str(path), str(path)], check=True)
    subprocess.run(["mount", "-o", "remount,bind,ro", str(path)], check=True)
    yield path
    subprocess.run(["umount", str(path)], check=True)


def test_unwritable_fstab_fails_before_mounting(cfs, readonly_dir):
    fstab = readonly_dir / "fstab"
    args = cfs.args(state="mounted", fstab=str(fstab))
    for check in (True, False):
        res = _failed(exec_module("mount", args, check=check), "cannot write %s" % fstab, "nothing was changed")
        assert res["error"] == "persist" and not res["changed"]
        assert _composefs_at(cfs.mnt) == [] and not os.path.exists(cfs.mnt)
    assert fstab.read_text() == OTHER_FSTAB
    # A state that leaves the fstab as it is does not need it writable.
    assert _ok(exec_module("mount", cfs.args(state="ephemeral", fstab=str(fstab))))["changed"]
    assert not _ok(exec_module("mount", {"path": cfs.mnt, "state": "unmounted", "fstab": str(fstab)}))["failed"]
    assert_clean(str(cfs.base) + "/mnt", cfs.mnt)


def test_failed_fstab_write_rolls_the_new_mount_back(cfs, tmp_path, monkeypatch):
    from ansible_collections.composefs.fleet.plugins.module_utils.mount import persist
    fstab = tmp_path / "fstab"
    fstab.write_text(OTHER_FSTAB)

    def write_fstab(path, text):
        raise MountError("cannot write %s: No space left on device" % path, "persist")
    monkeypatch.setattr(persist, "write_fstab", write_fstab)
    request = manager.Request(cfs.mnt, cfs.image["a"], [cfs.store], cfs.digest["a"], verity="userspace",
                              helper="never", state="mounted", fstab=str(fstab))
    run = manager.MountRun(request)
    with pytest.raises(MountError) as exc:
        run.run()
    assert "No space left on device" in str(exc.value)
    assert not run.host_changed and not run.changed  # rolled back: the failure reports changed=false truthfully
    assert _composefs_at(cfs.mnt) == [] and not os.path.exists(cfs.mnt) and fstab.read_text() == OTHER_FSTAB
    assert_clean(cfs.base, cfs.mnt)
    # Replacing a mount cannot be rolled back: then the failure says changed=true.
    monkeypatch.undo()
    _ok(exec_module("mount", cfs.args(state="ephemeral")))
    monkeypatch.setattr(persist, "write_fstab", write_fstab)
    request = manager.Request(cfs.mnt, cfs.image["b"], [cfs.store], cfs.digest["b"], verity="userspace",
                              helper="never", state="mounted", fstab=str(fstab))
    run = manager.MountRun(request)
    with pytest.raises(MountError):
        run.run()
    assert run.host_changed
    monkeypatch.undo()
    _ok(exec_module("mount", {"path": cfs.mnt, "state": "unmounted"}))
    assert_clean(cfs.base, cfs.mnt)


def test_special_characters_in_fstab_fields_are_escaped_and_boot(tmp_path):
    """Spaces (and a tab) in the mount point, the image and the basedir: octal escapes that mount(8) reads back."""
    base = str(tmp_path / "with space")
    os.makedirs(base)
    images = Images(base)
    images.mnt = os.path.join(base, "mount\tpoint")
    fstab = tmp_path / "fstab"
    fstab.write_text(OTHER_FSTAB)
    try:
        res = _ok(exec_module("mount", images.args(state="mounted", fstab=str(fstab))))
        line = res["fstab"].splitlines()[1]
        assert line.split(" ")[:2] == [images.image["a"].replace(" ", "\\040"),
                                       images.mnt.replace(" ", "\\040").replace("\t", "\\011")]
        assert "basedir=%s" % images.store.replace(" ", "\\040") in line and len(line.split()) == 6
        assert not _ok(exec_module("mount", images.args(state="mounted", fstab=str(fstab))))["changed"]  # read back
        _ok(exec_module("mount", {"path": images.mnt, "state": "unmounted", "fstab": str(fstab)}))
        proc = _in_boot_namespace(images, tmp_path, fstab, [
            "mount -a -t composefs",
            "cat %s/hello.txt > %s/booted-content" % (shlex.quote(images.mnt), tmp_path),
            _module_command(tmp_path, "absent", {"path": images.mnt, "state": "absent", "fstab": str(fstab)}),
        ])
        assert proc.returncode == 0, proc.stdout
        assert (tmp_path / "booted-content").read_text() == "hello from A\n"
        assert not json.loads((tmp_path / "absent.out").read_text()).get("failed")
        assert fstab.read_text() == OTHER_FSTAB
    finally:
        for entry in sorted(_mounts_below(base), key=lambda e: -len(e.mountpoint)):
            subprocess.run(["umount", "-l", entry.mountpoint], check=False)
    assert_clean(base, images.mnt)


# --- symlinked mount points, preflight in check mode ---------------------------------------------------------


def test_symlinked_mount_point_is_refused(cfs, tmp_path):
    victim = tmp_path / "victim"
    victim.mkdir()
    os.symlink(str(victim), cfs.mnt)
    for check in (True, False):
        res = _failed(exec_module("mount", cfs.args(), check=check), "is a symlink", "refusing to mount over")
        assert res["error"] == "invalid"
        assert _mounts_below(str(victim)) == [] and _composefs_at(cfs.mnt) == []
    # A symlink further up the path is refused too (no realpath following).
    via = tmp_path / "via"
    os.symlink(str(tmp_path), str(via))
    res = _failed(exec_module("mount", cfs.args(path=str(via / "mnt2"))), "goes through a symlink")
    assert not (tmp_path / "mnt2").exists() and _mounts_below(str(tmp_path)) == []
    # present would mount over the target at boot: refused as well.
    fstab = tmp_path / "fstab"
    _failed(exec_module("mount", cfs.args(state="present", fstab=str(fstab))), "is a symlink")
    assert not fstab.exists()
    assert_clean(cfs.base)


def test_symlink_planted_after_the_checks_is_not_followed(cfs, tmp_path):
    victim = tmp_path / "victim"
    victim.mkdir()
    os.makedirs(cfs.mnt)

    def plant(_check):
        os.rmdir(cfs.mnt)
        os.symlink(str(victim), cfs.mnt)
    request = manager.Request(cfs.mnt, cfs.image["a"], [cfs.store], cfs.digest["a"], verity="userspace", helper="never")
    with pytest.raises(MountError) as exc:
        manager.MountRun(request, before_mount=plant).run()
    assert "symlink" in str(exc.value)
    assert _mounts_below(str(victim)) == [] and _mounts_below(cfs.base) == []
    os.unlink(cfs.mnt)
    assert_clean(cfs.base, cfs.mnt)


def test_check_mode_runs_the_same_preflight(cfs, tmp_path):
    _write(cfs.mnt, b"a regular file")
    for check in (True, False):
        _failed(exec_module("mount", cfs.args(), check=check), "exists and is not a directory")
    os.unlink(cfs.mnt)
    work = tmp_path / "work"
    work.mkdir()
    for check in (True, False):
        res = _failed(exec_module("mount", cfs.args(upperdir=str(tmp_path / "no-upper"), workdir=str(work)),
                                  check=check), "upperdir %s" % (tmp_path / "no-upper"), "create it first")
        assert res["error"] == "invalid" and not os.path.exists(cfs.mnt)
    fstab = tmp_path / "no-such-dir" / "fstab"
    for check in (True, False):
        _failed(exec_module("mount", cfs.args(state="mounted", fstab=str(fstab)), check=check),
                "directory %s does not exist" % fstab.parent)
        assert not os.path.exists(cfs.mnt)
    assert_clean(cfs.base, cfs.mnt)


# --- userspace: the checked bytes are the mounted bytes -----------------------------------------------------------


def _rewrite_in_place(path, data):
    inode = os.stat(path).st_ino
    with open(path, "r+b") as f:
        f.write(data)
        f.truncate()
    assert os.stat(path).st_ino == inode


def test_userspace_mounts_the_checked_bytes_not_a_rewritten_image(cfs):
    swapped = _read(cfs.image["b"])
    request = manager.Request(cfs.mnt, cfs.image["a"], [cfs.store], cfs.digest["a"], verity="userspace", helper="never")
    res = manager.MountRun(request, before_mount=lambda check: _rewrite_in_place(cfs.image["a"], swapped)).run()
    assert res["changed"] and res["digest"] == cfs.digest["a"]
    assert _read(os.path.join(cfs.mnt, "hello.txt")) == b"hello from A\n"  # the checked image, not what is there now
    copy = res["image_copy"]
    assert copy == os.path.join(image_copy.IMAGES_DIR, cfs.digest["a"])
    st = os.stat(image_copy.IMAGES_DIR)
    assert stat.S_IMODE(st.st_mode) == 0o700 and st.st_uid == 0
    from ansible_collections.composefs.fleet.plugins.module_utils.fsverity.digest import file_digest
    assert file_digest(copy).hex() == cfs.digest["a"]
    # The image file no longer has the pin: the next run says so, and the mount stays.
    _failed(exec_module("mount", cfs.args()), "image digest %s, pinned %s" % (cfs.digest["b"], cfs.digest["a"]))
    assert _read(os.path.join(cfs.mnt, "hello.txt")) == b"hello from A\n"
    _ok(exec_module("mount", {"path": cfs.mnt, "state": "unmounted"}))
    assert not os.path.exists(copy)  # the copy goes with its last mount
    assert_clean(cfs.base, cfs.mnt)


def test_image_copy_is_shared_and_removed_with_its_last_mount(cfs, tmp_path):
    second = str(tmp_path / "mnt2")
    first = _ok(exec_module("mount", cfs.args()))
    other = _ok(exec_module("mount", cfs.args(path=second)))
    assert first["image_copy"] == other["image_copy"] and os.path.exists(first["image_copy"])
    _ok(exec_module("mount", {"path": cfs.mnt, "state": "unmounted"}))
    assert os.path.exists(first["image_copy"])  # still used by the second mount
    assert _read(os.path.join(second, "hello.txt")) == b"hello from A\n"
    # Replacing the second mount with another digest drops the old copy, keeps the new one.
    swapped = _ok(exec_module("mount", cfs.args("b", path=second)))
    assert not os.path.exists(first["image_copy"]) and os.path.exists(swapped["image_copy"])
    _ok(exec_module("mount", {"path": second, "state": "unmounted"}))
    assert_clean(cfs.base, second)


# --- payloads of a pinned image, verify_objects ---------------------------------------------------------------------


def _dump_image(tmp_path, name, payload, digest="-"):
    image = str(tmp_path / ("%s.cfs" % name))
    dump = ("/ 4096 40755 2 0 0 0 0.0 - - -\n/file 5000 100644 1 0 0 0 0.0 %s - %s\n" % (payload, digest)).encode()
    cfs_oracle.mkcomposefs_from_dump(dump, image)
    from ansible_collections.composefs.fleet.plugins.module_utils.fsverity.digest import file_digest
    return image, file_digest(image).hex()


def test_pinned_image_may_only_reference_digest_named_objects(cfs, tmp_path):
    store = tmp_path / "plain-store"
    (store / "etc").mkdir(parents=True)
    (store / "etc" / "passwd").write_bytes(b"x" * 5000)
    image, digest = _dump_image(tmp_path, "plain", "etc/passwd")
    args = {"path": cfs.mnt, "image": image, "basedir": [str(store)], "verity": "userspace", "helper": "never",
            "state": "ephemeral"}
    for check in (True, False):
        res = _failed(exec_module("mount", dict(args, digest=digest), check=check), "'etc/passwd'",
                      "not an object-store name")
        assert res["error"] == "invalid" and _composefs_at(cfs.mnt) == []
    res = _failed(exec_module("mount", dict(args, digest=digest, verity="off")), "not an object-store name")
    # Without a pin (insecure), a plain directory tree as basedir is still allowed, as composefs allows it.
    plain = _ok(exec_module("mount", dict(args, insecure=True)))
    assert plain["changed"] and _read(os.path.join(cfs.mnt, "file")) == b"x" * 5000
    _ok(exec_module("mount", {"path": cfs.mnt, "state": "unmounted"}))
    # A digest-named payload that is not the object of the digest the image records for it.
    real = cfs.object_of("a", "big")
    rel = os.path.relpath(real, cfs.store)
    image2, digest2 = _dump_image(tmp_path, "misnamed", rel, "ab" * 32)
    res = _failed(exec_module("mount", {"path": cfs.mnt, "image": image2, "basedir": [cfs.store], "digest": digest2,
                                        "verity": "userspace", "helper": "never", "state": "ephemeral"}),
                  rel, "the image records digest %s" % ("ab" * 32))
    assert res["error"] == "invalid"
    assert_clean(cfs.base, cfs.mnt)


def test_verify_objects_digest_finds_a_tampered_object(cfs):
    victim = cfs.object_of("a", "objs/f3")
    size = os.path.getsize(victim)
    with open(victim, "r+b") as f:  # same name, same size, other bytes
        f.write(b"Z" * size)
    exists = _ok(exec_module("mount", cfs.args(verify_objects="exists")))
    assert exists["changed"] and USERSPACE_WARNING in str(exists["warnings"])
    _ok(exec_module("mount", {"path": cfs.mnt, "state": "unmounted"}))
    res = _failed(exec_module("mount", cfs.args(verify_objects="digest")), "verify_objects=digest",
                  "1 of the 9 objects", os.path.relpath(victim, cfs.store))
    assert res["error"] == "objects-digest" and _composefs_at(cfs.mnt) == []
    _failed(exec_module("mount", cfs.args(verify_objects="digest"), check=True), "verify_objects=digest")
    os.unlink(victim)
    shutil.copyfile(os.path.join(cfs.src["a"], "objs", "f3"), victim)
    ok = _ok(exec_module("mount", cfs.args(verify_objects="digest")))
    assert ok["changed"] and ok["objects"] == 9 and "the digests of its 9 objects" in str(ok["warnings"])
    _failed(exec_module("mount", cfs.args(verify_objects="digest", verity="off")), "for verity=userspace only")
    _ok(exec_module("mount", {"path": cfs.mnt, "state": "unmounted"}))
    assert_clean(cfs.base, cfs.mnt)
