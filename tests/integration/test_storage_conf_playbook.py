"""composefs.fleet.storage_conf through real ansible-playbook runs on localhost, and against the real Podman.

Runs from the checkout (cwd = top, so ansible.cfg makes the collection importable),
with the json callback so each task's result can be read back. Files are edited
with scope=path in temporary directories, except in the real-Podman test, which
checks that Debian bookworm's Podman 4.3 is refused without touching /etc.
"""
import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys

import pytest
import yaml

TOP = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.path.dirname(sys.executable)
FIXTURES = os.path.join(TOP, "tests", "unit", "plugins", "plugin_utils", "fixtures")
PODMAN = shutil.which("podman")


def playbook(tmp_path, tasks, check=False, diff=False, extra=None, expect_rc=0):
    """Run ``tasks`` (a list of task dicts) on localhost; return each task's registered result.

    Every task is registered with ignore_errors, and a last task (never in check mode)
    dumps the results as JSON, so failures come back as results with ``failed``.
    """
    names = []
    for i, task in enumerate(tasks):
        task.setdefault("register", "result_%d" % i)
        task.setdefault("ignore_errors", True)
        names.append(task["register"])
    out = tmp_path / "results.json"
    dump = {"name": "dump results", "check_mode": False, "diff": False,
            "ansible.builtin.copy": {"dest": str(out), "content": "{{ [%s] | to_json }}" % ", ".join(names)}}
    play = dict(hosts="localhost", gather_facts=False, tasks=tasks + [dump])
    pb = tmp_path / "play.yml"
    pb.write_text(yaml.safe_dump([play], sort_keys=False))
    argv = [os.path.join(BIN, "ansible-playbook"), str(pb)]
    if check:
        argv.append("--check")
    if diff:
        argv.append("--diff")
    if extra:
        argv += ["-e", json.dumps(extra)]
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(TOP, "ansible.cfg"), ANSIBLE_NOCOLOR="1")
    proc = subprocess.run(argv, cwd=TOP, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, check=False)
    if expect_rc is not None:
        assert proc.returncode == expect_rc, proc.stdout[-4000:] + proc.stderr[-2000:]
    results = json.loads(out.read_text())
    out.unlink()
    return results


def conf_task(path, **opts):
    opts.setdefault("scope", "path")
    opts["path"] = str(path)
    return {"name": "storage_conf", "composefs.fleet.storage_conf": opts}


def snapshot(path):
    st = os.stat(str(path))
    return hashlib.sha256(path.read_bytes()).hexdigest(), st.st_mtime_ns, stat.S_IMODE(st.st_mode)


@pytest.fixture
def rhel(tmp_path):
    p = tmp_path / "storage.conf"
    shutil.copy(os.path.join(FIXTURES, "rhel-9.conf"), str(p))
    p.chmod(0o640)
    return p


def test_change_then_idempotent_keeps_mode_and_backs_up(tmp_path, rhel):
    original = rhel.read_text()
    opts = dict(layout="file", pull_options=dict(use_hard_links=True), overlay_options=dict(mountopt="nodev"), backup=True)
    first, = playbook(tmp_path, [conf_task(rhel, **opts)], diff=True)
    assert first["changed"] and first["path"] == str(rhel)
    assert [c["key"] for c in first["changes"]] == ["storage.options.overlay.mountopt", "storage.options.pull_options.use_hard_links"]
    assert first["diff"][0]["before"] == original and first["diff"][0]["after"] == rhel.read_text()
    assert 'pull_options = {enable_partial_images = "false", use_hard_links = "true", ostree_repos=""}' in rhel.read_text()
    assert stat.S_IMODE(rhel.stat().st_mode) == 0o640
    with open(first["backup_file"]) as f:
        assert f.read() == original
    before = snapshot(rhel)
    second, = playbook(tmp_path, [conf_task(rhel, **opts)])
    assert not second["changed"] and second["changes"] == [] and "backup_file" not in second
    assert snapshot(rhel) == before


def test_check_mode_reports_and_writes_nothing(tmp_path, rhel):
    before = snapshot(rhel)
    res, = playbook(tmp_path, [conf_task(rhel, layout="file", pull_options=dict(convert_images=True), backup=True)],
                    check=True, diff=True)
    assert res["changed"] and 'convert_images = "true"' in res["diff"][0]["after"]
    assert snapshot(rhel) == before
    assert sorted(os.listdir(str(tmp_path))) == ["play.yml", "storage.conf"]


