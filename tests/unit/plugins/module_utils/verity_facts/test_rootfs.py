"""Is / a composefs mount? From injected mountinfo text."""
from ansible_collections.composefs.fleet.plugins.module_utils.common.mountinfo import parse_mountinfo
from ansible_collections.composefs.fleet.plugins.module_utils.verity_facts.rootfs import root_facts

PLAIN = "22 1 8:1 / / rw,relatime shared:1 - xfs /dev/sda1 rw,attr2\n"
COMPOSEFS = (
    "20 1 8:1 / /sysroot rw,relatime - xfs /dev/sda4 rw\n"
    "21 1 0:30 / / ro,relatime shared:1 - overlay composefs ro,lowerdir+=/run/ostree/.private/cfsroot-lower,"
    "datadir+=/sysroot/ostree/repo/objects,redirect_dir=on,metacopy=on,verity=require\n"
)


def test_plain_root():
    root = root_facts(parse_mountinfo(PLAIN))
    assert root["composefs"] is False and root["verity"] is None and root["verity_required"] is False
    assert root["fstype"] == "xfs" and root["source"] == "/dev/sda1"


def test_composefs_root_with_verity_require():
    root = root_facts(parse_mountinfo(COMPOSEFS))
    assert root == dict(composefs=True, fstype="overlay", source="composefs", verity="require", verity_required=True,
                        options=root["options"])
    assert "datadir+=/sysroot/ostree/repo/objects" in root["options"]


def test_composefs_root_without_verity():
    text = COMPOSEFS.replace(",verity=require", "")
    root = root_facts(parse_mountinfo(text))
    assert root["composefs"] is True and root["verity"] is None and root["verity_required"] is False


def test_later_mount_on_root_shadows():
    root = root_facts(parse_mountinfo(COMPOSEFS + PLAIN.replace("22 1", "23 21")))
    assert root["composefs"] is False and root["fstype"] == "xfs"


def test_no_root_entry():
    assert root_facts([])["composefs"] is False
