"""boot_facts on a real ostree sysroot (sid's ostree 2026.4, libcomposefs): deployments, .ostree.cfs, digests, raw path."""
import os
import subprocess

import pytest

from ansible_collections.composefs.fleet.plugins.module_utils.boot.gather import gather
from ansible_collections.composefs.fleet.plugins.module_utils.boot.raw import parse_raw, raw_script

from ansible_run import run_module
from ostree_sysroot import SYSROOT, build_sysroot, chroot, commit_composefs_digest, deployment_dir, sid_overlay
from glib_helper import write_ostree_booted


@pytest.fixture(scope="module")
def ostree_host(tmp_path_factory):
    base = str(tmp_path_factory.mktemp("ostree-host"))
    with sid_overlay(base) as merged:
        newest, oldest = build_sysroot(merged)
        booted = deployment_dir(merged, newest)
        st = os.lstat(booted)
        os.makedirs(os.path.join(merged, "run"), exist_ok=True)
        write_ostree_booted(os.path.join(merged, "run", "ostree-booted"), {
            "composefs": ["b", "true"], "composefs.verity": ["b", "false"], "sysroot-ro": ["b", "true"],
            "root.transient": ["b", "false"], "root.transient-ro": ["b", "false"],
            "backing-root-device-inode": ["(tt)", "(uint64 %d, uint64 %d)" % (st.st_dev, st.st_ino)],
        })
        os.makedirs(os.path.join(merged, "etc", "ostree"), exist_ok=True)
        with open(os.path.join(merged, "etc", "ostree", "prepare-root.conf"), "w") as handle:
            handle.write("# as Fedora CoreOS ships it\n[composefs]\nenabled = yes\n")
        yield dict(merged=merged, newest=newest, oldest=oldest)


def fsverity_digest(path):
    out = subprocess.run(["fsverity", "digest", path], stdout=subprocess.PIPE, universal_newlines=True, check=True).stdout
    return out.split()[0].split(":", 1)[1]


def test_module_finds_the_deployments_their_images_and_digests(ostree_host):
    merged = ostree_host["merged"]
    result = run_module("composefs.fleet.boot_facts", dict(root=merged, sysroot=SYSROOT))
    assert not result["failed"], result
    facts = result["ansible_facts"]["composefs_boot"]
    assert facts["kind"] == "ostree" and facts["source"] == "module"
    assert facts["errors"] == []
    deps = facts["deployments"]
    assert [d["checksum"] for d in deps] == [ostree_host["newest"], ostree_host["oldest"]]
    assert [d["booted"] for d in deps] == [True, False]
    assert facts["booted_deployment"] == ostree_host["newest"] + ".0"
    assert [d["commit"]["subject"] for d in deps] == ["two", "one"]
    for dep in deps:
        image = dep["composefs_image"]
        assert image["path"].endswith("/.ostree.cfs")
        # Our fs-verity digest equals fsverity-utils'; the expected one is ostree's own commit metadata.
        assert image["digest"] == fsverity_digest(os.path.join(merged, image["path"].lstrip("/")))
        assert image["expected"] == commit_composefs_digest(merged, dep["checksum"])
        assert dep["commit"]["composefs_digest"] == image["expected"]
        # The repository has no fs-verity here, so ostree wrote the image without object digests.
        assert image["enabled"] is False and image["matches_commit"] is False
        assert dep["origin"] == {"origin": {"refspec": "testos/stable"}}
    cfs = facts["composefs"]
    assert cfs["enabled"] is True and cfs["mode"] == "yes" and cfs["decided_by"] == "/run/ostree-booted"
    assert cfs["configured_mode"] == "yes" and cfs["configured_by"] == "/etc/ostree/prepare-root.conf"
    assert cfs["verity_enforced"] is False and cfs["signed"] is False and cfs["pending"] is False
    assert "post-copy" in cfs["image_note"]
    assert facts["summary"] == "ostree: best-effort"
    repo = facts["repository"]
    assert repo["config"]["composefs"] == "yes" and repo["config"]["fsverity"] is None
    assert repo["config"]["fsverity_effective"] == "maybe"
    assert repo["filesystem"]["verity"] in ("supported", "unsupported", "unknown")


def test_check_mode_reports_the_same(ostree_host):
    result = run_module("composefs.fleet.boot_facts", dict(root=ostree_host["merged"], sysroot=SYSROOT, digests=False),
                        check=True)
    assert not result["failed"] and result["changed"] is False
    assert result["ansible_facts"]["composefs_boot"]["booted_deployment"] == ostree_host["newest"] + ".0"


def test_raw_script_in_the_chroot_gives_the_same_facts(ostree_host):
    """The raw path: sh and coreutils only (no Python, no fsverity command) in the host's root, parsed here."""
    merged = ostree_host["merged"]
    proc = chroot(merged, raw_script(SYSROOT))
    src, cmdline, mountinfo, status, complete = parse_raw(proc.stdout)
    assert complete and status is None
    facts = gather(src, cmdline, mountinfo, sysroot=SYSROOT)
    assert facts["source"] == "raw" and facts["kind"] == "ostree"
    module = run_module("composefs.fleet.boot_facts", dict(root=merged, sysroot=SYSROOT))["ansible_facts"]["composefs_boot"]
    for key in ("kind", "booted_deployment", "summary"):
        assert facts[key] == module[key]
    for key in ("enabled", "mode", "decided_by", "configured_mode", "configured_by", "verity_enforced", "signed"):
        assert facts["composefs"][key] == module["composefs"][key], key
    assert [(d["checksum"], d["booted"], d["commit"], d["origin"]) for d in facts["deployments"]] == \
        [(d["checksum"], d["booted"], d["commit"], d["origin"]) for d in module["deployments"]]
    assert facts["repository"]["config"] == module["repository"]["config"]
    # Without an fsverity command on the host the image digest stays unknown, and says why.
    assert all(d["composefs_image"]["digest"] is None for d in facts["deployments"])


def run_without_python(args):
    """The module on localhost with an interpreter that does not exist (a CoreOS node has no Python)."""
    import json
    import sys

    from support import TOP

    argv = [os.path.join(os.path.dirname(sys.executable), "ansible"), "localhost", "-m", "composefs.fleet.boot_facts",
            "-a", json.dumps(args), "-e", "ansible_python_interpreter=/nonexistent/python3"]
    proc = subprocess.run(argv, cwd=TOP, stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True,
                          check=False, env=dict(os.environ, ANSIBLE_CONFIG=os.path.join(TOP, "ansible.cfg")))
    head, _sep, body = proc.stdout.partition(" => ")
    result = json.loads(body)
    result["failed"] = result.get("failed", False) or "FAILED" in head
    return result


def test_action_falls_back_to_raw_without_python(ostree_host):
    """A host whose Python is missing: the action plugin reads it with raw and decides the facts on the controller."""
    sysroot = os.path.join(ostree_host["merged"], SYSROOT.lstrip("/"))
    result = run_without_python(dict(sysroot=sysroot))
    assert not result["failed"], result
    facts = result["ansible_facts"]["composefs_boot"]
    assert facts["source"] == "raw"
    assert facts["kind"] == "ostree"
    assert sorted(d["checksum"] for d in facts["deployments"]) == sorted([ostree_host["newest"], ostree_host["oldest"]])
    assert all(d["commit"]["subject"] in ("one", "two") for d in facts["deployments"])


def test_without_python_and_without_fallback_the_task_fails(ostree_host):
    result = run_without_python(dict(raw_fallback=False))
    assert result["failed"] and "composefs_boot" not in result.get("ansible_facts", {})
