"""The coreos role on a real ostree sysroot (sid's ostree 2026.4 in a chroot), and the serial reboot playbook.

This host's kernel has no fs-verity, so here the role must report "not ready" in check-only
mode (twice, changing nothing) and refuse to migrate before touching anything. The migration
itself (post-copy, proof, prepare-root.conf) needs a kernel with fs-verity: tests/vm.
"""
import json
import os
import re
import subprocess
import sys

import pytest

from ostree_sysroot import SYSROOT, build_sysroot, sid_overlay
from support import TOP

BIN = os.path.dirname(sys.executable)
_RECAP = re.compile(r"^(\S+)\s+:\s+ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)")


@pytest.fixture(scope="module")
def ostree_root(tmp_path_factory):
    base = str(tmp_path_factory.mktemp("coreos-role"))
    with sid_overlay(base) as merged:
        build_sysroot(merged)
        os.makedirs(os.path.join(merged, "etc", "ostree"), exist_ok=True)
        with open(os.path.join(merged, "etc", "ostree", "prepare-root.conf"), "w") as handle:
            handle.write("[composefs]\nenabled = yes\n")
        yield merged


def run_play(tmp_path, role_vars, *args, playbook=None):
    if playbook is None:
        playbook = tmp_path / "play.yml"
        playbook.write_text(json.dumps([dict(name="coreos", hosts="localhost", gather_facts=False,
                                             roles=[dict(role="composefs.fleet.coreos", vars=role_vars)])]))
    argv = [os.path.join(BIN, "ansible-playbook"), str(playbook)] + list(args)
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(TOP, "ansible.cfg"), ANSIBLE_NOCOLOR="1")
    proc = subprocess.run(argv, cwd=TOP, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False)
    recap = dict((m.group(1), dict(ok=int(m.group(2)), changed=int(m.group(3)), failed=int(m.group(5))))
                 for m in (_RECAP.match(line) for line in proc.stdout.splitlines()) if m)
    return proc, recap.get("localhost")


def role_vars(merged, **more):
    out = dict(coreos_root=merged, coreos_sysroot=SYSROOT, coreos_ostree_command=["chroot", merged, "ostree"])
    out.update(more)
    return out


def files(merged):
    out = {}
    for rel in ("etc/ostree/prepare-root.conf", "srv/sysroot/ostree/repo/config"):
        with open(os.path.join(merged, rel)) as handle:
            out[rel] = handle.read()
    return out


def test_check_only_reports_and_changes_nothing_twice(ostree_root, tmp_path):
    before = files(ostree_root)
    for _run in range(2):
        proc, recap = run_play(tmp_path, role_vars(ostree_root))
        assert recap is not None and recap["failed"] == 0 and recap["changed"] == 0, proc.stdout + proc.stderr
        assert "boot: ostree: off" in proc.stdout or "boot: ostree: best-effort" in proc.stdout
        assert "verity: not ready" in proc.stdout and "objects have no fs-verity" in proc.stdout
    assert files(ostree_root) == before


def test_check_mode_of_the_migration_changes_nothing(ostree_root, tmp_path):
    before = files(ostree_root)
    proc, recap = run_play(tmp_path, role_vars(ostree_root, coreos_check_only=False), "--check")
    assert recap is not None and recap["failed"] in (0, 1), proc.stdout
    assert files(ostree_root) == before


def test_migration_is_refused_before_touching_anything(ostree_root, tmp_path):
    before = files(ostree_root)
    proc, recap = run_play(tmp_path, role_vars(ostree_root, coreos_check_only=False))
    assert recap["failed"] == 1 and recap["changed"] == 0, proc.stdout
    assert "cannot enforce fs-verity" in proc.stdout
    assert files(ostree_root) == before


def test_plain_host_is_left_alone(tmp_path):
    (tmp_path / "root").mkdir()
    proc, recap = run_play(tmp_path, dict(coreos_root=str(tmp_path / "root"), coreos_check_only=False))
    assert recap["failed"] == 0 and recap["changed"] == 0, proc.stdout
    assert "this role migrates ostree nodes only" in proc.stdout


def test_reboot_playbook_leaves_a_node_without_pending_change_alone(tmp_path):
    playbook = os.path.join(TOP, "playbooks", "coreos_reboot.yml")
    proc, recap = run_play(tmp_path, None, "-i", os.path.join(TOP, "inventory"), "-e", "coreos_reboot_hosts=localhost",
                           playbook=playbook)
    assert recap is not None and recap["failed"] == 0 and recap["changed"] == 0, proc.stdout + proc.stderr
    assert "skipping: [localhost]" in proc.stdout
