# -*- coding: utf-8 -*-
# Copyright: composefs.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""On-disk structures and constants of EROFS as composefs uses it.

Everything is little-endian. References: the kernel's ``fs/erofs/erofs_fs.h``
and ``Documentation/filesystems/erofs.rst``, and the composefs header that
libcomposefs puts in front of the EROFS superblock.

Image layout written by libcomposefs (and by :mod:`.writer`)::

    0      composefs header (32 bytes), zero padding up to 1024
    1024   EROFS superblock (128 bytes)
    1152   inodes, each on a 32-byte slot, each followed by its xattrs and
           inline ("tail") data; metadata block address 0, so nid = offset / 32
    ...    shared xattr table (starts right after the last inode, slot aligned)
    ...    data blocks (4096-byte aligned): directory blocks, file blocks,
           chunk index blocks
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import struct

# --- composefs header ------------------------------------------------------
LCFS_EROFS_MAGIC = 0xD078629A
LCFS_EROFS_VERSION = 1
LCFS_EROFS_FLAGS_HAS_ACL = 1 << 0
# magic, version, flags, composefs_version, unused[4]
COMPOSEFS_HEADER = struct.Struct("<IIII16x")
# Format versions libcomposefs 1.0.x can write; 1 marks directories holding
# escaped whiteouts with the overlayfs "opaque=x" xattr (composefs 1.0.3).
LCFS_VERSION_MAX = 1
LCFS_DEFAULT_VERSION_MIN = 0
LCFS_DEFAULT_VERSION_MAX = 1

# --- EROFS geometry ----------------------------------------------------------
EROFS_SUPER_OFFSET = 1024
EROFS_SUPER_MAGIC_V1 = 0xE0F5E1E2
EROFS_BLKSIZ_BITS = 12
EROFS_BLKSIZ = 1 << EROFS_BLKSIZ_BITS
EROFS_ISLOTBITS = 5
EROFS_SLOTSIZE = 1 << EROFS_ISLOTBITS

EROFS_FEATURE_COMPAT_SB_CHKSUM = 0x00000001
EROFS_FEATURE_COMPAT_MTIME = 0x00000002
EROFS_FEATURE_COMPAT_XATTR_FILTER = 0x00000004

# struct erofs_super_block (128 bytes):
# magic, checksum, feature_compat, blkszbits, sb_extslots, root_nid, inos,
# build_time, build_time_nsec, blocks, meta_blkaddr, xattr_blkaddr, uuid[16],
# volume_name[16], feature_incompat, u1 (available_compr_algs), extra_devices,
# devt_slotoff, dirblkbits, xattr_prefix_count, xattr_prefix_start, packed_nid,
# xattr_filter_reserved, reserved2[23]
SUPER_BLOCK = struct.Struct("<IIIBBHQQIIII16s16sIHHHBBIQB23x")
if SUPER_BLOCK.size != 128:  # the struct layouts must match the kernel\'s
    raise AssertionError("SUPER_BLOCK is %d bytes, not 128" % SUPER_BLOCK.size)

# --- inodes -------------------------------------------------------------------
EROFS_INODE_FLAT_PLAIN = 0
EROFS_INODE_COMPRESSED_FULL = 1
EROFS_INODE_FLAT_INLINE = 2
EROFS_INODE_COMPRESSED_COMPACT = 3
EROFS_INODE_CHUNK_BASED = 4
EROFS_I_VERSION_BIT = 0
EROFS_I_DATALAYOUT_BIT = 1
EROFS_I_VERSION_MASK = 0x01
EROFS_I_DATALAYOUT_MASK = 0x07
EROFS_CHUNK_FORMAT_BLKBITS_MASK = 0x001F
EROFS_CHUNK_FORMAT_INDEXES = 0x0020
EROFS_NULL_ADDR = 0xFFFFFFFF

# struct erofs_inode_compact (32 bytes): i_format, i_xattr_icount, i_mode,
# i_nlink, i_size, i_reserved, i_u, i_ino, i_uid, i_gid, i_reserved2
INODE_COMPACT = struct.Struct("<HHHHIIIIHHI")
if INODE_COMPACT.size != 32:  # the struct layouts must match the kernel\'s
    raise AssertionError("INODE_COMPACT is %d bytes, not 32" % INODE_COMPACT.size)
# struct erofs_inode_extended (64 bytes): i_format, i_xattr_icount, i_mode,
# i_reserved, i_size, i_u, i_ino, i_uid, i_gid, i_mtime, i_mtime_nsec, i_nlink,
# i_reserved2[16]
INODE_EXTENDED = struct.Struct("<HHHHQIIIIQII16x")
if INODE_EXTENDED.size != 64:  # the struct layouts must match the kernel\'s
    raise AssertionError("INODE_EXTENDED is %d bytes, not 64" % INODE_EXTENDED.size)