def test_bad_toml_is_left_untouched(tmp_path):
    p = tmp_path / "storage.conf"
    p.write_text('[storage]\ndriver = "overlay"\n[storage.options.overlay]\nmountopt = "nodev\n')
    before = snapshot(p)
    res, = playbook(tmp_path, [conf_task(p, layout="file", pull_options=dict(use_hard_links=True), backup=True)])
    assert res["failed"] and res["msg"].startswith(str(p) + " is not valid TOML (") and "left untouched" in res["msg"]
    assert snapshot(p) == before
    assert sorted(os.listdir(str(tmp_path))) == ["play.yml", "storage.conf"]


def test_typo_fails_before_touching_anything(tmp_path, rhel):
    before = snapshot(rhel)
    res, = playbook(tmp_path, [conf_task(rhel, pull_options=dict(use_hardlinks=True))])
    assert res["failed"] and "did you mean use_hard_links" in res["msg"]
    assert snapshot(rhel) == before


def test_dropin_shape_for_a_new_file(tmp_path):
    p = tmp_path / "50-composefs.conf"
    res, = playbook(tmp_path, [conf_task(p, layout="dropin", pull_options=dict(use_hard_links=True))])
    assert res["changed"] and res["created"]
    assert p.read_text().endswith('[storage.options.pull_options]\nuse_hard_links = "true"\n')
    assert stat.S_IMODE(p.stat().st_mode) == 0o644


PY39 = os.path.join(TOP, ".venv39", "bin", "python")


def test_managed_node_with_python_3_9(tmp_path, rhel):
    """The host side (storage_conf_info, storage_conf_write) runs on RHEL 9's Python 3.9 with the stdlib only."""
    if not os.path.exists(PY39):
        pytest.fail("needs the Python 3.9 venv: run scripts/setup-py39.sh (make test does)")
    res, = playbook(tmp_path, [conf_task(rhel, layout="file", pull_options=dict(use_hard_links=True), backup=True)],
                    extra={"ansible_python_interpreter": PY39})
    assert res["changed"] and not res.get("failed")
    assert 'use_hard_links = "true"' in rhel.read_text()


# ---------------------------------------------------------------- the real Podman on this host

def _podman_version():
    out = subprocess.run([PODMAN, "--version"], stdout=subprocess.PIPE, universal_newlines=True, check=True).stdout
    return tuple(int(x) for x in out.split()[-1].split("-")[0].split(".")[:2])


@pytest.fixture
def podman_host():
    if PODMAN is None or os.geteuid() != 0:
        pytest.fail("needs Podman (Debian package podman, in requirements/apt.txt) and root: run scripts/setup-host.sh")


needs_podman = pytest.mark.usefixtures("podman_host")


@needs_podman
def test_real_podman_version_gate(tmp_path):
    """Debian bookworm's Podman 4.3 must be refused for composefs, and /etc must stay as it was."""
    etc_before = sorted(os.listdir("/etc/containers")) if os.path.isdir("/etc/containers") else None
    main = "/etc/containers/storage.conf"
    main_before = snapshot(__import__("pathlib").Path(main)) if os.path.exists(main) else None
    tasks = [
        {"name": "info", "composefs.fleet.storage_conf_info": {"paths": [main]}},
        {"name": "storage_conf", "composefs.fleet.storage_conf": {"use_composefs": True}, "ignore_errors": True},
    ]
    info, res = playbook(tmp_path, tasks)
    version = subprocess.run([PODMAN, "--version"], stdout=subprocess.PIPE, universal_newlines=True, check=True).stdout.split()[-1]
    assert info["podman"]["version"] == version
    if _podman_version() < (5, 0):
        assert res["failed"]
        assert "Podman %s on this host is too old for composefs" % version in res["msg"]
        assert "5.0.0" in res["msg"] and "left untouched" in res["msg"]
        assert (sorted(os.listdir("/etc/containers")) if os.path.isdir("/etc/containers") else None) == etc_before
        assert (snapshot(__import__("pathlib").Path(main)) if os.path.exists(main) else None) == main_before
    else:  # a Podman with composefs: the module must have gone through
        assert not res.get("failed") and res["podman_supports_composefs"]


