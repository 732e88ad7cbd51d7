"""The deploy role and playbooks/deploy.yml + rollback.yml, run for real with ansible-playbook on localhost.

Two "hosts" (local connection, each with its own repository, mount point and fstab) on
an ext4 loop filesystem; the source repository is on the controller and the images are
built by the role itself, once. This kernel has no fs-verity, so the mounts use
``verity: userspace`` (the VM tier and the molecule scenario cover ``require``).

v1 to both hosts; v2 with one file of a large tree changed (the bytes pushed are at most
1.1 x the changed file + the image, from the push's own return values); a no-op rerun
(changed=0); v3 whose health check fails: the first batch (serial 1) is rolled back to v2
and fails, the rollout stops, the second host is untouched; v4 to both (gc keeps current
+ 1 previous); the rollback playbook puts v2 back.
"""
import json
import multiprocessing
import os
import re
import subprocess

import pytest

from ansible_run import BIN, run_module
from nginx_server import nginx_server
from support import TOP
from test_repository import build_into, commit_slowly

from ansible_collections.composefs.fleet.plugins.module_utils.repository import repo as repository

DEPLOY = os.path.join(TOP, "playbooks", "deploy.yml")
DRIFT = os.path.join(TOP, "playbooks", "drift_report.yml")
ROLLBACK = os.path.join(TOP, "playbooks", "rollback.yml")
HOSTS = ("h1", "h2")
_RECAP = re.compile(r"^(\S+)\s+:\s+ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)\s+skipped=(\d+)\s+rescued=(\d+)\s+ignored=(\d+)")
FILES = 40
FILE_SIZE = 16384


