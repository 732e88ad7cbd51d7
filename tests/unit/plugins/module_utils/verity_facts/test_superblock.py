"""ext4 superblock parsing from bytes (the integration tier compares with dumpe2fs on real filesystems)."""
import struct

import pytest

from ansible_collections.composefs.fleet.plugins.module_utils.verity_facts.superblock import (
    SuperblockError,
    parse_ext4_superblock,
    read_ext4_superblock,
)


def superblock(compat=0, incompat=0, ro_compat=0, log_block_size=2, magic=0xEF53):
    data = bytearray(1024)
    struct.pack_into("<I", data, 0x18, log_block_size)
    struct.pack_into("<H", data, 0x38, magic)
    struct.pack_into("<III", data, 0x5C, compat, incompat, ro_compat)
    return bytes(data)


def test_features_like_dumpe2fs():
    parsed = parse_ext4_superblock(superblock(compat=0x3C, incompat=0x2C2, ro_compat=0x846B))
    assert parsed["features"] == [
        "has_journal", "ext_attr", "resize_inode", "dir_index",
        "filetype", "extent", "64bit", "flex_bg",
        "sparse_super", "large_file", "huge_file", "dir_nlink", "extra_isize", "metadata_csum", "verity",
    ]
    assert parsed["verity"] is True
    assert parsed["block_size"] == 4096


def test_without_verity_and_small_blocks():
    parsed = parse_ext4_superblock(superblock(ro_compat=0x1, log_block_size=0))
    assert parsed["verity"] is False and parsed["block_size"] == 1024
    assert parsed["features"] == ["sparse_super"]


def test_unknown_bits_are_named_like_e2fsprogs():
    parsed = parse_ext4_superblock(superblock(compat=1 << 20, incompat=1 << 30, ro_compat=1 << 17))
    assert parsed["features"] == ["FEATURE_C20", "FEATURE_I30", "FEATURE_R17"]


def test_not_ext4():
    with pytest.raises(SuperblockError, match="magic"):
        parse_ext4_superblock(superblock(magic=0x1234))
    with pytest.raises(SuperblockError, match="too short"):
        parse_ext4_superblock(b"\0" * 16)


def test_read_from_a_file(tmp_path):
    image = tmp_path / "fs.img"
    image.write_bytes(b"\0" * 1024 + superblock(ro_compat=0x8000) + b"\0" * 2048)
    data, error = read_ext4_superblock(str(image))
    assert error is None and parse_ext4_superblock(data)["verity"] is True
    data, error = read_ext4_superblock(str(tmp_path / "missing"))
    assert data is None and "No such file" in error