def _podman_info(conf):
    env = dict(os.environ, CONTAINERS_STORAGE_CONF=str(conf))
    return subprocess.run([PODMAN, "info", "--format", "json"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True, timeout=120, check=False)


def _unmount_below(path):
    with open("/proc/self/mounts") as f:
        points = [line.split()[1] for line in f if line.split()[1].startswith(str(path))]
    for point in sorted(points, reverse=True):
        subprocess.run(["umount", "-l", point], check=False)


@needs_podman
@pytest.mark.parametrize("vendor", ["debian-bookworm.conf", "fedora-41.conf", "rhel-9.conf"])
def test_real_podman_reads_the_file_we_write(tmp_path, vendor):
    """The edited vendor-shaped files parse in the real Podman (CONTAINERS_STORAGE_CONF), and a TOML boolean
    where containers-storage wants a string breaks the whole file, as the module's docs say."""
    conf = tmp_path / "storage.conf"
    shutil.copy(os.path.join(FIXTURES, vendor), str(conf))
    opts = dict(layout="file", graphroot=str(tmp_path / "graph"), runroot=str(tmp_path / "run"),
                pull_options=dict(use_hard_links=True, enable_partial_images=True))
    composefs = _podman_version() >= (5, 0)
    if composefs:
        opts["use_composefs"] = True
    try:
        res, = playbook(tmp_path, [conf_task(conf, **opts)])
        assert res["changed"]
        proc = _podman_info(conf)
        assert proc.returncode == 0, proc.stderr
        store = json.loads(proc.stdout)["store"]
        assert store["configFile"] == str(conf) and store["graphRoot"] == str(tmp_path / "graph")
        if composefs:
            assert store["graphOptions"].get("overlay.use_composefs") == "true"
        assert "Failed to decode" not in proc.stderr

        broken = tmp_path / "broken.conf"
        broken.write_text(conf.read_text().replace('use_hard_links = "true"', "use_hard_links = true"))
        proc = _podman_info(broken)
        assert proc.returncode != 0
        assert "incompatible types: TOML value has type bool; destination has type string" in proc.stderr
    finally:
        _unmount_below(tmp_path)


# ---------------------------------------------------------------- the podman role, through playbooks/podman.yml

def run_role(tmp_path, check=False, **extra):
    """Run playbooks/podman.yml on localhost (no install, no become); return (rc, output)."""
    variables = dict(podman_hosts="localhost", podman_become=False, podman_install=False)
    variables.update(extra)
    argv = [os.path.join(BIN, "ansible-playbook"), "playbooks/podman.yml", "-e", json.dumps(variables)]
    if check:
        argv.append("--check")
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(TOP, "ansible.cfg"), ANSIBLE_NOCOLOR="1")
    proc = subprocess.run(argv, cwd=TOP, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True, check=False)
    return proc.returncode, proc.stdout


def _recap(output):
    line = [ln for ln in output.splitlines() if ln.startswith("localhost") and "ok=" in ln][-1]
    return dict(part.split("=") for part in line.split(":", 1)[1].split())


@pytest.fixture
def private_conf(tmp_path):
    """A vendor-shaped storage.conf whose store lives under tmp_path, for scope=path runs of the role."""
    conf = tmp_path / "storage.conf"
    text = open(os.path.join(FIXTURES, "debian-bookworm.conf")).read()
    text = text.replace('"/run/containers/storage"', '"%s"' % (tmp_path / "run"))
    text = text.replace('"/var/lib/containers/storage"', '"%s"' % (tmp_path / "graph"))
    conf.write_text(text)
    yield conf
    _unmount_below(tmp_path)


@needs_podman
def test_role_stops_on_missing_prerequisites(tmp_path, private_conf):
    # This machine kind has Debian bookworm's Podman 4.3: the too-old case is what is tested here.
    assert _podman_version() < (5, 0), "this test expects a Podman older than 5.0 (bookworm's 4.3)"
    before = snapshot(private_conf)
    rc, out = run_role(tmp_path, podman_storage_conf_scope="path", podman_storage_conf_path=str(private_conf))
    assert rc != 0
    assert "composefs prerequisites missing on localhost" in out and "is too old for composefs (needs 5.0.0 or later)" in out
    assert snapshot(private_conf) == before


@needs_podman
def test_role_configures_verifies_and_is_idempotent(tmp_path, private_conf):
    composefs = _podman_version() >= (5, 0)
    # podman_storage_conf_path alone implies scope path (issue 10 item 3)
    variables = dict(podman_storage_conf_path=str(private_conf),
                     podman_use_composefs=composefs, podman_prerequisites_fatal=False,
                     podman_pull_options=dict(use_hard_links=True))
    before = snapshot(private_conf)
    rc, out = run_role(tmp_path, check=True, **variables)
    assert rc == 0, out
    assert snapshot(private_conf) == before
    rc, out = run_role(tmp_path, **variables)
    assert rc == 0, out
    assert _recap(out)["changed"] == "1"
    assert 'use_hard_links = "true"' in private_conf.read_text()
    assert "Podman reads %s" % private_conf in out  # the verify step's podman info
    rc, out = run_role(tmp_path, **variables)
    assert rc == 0, out
    assert _recap(out)["changed"] == "0"


