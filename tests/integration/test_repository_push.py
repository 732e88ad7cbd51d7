"""repository_push through ansible-playbook on localhost: two repositories on an ext4 loop filesystem.

The controller's repository and the host's are both on the loop filesystem; the
action plugin really bundles, transfers (into a remote tmp of the test's own) and
the module really imports. Check mode, idempotence, a one-file change, a ref-only
change, and a corrupt object in the stream (an object of the controller's
repository whose bytes no longer match its name) refused with nothing published.
"""
import json
import os
import subprocess

from ansible_run import BIN
from module_exec import exec_module
from support import TOP
from test_repository import make_tree

from ansible_collections.composefs.fleet.plugins.module_utils.composefs.build import build
from ansible_collections.composefs.fleet.plugins.module_utils.repository import repo as repository


def run_pushes(tmp_path, pushes, check=False, diff=True):
    """Run one play of repository_push tasks (``pushes``: list of argument dicts); return their registered results."""
    out = tmp_path / ("results-%d.json" % len(list(tmp_path.iterdir())))
    remote_tmp = tmp_path / "remote-tmp"
    remote_tmp.mkdir(exist_ok=True)
    tasks = []
    for i, args in enumerate(pushes):
        tasks.append({"name": "push %d" % i, "composefs.fleet.repository_push": args, "register": "r%d" % i,
                      "ignore_errors": True})
    tasks.append({"name": "results", "delegate_to": "localhost", "check_mode": False,
                  "ansible.builtin.copy": {"dest": str(out), "mode": "0600",
                                           "content": "{{ [%s] | to_json }}" % ", ".join("r%d" % i for i in range(len(pushes)))}})
    play = tmp_path / "push.yml"
    play.write_text(json.dumps([{"hosts": "localhost", "gather_facts": False, "tasks": tasks}]))
    argv = [os.path.join(BIN, "ansible-playbook"), str(play)] + (["--check"] if check else []) + (["--diff"] if diff else [])
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(TOP, "ansible.cfg"), ANSIBLE_NOCOLOR="1",
               ANSIBLE_REMOTE_TMP=str(remote_tmp))
    proc = subprocess.run(argv, cwd=TOP, env=env, capture_output=True, text=True, check=False)
    assert out.exists(), "ansible-playbook wrote no results (rc=%d):\n%s\n%s" % (proc.returncode, proc.stdout, proc.stderr)
    assert os.listdir(str(remote_tmp)) == [], "the remote tmp (and the bundle in it) was left behind"
    return json.loads(out.read_text())


def _commit(src, where, name, files, ref):
    tree = make_tree(os.path.join(where, "tree-" + name), files)
    image = os.path.join(where, name + ".cfs")
    build(src=tree, dest=image, digest_store=os.path.join(src, "objects"), min_version=1, max_version=1, enable_verity=False)
    with repository.Repository(src) as repo:
        return repo.commit(image, ref)["digest"], os.path.getsize(image)


def _objects(path):
    top = os.path.join(path, "objects")
    return sorted(os.path.join(d, f)[len(top) + 1:] for d, _s, fs in os.walk(top) for f in fs)


