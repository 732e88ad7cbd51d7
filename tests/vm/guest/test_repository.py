"""Secure composefs repositories where the kernel enforces fs-verity (runs inside the guest)."""
import os

import pytest

from ansible_collections.composefs.fleet.plugins.module_utils.composefs.build import image_bytes, load_tree
from ansible_collections.composefs.fleet.plugins.module_utils.fsverity import ioctl
from ansible_collections.composefs.fleet.plugins.module_utils.fsverity.digest import file_digest
from ansible_collections.composefs.fleet.plugins.module_utils.repository import fsck
from ansible_collections.composefs.fleet.plugins.module_utils.repository import repo as repository
from ansible_collections.composefs.fleet.plugins.module_utils.repository.errors import RepositoryError
from module_exec import exec_module


def _measure(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        return ioctl.measure(fd, path)
    finally:
        os.close(fd)


def test_secure_sha512_repository(ext4_verity_dir):
    path = os.path.join(ext4_verity_dir, "repo")
    assert repository.init(path, "sha512", 1)[0]
    alg, raw = _measure(os.path.join(path, "meta.json"))
    assert alg == "sha512" and len(raw) == 64  # meta.json sealed: every object must have fs-verity
    blob = os.path.join(ext4_verity_dir, "blob")
    with open(blob, "wb") as f:
        f.write(os.urandom(20000))
    digest = file_digest(blob, "sha512").hex()
    with repository.Repository(path) as repo:
        assert repo.secure
        assert repo.store().add_file(blob, digest)[0]
        assert _measure(repo.object_path(digest)) == ("sha512", bytes.fromhex(digest))
        dump = os.path.join(ext4_verity_dir, "img.dump")
        with open(dump, "w") as f:
            f.write("/ 0 40755 2 0 0 0 0.0 - - -\n/f 20000 100644 1 0 0 0 0.0 %s/%s - -\n" % (digest[:2], digest[2:]))
        img = os.path.join(ext4_verity_dir, "img.cfs")
        with open(img, "wb") as f:
            f.write(image_bytes(load_tree(src_dumpfile=dump), 1, 1))
        res = repo.commit(img, "os/current")
        assert res["missing_objects"] == [] and _measure(repo.object_path(res["digest"]))[1].hex() == res["digest"]
        assert fsck.fsck(repo, workers=1)["ok"]
        # An object without fs-verity in a secure repository is reported.
        plain = os.path.join(ext4_verity_dir, "plain")
        with open(plain, "wb") as f:
            f.write(b"p" * 5000)
        pd = file_digest(plain, "sha512").hex()
        os.makedirs(os.path.dirname(repo.object_path(pd)), exist_ok=True)
        os.rename(plain, repo.object_path(pd))
        found = fsck.fsck(repo, workers=1)
        assert found["without_verity"] == [repo.object_path(pd)] and found["corrupt"] == []


def test_secure_sha256_repository_built_by_the_image_module(ext4_verity_dir):
    path = os.path.join(ext4_verity_dir, "repo256")
    assert exec_module("repository", {"path": path, "algorithm": "sha256"})["changed"]
    src = os.path.join(ext4_verity_dir, "src")
    os.makedirs(src)
    for name, size in (("a", 5000), ("b", 70000)):
        with open(os.path.join(src, name), "wb") as f:
            f.write(os.urandom(size))
    built = exec_module("image", {"src": src, "repository": path, "ref": "app"})
    assert built["changed"] and not built["failed"], built
    info = exec_module("repository_info", {"path": path, "fsck": True})
    assert info["secure"] and info["fsck"]["ok"], info["fsck"]
    for d, _subdirs, files in os.walk(os.path.join(path, "objects")):
        for name in files:
            assert _measure(os.path.join(d, name))[0] == "sha256"


def test_secure_init_refused_on_xfs_insecure_allowed(xfs_dir):
    with pytest.raises(RepositoryError, match="insecure: true"):
        repository.init(os.path.join(xfs_dir, "r"), "sha512", 1)
    assert repository.init(os.path.join(xfs_dir, "r"), "sha512", 1, insecure=True)[0]
