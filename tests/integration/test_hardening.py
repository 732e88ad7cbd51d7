"""Issue 9 on real filesystems: planted symlinks and FIFOs, half-done builds, killed builds, orphaned workers."""
import fcntl
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from module_exec import exec_module
from support import TOP

from ansible_collections.composefs.fleet.plugins.module_utils.composefs import build
from ansible_collections.composefs.fleet.plugins.module_utils.erofs import reader
from ansible_collections.composefs.fleet.plugins.module_utils.fsverity.digest import file_digest
from ansible_collections.composefs.fleet.plugins.module_utils.mount import verify
from ansible_collections.composefs.fleet.plugins.module_utils.mount.errors import MountError
from ansible_collections.composefs.fleet.plugins.module_utils.objectstore import ObjectStore

BIG = b"z" * 5000


@pytest.fixture
def no_hang():
    """A blocking open of a FIFO would wait forever: fail the test after 20 s instead."""
    def _alarm(signum, frame):
        raise TimeoutError("blocked: a FIFO was opened for a blocking read")
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(20)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


def _tree(tmp_path, files=None):
    src = tmp_path / "src"
    src.mkdir()
    for name, data in (files or {"big": BIG, "other": b"o" * 300}).items():
        (src / name).write_bytes(data)
    return src


# --- item 3: symlinks inside the store -----------------------------------------------------------

def test_symlinked_fanout_directory_is_refused(tmp_path):
    src = _tree(tmp_path)
    digest = file_digest(str(src / "big")).hex()
    store = tmp_path / "store"
    store.mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    os.symlink(str(elsewhere), str(store / digest[:2]))
    res = exec_module("image", {"src": str(src), "digest_store": str(store)})
    assert res["failed"] and "symlink" in res["msg"] and digest[:2] in res["msg"], res
    assert os.listdir(str(elsewhere)) == []  # nothing written through the link


def test_symlink_in_place_of_an_object_is_replaced_not_followed(tmp_path):
    src = _tree(tmp_path)
    digest = file_digest(str(src / "big")).hex()
    store = tmp_path / "store"
    (store / digest[:2]).mkdir(parents=True)
    target = tmp_path / "target"
    target.write_bytes(BIG)  # right bytes, but a symlink is never an object
    os.symlink(str(target), str(store / digest[:2] / digest[2:]))
    res = exec_module("image", {"src": str(src), "digest_store": str(store)})
    assert not res["failed"] and res["objects"]["added"] == 2, res
    assert not os.path.islink(str(store / digest[:2] / digest[2:]))
    assert target.read_bytes() == BIG


# --- item 5: FIFOs and devices never hang ------------------------------------------------------

def test_fifo_src_dumpfile_dest_and_images_are_refused(tmp_path, no_hang):
    fifo = tmp_path / "fifo"
    os.mkfifo(str(fifo))
    src = _tree(tmp_path)
    res = exec_module("image", {"src_dumpfile": str(fifo)})
    assert res["failed"] and "FIFO" in res["msg"], res
    res = exec_module("image", {"src": str(src), "dest": str(fifo)})
    assert res["failed"] and "FIFO" in res["msg"], res
    with pytest.raises(MountError) as exc:
        verify.open_image(str(fifo))
    assert "FIFO" in str(exc.value)
    assert verify.userspace_digest(str(fifo)) is None
    with pytest.raises(reader.ImageError) as err:
        reader.read_image(str(fifo))
    assert "FIFO" in str(err.value)
    with pytest.raises(OSError) as oserr:
        file_digest(str(fifo))
    assert "FIFO" in str(oserr.value)
    # A character device is refused the same way (and /dev/zero would never end).
    res = exec_module("image", {"src_dumpfile": "/dev/zero"})
    assert res["failed"] and "character device" in res["msg"], res


