"""The repository and repository_info modules on an ext4 loop filesystem: idempotence, check mode, diff, failures."""
import os

from ansible_run import run_module
from module_exec import exec_module

from test_repository import make_tree
from ansible_collections.composefs.fleet.plugins.module_utils.composefs.build import build


def _image(where, name, files, store):
    src = make_tree(os.path.join(where, "src-" + name), files)
    dest = os.path.join(where, name + ".cfs")
    build(src=src, dest=dest, digest_store=store, min_version=1, max_version=1, enable_verity=False)
    return dest


def test_repository_module_lifecycle(ext4, tmp_path):
    where = os.path.join(ext4, "modules-lifecycle")
    os.makedirs(where)
    path = os.path.join(where, "repo")
    base = {"path": path, "algorithm": "sha256", "insecure": True}
    check = exec_module("repository", base, check=True, diff=True)
    assert check["changed"] and check["initialized"] and not os.path.exists(path), check
    first = run_module("composefs.fleet.repository", base)
    assert first["changed"] and first["repository"]["algorithm_id"] == "fsverity-sha256-12", first
    assert not run_module("composefs.fleet.repository", base)["changed"]
    assert not exec_module("repository", {"path": path})["changed"]  # algorithm taken from meta.json
    refused = exec_module("repository", {"path": path, "algorithm": "sha512"})
    assert refused["failed"] and "cannot be re-initialized" in refused["msg"]

    img = _image(where, "v1", {"a": os.urandom(5000), "b": os.urandom(6000)}, os.path.join(path, "objects"))
    commit = dict(base, image=img, ref="app/current")
    plan = exec_module("repository", commit, check=True, diff=True)
    assert plan["changed"] and plan["diff"]["after"]["refs"] == {"app/current": plan["digest"]}
    assert not os.path.exists(os.path.join(path, "images"))
    done = exec_module("repository", commit, diff=True)
    assert done["changed"] and done["digest"] == plan["digest"] and done["missing_objects"] == [] and done["ref_before"] is None
    assert done["diff"]["before"] == {"refs": {}, "images": []}
    assert done["diff"]["after"] == {"refs": {"app/current": done["digest"]}, "images": [done["digest"]]}
    assert not exec_module("repository", commit)["changed"]

    alias = exec_module("repository", {"path": path, "ref": "app/previous", "digest": "app/current"})
    assert alias["changed"] and alias["digest"] == done["digest"]
    info = exec_module("repository_info", {"path": path})
    assert not info["changed"] and info["refs"] == {"app/current": done["digest"], "app/previous": done["digest"]}
    assert info["images"][done["digest"]] == {"size": os.path.getsize(img), "refs": ["app/current", "app/previous"]}
    assert info["missing_objects"] == {"app/current": [], "app/previous": []}

    img2 = _image(where, "v2", {"c": os.urandom(7000)}, os.path.join(path, "objects"))
    v2 = exec_module("repository", dict(commit, image=img2))
    assert v2["changed"] and v2["ref_before"] == done["digest"]
    drop = {"path": path, "ref": "app/previous", "ref_state": "absent", "gc": True}
    would = exec_module("repository", drop, check=True)
    assert would["changed"] and os.path.lexists(os.path.join(path, "images/refs/app/previous"))
    gone = exec_module("repository", drop)
    assert gone["changed"] and len(gone["gc"]["objects"]) == 3 and gone["gc"]["images"] == [done["digest"]], gone
    assert gone["gc"] == would["gc"]  # check mode planned against the refs this run leaves
    assert gone["gc"]["bytes"] == os.path.getsize(img) + 11000
    assert not exec_module("repository", drop)["changed"]