@needs_podman
def test_role_never_resets_without_permission(tmp_path, private_conf):
    before = snapshot(private_conf)
    rc, out = run_role(tmp_path, podman_storage_conf_scope="path", podman_storage_conf_path=str(private_conf),
                       podman_use_composefs=False, podman_graphroot=str(tmp_path / "elsewhere"))
    assert rc != 0
    assert "storage.graphroot changes from" in out and "podman_allow_system_reset=true" in out
    assert _recap(out)["changed"] == "0"  # neither a reset nor a write happened
    assert snapshot(private_conf) == before


# ---------------------------------------------------------------- issue 9 item 6: symlinks and what is read

def test_symlinked_config_edits_the_target_and_keeps_the_link(tmp_path, rhel):
    link = tmp_path / "link.conf"
    link.symlink_to(rhel.name)
    res, again = playbook(tmp_path, [conf_task(link, layout="file", pull_options=dict(use_hard_links=True)),
                                     conf_task(link, layout="file", pull_options=dict(use_hard_links=True))])
    assert res["changed"] and res["path"] == str(link) and res["target"] == str(rhel)
    assert link.is_symlink() and os.readlink(str(link)) == rhel.name
    assert 'use_hard_links = "true"' in rhel.read_text()
    assert not again["changed"]


def test_symlinked_config_with_follow_false_replaces_the_link_only(tmp_path, rhel):
    original = rhel.read_text()
    link = tmp_path / "link.conf"
    link.symlink_to(rhel.name)
    res, again = playbook(tmp_path, [conf_task(link, layout="file", follow=False, pull_options=dict(use_hard_links=True)),
                                     conf_task(link, layout="file", follow=False, pull_options=dict(use_hard_links=True))])
    assert res["changed"] and res["target"] == str(link)
    assert not link.is_symlink() and 'use_hard_links = "true"' in link.read_text()
    assert rhel.read_text() == original
    assert not again["changed"]


SECRET = "root:$6$Zq8marker$Hx0SECRETHASHmarker:19000:0:99999:7:::\n"


def test_link_to_a_root_shadow_0640_file_leaks_nothing(tmp_path):
    shadow = tmp_path / "shadow"
    shadow.write_text(SECRET)
    os.chown(str(shadow), 0, 42)
    shadow.chmod(0o640)
    link = tmp_path / "storage.conf"
    link.symlink_to(str(shadow))
    before = snapshot(shadow)
    tasks = [{"name": "info", "composefs.fleet.storage_conf_info": {"paths": [str(link), "/etc/shadow"],
                                                                    "dropin_dirs": [str(tmp_path)]}},
             conf_task(link, use_composefs=False, pull_options=dict(use_hard_links=True))]
    info, res = playbook(tmp_path, tasks, diff=True)
    dumped = json.dumps([info, res])
    assert "marker" not in dumped
    with open("/etc/shadow") as f:
        assert f.readline().split(":")[1] not in dumped
    assert info["files"][0]["content"] is None and "does not look like a TOML file" in info["files"][0]["error"]
    assert info["files"][1]["content"] is None
    assert res["failed"] and "cannot edit %s" % link in res["msg"]
    assert snapshot(shadow) == before and link.is_symlink()


# ---------------------------------------------------------------- issue 9 item 12: check mode runs the same preflight

def test_check_mode_fails_on_a_missing_directory_like_the_real_run(tmp_path):
    p = tmp_path / "missing" / "storage.conf"
    for check in (True, False):
        res, = playbook(tmp_path, [conf_task(p, layout="file", pull_options=dict(use_hard_links=True))], check=check)
        assert res["failed"] and "directory %s does not exist" % p.parent in res["msg"], res
        assert not p.parent.exists()


# ---------------------------------------------------------------- issue 10 items 2-4: layout, file attributes, path, version override

