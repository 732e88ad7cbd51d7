"""What ostree-prepare-root (2026.4) makes of prepare-root.conf and the karg."""
import pytest

from ansible_collections.composefs.fleet.plugins.module_utils.boot.prepare_root import cmdline_value, effective


@pytest.mark.parametrize("enabled, mode, verity, signed", [
    (None, "no", False, False), ("no", "no", False, False), ("false", "no", False, False), ("0", "no", False, False),
    ("yes", "yes", False, False), ("true", "yes", False, False), ("1", "yes", False, False), (" yes ", "yes", False, False),
    ("maybe", "maybe", False, False), ("verity", "verity", True, False), ("signed", "signed", True, True),
])
def test_enabled_values(enabled, mode, verity, signed):
    text = "[composefs]\nenabled=%s\n" % enabled if enabled is not None else ""
    got = effective(text, "", source="/etc/ostree/prepare-root.conf")
    assert (got["mode"], got["require_verity"], got["signed"], got["errors"]) == (mode, verity, signed, [])
    assert got["decided_by"] == ("/etc/ostree/prepare-root.conf" if enabled is not None else "default")


def test_sysroot_readonly_defaults_to_composefs_yes():
    assert effective("[composefs]\nenabled=yes\n")["sysroot_readonly"] is True
    assert effective("[composefs]\nenabled=maybe\n")["sysroot_readonly"] is False
    assert effective("[composefs]\nenabled=yes\n[sysroot]\nreadonly=false\n")["sysroot_readonly"] is False


@pytest.mark.parametrize("karg, mode, signed", [
    ("signed", "signed", True), ("no", "no", False), ("0", "no", False), ("maybe", "verity", False), ("yes", "verity", False),
])
def test_karg_overrides_the_file(karg, mode, signed):
    # A tristate karg turns signatures off but keeps require_verity from the file (otcore_load_rootfs_config).
    got = effective("[composefs]\nenabled=signed\n", "quiet ostree.prepare-root.composefs=%s rw" % karg,
                    source="/etc/ostree/prepare-root.conf")
    assert (got["mode"], got["signed"], got["decided_by"], got["karg"]) == (mode, signed, "karg", karg)


@pytest.mark.parametrize("text, cmdline, problem", [
    ("[composefs]\nenabled=enforce\n", "", "invalid tri-state value 'enforce'"),
    ("[composefs]\nenabled=yes\n", "ostree.prepare-root.composefs=verity", "karg ostree.prepare-root.composefs=verity"),
    ("[root]\ntransient=yes\n", "", "[root] transient"),
    ("[root]\ntransient=true\ntransient-ro=true\n", "", "both set"),
    ("[etc]\ntransient=on\n", "", "[etc] transient"),
    ("[composefs\n", "", "not a valid group header"),
])
def test_what_fails_the_boot(text, cmdline, problem):
    errors = effective(text, cmdline)["errors"]
    assert any(problem in e for e in errors), errors


def test_signed_needs_the_key_file():
    got = effective("[composefs]\nenabled=signed\nkeypath=/etc/ostree/k.key\n", "", key_exists=lambda p: False)
    assert any("/etc/ostree/k.key does not exist" in e for e in got["errors"])
    assert effective("[composefs]\nenabled=signed\n", "", key_exists=lambda p: True)["errors"] == []
    assert effective("[composefs]\nenabled=signed\n")["keypath"] == "/etc/ostree/initramfs-root-binding.key"


def test_cmdline_value_takes_the_first_exact_key():
    assert cmdline_value("a ostree=/x ostree.prepare-root.composefs=0 ostree=/y", "ostree") == "/x"
    assert cmdline_value("ostreex=1", "ostree") is None