# --- xattrs -------------------------------------------------------------------
# struct erofs_xattr_ibody_header (12 bytes): h_name_filter, h_shared_count,
# h_reserved2[7]; followed by h_shared_count little-endian u32 shared xattr ids.
XATTR_IBODY_HEADER = struct.Struct("<IB7x")
if XATTR_IBODY_HEADER.size != 12:  # the struct layouts must match the kernel\'s
    raise AssertionError("XATTR_IBODY_HEADER is %d bytes, not 12" % XATTR_IBODY_HEADER.size)
# struct erofs_xattr_entry (4 bytes): e_name_len, e_name_index, e_value_size;
# followed by the name suffix and the value, padded to 4 bytes.
XATTR_ENTRY = struct.Struct("<BBH")
if XATTR_ENTRY.size != 4:  # the struct layouts must match the kernel\'s
    raise AssertionError("XATTR_ENTRY is %d bytes, not 4" % XATTR_ENTRY.size)

EROFS_XATTR_INDEX_USER = 1
EROFS_XATTR_INDEX_POSIX_ACL_ACCESS = 2
EROFS_XATTR_INDEX_POSIX_ACL_DEFAULT = 3
EROFS_XATTR_INDEX_TRUSTED = 4
EROFS_XATTR_INDEX_LUSTRE = 5
EROFS_XATTR_INDEX_SECURITY = 6
EROFS_XATTR_LONG_PREFIX = 0x80
EROFS_XATTR_FILTER_BITS = 32
EROFS_XATTR_FILTER_DEFAULT = 0xFFFFFFFF
EROFS_XATTR_FILTER_SEED = 0x25BBE08F

# Name prefixes the writer folds into e_name_index, tried in this order (the
# order matters: "system.posix_acl_access" must win over a plain prefix match).
WRITER_XATTR_PREFIXES = (
    (b"user.", EROFS_XATTR_INDEX_USER),
    (b"system.posix_acl_access", EROFS_XATTR_INDEX_POSIX_ACL_ACCESS),
    (b"system.posix_acl_default", EROFS_XATTR_INDEX_POSIX_ACL_DEFAULT),
    (b"trusted.", EROFS_XATTR_INDEX_TRUSTED),
    (b"security.", EROFS_XATTR_INDEX_SECURITY),
)
# Prefix by e_name_index, for readers.
XATTR_PREFIX_BY_INDEX = {
    0: b"",
    EROFS_XATTR_INDEX_USER: b"user.",
    EROFS_XATTR_INDEX_POSIX_ACL_ACCESS: b"system.posix_acl_access",
    EROFS_XATTR_INDEX_POSIX_ACL_DEFAULT: b"system.posix_acl_default",
    EROFS_XATTR_INDEX_TRUSTED: b"trusted.",
    EROFS_XATTR_INDEX_LUSTRE: b"lustre.",
    EROFS_XATTR_INDEX_SECURITY: b"security.",
}

# --- directories --------------------------------------------------------------
# struct erofs_dirent (12 bytes): nid, nameoff, file_type, reserved
DIRENT = struct.Struct("<QHBB")
if DIRENT.size != 12:  # the struct layouts must match the kernel\'s
    raise AssertionError("DIRENT is %d bytes, not 12" % DIRENT.size)
EROFS_FT_UNKNOWN = 0
EROFS_FT_REG_FILE = 1
EROFS_FT_DIR = 2
EROFS_FT_CHRDEV = 3
EROFS_FT_BLKDEV = 4
EROFS_FT_FIFO = 5
EROFS_FT_SOCK = 6
EROFS_FT_SYMLINK = 7
EROFS_NAME_LEN = 255

# --- limits libcomposefs applies ------------------------------------------------
# Non-inline files are chunk-based with one chunk index table inline (or in one
# block), so at most 1024 chunks of at most 2**43 bytes each.
LCFS_MAX_NONINLINE_CHUNKS = 1024


def file_type_of_mode(mode):
    """EROFS dirent file type (EROFS_FT_*) for an st_mode."""
    return _FT_BY_IFMT.get(mode & 0o170000, EROFS_FT_UNKNOWN)


_FT_BY_IFMT = {
    0o100000: EROFS_FT_REG_FILE,
    0o040000: EROFS_FT_DIR,
    0o020000: EROFS_FT_CHRDEV,
    0o060000: EROFS_FT_BLKDEV,
    0o010000: EROFS_FT_FIFO,
    0o140000: EROFS_FT_SOCK,
    0o120000: EROFS_FT_SYMLINK,
}


def chunking(file_size):
    """(chunkbits, chunk_count) for a non-inline file of ``file_size`` > 0 bytes.

    As few chunks as possible, each at least one block and at most
    2**(12 + 31) bytes.
    """
    chunkbits = (file_size - 1).bit_length()  # ilog2(size - 1) + 1; 0 for size 1
    if chunkbits < EROFS_BLKSIZ_BITS:
        chunkbits = EROFS_BLKSIZ_BITS
    if chunkbits - EROFS_BLKSIZ_BITS > EROFS_CHUNK_FORMAT_BLKBITS_MASK:
        chunkbits = EROFS_CHUNK_FORMAT_BLKBITS_MASK + EROFS_BLKSIZ_BITS
    chunk_size = 1 << chunkbits
    return chunkbits, (file_size + chunk_size - 1) // chunk_size