def test_push_check_mode_idempotence_and_only_what_is_missing(ext4, tmp_path):
    where = os.path.join(ext4, "push")
    os.makedirs(where)
    src, host = os.path.join(where, "controller"), os.path.join(where, "host")
    repository.init(src, "sha256", 1, insecure=True)
    files = {"big": os.urandom(300000), "dir/b": os.urandom(9000), "c": os.urandom(5000), "tiny": b"inline"}
    v1, image_size = _commit(src, where, "v1", files, "app/current")
    args = {"src": src, "ref": "app/current", "path": host, "insecure": True}

    (plan,) = run_pushes(tmp_path, [args], check=True)
    assert plan["changed"] and not plan.get("failed"), plan
    assert (plan["objects_missing"], plan["objects_sent"], plan["image_sent"]) == (3, 3, True)
    assert plan["bytes_sent"] == 314000 + image_size and plan["initialized"]
    assert plan["diff"] == {"before": {"refs": {}}, "after": {"refs": {"app/current": v1}}}
    assert not os.path.exists(host)

    first, second = run_pushes(tmp_path, [args, args])
    assert first["changed"] and first["digest"] == v1 and first["bytes_sent"] == plan["bytes_sent"], first
    assert first["objects_sent"] == 3 and first["initialized"] and first["dest_ref"] == "app/current"
    assert first["diff"]["after"] == {"refs": {"app/current": v1}}
    assert not second["changed"] and (second["objects_sent"], second["bytes_sent"], second["objects_missing"]) == (0, 0, 0)
    assert _objects(host) == _objects(src)
    info = exec_module("repository_info", {"path": host, "fsck": True})
    assert info["fsck"]["ok"] and info["refs"] == {"app/current": v1} and info["missing_objects"] == {"app/current": []}, info

    # v2: one file changed. Only it and the new image travel.
    files["dir/b"] = os.urandom(9000)
    v2, image2_size = _commit(src, where, "v2", files, "app/current")
    (again_check,) = run_pushes(tmp_path, [args], check=True)
    assert again_check["changed"] and again_check["bytes_sent"] == 9000 + image2_size
    (v2_push,) = run_pushes(tmp_path, [args])
    assert v2_push["changed"] and v2_push["digest"] == v2 and v2_push["ref_before"] == v1
    assert (v2_push["objects_missing"], v2_push["objects_sent"], v2_push["bytes_sent"]) == (1, 1, 9000 + image2_size)
    assert v2_push["diff"] == {"before": {"refs": {"app/current": v1}}, "after": {"refs": {"app/current": v2}}}

    # A digest with another name: the host has everything; only the ref changes, nothing travels.
    pin = dict(args, ref="sha256:" + v1, dest_ref="app/previous")
    (pinned,) = run_pushes(tmp_path, [pin])
    assert pinned["changed"] and pinned["bytes_sent"] == 0 and pinned["objects_sent"] == 0 and not pinned["image_sent"]
    assert pinned["diff"]["after"]["refs"] == {"app/current": v2, "app/previous": v1}
    (nothing,) = run_pushes(tmp_path, [pin], check=True)
    assert not nothing["changed"]
    info = exec_module("repository_info", {"path": host, "fsck": True})
    assert info["fsck"]["ok"] and info["refs"] == {"app/current": v2, "app/previous": v1}


def test_a_corrupt_object_in_the_stream_is_refused(ext4, tmp_path):
    where = os.path.join(ext4, "push-corrupt")
    os.makedirs(where)
    src, host = os.path.join(where, "controller"), os.path.join(where, "host")
    repository.init(src, "sha256", 1, insecure=True)
    digest, _size = _commit(src, where, "v1", {"a": os.urandom(40000), "b": os.urandom(50000)}, "app/current")
    with repository.Repository(src) as repo:
        victim = repo.image_objects(digest)[1]
    with open(os.path.join(src, "objects", victim), "r+b") as f:
        f.seek(20000)
        byte = f.read(1)
        f.seek(20000)
        f.write(bytes([byte[0] ^ 0x01]))
    (refused,) = run_pushes(tmp_path, [{"src": src, "ref": "app/current", "path": host, "insecure": True}])
    assert refused["failed"] and victim.replace("/", "") in refused["msg"] and "corrupt" in refused["msg"], refused
    # Nothing of the bundle was published: no object (not even the intact one), no image, no ref, no staging file.
    assert _objects(host) == []
    with repository.Repository(host) as repo:
        assert repo.refs() == {} and repo.images() == {}
    bad_src = exec_module("repository_info", {"path": host, "fsck": True})
    assert bad_src["fsck"]["ok"] and not bad_src["fsck"]["temporary"], bad_src
    # The controller side refuses a ref it does not have, before anything is run on the host.
    (missing,) = run_pushes(tmp_path, [{"src": src, "ref": "app/nope", "path": os.path.join(where, "other")}])
    assert missing["failed"] and "has no ref 'app/nope'" in missing["msg"] and not os.path.exists(os.path.join(where, "other"))
