"""composefs-rs repositories on a real ext4 loop filesystem: init, commit, refs, gc under the lock, fsck."""
import json
import multiprocessing
import os

import pytest

from ansible_collections.composefs.fleet.plugins.module_utils.composefs.build import build, image_bytes, load_tree
from ansible_collections.composefs.fleet.plugins.module_utils.fsverity.digest import file_digest
from ansible_collections.composefs.fleet.plugins.module_utils.repository import fsck, gc
from ansible_collections.composefs.fleet.plugins.module_utils.repository import repo as repository
from ansible_collections.composefs.fleet.plugins.module_utils.repository.errors import RepositoryError, RepositoryLocked
from ansible_collections.composefs.fleet.plugins.module_utils.repository.lock import RepositoryLock


@pytest.fixture
def where(ext4, request):
    d = os.path.join(ext4, "repo-" + request.node.name.replace("[", "-").replace("]", ""))
    os.makedirs(d)
    return d


def make_tree(root, files):
    for name, data in files.items():
        path = os.path.join(root, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)
    return root


def build_into(repo, where, name, files):
    """Build an image of ``files`` with its objects written straight into the repository's objects/."""
    src = make_tree(os.path.join(where, "src-" + name), files)
    dest = os.path.join(where, name + ".cfs")
    result = build(src=src, dest=dest, digest_store=repo.objects_path, min_version=1, max_version=1, enable_verity=False)
    return dest, result


def test_init_is_idempotent_and_refuses_another_configuration(where):
    path = os.path.join(where, "r")
    changed, info = repository.init(path, "sha256", 1, insecure=True, check_mode=True)
    assert changed and info["algorithm"] == "sha256" and not os.path.exists(path)
    changed, info = repository.init(path, "sha256", 1, insecure=True)
    assert changed and sorted(os.listdir(path)) == ["meta.json"]
    assert json.loads(open(os.path.join(path, "meta.json")).read())["algorithm"] == "fsverity-sha256-12"
    assert oct(os.stat(path).st_mode & 0o777) == "0o700"
    assert repository.init(path, "sha256", 1, insecure=True)[0] is False
    with pytest.raises(RepositoryError, match="fsverity-sha256-12 and EROFS format 1.*cannot be re-initialized"):
        repository.init(path, "sha512", 1, insecure=True)
    with pytest.raises(RepositoryError, match="cannot be re-initialized"):
        repository.init(path, "sha256", 2, insecure=True)
    other = os.path.join(where, "full")
    os.makedirs(other)
    open(os.path.join(other, "passwd"), "w").close()
    with pytest.raises(RepositoryError, match="not empty and has no meta.json"):
        repository.init(other, "sha256", 1, insecure=True)
    assert os.listdir(other) == ["passwd"]


def test_secure_init_needs_fs_verity(where):
    # This host kernel has no fs-verity: a secure repository is refused, naming the fix, and nothing is left.
    path = os.path.join(where, "secure")
    with pytest.raises(RepositoryError, match="insecure: true"):
        repository.init(path, "sha512", 1)
    assert not os.path.exists(path)
    os.mkdir(path)
    with pytest.raises(RepositoryError, match="insecure: true"):
        repository.init(path, "sha512", 1)
    assert os.listdir(path) == []  # a directory that was there stays, empty


def test_commit_refs_listing_and_missing_objects(where):
    path = os.path.join(where, "r")
    repository.init(path, "sha256", 1, insecure=True)
    with repository.Repository(path) as repo:
        dest, built = build_into(repo, where, "v1", {"a": os.urandom(5000), "sub/b": os.urandom(9000), "tiny": b"x"})
        check = repo.commit(dest, "app/v1", check_mode=True)
        assert check["changed"] and check["ref_changed"] and not os.path.exists(os.path.join(path, "images"))
        first = repo.commit(dest, "app/v1")
        digest = first["digest"]
        assert digest == built["digest"] and first["changed"] and first["missing_objects"] == []
        assert os.readlink(os.path.join(path, "images", digest)) == "../objects/%s/%s" % (digest[:2], digest[2:])
        assert os.readlink(os.path.join(path, "images", "refs", "app", "v1")) == "../../" + digest
        again = repo.commit(dest, "app/v1")
        assert not again["changed"] and again["ref_before"] == digest
        assert repo.refs() == {"app/v1": digest}
        assert repo.images() == {digest: {"size": os.path.getsize(dest), "link_ok": True}}
        objs = repo.image_objects(digest)
        assert len(objs) == 2 and repo.missing_objects(digest) == []
        os.unlink(os.path.join(repo.objects_path, objs[0]))
        assert repo.missing_objects(digest) == [objs[0]]
        assert repo.set_ref("latest", digest) == (True, None)
        assert repo.set_ref("latest", digest) == (False, digest)
        assert repo.remove_ref("app/v1") == (True, digest)
        assert not os.path.exists(os.path.join(path, "images", "refs", "app"))
        assert repo.remove_ref("app/v1") == (False, None)
        with pytest.raises(RepositoryError, match="no image"):
            repo.set_ref("x", "0" * 64)


