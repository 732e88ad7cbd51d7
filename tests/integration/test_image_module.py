"""The image module through ansible: byte-equality with the oracle, the store, idempotence, failures."""
import hashlib
import os

import pytest

from ansible_run import run_module
from module_exec import exec_module
from support import shared_vectors

import cfs_oracle


def oracle(*args):
    """mkcomposefs with ``args`` (the last one or two being SRC [IMAGE]); its stdout, stripped."""
    return cfs_oracle.mkcomposefs(*args).decode().strip()


@pytest.fixture
def tree(tmp_path):
    src = tmp_path / "src"
    (src / "sub" / "deeper").mkdir(parents=True)
    (src / "small").write_bytes(b"x" * 64)
    (src / "medium").write_bytes(b"y" * 65)
    (src / "sub" / "big").write_bytes(os.urandom(300000))
    (src / "sub" / "deeper" / "copy-of-big").write_bytes((src / "sub" / "big").read_bytes())
    (src / "empty").write_bytes(b"")
    os.symlink("sub/big", str(src / "link"))
    os.mkfifo(str(src / "fifo"))
    os.setxattr(str(src / "small"), "user.note", b"hello")
    return src


def test_directory_image_and_store_equal_mkcomposefs(tree, tmp_path):
    want = oracle("--digest-store=%s" % (tmp_path / "ostore"), "--print-digest", str(tree), str(tmp_path / "oracle.cfs"))
    dest, store = tmp_path / "ours.cfs", tmp_path / "store"
    check = run_module("composefs.fleet.image", {"src": str(tree), "dest": str(dest), "digest_store": str(store)}, check=True, diff=True)
    assert check["changed"] and check["digest"] == want and not dest.exists() and not store.exists()
    first = run_module("composefs.fleet.image", {"src": str(tree), "dest": str(dest), "digest_store": str(store), "mode": "0600"})
    assert first["changed"] and first["digest"] == want, first
    assert dest.read_bytes() == (tmp_path / "oracle.cfs").read_bytes()
    assert oct(dest.stat().st_mode & 0o777) == "0o600"
    assert first["objects"] == {"count": 2, "added": 2, "bytes_added": 300000 + 65, "missing": 0, "stale_removed": 0}
    assert first["inlined"] == 1
    ours = sorted(p.relative_to(store).as_posix() for p in store.rglob("*") if p.is_file())
    theirs = sorted(p.relative_to(tmp_path / "ostore").as_posix() for p in (tmp_path / "ostore").rglob("*") if p.is_file())
    assert ours == theirs
    again = run_module("composefs.fleet.image", {"src": str(tree), "dest": str(dest), "digest_store": str(store), "mode": "0600"})
    assert not again["changed"] and again["objects"]["added"] == 0
    check_again = run_module("composefs.fleet.image", {"src": str(tree), "dest": str(dest), "digest_store": str(store), "mode": "0600"}, check=True)
    assert not check_again["changed"]


def test_damaged_object_is_replaced(tree, tmp_path):
    store = tmp_path / "store"
    first = run_module("composefs.fleet.image", {"src": str(tree), "digest_store": str(store)})
    obj = next(p for p in store.rglob("*") if p.is_file() and p.stat().st_size == 300000)
    with open(str(obj), "r+b") as f:
        f.write(b"tampered")
    again = run_module("composefs.fleet.image", {"src": str(tree), "digest_store": str(store)})
    assert again["changed"] and again["objects"]["added"] == 1 and again["digest"] == first["digest"]
    assert obj.read_bytes() == (tree / "sub" / "big").read_bytes()


def test_source_change_rebuilds(tree, tmp_path):
    dest = tmp_path / "img.cfs"
    first = run_module("composefs.fleet.image", {"src": str(tree), "dest": str(dest)})
    (tree / "small").write_bytes(b"z")
    # exec_module: the ansible CLI prints a diff as text, not in the result.
    second = exec_module("image", {"src": str(tree), "dest": str(dest)}, diff=True)
    assert second["changed"] and second["digest"] != first["digest"]
    assert second["diff"]["before"]["digest"] == first["digest"] and second["diff"]["after"]["digest"] == second["digest"]


@pytest.mark.parametrize("name", ["config.dump.gz", "special_v1.dump", "bigfile.dump"])
def test_dumpfile_sources(name, tmp_path):
    rows = dict((line.split("\t")[0], line.rstrip("\n").split("\t")) for line in open(shared_vectors("composefs", "MANIFEST.tsv")) if not line.startswith("#"))
    _name, vmin, vmax, _strict, want = rows[name]
    args = {"src_dumpfile": shared_vectors("composefs", name), "dest": str(tmp_path / "img")}
    if vmin != "-":
        args.update(min_version=int(vmin), max_version=int(vmax))
    res = run_module("composefs.fleet.image", args)
    assert not res["failed"], res
    assert hashlib.sha256((tmp_path / "img").read_bytes()).hexdigest() == want