def test_symlink_at_dest_is_refused(tmp_path):
    src = _tree(tmp_path)
    other = tmp_path / "other"
    other.write_bytes(b"keep")
    os.symlink(str(other), str(tmp_path / "img"))
    res = exec_module("image", {"src": str(src), "dest": str(tmp_path / "img")})
    assert res["failed"] and "symlink" in res["msg"], res
    assert other.read_bytes() == b"keep"


# --- item 11: destinations first; changed=true with what was added -----------------------------

def test_missing_dest_directory_fails_before_the_store_is_filled(tmp_path):
    src = _tree(tmp_path)
    store = tmp_path / "store"
    dest = tmp_path / "no" / "such" / "img.cfs"
    for check in (True, False):
        res = exec_module("image", {"src": str(src), "dest": str(dest), "digest_store": str(store)}, check=check)
        assert res["failed"] and "does not exist" in res["msg"] and not res.get("changed"), res
        assert not store.exists() or not [p for p in store.rglob("*") if p.is_file()]


def test_immutable_dest_directory_fails_before_the_store_is_filled(tmp_path):
    src = _tree(tmp_path)
    store = tmp_path / "store"
    locked = tmp_path / "locked"
    locked.mkdir()
    chattr = subprocess.run(["chattr", "+i", str(locked)], stderr=subprocess.PIPE, universal_newlines=True, check=False)
    assert chattr.returncode == 0, "this test needs chattr +i on %s: %s" % (tmp_path, chattr.stderr)
    try:
        res = exec_module("image", {"src": str(src), "dest": str(locked / "img.cfs"), "digest_store": str(store)})
    finally:
        subprocess.run(["chattr", "-i", str(locked)], check=True)
    assert res["failed"] and "Operation not permitted" in res["msg"] and not res.get("changed"), res
    assert not store.exists() or not [p for p in store.rglob("*") if p.is_file()]


def test_failure_after_objects_were_added_reports_changed(tmp_path, monkeypatch):
    src = _tree(tmp_path)
    store = tmp_path / "store"

    def broken_commit(self, data, enable_verity, mode=0o644):
        raise build.ImageBuildError("cannot write dest %s: No space left on device" % self.dest)

    monkeypatch.setattr(build.DestFile, "commit", broken_commit)
    with pytest.raises(build.ImageBuildError) as exc:
        build.build(src=str(src), dest=str(tmp_path / "img.cfs"), digest_store=str(store), workers=1)
    assert exc.value.result == {"changed": True, "objects": {"count": 2, "added": 2, "bytes_added": 5300, "missing": 0,
                                                             "stale_removed": 0}}
    assert "2 object(s) added" in str(exc.value)
    assert not [n for n in os.listdir(str(tmp_path)) if ".tmp-" in n]  # the reserved temp file is gone


# --- item 13: killed builds: stale temp files, orphaned workers ---------------------------------

