"""bootc's composefs backend: karg, .origin files and bootc status --json from bootc's own sources (tests/fixtures/bootc)."""
import os

import pytest

from ansible_collections.composefs.fleet.plugins.module_utils.boot.bootc import BootcError, parse_karg, parse_origin, parse_status
from ansible_collections.composefs.fleet.plugins.module_utils.boot.gather import gather
from ansible_collections.composefs.fleet.plugins.module_utils.boot.source import LocalSource

FIXTURES = os.path.join(os.path.dirname(__file__), "..", "..", "..", "..", "fixtures", "bootc")
SHA512 = "a" * 128


def fixture(name):
    with open(os.path.join(FIXTURES, name)) as handle:
        return handle.read()


@pytest.mark.parametrize("cmdline, expected", [
    ("root=UUID=1 composefs=%s rw" % SHA512, {"digest": SHA512, "verity_optional": False}),
    ("composefs=?%s" % ("d" * 64), {"digest": "d" * 64, "verity_optional": True}),
    ("quiet", None),
])
def test_karg(cmdline, expected):
    assert parse_karg(cmdline) == expected


@pytest.mark.parametrize("value", ["xyz", "?", "A" * 64, "a" * 63])
def test_bad_karg(value):
    with pytest.raises(BootcError):
        parse_karg("composefs=%s" % value)


def test_origin_from_bootc_testutils():
    got = parse_origin(fixture("origin-bls.origin"))
    assert got["image"] == "ostree-unverified-image:quay.io/example/os:latest"
    assert (got["boot_type"], got["boot_digest"]) == ("bls", "b" * 64)


def test_status_composefs():
    got = parse_status(fixture("status-composefs.json"))
    assert got["backend"] == "composefs"
    booted, rollback = got["entries"]
    assert booted["slot"] == "booted" and booted["image"] == "quay.io/centos-bootc/centos-bootc:stream9"
    assert booted["composefs"] == {"verity": SHA512, "boot_type": "Bls", "bootloader": "systemd",
                                   "missing_verity_allowed": False, "boot_digest": "b" * 64}
    assert rollback["composefs"]["missing_verity_allowed"] is True and rollback["composefs"]["boot_type"] == "Uki"


def test_status_ostree_backend():
    got = parse_status(fixture("status-ostree-only-booted.json"))
    assert got["backend"] == "ostree" and got["entries"][0]["composefs"] is None


@pytest.mark.parametrize("text", ["not json", "[]", '{"kind": "Other"}'])
def test_status_garbage(text):
    with pytest.raises(BootcError):
        parse_status(text)


def make_bootc_root(tmp_path, digest, image_bytes=b"erofs-placeholder"):
    state = tmp_path / "sysroot" / "state" / "deploy" / digest
    state.mkdir(parents=True)
    (state / (digest + ".origin")).write_text(fixture("origin-bls.origin"))
    images = tmp_path / "sysroot" / "composefs" / "images"
    images.mkdir(parents=True)
    (images / digest).write_bytes(image_bytes)
    return tmp_path


def test_facts_of_a_bootc_host(tmp_path):
    from ansible_collections.composefs.fleet.plugins.module_utils.fsverity.digest import data_digest

    image = b"erofs-placeholder" * 300
    digest = data_digest(image).hex()
    root = make_bootc_root(tmp_path, digest, image)
    facts = gather(LocalSource(str(root)), "root=UUID=1 composefs=?%s" % digest, sysroot="/sysroot",
                   bootc_status_text=None)
    assert facts["kind"] == "bootc" and facts["booted_deployment"] == digest
    cfs = facts["composefs"]
    assert (cfs["enabled"], cfs["mode"], cfs["verity_enforced"], cfs["decided_by"]) == (True, "yes", False, "karg")
    assert cfs["image_matches_karg"] is True
    assert facts["deployments"][0]["booted"] and facts["deployments"][0]["origin"]["boot_type"] == "bls"
    assert facts["summary"] == "bootc: best-effort"


def test_bootc_status_overrides_the_karg_on_verity(tmp_path):
    text = fixture("status-composefs.json")
    root = make_bootc_root(tmp_path, SHA512)
    facts = gather(LocalSource(str(root)), "composefs=?%s" % SHA512, sysroot="/sysroot", bootc_status_text=text)
    assert facts["composefs"]["verity_enforced"] is True  # bootc says missingVerityAllowed: false
    assert facts["composefs"]["image_matches_karg"] is False  # the placeholder's digest is not the karg's
    assert facts["bootc_status"]["backend"] == "composefs"


def test_missing_image_is_reported(tmp_path):
    facts = gather(LocalSource(str(tmp_path)), "composefs=%s" % SHA512, sysroot="/sysroot")
    assert any("missing from" in e for e in facts["errors"])


def test_plain_host():
    from ansible_collections.composefs.fleet.plugins.module_utils.boot.source import DumpSource

    facts = gather(DumpSource(), "root=/dev/sda1")
    assert facts["kind"] == "none" and facts["summary"] == "none" and facts["deployments"] == []
