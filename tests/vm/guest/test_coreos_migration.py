"""The yes -> verity migration on a real ostree sysroot on ext4 with fs-verity (inside the fs-verity guest).

sid's ostree 2026.4 runs in a chroot (an overlay over the cached sid root); the sysroot
lives on the guest's ext4-verity disk. The repository starts without fs-verity, as on a
node whose objects were copied file by file. Then, as the coreos role does it: prepare_root
refuses verity; ex-integrity.fsverity=true; ostree admin post-copy; prepare_root's proof
passes and writes enabled=verity (idempotent); boot_facts sees fs-verity on every image; a
new deployment's .ostree.cfs carries the object digests and equals its commit's digest.
"""
import os
import subprocess

import pytest

from ansible_collections.composefs.fleet.plugins.module_utils.boot import ostree
from ansible_collections.composefs.fleet.plugins.module_utils.boot.gather import gather_local
from module_exec import exec_module
from ostree_sysroot import SYSROOT, OSNAME, build_sysroot, chroot, sid_overlay

REPO = SYSROOT + "/ostree/repo"


@pytest.fixture(scope="module")
def ostree_on_verity(tmp_path_factory):
    sysroot_dir = os.path.join(os.environ["VM_MNT_EXT4_VERITY"], "coreos-sysroot")
    os.makedirs(sysroot_dir)
    base = str(tmp_path_factory.mktemp("coreos-vm"))
    with sid_overlay(base) as merged:
        target = os.path.join(merged, SYSROOT.lstrip("/"))
        os.makedirs(target, exist_ok=True)
        subprocess.run(["mount", "--bind", sysroot_dir, target], check=True)
        try:
            build_sysroot(merged, fsverity="false")
            yield merged
        finally:
            subprocess.run(["umount", "-l", target], check=False)


def facts(merged):
    # In-process (TCG is slow; the module file itself runs in the host tiers): the same gather the module calls.
    return gather_local(root=merged, sysroot=SYSROOT, run_bootc=False)


def prepare_root(merged, check=False):
    return exec_module("prepare_root", dict(root=merged, sysroot=SYSROOT, composefs="verity"), check=check)


def test_post_copy_then_verity(ostree_on_verity):
    merged = ostree_on_verity
    before = facts(merged)
    assert before["repository"]["filesystem"]["verity"] == "supported", before["repository"]
    assert before["repository"]["config"]["fsverity_effective"] == "no"
    assert all(d["composefs_image"]["enabled"] is False for d in before["deployments"])

    refused = prepare_root(merged, check=True)
    assert refused["failed"] and any("objects have no fs-verity" in r for r in refused["reasons"]), refused
    assert any("does not have fs-verity on" in r for r in refused["reasons"])

    chroot(merged, "ostree config --repo=%s set ex-integrity.fsverity true" % REPO)
    chroot(merged, "ostree admin post-copy --sysroot=%s" % SYSROOT)

    proof = prepare_root(merged, check=True)
    assert not proof["failed"], proof.get("reasons")
    report = proof["effective"]["verity_check"]
    assert report["objects_checked"] > 0 and report["objects_without_verity"] == 0
    written = prepare_root(merged)
    assert written["changed"] and written["effective"]["mode"] == "verity"
    again = prepare_root(merged)
    assert not again["changed"]

    after = facts(merged)
    assert after["repository"]["config"]["fsverity_effective"] == "yes"
    assert after["composefs"]["configured_mode"] == "verity"
    for dep in after["deployments"]:
        image = dep["composefs_image"]
        # post-copy enabled fs-verity on the image: the kernel's digest is ours.
        assert image["enabled"] is True and image["measured"] == image["digest"]
    # The store's objects all have fs-verity now.
    store = os.path.join(merged, REPO.lstrip("/"))
    for dep in after["deployments"]:
        objects = ostree.image_objects(os.path.join(merged, dep["path"].lstrip("/"), ostree.CFS_NAME))
        assert ostree.objects_without_verity(store, objects)[1] == 0


def test_a_new_deployment_carries_the_object_digests(ostree_on_verity):
    merged = ostree_on_verity
    chroot(merged, "ostree admin deploy --sysroot=%s --os=%s %s/stable" % (SYSROOT, OSNAME, OSNAME))
    newest = facts(merged)["deployments"]
    newest = max(newest, key=lambda d: (d["commit"]["subject"] == "two", d["serial"]))
    image = newest["composefs_image"]
    assert image["enabled"] is True
    assert image["measured"] == image["expected"] and image["matches_commit"] is True