def test_gc_keeps_refs_and_keep_list_and_reports_bytes(where):
    path = os.path.join(where, "r")
    repository.init(path, "sha256", 1, insecure=True)
    shared = os.urandom(7000)
    with repository.Repository(path) as repo:
        v1, _built = build_into(repo, where, "v1", {"shared": shared, "only1": os.urandom(11000)})
        d1 = repo.commit(v1, "v1")["digest"]
        v2, _built = build_into(repo, where, "v2", {"shared": shared, "only2": os.urandom(13000)})
        d2 = repo.commit(v2, "v2")["digest"]
        v3, _built = build_into(repo, where, "v3", {"only3": os.urandom(17000)})
        d3 = repo.commit(v3)["digest"]  # no ref: collectable unless kept
        repo.remove_ref("v1")
        before = sorted(repo.store().iter_objects())
        dry = gc.collect(repo, keep=[d3], check_mode=True)
        assert sorted(o["digest"] for o in dry["objects"]) == sorted([d1, file_digest(os.path.join(where, "src-v1", "only1")).hex()])
        assert dry["bytes"] == os.path.getsize(v1) + 11000 and dry["images"] == [d1] and dry["refs"] == []
        assert sorted(repo.store().iter_objects()) == before  # check mode removed nothing
        done = gc.collect(repo, keep=[d3])
        assert done["objects"] == dry["objects"] and not os.path.lexists(os.path.join(path, "images", d1))
        assert repo.missing_objects(d2) == [] and repo.missing_objects(d3) == []
        assert gc.collect(repo, keep=[d3])["objects"] == []
        gone = gc.collect(repo)
        assert d3 in [o["digest"] for o in gone["objects"]] and gone["images"] == [d3]
        assert repo.refs() == {"v2": d2} and list(repo.images()) == [d2]
        with pytest.raises(RepositoryError, match="no ref 'nope'"):
            gc.collect(repo, keep=["nope"])


def test_gc_refuses_streams(where):
    path = os.path.join(where, "r")
    repository.init(path, "sha256", 1, insecure=True)
    os.makedirs(os.path.join(path, "streams"))
    os.symlink("../objects/aa/" + "b" * 62, os.path.join(path, "streams", "oci-layer-sha256:00"))
    with repository.Repository(path) as repo, pytest.raises(RepositoryError, match="cfsctl gc"):
        gc.collect(repo)


def _hold_shared(path, ready, release):
    with RepositoryLock(path, exclusive=False):
        ready.set()
        release.wait(60)


def commit_slowly(path, image, ref, ready, go):
    with repository.Repository(path) as repo, repo.lock(exclusive=False):
        ready.set()
        go.wait(60)
        # The commit itself takes the lock shared again (its own descriptor): shared locks never conflict.
        repo.commit(image, ref)


def test_gc_waits_for_a_concurrent_commit(where):
    path = os.path.join(where, "r")
    repository.init(path, "sha256", 1, insecure=True)
    with repository.Repository(path) as repo:
        img, _built = build_into(repo, where, "v1", {"f": os.urandom(6000)})
    # The objects of v1 are in objects/ but no image names them yet: a gc now would take them.
    ctx = multiprocessing.get_context("fork")
    ready, go = ctx.Event(), ctx.Event()
    writer = ctx.Process(target=commit_slowly, args=(path, img, "v1", ready, go))
    writer.start()
    try:
        assert ready.wait(30)
        with repository.Repository(path) as repo:
            with pytest.raises(RepositoryLocked, match="locked by a writer"):
                gc.collect(repo, lock_timeout=0.3)
            go.set()
            result = gc.collect(repo, lock_timeout=60)  # waits for the commit to finish
            writer.join(30)
            assert writer.exitcode == 0
            digest = repo.refs()["v1"]
            assert result["objects"] == [] and repo.missing_objects(digest) == []
    finally:
        go.set()
        writer.join(30)


def test_commit_waits_for_gc(where):
    path = os.path.join(where, "r")
    repository.init(path, "sha256", 1, insecure=True)
    with repository.Repository(path) as repo, repo.lock(exclusive=True):
        with repository.Repository(path) as other:
            img, _built = build_into(other, where, "v1", {"f": b"z" * 5000})
            with pytest.raises(RepositoryLocked, match="garbage collection"):
                other.commit(img, "v1", lock_timeout=0.2)
            assert other.refs() == {}