def test_file_attributes_are_applied_idempotently_and_shown_in_the_diff(tmp_path, rhel):
    opts = dict(layout="file", pull_options=dict(use_hard_links=True), mode="0600", owner="root", group="shadow")
    check, = playbook(tmp_path, [conf_task(rhel, **opts)], check=True, diff=True)
    assert check["changed"] and stat.S_IMODE(rhel.stat().st_mode) == 0o640
    first, second = playbook(tmp_path, [conf_task(rhel, **opts), conf_task(rhel, **opts)], diff=True)
    st = rhel.stat()
    assert first["changed"] and stat.S_IMODE(st.st_mode) == 0o600 and (st.st_uid, st.st_gid) == (0, 42)
    assert first["attributes"]["after"] == dict(mode="0600", owner="root", group="shadow")
    assert [d["before_header"] for d in first["diff"]] == [str(rhel), "%s (attributes)" % rhel]
    assert first["diff"][1]["before"]["mode"] == "0640"
    assert not second["changed"]
    # Only the mode changes: the content stays, the diff shows the attributes.
    opts["mode"] = "0644"
    third, = playbook(tmp_path, [conf_task(rhel, **opts)], diff=True)
    assert third["changed"] and third["changes"] == [] and stat.S_IMODE(rhel.stat().st_mode) == 0o644


def test_mode_as_a_yaml_number_is_refused(tmp_path, rhel):
    before = snapshot(rhel)
    res, = playbook(tmp_path, [conf_task(rhel, layout="file", pull_options=dict(use_hard_links=True), mode=420)])
    assert res["failed"] and "quoted string" in res["msg"]
    assert snapshot(rhel) == before


def test_old_mode_values_are_refused_not_mistaken(tmp_path, rhel):
    before = snapshot(rhel)
    res, = playbook(tmp_path, [conf_task(rhel, mode="file", pull_options=dict(use_hard_links=True))])
    assert res["failed"] and "the option that chooses the full file or a drop-in is called layout: use layout: file" in res["msg"]
    assert snapshot(rhel) == before


def test_path_alone_implies_scope_path(tmp_path, rhel):
    task = {"name": "storage_conf", "composefs.fleet.storage_conf": dict(path=str(rhel), layout="file",
                                                                         pull_options=dict(use_hard_links=True))}
    res, = playbook(tmp_path, [task])
    assert res["changed"] and res["scope"] == "path" and res["path"] == str(rhel)
    assert 'use_hard_links = "true"' in rhel.read_text()


def test_path_with_scope_rootful_is_an_error(tmp_path, rhel):
    before = snapshot(rhel)
    res, = playbook(tmp_path, [conf_task(rhel, scope="rootful", pull_options=dict(use_hard_links=True))])
    assert res["failed"] and "was given with scope=rootful" in res["msg"]
    assert snapshot(rhel) == before


@needs_podman
def test_real_podman_4_version_override_writes_and_warns(tmp_path, rhel):
    assert _podman_version() < (5, 0), "this test expects a Podman older than 5.0 (bookworm's 4.3)"
    refused, = playbook(tmp_path, [conf_task(rhel, use_composefs=True)])
    assert refused["failed"] and "podman_version_check=false" in refused["msg"]
    res, = playbook(tmp_path, [conf_task(rhel, use_composefs=True, podman_version_check=False)])
    assert res["changed"] and not res.get("failed") and res["podman_supports_composefs"] is False
    assert any("Written anyway because podman_version_check=false" in w for w in res["warnings"])
    assert 'use_composefs = "true"' in rhel.read_text()


@needs_podman
def test_role_version_override_prepares_an_old_podman_and_says_it_cannot_verify(tmp_path, private_conf):
    assert _podman_version() < (5, 0), "this test expects a Podman older than 5.0 (bookworm's 4.3)"
    # mkcomposefs is missing here too: reported, not fatal (the version override is what is tested)
    variables = dict(podman_storage_conf_path=str(private_conf), podman_version_check=False,
                     podman_prerequisites_fatal=False)
    rc, out = run_role(tmp_path, **variables)
    assert rc == 0, out
    assert _recap(out)["changed"] == "1"
    assert 'use_composefs = "true"' in private_conf.read_text()
    assert "does not read use_composefs (needs 5.0.0 or later)" in out
    rc, out = run_role(tmp_path, **variables)
    assert rc == 0, out
    assert _recap(out)["changed"] == "0"


@needs_podman
def test_role_refuses_the_renamed_variable(tmp_path, private_conf):
    before = snapshot(private_conf)
    rc, out = run_role(tmp_path, podman_storage_conf_path=str(private_conf), podman_storage_conf_mode="file")
    assert rc != 0 and "podman_storage_conf_mode was renamed to podman_storage_conf_layout" in out
    assert snapshot(private_conf) == before
