"""/run/ostree-booted written by GLib (python3-gi) as ostree-prepare-root does, read by the stdlib parser."""
import pytest

from ansible_collections.composefs.fleet.plugins.module_utils.boot.gather import gather
from ansible_collections.composefs.fleet.plugins.module_utils.boot.ostree import OstreeError, parse_booted
from ansible_collections.composefs.fleet.plugins.module_utils.boot.source import DumpSource

from glib_helper import write_ostree_booted

SIGNED = {
    "backing-root-device-inode": ["(tt)", "(uint64 64769, uint64 4325378)"],
    "root.transient": ["b", "false"], "root.transient-ro": ["b", "false"],
    "composefs.signed": ["s", "'/etc/ostree/initramfs-root-binding.key'"],
    "composefs": ["b", "true"], "composefs.verity": ["b", "true"],
    "sysroot-ro": ["b", "true"], "transient-etc": ["s", "'/run/ostree/transient-etc.AbC123'"],
}


@pytest.fixture
def booted_file(tmp_path):
    def make(spec):
        path = tmp_path / "ostree-booted"
        write_ostree_booted(path, spec)
        return path.read_bytes()
    return make


def test_every_key(booted_file):
    got = parse_booted(booted_file(SIGNED))
    assert got == {
        "backing-root-device-inode": {"device": 64769, "inode": 4325378},
        "root.transient": False, "root.transient-ro": False,
        "composefs.signed": "/etc/ostree/initramfs-root-binding.key",
        "composefs": True, "composefs.verity": True, "sysroot-ro": True,
        "transient-etc": "/run/ostree/transient-etc.AbC123",
    }


@pytest.mark.parametrize("spec, mode, enforced, signed, summary", [
    (SIGNED, "signed", True, True, "ostree: signed"),
    ({"composefs": ["b", "true"], "composefs.verity": ["b", "true"]}, "verity", True, False, "ostree: enforced"),
    ({"composefs": ["b", "true"], "composefs.verity": ["b", "false"]}, "yes", False, False, "ostree: best-effort"),
    ({"sysroot-ro": ["b", "false"]}, "no", False, False, "ostree: off"),
])
def test_the_running_boot_decides(booted_file, spec, mode, enforced, signed, summary):
    # The config says "yes"; what the boot did wins, and a difference is reported as pending.
    src = DumpSource(files={"/run/ostree-booted": booted_file(spec),
                            "/usr/lib/ostree/prepare-root.conf": b"[composefs]\nenabled = yes\n"})
    facts = gather(src, "root=UUID=x ostree=/ostree/boot.1/fedora/abc/0")
    cfs = facts["composefs"]
    assert (facts["kind"], cfs["mode"], cfs["verity_enforced"], cfs["signed"]) == ("ostree", mode, enforced, signed)
    assert cfs["decided_by"] == "/run/ostree-booted" and cfs["configured_by"] == "/usr/lib/ostree/prepare-root.conf"
    assert cfs["pending"] is (mode != "yes")
    assert facts["summary"] == summary


def test_etc_replaces_usr_lib_entirely():
    src = DumpSource(files={"/usr/lib/ostree/prepare-root.conf": b"[composefs]\nenabled = yes\n[sysroot]\nreadonly=true\n",
                            "/etc/ostree/prepare-root.conf": b"[root]\ntransient = true\n"})
    facts = gather(src, "ostree=/ostree/boot.1/fedora/abc/0")
    # GLib clears the key file before loading /etc: composefs falls back to its default (no).
    assert facts["prepare_root"]["file"] == "/etc/ostree/prepare-root.conf"
    assert facts["composefs"]["mode"] == "no" and facts["prepare_root"]["root_transient"] is True


@pytest.mark.parametrize("data", [b"", b"\x01\x02\x03", b"composefs\0\0\0\0\0\0\0\x01\0b\x0a\x0b"])
def test_garbage_is_an_error_not_a_crash(data):
    if data == b"":
        assert parse_booted(data) == {}
        return
    with pytest.raises(OstreeError):
        parse_booted(data)


def test_garbage_booted_file_in_facts():
    facts = gather(DumpSource(files={"/run/ostree-booted": b"\xff\xff\xff"}), "")
    assert facts["kind"] == "ostree" and any("not a GVariant" in e for e in facts["errors"])


def test_staged_deployment_name(tmp_path):
    from ansible_collections.composefs.fleet.plugins.module_utils.boot.ostree import parse_staged

    path = tmp_path / "staged-deployment"
    write_ostree_booted(path, {
        "target": ["a{sv}", "{'name': <'%s.1'>, 'osname': <'fedora'>, 'bootcsum': <'%s'>}" % ("a" * 64, "b" * 64)],
        "kargs": ["as", "['root=UUID=x', 'rw']"],
    })
    assert parse_staged(path.read_bytes()) == "a" * 64 + ".1"
    assert parse_staged(b"\x00\x01") is None