def _tree(root, version, changed=(), healthy=True):
    """A tree of FILES files (deterministic content); ``changed`` file numbers get content of ``version``."""
    os.makedirs(os.path.join(root, "data"), exist_ok=True)
    for n in range(FILES):
        seed = ("%s-%d" % (version if n in changed else "base", n)).encode()
        block = (seed * (FILE_SIZE // len(seed) + 1))[:FILE_SIZE]
        with open(os.path.join(root, "data", "f%02d" % n), "wb") as f:
            f.write(block)
    with open(os.path.join(root, "VERSION"), "w") as f:
        f.write(version + "\n")
    if healthy:
        with open(os.path.join(root, "healthy"), "w") as f:
            f.write("yes\n")
    for path, dirs, files in os.walk(root):  # fixed times: the same tree builds the same image
        for name in dirs + files:
            os.utime(os.path.join(path, name), (1700000000, 1700000000), follow_symlinks=False)
    os.utime(root, (1700000000, 1700000000))
    return root


@pytest.fixture(scope="module")
def fleet(ext4, tmp_path_factory):
    work = tmp_path_factory.mktemp("deploy")
    base = os.path.join(ext4, "deploy")
    os.makedirs(base)
    hosts = {}
    for host in HOSTS:
        fstab = work / ("%s.fstab" % host)
        fstab.write_text("# %s\n" % host)
        hosts[host] = dict(ansible_connection="local", ansible_python_interpreter=os.path.join(BIN, "python"),
                           deploy_repository=os.path.join(base, host, "repo"), deploy_mount_point=str(work / host / "app"),
                           deploy_fstab=str(fstab))
    inventory = work / "inventory.json"
    inventory.write_text(json.dumps(dict(all=dict(hosts=hosts))))
    out = work / "out"
    out.mkdir()
    # deploy.yml, then a play recording each host's deploy_result for the assertions
    wrapper = work / "deploy-and-record.yml"
    wrapper.write_text(
        "- ansible.builtin.import_playbook: %s\n"
        "- hosts: all\n  gather_facts: false\n  tasks:\n"
        "    - ansible.builtin.copy:\n        content: \"{{ deploy_result | to_json }}\"\n"
        "        dest: \"%s/{{ inventory_hostname }}.json\"\n        mode: '0644'\n      delegate_to: localhost\n      changed_when: false\n"
        % (DEPLOY, out))
    common = dict(deploy_name="app", deploy_source_repository=os.path.join(base, "source"), deploy_repository_insecure=True,
                  deploy_verity="userspace", deploy_helper="never", deploy_keep=1, deploy_serial=1,
                  deploy_health_command="test -e {{ deploy_mount_point }}/healthy", deploy_health_retries=1, deploy_health_delay=0)
    state = dict(work=work, base=base, hosts=hosts, inventory=inventory, out=out, wrapper=wrapper, common=common, runs={})
    try:
        yield state
    finally:
        for host, hv in hosts.items():
            run_module("composefs.fleet.mount", dict(path=hv["deploy_mount_point"], state="absent", fstab=hv["deploy_fstab"]))
            subprocess.run(["umount", "-l", hv["deploy_mount_point"]], stderr=subprocess.DEVNULL, check=False)


def _play(fleet, playbook, extra, inventory=None):
    for name in os.listdir(str(fleet["out"])):
        os.unlink(os.path.join(str(fleet["out"]), name))
    args = dict(fleet["common"], **extra)
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(TOP, "ansible.cfg"), ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0")
    argv = [os.path.join(BIN, "ansible-playbook"), "-i", str(inventory or fleet["inventory"]), str(playbook), "-e", json.dumps(args)]
    proc = subprocess.run(argv, cwd=TOP, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False)
    recap = {}
    for line in proc.stdout.splitlines():
        match = _RECAP.match(line)
        if match:
            keys = ("ok", "changed", "unreachable", "failed", "skipped", "rescued", "ignored")
            recap[match.group(1)] = dict(zip(keys, (int(g) for g in match.groups()[1:])))
    results = {}
    for host in HOSTS + ("h3",):
        path = os.path.join(str(fleet["out"]), host + ".json")
        if os.path.exists(path):
            with open(path) as f:
                results[host] = json.load(f)
    return proc, recap, results


def _deploy(fleet, version, **extra):
    tree = os.path.join(str(fleet["work"]), "tree-" + version)
    args = dict(deploy_version=version, deploy_ref="app/" + version, deploy_build_tree=tree)
    args.update(extra)
    return _play(fleet, fleet["wrapper"], args)


def _read(fleet, host, name):
    with open(os.path.join(fleet["hosts"][host]["deploy_mount_point"], name)) as f:
        return f.read()


def _info(fleet, host):
    return run_module("composefs.fleet.repository_info", dict(path=fleet["hosts"][host]["deploy_repository"]))


def _fstab_digest(fleet, host):
    with open(fleet["hosts"][host]["deploy_fstab"]) as f:
        found = re.findall(r"# composefs.fleet: \S+ digest=([0-9a-f]+) verity=(\S+)", f.read())
    assert len(found) == 1, found
    return found[0][0]


def _log(proc):
    return proc.stdout[-6000:] + proc.stderr[-3000:]


def test_v1_to_every_host(fleet):
    _tree(os.path.join(str(fleet["work"]), "tree-v1"), "v1")
    proc, recap, results = _deploy(fleet, "v1")
    assert proc.returncode == 0, _log(proc)
    assert set(results) == set(HOSTS), _log(proc)
    digest = results["h1"]["digest"]
    for host in HOSTS:
        assert recap[host]["failed"] == 0 and recap[host]["changed"] > 0, recap
        assert _read(fleet, host, "VERSION") == "v1\n"
        assert results[host]["digest"] == digest and results[host]["version"] == "v1"
        assert _fstab_digest(fleet, host) == digest
        refs = _info(fleet, host)["refs"]
        assert refs == {"app/current": digest, "app/releases/000001-v1": digest}, refs
    # built once, into the controller's repository
    assert run_module("composefs.fleet.repository_info", dict(path=fleet["common"]["deploy_source_repository"]))["refs"] == {
        "app/v1": digest}
    # (with serial, each later batch shows the task skipped)
    assert len(re.findall(r"TASK \[composefs.fleet.deploy : Build the image once[^\n]*\n(?:changed|ok): ", proc.stdout)) == 1, _log(proc)
    fleet["runs"]["v1"] = results


def test_v2_ships_only_the_changed_file(fleet):
    _tree(os.path.join(str(fleet["work"]), "tree-v2"), "v2", changed=(7,))
    proc, recap, results = _deploy(fleet, "v2")
    assert proc.returncode == 0, _log(proc)
    digest = results["h1"]["digest"]
    image = os.path.getsize(os.path.join(fleet["common"]["deploy_source_repository"], "objects", digest[:2], digest[2:]))
    for host in HOSTS:
        assert _read(fleet, host, "VERSION") == "v2\n"
        assert _read(fleet, host, "data/f07").startswith("v2-7")
        sent = int(results[host]["bytes_sent"])
        assert 0 < sent <= 1.1 * (FILE_SIZE + image), (sent, FILE_SIZE, image)
        assert int(results[host]["objects_sent"]) == 1  # the changed file (the image is counted apart)
        assert results[host]["previous"]["version"] == "v1"
        assert _fstab_digest(fleet, host) == digest
        refs = _info(fleet, host)["refs"]
        assert refs == {"app/current": digest, "app/releases/000001-v1": fleet["runs"]["v1"]["h1"]["digest"],
                        "app/releases/000002-v2": digest}, refs
    fleet["runs"]["v2"] = results


def _deployment(fleet, host, digest):
    hv = fleet["hosts"][host]
    return run_module("composefs.fleet.deployment_info", dict(
        path=hv["deploy_repository"], name="app", digest=digest, mount_point=hv["deploy_mount_point"],
        verity="userspace", helper="never", fstab=hv["deploy_fstab"]))


def test_rerun_changes_nothing(fleet):
    v2 = fleet["runs"]["v2"]["h1"]["digest"]
    for host in HOSTS:
        info = _deployment(fleet, host, v2)
        assert info["in_place"] is True and info["differences"] == [] and not info["changed"], info
        assert info["current"] == v2 and info["image"]["missing_count"] == 0 and info["mount"]["digest"] == v2
    proc, recap, results = _deploy(fleet, "v2")
    assert proc.returncode == 0, _log(proc)
    for host in HOSTS:
        assert recap[host]["changed"] == 0, (recap, _log(proc))
        assert int(results[host]["bytes_sent"]) == 0
    # hosts in place are read once (deployment_info) and left alone: no transfer, mount or gc task ran
    for task in ("Ensure the host repository", "Push the objects", "Mount the image", "Collect what no ref"):
        assert "TASK [composefs.fleet.deploy : %s" % task not in proc.stdout, _log(proc)
    # deploy_recheck: every step runs on every host, and still changes nothing
    proc, recap, results = _deploy(fleet, "v2", deploy_recheck=True)
    assert proc.returncode == 0 and all(recap[h]["changed"] == 0 for h in HOSTS), _log(proc)
    for task in ("Ensure the host repository", "Push the objects", "Mount the image", "Run the health check command",
                 "Collect what no ref"):
        assert "TASK [composefs.fleet.deploy : %s" % task in proc.stdout, (task, _log(proc))


def test_bad_inputs_are_refused_with_their_cause(fleet):
    v2 = fleet["runs"]["v2"]["h1"]["digest"]
    # the play's inputs are checked once (run_once), and a failure there fails every host
    proc, recap, _results = _play(fleet, fleet["wrapper"], dict(deploy_version="v2", deploy_digest=v2, deploy_transfer="pull"))
    # (serial 1: the first batch fails, and the rollout stops before the second)
    assert proc.returncode != 0 and recap["h1"]["failed"] == 1 and "h2" not in recap, _log(proc)
    assert all(r["changed"] == 0 for r in recap.values()), _log(proc)
    assert "deploy needs deploy_name, deploy_transfer push or pull (pull with deploy_pull_url)" in proc.stdout, _log(proc)
    # a host's own paths are checked on the host, by the read
    proc, recap, _results = _play(fleet, fleet["wrapper"], dict(deploy_version="v2", deploy_digest=v2, deploy_repository="repo"))
    # (serial 1: the first batch fails, and the rollout stops before the second)
    assert proc.returncode != 0 and recap["h1"]["failed"] == 1 and "h2" not in recap, _log(proc)
    assert all(r["changed"] == 0 for r in recap.values()), _log(proc)
    assert "path must be an absolute path, not 'repo'" in proc.stdout, _log(proc)
    for host in HOSTS:
        assert _deployment(fleet, host, v2)["in_place"] is True


def test_rerun_repairs_what_drifted(fleet):
    """A host out of place (an object gone, the fstab line gone) gets every step again; the other is left alone."""
    v2 = fleet["runs"]["v2"]["h1"]["digest"]
    repo = fleet["hosts"]["h1"]["deploy_repository"]
    with repository.Repository(repo) as opened:
        victim = opened.image_objects(v2)[0]
    os.unlink(os.path.join(repo, "objects", victim))
    fstab = fleet["hosts"]["h2"]["deploy_fstab"]
    with open(fstab) as f:
        kept = [line for line in f.read().splitlines(True) if "composefs" not in line]
    with open(fstab, "w") as f:
        f.writelines(kept)
    info = _deployment(fleet, "h1", v2)
    assert info["in_place"] is False and info["image"]["missing_objects"] == [victim], info
    assert info["differences"] == ["1 objects of the image are missing (%s)" % victim], info
    info = _deployment(fleet, "h2", v2)
    assert info["in_place"] is False and info["mount"]["persisted"] is False, info
    assert info["differences"] == ["%s is not persisted in %s" % (fleet["hosts"]["h2"]["deploy_mount_point"], fstab)], info
    proc, recap, results = _deploy(fleet, "v2")
    assert proc.returncode == 0, _log(proc)
    assert int(results["h1"]["objects_sent"]) == 1 and recap["h1"]["changed"] > 0, (results, recap)
    assert os.path.exists(os.path.join(repo, "objects", victim))
    assert int(results["h2"]["bytes_sent"]) == 0 and recap["h2"]["changed"] == 1, (results, recap)
    assert _fstab_digest(fleet, "h2") == v2
    for host in HOSTS:
        assert _deployment(fleet, host, v2)["in_place"] is True
    # the verity mode is part of what a deploy asks: a host mounted with userspace is not in place
    # for verity=off
    hv = fleet["hosts"]["h1"]
    other_mode = run_module("composefs.fleet.deployment_info", dict(
        path=hv["deploy_repository"], name="app", digest=v2, mount_point=hv["deploy_mount_point"], verity="off",
        helper="never", fstab=hv["deploy_fstab"]))
    assert "%s is mounted with verity=userspace, not off" % hv["deploy_mount_point"] == other_mode["differences"][0], other_mode


def test_v3_failing_health_check_rolls_the_batch_back_and_stops(fleet):
    _tree(os.path.join(str(fleet["work"]), "tree-v3"), "v3", changed=(7, 8), healthy=False)
    v2 = fleet["runs"]["v2"]["h1"]["digest"]
    before = _info(fleet, "h2")
    proc, recap, results = _deploy(fleet, "v3")
    assert proc.returncode != 0
    assert recap["h1"]["failed"] == 1 and recap["h1"]["rescued"] == 1, recap
    message = re.search(r"app v3 \(([0-9a-f]+)\) failed on h1 at Run the health check command.*?rolled back to v2 \(%s\)" % v2,
                        proc.stdout, re.S)
    assert message, _log(proc)
    # h1 runs v2 again, persisted, and its repository names v2 current (v3's release ref is gone)
    assert _read(fleet, "h1", "VERSION") == "v2\n"
    assert _fstab_digest(fleet, "h1") == v2
    refs = _info(fleet, "h1")["refs"]
    assert refs["app/current"] == v2 and not [r for r in refs if r.endswith("-v3")], refs
    # the second batch was never reached (the image is resolved once, by run_once tasks on h1):
    # h2 ran no task, and is exactly as it was
    assert "h2" not in results and "h2" not in recap, recap
    assert _read(fleet, "h2", "VERSION") == "v2\n"
    after = _info(fleet, "h2")
    assert after["refs"] == before["refs"] and after["images"] == before["images"]


def test_drift_report_after_the_failed_v3(fleet):
    v2 = fleet["runs"]["v2"]["h1"]["digest"]
    source = run_module("composefs.fleet.repository_info", dict(path=fleet["common"]["deploy_source_repository"]))
    v3 = source["refs"]["app/v3"]
    # mount_info: what is mounted at the mount point and persisted
    mounted = run_module("composefs.fleet.mount_info", dict(path=fleet["hosts"]["h1"]["deploy_mount_point"],
                                                            fstab=fleet["hosts"]["h1"]["deploy_fstab"]))
    assert not mounted["changed"] and mounted["kind"] == "ours" and mounted["digest"] == v2, mounted
    assert mounted["verity"] == "userspace" and mounted["persisted"] and mounted["fstab"]["digest"] == v2
    report_dir = fleet["work"] / "drift"
    proc, recap, dummy = _play(fleet, DRIFT, dict(deploy_ref="app/v3", deploy_drift_report_dir=str(report_dir)))
    assert proc.returncode == 0, _log(proc)
    # nothing changes on the hosts; the report is written once (by the first host, run_once)
    assert recap["h1"]["changed"] == 1 and recap["h2"]["changed"] == 0, recap
    with open(str(report_dir / "report.json")) as f:
        report = json.load(f)
    hosts = dict((h["host"], h) for h in report["hosts"])
    assert report["counts"]["drift"] == 2 and report["differing"] == ["h1", "h2"]
    for host in HOSTS:
        entry = hosts[host]
        assert entry["desired"] == v3 and entry["mounted"] == v2 and entry["mounted_version"] == "v2"
        assert entry["persisted"] and entry["persisted_digest"] == v2 and entry["verity"] == "userspace"
        assert entry["problems"][0] == "mounts %s (v2), not the desired %s" % (v2[:12], v3[:12]), entry
        assert entry["problems"][-1] == "the desired image is not in the host repository" or host == "h1", entry
    # h1 still has v3's objects (the failed release's ref is gone; gc takes them with the next healthy deploy)
    assert hosts["h1"]["missing_objects"] == 0
    assert "| h1 | drift |" in (report_dir / "report.md").read_text()
    # unchanged fleet, unchanged report
    proc, recap, dummy = _play(fleet, DRIFT, dict(deploy_ref="app/v3", deploy_drift_report_dir=str(report_dir)))
    assert proc.returncode == 0 and all(recap[h]["changed"] == 0 for h in HOSTS), _log(proc)


def test_v4_gc_keeps_current_and_one_previous(fleet):
    _tree(os.path.join(str(fleet["work"]), "tree-v4"), "v4", changed=(9,))
    proc, recap, results = _deploy(fleet, "v4")
    assert proc.returncode == 0, _log(proc)
    v1 = fleet["runs"]["v1"]["h1"]["digest"]
    v2 = fleet["runs"]["v2"]["h1"]["digest"]
    v4 = results["h1"]["digest"]
    for host in HOSTS:
        assert _read(fleet, host, "VERSION") == "v4\n"
        assert results[host]["removed_refs"] == ["app/releases/000001-v1"]
        info = _info(fleet, host)
        # h1's failed v3 gave its number back (the counter is the newest release's + 1)
        assert info["refs"] == {"app/current": v4, "app/releases/000002-v2": v2, "app/releases/000003-v4": v4}, info["refs"]
        assert sorted(info["images"]) == sorted([v2, v4]) and v1 not in info["images"]
    fleet["runs"]["v4"] = results


def _objects(repo_path):
    top = os.path.join(repo_path, "objects")
    return set(os.path.join(d, f) for d in os.listdir(top) for f in os.listdir(os.path.join(top, d)))


def test_gc_never_collects_what_a_transaction_in_flight_wrote(fleet):
    """The role's gc (deploy_recheck on the unchanged v4) waits for the repository lock, and fails rather than collect."""
    repo_path = fleet["hosts"]["h1"]["deploy_repository"]
    where = os.path.join(fleet["base"], "in-flight")
    os.makedirs(where)
    before = _objects(repo_path)
    with repository.Repository(repo_path) as repo:
        image, _built = build_into(repo, where, "other", {"f": os.urandom(20000)})
    pending = _objects(repo_path) - before  # no ref names these yet: a gc now would take them
    assert pending
    ctx = multiprocessing.get_context("fork")
    ready, go = ctx.Event(), ctx.Event()
    writer = ctx.Process(target=commit_slowly, args=(repo_path, image, "other/v1", ready, go))
    writer.start()
    try:
        assert ready.wait(30)
        proc, recap, dummy = _deploy(fleet, "v4", deploy_recheck=True, deploy_lock_timeout=1)
        assert proc.returncode != 0 and recap["h1"]["failed"] == 1, _log(proc)
        assert "Collect what no ref names any more" in proc.stdout and "locked by a writer" in proc.stdout, _log(proc)
        assert pending <= _objects(repo_path)
        go.set()
        writer.join(60)
        assert writer.exitcode == 0
    finally:
        go.set()
        writer.join(60)
    # the transaction committed: its objects are named by a ref now, and the next gc keeps them
    proc, recap, dummy = _deploy(fleet, "v4", deploy_recheck=True)
    assert proc.returncode == 0, _log(proc)
    assert "other/v1" in _info(fleet, "h1")["refs"] and pending <= _objects(repo_path)
    assert _read(fleet, "h1", "VERSION") == "v4\n" and _read(fleet, "h2", "VERSION") == "v4\n"


def test_rollback_playbook_puts_v2_back(fleet):
    v2 = fleet["runs"]["v2"]["h1"]["digest"]
    v4 = fleet["runs"]["v4"]["h1"]["digest"]
    proc, recap, dummy = _play(fleet, ROLLBACK, dict(deploy_rollback_version="v2"))
    assert proc.returncode == 0, _log(proc)
    for host in HOSTS:
        assert _read(fleet, host, "VERSION") == "v2\n"
        assert _fstab_digest(fleet, host) == v2
        info = _info(fleet, host)
        assert info["refs"]["app/current"] == v2 and v4 in info["images"], info["refs"]
    # a second rollback to the same version changes nothing; an unknown version fails, naming what there is
    proc, recap, dummy = _play(fleet, ROLLBACK, dict(deploy_rollback_version="v2"))
    assert proc.returncode == 0 and all(recap[h]["changed"] == 0 for h in HOSTS), _log(proc)
    proc, recap, dummy = _play(fleet, ROLLBACK, dict(deploy_rollback_version="v9"))
    assert proc.returncode != 0 and "has no release 'v9' on this host; it has: v2, v4" in proc.stdout, _log(proc)
    assert _read(fleet, "h1", "VERSION") == "v2\n"


def test_drift_report_in_sync_then_an_unpersisted_host_first(fleet):
    v2 = fleet["runs"]["v2"]["h1"]["digest"]
    report_dir = fleet["work"] / "drift-sync"
    proc, recap, dummy = _play(fleet, DRIFT, dict(deploy_digest=v2, deploy_drift_report_dir=str(report_dir)))
    assert proc.returncode == 0, _log(proc)
    report = json.loads((report_dir / "report.json").read_text())
    assert report["counts"]["in_sync"] == 2 and report["differing"] == [], report
    # h2's fstab line goes (a reboot would mount nothing): h2 drifts and comes first
    fstab = fleet["hosts"]["h2"]["deploy_fstab"]
    with open(fstab) as f:
        kept = [line for line in f.read().splitlines(True) if "composefs" not in line]
    with open(fstab, "w") as f:
        f.writelines(kept)
    proc, recap, dummy = _play(fleet, DRIFT, dict(deploy_digest=v2, deploy_drift_report_dir=str(report_dir)))
    report = json.loads((report_dir / "report.json").read_text())
    assert [h["host"] for h in report["hosts"]] == ["h2", "h1"] and report["differing"] == ["h2"]
    assert report["hosts"][0]["problems"] == ["not persisted: no managed fstab line, so a reboot mounts nothing"]
    assert recap["h1"]["changed"] == 1 and recap["h2"]["changed"] == 0, recap  # the report changed, the hosts did not
    # the deploy puts the line back (the mount was right, only the fstab changes)
    proc, recap, dummy = _play(fleet, ROLLBACK, dict(deploy_rollback_version="v2"))
    assert proc.returncode == 0 and recap["h2"]["changed"] == 1 and recap["h1"]["changed"] == 0, _log(proc)
    assert _fstab_digest(fleet, "h2") == v2


def test_pull_mode_from_nginx_refuses_a_corrupt_object(fleet):
    """A third host pulls v1 from nginx serving the source repository; a corrupt object on the server fails it first."""
    _tree(os.path.join(str(fleet["work"]), "tree-v1"), "v1")
    work = fleet["work"] / "pull"
    work.mkdir()
    fstab = work / "h3.fstab"
    fstab.write_text("# h3\n")
    h3 = dict(fleet["hosts"]["h1"], deploy_repository=os.path.join(fleet["base"], "h3", "repo"),
              deploy_mount_point=str(work / "app"), deploy_fstab=str(fstab))
    inventory = work / "inventory.json"
    inventory.write_text(json.dumps(dict(all=dict(hosts=dict(h3=h3)))))
    source = fleet["common"]["deploy_source_repository"]
    # the image in the served repository first (no build in the deploy runs: a build would mend the corrupt object)
    args = dict(deploy_version="v1", deploy_ref="app/v1", deploy_transfer="pull")
    run_module("composefs.fleet.repository", dict(path=source, algorithm="sha256", insecure=True))
    built = run_module("composefs.fleet.image", dict(src=os.path.join(str(fleet["work"]), "tree-v1"), repository=source, ref="app/v1"))
    assert not built["failed"], built
    digest = run_module("composefs.fleet.repository_info", dict(path=source, images=[]))["refs"]["app/v1"]
    try:
        os.chmod(source, 0o755)
        with nginx_server(source, str(work / "nginx")) as url:
            args["deploy_pull_url"] = url
            with repository.Repository(source) as repo:
                victim = os.path.join(source, "objects", sorted(repo.image_objects(digest))[0])
            with open(victim, "rb") as f:
                good = f.read()
            mode = os.stat(victim).st_mode
            with open(victim, "r+b") as f:
                f.write(bytes([good[0] ^ 0xFF]))
            try:
                proc, recap, results = _play(fleet, fleet["wrapper"], args, inventory=inventory)
            finally:
                with open(victim, "wb") as f:
                    f.write(good)
                os.chmod(victim, mode)
            assert proc.returncode != 0 and recap["h3"]["failed"] == 1, _log(proc)
            assert "Pull the objects this host lacks" in proc.stdout and not os.path.ismount(h3["deploy_mount_point"])
            # the good copy back on the server: the pull completes, the image is mounted, a rerun fetches nothing
            proc, recap, results = _play(fleet, fleet["wrapper"], args, inventory=inventory)
            assert proc.returncode == 0, _log(proc)
            assert results["h3"]["digest"] == digest and int(results["h3"]["bytes_sent"]) > 0
            with open(os.path.join(h3["deploy_mount_point"], "VERSION")) as f:
                assert f.read() == "v1\n"
            proc, recap, results = _play(fleet, fleet["wrapper"], args, inventory=inventory)
            assert proc.returncode == 0 and recap["h3"]["changed"] == 0 and int(results["h3"]["bytes_sent"]) == 0, _log(proc)
    finally:
        run_module("composefs.fleet.mount", dict(path=h3["deploy_mount_point"], state="absent", fstab=str(fstab)))
