# -*- coding: utf-8 -*-
# Copyright: composefs.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""EROFS on-disk structure sizes and the chunking rule for non-inline files."""

import pytest

from ansible_collections.composefs.fleet.plugins.module_utils.erofs import format as fmt


def test_structure_sizes():
    assert fmt.COMPOSEFS_HEADER.size == 32
    assert fmt.SUPER_BLOCK.size == 128
    assert fmt.INODE_COMPACT.size == 32
    assert fmt.INODE_EXTENDED.size == 64
    assert fmt.XATTR_IBODY_HEADER.size == 12
    assert fmt.XATTR_ENTRY.size == 4
    assert fmt.DIRENT.size == 12


@pytest.mark.parametrize("size, chunkbits, count", [
    (1, 12, 1),
    (4096, 12, 1),
    (4097, 13, 1),
    (1 << 20, 20, 1),
    ((1 << 20) + 1, 21, 1),
    (1 << 43, 43, 1),
    ((1 << 43) + 1, 43, 2),
    (9000000000000000, 43, 1024),  # bigfile.dump: a full block of chunk indexes
    (1 << 53, 43, 1024),
    ((1 << 53) + 1, 43, 1025),  # more than libcomposefs allows
])
def test_chunking(size, chunkbits, count):
    assert fmt.chunking(size) == (chunkbits, count)


def test_file_types():
    assert fmt.file_type_of_mode(0o100644) == fmt.EROFS_FT_REG_FILE
    assert fmt.file_type_of_mode(0o40755) == fmt.EROFS_FT_DIR
    assert fmt.file_type_of_mode(0o120777) == fmt.EROFS_FT_SYMLINK
    assert fmt.file_type_of_mode(0o20644) == fmt.EROFS_FT_CHRDEV
    assert fmt.file_type_of_mode(0o60644) == fmt.EROFS_FT_BLKDEV
    assert fmt.file_type_of_mode(0o10644) == fmt.EROFS_FT_FIFO
    assert fmt.file_type_of_mode(0o140644) == fmt.EROFS_FT_SOCK
    assert fmt.file_type_of_mode(0o644) == fmt.EROFS_FT_UNKNOWN
