"""deployment_info on an ext4 loop filesystem: what it reads before anything is deployed, and what it refuses.

The in-place cases (a mounted, persisted deployment, then an object and an fstab line gone)
are in test_deploy_role.py, where the role made them.
"""
import os

from module_exec import exec_module

from test_repository_modules import _image


def _args(where, **extra):
    args = dict(path=os.path.join(where, "repo"), name="app", mount_point=os.path.join(where, "app"),
                verity="userspace", helper="never", fstab=os.path.join(where, "fstab"))
    args.update(extra)
    return args


def test_nothing_deployed_yet(ext4):
    where = os.path.join(ext4, "deployment-info-empty")
    os.makedirs(where)
    open(os.path.join(where, "fstab"), "w").close()
    digest = "ab" * 32
    out = exec_module("deployment_info", _args(where, digest=digest))
    assert not out["failed"] and not out["changed"], out
    assert out["repository"] is None and out["refs"] == {} and out["current"] is None and out["image"] is None
    assert out["in_place"] is False and out["mount"]["kind"] == "none" and not out["mount"]["persisted"]
    assert out["differences"] == ["%s does not exist" % os.path.join(where, "repo"),
                                  "%s runs no image of this collection's" % os.path.join(where, "app")], out
    facts = exec_module("deployment_info", _args(where))  # no digest: facts only
    assert facts["in_place"] is None and facts["differences"] == ["%s does not exist" % os.path.join(where, "repo")]


def test_committed_but_not_mounted(ext4):
    where = os.path.join(ext4, "deployment-info-commit")
    os.makedirs(where)
    open(os.path.join(where, "fstab"), "w").close()
    repo = os.path.join(where, "repo")
    assert exec_module("repository", dict(path=repo, algorithm="sha256", insecure=True))["changed"]
    img = _image(where, "v1", {"a": os.urandom(5000)}, os.path.join(repo, "objects"))
    digest = exec_module("repository", dict(path=repo, image=img, ref="app/current"))["digest"]
    out = exec_module("deployment_info", _args(where, digest=digest))
    assert out["repository"]["algorithm_id"] == "fsverity-sha256-12" and out["refs"] == {"app/current": digest}, out
    assert out["current"] == digest
    assert out["image"] == dict(digest=digest, stored=True, linked=True, missing_objects=[], missing_count=0), out
    assert out["in_place"] is False and out["differences"] == ["nothing is mounted at %s" % os.path.join(where, "app")], out
    facts = exec_module("deployment_info", _args(where))  # no digest: the image NAME/current names, no verdict
    assert facts["image"]["digest"] == digest and facts["image"]["missing_count"] == 0 and facts["in_place"] is None, facts
    # another image: not in the repository, and NAME/current names something else
    other = "cd" * 32
    out = exec_module("deployment_info", _args(where, digest=other))
    assert out["image"]["stored"] is False and out["in_place"] is False
    assert out["differences"][:2] == ["the image %s is not in the repository" % other, "app/current names %s" % digest], out
    # nothing was written: no mount record, no fstab line, no mount point
    assert not os.path.exists(os.path.join(where, "app")) and os.path.getsize(os.path.join(where, "fstab")) == 0


def test_refuses_bad_input(ext4):
    where = os.path.join(ext4, "deployment-info-bad")
    os.makedirs(where)
    out = exec_module("deployment_info", _args(where, path="relative/repo"))
    assert out["failed"] and "path must be an absolute path" in out["msg"], out
    os.makedirs(os.path.join(where, "repo", "junk"))
    out = exec_module("deployment_info", _args(where, digest="ab" * 32))
    assert not out["failed"] and out["repository"] is None and out["in_place"] is False
    assert "is not a composefs repository (no meta.json)" in out["differences"][0], out
