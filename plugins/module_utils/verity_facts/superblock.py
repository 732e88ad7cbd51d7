# -*- coding: utf-8 -*-
# Copyright: composefs.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The ext4 superblock, read straight from the block device: feature flags without e2fsprogs.

The superblock is the 1024 bytes at offset 1024 of the device (``struct ext4_super_block``
in fs/ext4/ext4.h). The feature names are e2fsprogs' (lib/e2p/feature.c), so they read
like the "Filesystem features" line of ``dumpe2fs -h``; a bit without a name shows as
``FEATURE_C12`` / ``FEATURE_I20`` / ``FEATURE_R17``, as e2fsprogs prints it.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import struct

SUPERBLOCK_OFFSET = 1024
SUPERBLOCK_SIZE = 1024
EXT4_MAGIC = 0xEF53
RO_COMPAT_VERITY = 0x8000

COMPAT = {
    0x0001: "dir_prealloc",
    0x0002: "imagic_inodes",
    0x0004: "has_journal",
    0x0008: "ext_attr",
    0x0010: "resize_inode",
    0x0020: "dir_index",
    0x0040: "lazy_bg",
    0x0100: "snapshot_bitmap",
    0x0200: "sparse_super2",
    0x0400: "fast_commit",
    0x0800: "stable_inodes",
    0x1000: "orphan_file",
}
INCOMPAT = {
    0x00001: "compression",
    0x00002: "filetype",
    0x00004: "needs_recovery",
    0x00008: "journal_dev",
    0x00010: "meta_bg",
    0x00040: "extent",
    0x00080: "64bit",
    0x00100: "mmp",
    0x00200: "flex_bg",
    0x00400: "ea_inode",
    0x01000: "dirdata",
    0x02000: "metadata_csum_seed",
    0x04000: "large_dir",
    0x08000: "inline_data",
    0x10000: "encrypt",
    0x20000: "casefold",
}
RO_COMPAT = {
    0x00001: "sparse_super",
    0x00002: "large_file",
    0x00008: "huge_file",
    0x00010: "uninit_bg",
    0x00020: "dir_nlink",
    0x00040: "extra_isize",
    0x00080: "snapshot",
    0x00100: "quota",
    0x00200: "bigalloc",
    0x00400: "metadata_csum",
    0x00800: "replica",
    0x01000: "read-only",
    0x02000: "project",
    0x04000: "shared_blocks",
    0x08000: "verity",
    0x10000: "orphan_present",
}


class SuperblockError(Exception):
    """The bytes are not an ext2/3/4 superblock."""


def _names(mask, table, letter):
    names = []
    for bit in range(32):
        value = 1 << bit
        if mask & value:
            names.append(table.get(value, "FEATURE_%s%d" % (letter, bit)))
    return names


def parse_ext4_superblock(data):
    """Feature flags and block size from the 1024 superblock bytes (offset 1024 of the device).

    Returns ``dict(block_size, features, verity, compat, incompat, ro_compat)``; raises
    SuperblockError when the magic number is not ext2/3/4's.
    """
    if len(data) < 0x68:
        raise SuperblockError("superblock too short (%d bytes)" % len(data))
    magic = struct.unpack_from("<H", data, 0x38)[0]
    if magic != EXT4_MAGIC:
        raise SuperblockError("no ext4 superblock (magic %#06x, expected %#06x)" % (magic, EXT4_MAGIC))
    log_block_size = struct.unpack_from("<I", data, 0x18)[0]
    compat, incompat, ro_compat = struct.unpack_from("<III", data, 0x5C)
    features = _names(compat, COMPAT, "C") + _names(incompat, INCOMPAT, "I") + _names(ro_compat, RO_COMPAT, "R")
    return dict(
        block_size=1024 << log_block_size if log_block_size < 22 else None,
        features=features,
        verity=bool(ro_compat & RO_COMPAT_VERITY),
        compat=compat,
        incompat=incompat,
        ro_compat=ro_compat,
    )


def read_ext4_superblock(device):
    """``(superblock bytes, None)`` read from ``device``, or ``(None, reason)`` when it cannot be read."""
    try:
        with open(device, "rb") as dev:
            dev.seek(SUPERBLOCK_OFFSET)
            data = dev.read(SUPERBLOCK_SIZE)
    except OSError as exc:
        return None, "cannot read %s: %s" % (device, exc.strerror or exc)
    return data, None


def ext4_has_verity(device):
    """True or False from the ext4 superblock on ``device``; None when it cannot be read or is not ext4."""
    data, _reason = read_ext4_superblock(device)
    if data is None:
        return None
    try:
        return parse_ext4_superblock(data)["verity"]
    except SuperblockError:
        return None
