"""prepare_root: GLib key file writes, check/diff/idempotence, and every refusal (real ostree sysroot where it matters)."""
import base64
import os

import pytest

from module_exec import exec_module
from ostree_sysroot import SYSROOT, build_sysroot, chroot, sid_overlay

CONF = "/etc/ostree/prepare-root.conf"


@pytest.fixture(scope="module")
def ostree_root(tmp_path_factory):
    base = str(tmp_path_factory.mktemp("prepare-root"))
    with sid_overlay(base) as merged:
        build_sysroot(merged)
        yield merged


def conf(root):
    path = os.path.join(str(root), CONF.lstrip("/"))
    if not os.path.exists(path):
        return None
    with open(path) as handle:
        return handle.read()


def write_conf(root, text):
    path = os.path.join(str(root), CONF.lstrip("/"))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as handle:
        handle.write(text)


def run(root, check=False, diff=False, **args):
    return exec_module("prepare_root", dict(args, root=str(root)), check=check, diff=diff)


def test_check_mode_then_write_then_idempotent(tmp_path):
    write_conf(tmp_path, "# Fedora CoreOS\n[composefs]\nenabled = yes\n")
    checked = run(tmp_path, check=True, diff=True, composefs="no", etc_transient=True)
    assert checked["changed"] and not checked["failed"]
    assert conf(tmp_path) == "# Fedora CoreOS\n[composefs]\nenabled = yes\n"
    assert checked["diff"]["after"] == "# Fedora CoreOS\n[composefs]\nenabled=no\n\n[etc]\ntransient=true\n"
    done = run(tmp_path, diff=True, composefs="no", etc_transient=True)
    assert done["changed"] and conf(tmp_path) == checked["diff"]["after"]
    assert done["effective"]["mode"] == "no" and done["effective"]["etc_transient"] is True
    assert done["initramfs"]["needed"] is True and "initramfs-etc --track=%s" % CONF in " ".join(done["initramfs"]["commands"])
    again = run(tmp_path, composefs="no", etc_transient=True)
    assert not again["changed"] and again["initramfs"]["needed"] is False
    assert not run(tmp_path, check=True, composefs="no", etc_transient=True)["changed"]


def test_new_file_and_backup(tmp_path):
    done = run(tmp_path, composefs="yes", sysroot_readonly=True)
    assert done["changed"] and conf(tmp_path) == "[composefs]\nenabled=yes\n\n[sysroot]\nreadonly=true\n"
    backup = run(tmp_path, composefs="no", backup=True)
    assert backup["changed"] and os.path.exists(backup["backup_file"])


def test_maybe_warns_that_it_enforces_nothing(tmp_path):
    done = run(tmp_path, composefs="maybe")
    assert done["changed"] and "enforces nothing" in str(done.get("warnings"))


def refused(result, *fragments):
    assert result["failed"], result
    text = " | ".join(result["reasons"])
    for fragment in fragments:
        assert fragment in text, text


def test_refuses_transient_with_transient_ro(tmp_path):
    refused(run(tmp_path, root_transient=True, root_transient_ro=True), "transient and transient-ro are both set")
    assert conf(tmp_path) is None


def test_refuses_to_edit_a_file_glib_cannot_parse(tmp_path):
    write_conf(tmp_path, "enabled = yes\n")
    refused(run(tmp_path, composefs="yes"), "not a valid GLib key file", "does not start with a group")
    assert conf(tmp_path) == "enabled = yes\n"


@pytest.mark.parametrize("key, problem", [
    (None, "needs the Ed25519 public key file"),
    (b"not base64!\n", "is not base64"),
    (base64.b64encode(b"x" * 16) + b"\n", "16 bytes, not a 32-byte Ed25519 public key"),
    (b"\n\n", "holds no public key"),
])
def test_refuses_signed_without_a_usable_key(tmp_path, key, problem):
    keypath = "/etc/ostree/initramfs-root-binding.key"
    if key is not None:
        os.makedirs(str(tmp_path / "etc" / "ostree"), exist_ok=True)
        (tmp_path / keypath.lstrip("/")).write_bytes(key)
    refused(run(tmp_path, composefs="signed", check_objects=False), problem)
    assert conf(tmp_path) is None


def test_refuses_verity_without_a_repository(tmp_path):
    refused(run(tmp_path, composefs="verity"), "no ostree repository at /sysroot/ostree/repo")


def test_refuses_verity_while_objects_lack_fs_verity(ostree_root):
    before = conf(ostree_root)
    result = run(ostree_root, composefs="verity", sysroot=SYSROOT)
    # The host kernel has no fs-verity: the repository's filesystem cannot enforce it and no object has it.
    refused(result, "objects have no fs-verity", "run ostree admin post-copy", "cannot enforce fs-verity")
    assert conf(ostree_root) == before


def test_refuses_verity_while_the_repository_has_fsverity_off(ostree_root):
    repo = "%s/ostree/repo" % SYSROOT
    chroot(ostree_root, "ostree config --repo=%s set ex-integrity.fsverity false" % repo)
    try:
        refused(run(ostree_root, composefs="verity", sysroot=SYSROOT), "does not have fs-verity on ([ex-integrity] fsverity)")
    finally:
        chroot(ostree_root, "ostree config --repo=%s unset ex-integrity.fsverity" % repo)


def test_refuses_signed_when_the_commit_is_unsigned(ostree_root):
    keypath = os.path.join(ostree_root, "etc", "ostree", "initramfs-root-binding.key")
    os.makedirs(os.path.dirname(keypath), exist_ok=True)
    with open(keypath, "wb") as handle:
        handle.write(base64.b64encode(os.urandom(32)) + b"\n")
    try:
        refused(run(ostree_root, composefs="signed", sysroot=SYSROOT), "has no ostree.sign.ed25519 signature",
                "objects have no fs-verity")
    finally:
        os.unlink(keypath)


def test_yes_is_written_on_the_ostree_host(ostree_root):
    result = run(ostree_root, composefs="yes", sysroot=SYSROOT)
    assert result["changed"] and result["effective"]["mode"] == "yes"
    assert "enabled=yes" in conf(ostree_root)