def test_dumpfile_with_store_reports_missing_objects(tmp_path):
    res = run_module("composefs.fleet.image", {"src_dumpfile": shared_vectors("composefs", "config.dump.gz"), "digest_store": str(tmp_path / "s")})
    assert not res["failed"] and res["objects"]["missing"] == res["objects"]["count"] >= 1
    assert "not in" in res["_stderr"]


@pytest.mark.parametrize("payload", ["../../etc/shadow", "/etc/shadow", "ab/../../x"])
def test_hostile_payloads_refused(tmp_path, payload):
    dump = tmp_path / "hostile.dump"
    dump.write_text("/ 4096 40755 2 0 0 0 0.0 - - -\n/f 100 100644 1 0 0 0 0.0 %s - -\n" % payload)
    res = run_module("composefs.fleet.image", {"src_dumpfile": str(dump), "dest": str(tmp_path / "img")})
    assert res["failed"] and "out of the object store" in res["msg"], res
    assert not (tmp_path / "img").exists()


@pytest.mark.parametrize("name", sorted(n for n in os.listdir(shared_vectors("composefs")) if n.startswith("should-fail-")))
def test_bad_dumpfiles_fail_cleanly(name, tmp_path):
    dest = tmp_path / "img"
    res = run_module("composefs.fleet.image", {"src_dumpfile": shared_vectors("composefs", name), "dest": str(dest)})
    assert res["failed"] and name in res["msg"], res
    assert not dest.exists() and os.listdir(str(tmp_path)) == []


def test_bad_input_messages(tmp_path):
    (tmp_path / "notgz.dump.gz").write_bytes(b"\x1f\x8bnot really gzip")
    cases = [
        ({"src": str(tmp_path / "missing"), "dest": str(tmp_path / "i")}, "is not a directory"),
        ({"src_dumpfile": str(tmp_path / "missing")}, "does not exist"),
        ({"src_dumpfile": str(tmp_path / "notgz.dump.gz")}, "cannot read"),
        ({"src": str(tmp_path), "dest": str(tmp_path / "nodir" / "img")}, "does not exist"),
        ({"src": str(tmp_path), "src_dumpfile": str(tmp_path / "x")}, "mutually exclusive"),
        ({"src": str(tmp_path), "skip_xattrs": True, "user_xattrs": True}, "mutually exclusive"),
    ]
    for args, words in cases:
        res = run_module("composefs.fleet.image", args)
        assert res["failed"] and words in res["msg"], (args, res)
    assert not (tmp_path / "i").exists()


def test_hardlinks_option(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "a").write_bytes(b"q" * 100)
    os.link(str(src / "a"), str(src / "b"))
    plain = run_module("composefs.fleet.image", {"src": str(src)})
    assert plain["digest"] == oracle("--print-digest-only", str(src))
    kept = run_module("composefs.fleet.image", {"src": str(src), "hardlinks": True})
    assert kept["digest"] != plain["digest"]


def test_delegated_to_controller_same_digest(tree, tmp_path):
    # The same module code on "the controller": here both are localhost, so compare with the oracle.
    res = run_module("composefs.fleet.image", {"src": str(tree), "use_epoch": True, "user_xattrs": True})
    assert res["digest"] == oracle("--print-digest-only", "--use-epoch", "--user-xattrs", str(tree))


_BUILDER = """
import sys
sys.path.insert(0, sys.argv[4])
from ansible_collections.composefs.fleet.plugins.module_utils.composefs import build
print(build.build(src=sys.argv[1], dest=sys.argv[2], digest_store=sys.argv[3], workers=2)["digest"])
"""


def test_concurrent_builds_into_one_store(tmp_path):
    # Two builders, each with its own worker processes, fill one store at the same time.
    import subprocess
    import sys
    from support import TOP
    src = tmp_path / "src"
    src.mkdir()
    for i in range(600):
        (src / ("f%03d" % i)).write_bytes(os.urandom(100 + i * 37))
    store = tmp_path / "store"
    collections = os.path.join(TOP, ".cache", "collections")
    procs = [subprocess.Popen([sys.executable, "-c", _BUILDER, str(src), str(tmp_path / ("img%d" % i)), str(store), collections],
                              stdout=subprocess.PIPE, universal_newlines=True) for i in range(2)]
    digests = [p.communicate()[0].strip() for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    assert digests[0] == digests[1] == oracle("--print-digest-only", str(src))
    objects = sorted(p for p in store.rglob("*") if p.is_file())
    assert len(objects) == 600 and not [p for p in objects if p.name.startswith(".tmp-")]
    again = run_module("composefs.fleet.image", {"src": str(src), "dest": str(tmp_path / "img0"), "digest_store": str(store)})
    assert not again["changed"] and again["objects"]["added"] == 0  # every object verified intact
