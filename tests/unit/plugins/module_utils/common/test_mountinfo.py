"""mountinfo parsing and path-to-filesystem lookup."""
import os

from ansible_collections.composefs.fleet.plugins.module_utils.common.mountinfo import (
    filesystem_of,
    parse_mountinfo,
    read_mountinfo,
)

SAMPLE = (
    "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n"
    "30 22 0:25 / /var/lib/with\\040space rw,nosuid - tmpfs tmpfs rw,size=1024k\n"
    "31 22 0:26 / /sysroot ro - composefs composefs ro,lowerdir+=/x,datadir+=/y,verity=require\n"
    "32 22 7:0 / /mnt/x rw - xfs /dev/loop0 rw\n"
    "33 22 7:1 / /mnt/x rw - btrfs /dev/loop1 rw\n"
)


def test_parse_fields_and_escapes():
    entries = parse_mountinfo(SAMPLE)
    assert [e.mountpoint for e in entries] == ["/", "/var/lib/with space", "/sysroot", "/mnt/x", "/mnt/x"]
    assert entries[2].source == "composefs" and "verity=require" in entries[2].super_options
    assert (entries[3].major, entries[3].minor, entries[3].fstype) == (7, 0, "xfs")


def test_deepest_and_latest_mount_wins():
    entries = parse_mountinfo(SAMPLE)
    assert filesystem_of("/var/lib/with space/a/b", entries).fstype == "tmpfs"
    assert filesystem_of("/var/lib/without", entries).fstype == "ext4"
    assert filesystem_of("/mnt/x/file", entries).fstype == "btrfs"  # the overmount shadows xfs
    assert filesystem_of("/sysrootx", entries).fstype == "ext4"


def test_real_mountinfo_has_root():
    entries = read_mountinfo()
    assert any(e.mountpoint == "/" for e in entries)
    fs = filesystem_of(os.getcwd())
    assert fs is not None and fs.fstype


def test_carriage_return_in_a_mount_point():
    # the kernel escapes space, tab, newline and backslash, but not "\r" or other line breaks str.splitlines() knows
    text = "22 1 254:1 / / rw - ext4 /dev/vda1 rw\n40 22 0:60 / /home/u/a\rb\x0bc\x1cd rw - fuse.sshfs u@h: rw\n"
    entries = parse_mountinfo(text)
    assert [e.mountpoint for e in entries] == ["/", "/home/u/a\rb\x0bc\x1cd"]
    assert filesystem_of("/home/u/a\rb\x0bc\x1cd/x", entries).fstype == "fuse.sshfs"