def test_stale_temp_files_are_cleaned_under_the_lock(tmp_path):
    src = _tree(tmp_path)
    store = tmp_path / "store"
    (store / "ab").mkdir(parents=True)
    old = store / "ab" / ".tmp-0123456789ab.999.deadbeef"
    fresh = store / "ab" / ".tmp-0123456789ab.998.cafebabe"
    old.write_bytes(b"x" * 1000)
    fresh.write_bytes(b"y" * 1000)
    long_ago = time.time() - 3600
    os.utime(str(old), (long_ago, long_ago))
    # Another build is writing (it holds the shared lock): nothing of its may be cleaned.
    fd = os.open(str(store), os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
        busy = exec_module("image", {"src": str(src), "digest_store": str(store)})
        assert not busy["failed"] and busy["objects"]["stale_removed"] == 0, busy
        assert old.exists() and fresh.exists()
    finally:
        os.close(fd)
    res = exec_module("image", {"src": str(src), "digest_store": str(store)})
    assert not res["failed"] and res["changed"] and res["objects"]["stale_removed"] == 1, res
    assert not old.exists() and fresh.exists()  # the fresh one is within the grace period
    again = exec_module("image", {"src": str(src), "digest_store": str(store)})
    assert not again["changed"]


def test_objects_store_lock_is_shared_between_writers(tmp_path):
    store = tmp_path / "store"
    with ObjectStore(str(store)) as one, ObjectStore(str(store)) as two:
        one.lock_for_writing()
        two.lock_for_writing()  # two builds write side by side
        assert two.clean_stale_temp_files(grace=0) == []


def _children(pid):
    try:
        with open("/proc/%d/task/%d/children" % (pid, pid)) as f:
            return [int(c) for c in f.read().split()]
    except OSError:
        return []


def _alive(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_workers_die_with_a_killed_build(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for i in range(3000):
        (src / ("f%04d" % i)).write_bytes(os.urandom(200 + i))
    # The module process itself, as AnsiballZ runs it ("threads": the 0.1.0 name, an alias of workers now).
    args = tmp_path / "args.json"
    args.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": {"src": str(src), "digest_store": str(tmp_path / "store"), "threads": 2}}))
    proc = subprocess.Popen([sys.executable, os.path.join(TOP, "plugins", "modules", "image.py"), str(args)],
                            env=dict(os.environ, PYTHONPATH=os.path.join(TOP, ".cache", "collections")),
                            stdout=subprocess.DEVNULL)
    workers = []
    for _ in range(600):  # wait for the worker processes (up to a minute on a busy machine)
        workers = _children(proc.pid)
        if len(workers) >= 2 or proc.poll() is not None:
            break
        time.sleep(0.1)
    assert len(workers) >= 2, "the build ended before its workers could be seen"
    # Freeze the workers mid-task, so that "they would have ended after their current chunk" cannot pass
    # for dying with the parent; a SIGKILL from the kernel (PR_SET_PDEATHSIG) ends even a stopped process.
    for w in workers:
        os.kill(w, signal.SIGSTOP)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    for _ in range(300):
        if not any(_alive(w) for w in workers):
            break
        time.sleep(0.1)
    left = [w for w in workers if _alive(w)]
    for w in left:
        os.kill(w, signal.SIGKILL)
    assert not left, "workers outlived their killed parent: %s" % left


# --- issue 10 item 5: one name and one check for the same kind of option ------------------------

def test_consistent_names_and_validation(tmp_path):
    f = tmp_path / "f"
    f.write_bytes(b"x" * 100)
    src = _tree(tmp_path)
    for module, args in [
        ("fsverity", {"paths": [str(f)], "workers": 0}),
        ("fsverity", {"paths": [str(f)], "workers": -2}),
        ("image", {"src": str(src), "workers": 0}),
        ("image", {"src": str(src), "threads": -1}),  # the 0.1.0 name, an alias now
    ]:
        res = exec_module(module, args)
        assert res["failed"] and "workers must be at least 1" in res["msg"], (module, args, res)
    for module, args in [
        ("fsverity", {"paths": ["relative/f"]}),
        ("image", {"src": "relative/src"}),
        ("image", {"src": str(src), "dest": "img.cfs"}),
        ("verity_facts", {"paths": ["var/lib"]}),
    ]:
        res = exec_module(module, args)
        assert res["failed"] and "must be an absolute path, not" in res["msg"], (module, args, res)
    # 8 hex digits are a typo, refused up front (not reported as a "mismatch" after reading the file).
    res = exec_module("fsverity", {"paths": [str(f)], "expected_digest": "85d600d4"})
    assert res["failed"] and "8 hex digits, expected 64" in res["msg"] and "mismatch" not in res["msg"], res
    res = exec_module("mount", {"path": str(tmp_path / "mnt"), "image": str(tmp_path / "i"), "basedir": [str(tmp_path)],
                                "digest": "85d600d4", "state": "mounted"})
    assert res["failed"] and "8 hex digits, expected 64" in res["msg"], res
    # The old list name still works.
    assert exec_module("fsverity", {"path": [str(f)]})["files"][0]["path"] == str(f)
    assert exec_module("fsverity", {"paths": [str(f)], "workers": 1})["files"][0]["path"] == str(f)
