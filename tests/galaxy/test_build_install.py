"""The collection as a Galaxy user gets it: build the tarball, install it into a fresh path,
run the demo playbook from the installed collection by its FQCN.

Runs with the ansible-core of the interpreter running pytest (``make test-galaxy CORE=2.21``).
Nothing of the checkout is visible to the ansible commands but the tarball: no ansible.cfg,
a collections path holding only the installed copy, a working directory outside the checkout.
"""
import json
import os
import re
import subprocess
import sys
import tarfile

import pytest
import yaml

from support import TOP

BIN = os.path.dirname(sys.executable)

# What a tarball must never carry: caches, venvs, test outputs, benchmark results, build leftovers.
FORBIDDEN = [
    (re.compile(r"(^|/)\.cache(/|$)"), "a cache folder"),
    (re.compile(r"(^|/)\.venv[^/]*(/|$)"), "a virtualenv"),
    (re.compile(r"(^|/)__pycache__(/|$)|\.py[co]$"), "Python bytecode"),
    (re.compile(r"(^|/)\.(pytest_cache|hypothesis|tox|ansible)(/|$)"), "a test tool's cache"),
    (re.compile(r"^tests/output(/|$)"), "ansible-test output"),
    (re.compile(r"^bench(/|$)"), "the benchmarks and their results"),
    (re.compile(r"^\.ci(/|$)|^\.git(/|$)"), "CI or VCS files"),
    (re.compile(r"^changelogs/\.plugin-cache\.yaml$"), "antsibull-changelog's plugin cache"),
    (re.compile(r"\.tar\.gz$|\.retry$|(^|/)build(/|$)"), "a build leftover"),
]

# What a user needs from it.
REQUIRED = [
    "MANIFEST.json", "FILES.json", "README.md", "CHANGELOG.md", "changelogs/changelog.yaml", "meta/runtime.yml",
    "playbooks/demo.yml", "playbooks/verity_report.yml", "playbooks/podman.yml",
    "roles/verity_check/meta/argument_specs.yml", "roles/podman/meta/argument_specs.yml",
    "plugins/modules/mount.py", "plugins/modules/image.py", "plugins/modules/fsverity.py",
]

# The demo runs on a kernel without fs-verity, and says so: these are its only warnings.
DEMO_WARNINGS = (
    "fs-verity not enabled",
    "verity=userspace",
)


def _galaxy_env(collections):
    """The environment of a user with the collection installed in ``collections``, and no checkout config."""
    env = dict((k, v) for k, v in os.environ.items() if not k.startswith("ANSIBLE_"))
    env.update(ANSIBLE_COLLECTIONS_PATH=str(collections), ANSIBLE_COLLECTIONS_SCAN_SYS_PATH="false",
               ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0", PATH=BIN + os.pathsep + os.environ.get("PATH", ""))
    return env


def _run(argv, cwd, env):
    proc = subprocess.run(argv, cwd=str(cwd), env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, universal_newlines=True, check=False)
    assert proc.returncode == 0, "%s failed (rc=%d):\n%s" % (" ".join(argv), proc.returncode, proc.stdout)
    return proc.stdout


def _mounts_under(path):
    with open("/proc/self/mountinfo") as f:
        points = [line.split()[4].replace("\\040", " ") for line in f]
    return [p for p in points if p == path or p.startswith(path + "/")]


@pytest.fixture(scope="module")
def galaxy(tmp_path_factory):
    """Build the tarball and install it into a fresh collections path; yield (tarball, collections, home)."""
    home = tmp_path_factory.mktemp("galaxy-user")
    with open(os.path.join(TOP, "galaxy.yml")) as f:
        meta = yaml.safe_load(f)
    collections = home / "collections"
    env = _galaxy_env(collections)
    _run([os.path.join(BIN, "ansible-galaxy"), "collection", "build", TOP, "--output-path", str(home / "dist")], home, env)
    tarball = home / "dist" / ("%s-%s-%s.tar.gz" % (meta["namespace"], meta["name"], meta["version"]))
    assert tarball.is_file(), "ansible-galaxy built no %s" % tarball.name
    _run([os.path.join(BIN, "ansible-galaxy"), "collection", "install", str(tarball), "-p", str(collections)], home, env)
    yield tarball, collections, home, meta


def test_tarball_holds_the_collection_and_nothing_else(galaxy):
    tarball, dummy, dummy, meta = galaxy
    with tarfile.open(str(tarball)) as tar:
        names = [m.name[2:] if m.name.startswith("./") else m.name for m in tar.getmembers()]
        manifest = json.load(tar.extractfile("MANIFEST.json"))
    bad = ["%s (%s)" % (name, why) for name in names for pattern, why in FORBIDDEN if pattern.search(name)]
    assert not bad, "the tarball carries files a user must not get; extend build_ignore in galaxy.yml:\n" + "\n".join(bad)
    missing = [name for name in REQUIRED if name not in names]
    assert not missing, "the tarball lacks %s" % ", ".join(missing)
    assert manifest["collection_info"]["version"] == meta["version"]


def test_installed_collection_is_listed_and_documented(galaxy):
    dummy, collections, home, meta = galaxy
    env = _galaxy_env(collections)
    listed = _run([os.path.join(BIN, "ansible-galaxy"), "collection", "list", "composefs.fleet", "--format", "json"], home, env)
    versions = [info["version"] for found in json.loads(listed).values() for info in found.values()]
    assert versions == [meta["version"]], listed
    docs = json.loads(_run([os.path.join(BIN, "ansible-doc"), "--json", "composefs.fleet.mount"], home, env))
    assert docs["composefs.fleet.mount"]["doc"]["options"]


def test_demo_runs_from_the_installed_collection_by_fqcn(galaxy):
    dummy, collections, home, meta = galaxy
    env = _galaxy_env(collections)
    demo_dir = str(home / "demo")
    env["COMPOSEFS_FLEET_DEMO_DIR"] = demo_dir
    # The user's own inventory: this machine, with the controller's Python.
    inventory = home / "inventory.yml"
    inventory.write_text("all:\n  hosts:\n    localhost:\n      ansible_connection: local\n"
                         "      ansible_python_interpreter: \"{{ ansible_playbook_python }}\"\n")
    try:
        out = _run([os.path.join(BIN, "ansible-playbook"), "-i", str(inventory), "composefs.fleet.demo"], home, env)
    finally:
        for point in reversed(_mounts_under(demo_dir)):
            subprocess.run(["umount", "-l", point], check=False)
    assert "PLAY [Demo - build a composefs image" in out and "A wrong pin is refused" in out, out
    assert "[DEPRECATION WARNING]" not in out, out
    warnings = [line for line in out.splitlines() if line.startswith("[WARNING]")]
    unexpected = [w for w in warnings if not any(expected in w for expected in DEMO_WARNINGS)]
    assert not unexpected, "the demo printed warnings beyond its kernel's (no fs-verity):\n" + "\n".join(unexpected)
    assert not re.search(r"failed=[1-9]|unreachable=[1-9]", out), out