def test_fsck_finds_corrupt_missing_stray_and_quarantines(where):
    path = os.path.join(where, "r")
    repository.init(path, "sha256", 1, insecure=True)
    with repository.Repository(path) as repo:
        img, _built = build_into(repo, where, "v1", {"a": os.urandom(5000), "b": os.urandom(6000), "c": os.urandom(7000)})
        digest = repo.commit(img, "v1")["digest"]
        clean = fsck.fsck(repo, workers=1)
        assert clean["ok"] and clean["objects_checked"] == 4 and clean["images_checked"] == 1, clean
        a, b, _c = repo.image_objects(digest)
        with open(os.path.join(repo.objects_path, a), "r+b") as f:
            f.write(b"EVIL")
        os.unlink(os.path.join(repo.objects_path, b))
        open(os.path.join(repo.objects_path, "stray-file"), "w").close()
        open(os.path.join(repo.objects_path, a[:2], ".tmp-dead.1.00"), "w").close()
        os.symlink("../../nowhere", os.path.join(path, "images", "refs", "dangling"))
        found = fsck.fsck(repo, workers=1)
        assert not found["ok"]
        assert [c["digest"] for c in found["corrupt"]] == [a.replace("/", "")]
        assert found["missing_objects"] == {digest: [a, b]} or found["missing_objects"] == {digest: [b]}
        assert found["stray"] == [os.path.join(repo.objects_path, "stray-file")]
        assert found["temporary"] == [os.path.join(repo.objects_path, a[:2], ".tmp-dead.1.00")]
        assert found["broken_refs"] == ["dangling"]
        planned = fsck.quarantine(repo, found["corrupt"], check_mode=True, now=1000)
        assert os.path.exists(os.path.join(repo.objects_path, a)) and planned[0]["quarantined_to"].endswith(".1000")
        moved = fsck.quarantine(repo, found["corrupt"], now=1000)
        assert moved == planned and os.path.exists(moved[0]["quarantined_to"])
        after = fsck.fsck(repo, workers=1)
        assert after["corrupt"] == [] and after["missing_objects"] == {digest: [a, b]}


def _dumpfile_image(path, payloads):
    """An EROFS V1 image whose files name objects ``payloads`` (written from a dumpfile; no builder of SHA-512 images needed)."""
    lines = ["/ 0 40755 2 0 0 0 0.0 - - -"]
    for i, (payload, size) in enumerate(payloads):
        lines.append("/f%d %d 100644 1 0 0 0 0.0 %s - -" % (i, size, payload))
    src = path + ".dump"
    with open(src, "w") as f:
        f.write("\n".join(lines) + "\n")
    with open(path, "wb") as f:
        f.write(image_bytes(load_tree(src_dumpfile=src), 1, 1))
    return path


def test_sha512_repository(where):
    path = os.path.join(where, "r512")
    repository.init(path, "sha512", 1, insecure=True)
    with repository.Repository(path) as repo:
        assert repo.algorithm == "sha512"
        blob = os.path.join(where, "blob")
        with open(blob, "wb") as f:
            f.write(os.urandom(9000))
        od = file_digest(blob, "sha512").hex()
        assert repo.store().add_file(blob, od) == (True, 9000)
        assert os.path.isfile(os.path.join(path, "objects", od[:2], od[2:])) and len(od[2:]) == 126
        other = "cd" * 64
        img = _dumpfile_image(os.path.join(where, "img512.cfs"), [(od[:2] + "/" + od[2:], 9000), ("cd/" + other[2:], 5)])
        res = repo.commit(img, "os/v1")
        assert res["digest"] == file_digest(img, "sha512").hex() and res["missing_objects"] == ["cd/" + other[2:]]
        assert os.readlink(os.path.join(path, "images", "refs", "os", "v1")) == "../../" + res["digest"]
        checked = fsck.fsck(repo, workers=1)
        assert checked["corrupt"] == [] and checked["missing_objects"] == {res["digest"]: ["cd/" + other[2:]]}
        assert gc.collect(repo, check_mode=True)["objects"] == []
        with pytest.raises(RepositoryError, match="not an object of this sha256"):
            sha256 = os.path.join(where, "r256")
            repository.init(sha256, "sha256", 1, insecure=True)
            with repository.Repository(sha256) as small:
                small.commit(img, "x")
                small.image_objects(file_digest(img).hex())


def test_reads_a_repository_laid_out_by_composefs_rs(where):
    # Made by hand exactly as composefs-rs lays it out (cfsctl cannot be installed here: crates.io is not reachable).
    path = os.path.join(where, "cfs")
    os.makedirs(os.path.join(path, "images", "refs", "system"))
    with open(os.path.join(path, "meta.json"), "wb") as f:
        f.write(b'{\n  "version": 1,\n  "algorithm": "fsverity-sha256-12",\n  "features": {\n    "compatible": [],\n'
                b'    "read-only-compatible": [\n      "v1_erofs"\n    ],\n    "incompatible": []\n  },\n'
                b'  "erofs_formats": {\n    "default": 1\n  }\n}\n')
    with repository.Repository(path) as repo:
        img, _built = build_into(repo, where, "v1", {"x": os.urandom(4097)})
        digest = file_digest(img).hex()
        repo.store().add_file(img, digest)
        os.symlink("../objects/%s/%s" % (digest[:2], digest[2:]), os.path.join(path, "images", digest))
        # one ".." per component of the ref name (composefs-rs symlink_impl): system/rootfs -> ../../<digest>
        os.symlink("../../" + digest, os.path.join(path, "images", "refs", "system", "rootfs"))
        assert repo.refs() == {"system/rootfs": digest}
        assert repo.resolve("system/rootfs") == digest and fsck.fsck(repo, workers=1)["ok"]
        again = repo.commit(img, "system/rootfs")
        assert again["changed"] is False, again