def test_repository_info_fsck_and_quarantine(ext4):
    where = os.path.join(ext4, "modules-fsck")
    os.makedirs(where)
    path = os.path.join(where, "repo")
    assert exec_module("repository", {"path": path, "algorithm": "sha256", "insecure": True})["changed"]
    img = _image(where, "v1", {"a": os.urandom(5000), "b": os.urandom(6000)}, os.path.join(path, "objects"))
    digest = exec_module("repository", {"path": path, "image": img, "ref": "v1"})["digest"]
    clean = exec_module("repository_info", {"path": path, "fsck": True})
    assert clean["fsck"]["ok"] and not clean["changed"], clean
    assert exec_module("repository_info", {"path": path, "images": ["v1"]})["missing_objects"] == {"v1": []}
    objs = sorted(os.path.join(d, f)[len(os.path.join(path, "objects")) + 1:]
                  for d, _s, fs in os.walk(os.path.join(path, "objects")) for f in fs)
    data_objs = [o for o in objs if o.replace("/", "") != digest]
    victim, lost = data_objs
    with open(os.path.join(path, "objects", victim), "r+b") as f:
        f.write(b"bad")
    os.unlink(os.path.join(path, "objects", lost))
    found = exec_module("repository_info", {"path": path, "fsck": True})
    assert not found["changed"] and not found["fsck"]["ok"]
    assert [c["digest"] for c in found["fsck"]["corrupt"]] == [victim.replace("/", "")]
    assert found["missing_objects"] == {"v1": [lost]} and found["fsck"]["missing_objects"] == {digest: [lost]}
    plan = exec_module("repository_info", {"path": path, "quarantine": True}, check=True, diff=True)
    assert plan["changed"] and plan["quarantined"][0]["path"].endswith(victim)
    assert os.path.exists(os.path.join(path, "objects", victim))
    moved = exec_module("repository_info", {"path": path, "quarantine": True})
    assert moved["changed"] and os.path.exists(moved["quarantined"][0]["quarantined_to"])
    assert not exec_module("repository_info", {"path": path, "quarantine": True})["changed"]
    missing_repo = exec_module("repository_info", {"path": os.path.join(where, "nope")})
    assert missing_repo["failed"] and "not a composefs repository" in missing_repo["msg"]


def test_image_module_builds_into_a_repository(ext4):
    where = os.path.join(ext4, "modules-image")
    os.makedirs(where)
    path = os.path.join(where, "repo")
    assert exec_module("repository", {"path": path, "algorithm": "sha256", "insecure": True})["changed"]
    src = make_tree(os.path.join(where, "src"), {"a": os.urandom(5000), "dir/b": os.urandom(70000), "c": b"tiny"})
    args = {"src": src, "repository": path, "ref": "app/current"}
    check = exec_module("image", args, check=True)
    assert check["changed"] and check["repository"]["ref_changed"] and not os.path.exists(os.path.join(path, "objects")), check
    first = run_module("composefs.fleet.image", args)
    assert first["changed"] and not first["failed"], first
    digest = first["digest"]
    assert first["repository"]["digest"] == digest and first["repository"]["missing_objects"] == []
    # The same bytes as mkcomposefs --min-version=1 (the repository's EROFS format 1) with the same objects.
    import cfs_oracle
    want = cfs_oracle.mkcomposefs("--min-version=1", "--digest-store=%s" % os.path.join(where, "ostore"), "--print-digest",
                                  src, os.path.join(where, "oracle.cfs")).decode().strip()
    assert digest == want

    def objects(top):
        return sorted(os.path.join(d, f)[len(top) + 1:] for d, _s, fs in os.walk(top) for f in fs)
    # objects/ holds the tree's objects, exactly mkcomposefs's store, plus the image itself
    assert objects(os.path.join(path, "objects")) == sorted(objects(os.path.join(where, "ostore")) + [digest[:2] + "/" + digest[2:]])
    assert os.readlink(os.path.join(path, "images", "refs", "app", "current")) == "../../" + digest
    assert not [n for n in os.listdir(path) if n.startswith(".tmp")]
    again = exec_module("image", args)
    assert not again["changed"], (again["repository"], again["objects"])
    info = exec_module("repository_info", {"path": path, "fsck": True})
    assert info["fsck"]["ok"] and info["missing_objects"] == {"app/current": []}
    wrong = exec_module("image", {"src": src, "repository": path, "digest_store": os.path.join(where, "s")})
    assert wrong["failed"] and "mutually exclusive" in wrong["msg"]
    sha512 = os.path.join(where, "repo512")
    exec_module("repository", {"path": sha512, "insecure": True})
    refused = exec_module("image", {"src": src, "repository": sha512})
    assert refused["failed"] and "algorithm sha256" in refused["msg"] and not os.path.exists(os.path.join(sha512, "objects"))
