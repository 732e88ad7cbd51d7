# -*- coding: utf-8 -*-
# Copyright: composefs.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Read a composefs EROFS image back into a :class:`~..composefs.tree.Tree`.

The reading side of ``composefs-info`` (libcomposefs 1.0.8,
``lcfs_load_node_from_image``), written for untrusted input: every offset is
checked against the image, every structure against what it must hold, and a
malformed or hostile image raises :class:`ImageError` (a ComposefsError) that
says what is wrong and where; reading never loops forever or reads outside the
image, and the work done is bounded by the image size.

Public API::

    tree = read_image(src, toplevel=None)      # Tree; src: path, bytes or binary file object
    info = read_superblock(src)                # ImageInfo: header and superblock fields
    dump(src) -> bytes                         # composefs-info dump
    ls(src) -> bytes                           # composefs-info ls
    objects(src, strict=True) -> [str]         # composefs-info objects
    missing_objects(src, store) -> [str]       # composefs-info --basedir=STORE missing-objects

``src`` may also be a Tree already read, for :func:`dump`, :func:`ls`,
:func:`objects` and :func:`missing_objects`; :func:`objects` and
:func:`missing_objects` also take a list of sources (their union, as
composefs-info does with several images).

What the image means, as libcomposefs reads it back:

- Compact inodes carry the superblock's build time as mtime; extended ones
  their own. Character devices 0:0 are the object-store whiteouts the writer
  added and are left out, wherever they are.
- ``trusted.overlay.redirect`` of a regular file is its payload (minus the
  leading ``/``), ``trusted.overlay.metacopy`` holding a 32-byte digest its
  fs-verity digest; other ``trusted.overlay.*`` xattrs are the writer's and are
  dropped, escaped ``trusted.overlay.overlay.*`` ones are unescaped. A regular
  file marked ``trusted.overlay.overlay.whiteout`` is a whiteout (character
  device 0:0); the ``whiteouts`` markers and ``user.overlay.whiteout`` are dropped.
- An inode met again (same nid) is a hardlink to the first path met,
  depth-first with entries in image (byte) order.
- Xattrs keep image order: inline ones, then shared ones. :func:`dump` prints
  them in that order, as composefs-info does (``Tree.to_dumpfile`` sorts them).

Two places where this reader is right and composefs-info 1.0.8 is not (its
output is not reproducible there): a redirect whose value is 4-byte aligned
(payload length 3 mod 4) gets up to two bytes of whatever follows it appended
by composefs-info (``value_size++`` where ``--`` was meant); and composefs-info
drops an inode's last inline xattr when its entry is exactly 4 bytes (empty
``system.posix_acl_*`` value: loop condition ``<`` instead of ``<=``).

Beyond libcomposefs, this reader refuses: directory loops and hardlinked
directories, names with ``/`` or NUL, duplicate names, dirent file types that
contradict the inode, unknown file types or data layouts, compressed inodes,
inline data or chunk indexes outside the image, and block sizes other than
4096. Object paths (payloads) reaching :func:`objects` / :func:`missing_objects`
must be ``XX/<62 lowercase hex>``: nothing else can name an object in a store,
and ``..`` or absolute paths would escape it.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import collections
import os
import re
import struct

from ansible_collections.composefs.fleet.plugins.module_utils.common.regular_file import read_regular
from ansible_collections.composefs.fleet.plugins.module_utils.common.text import excerpt
from ansible_collections.composefs.fleet.plugins.module_utils.composefs.errors import ComposefsError
from ansible_collections.composefs.fleet.plugins.module_utils.composefs.tree import (
    INLINE_CONTENT_MAX,
    MAX_NAME_LENGTH,
    MAX_PAYLOAD_LENGTH,
    S_IFBLK,
    S_IFCHR,
    S_IFDIR,
    S_IFLNK,
    S_IFMT,
    S_IFREG,
    VALID_TYPES,
    XATTR_ENTRY_OVERHEAD,
    XATTR_HEADER_SIZE,
    XATTR_NAME_MAX,
    XATTR_SPACE_MAX,
    Node,
    Tree,
    paused_gc,
)
from ansible_collections.composefs.fleet.plugins.module_utils.erofs import format as fmt

__all__ = ["ImageError", "ImageInfo", "read_image", "read_superblock", "dump", "ls", "objects", "missing_objects",
           "check_object_path"]

BLK = fmt.EROFS_BLKSIZ
_U64 = 0xFFFFFFFFFFFFFFFF

# Xattr names with a meaning for the reader (libcomposefs's OVERLAY_XATTR_*).
XATTR_OVERLAY_PREFIX = b"trusted.overlay."
XATTR_OVERLAY_ESCAPE_PREFIX = b"trusted.overlay.overlay."
XATTR_REDIRECT = b"trusted.overlay.redirect"
XATTR_METACOPY = b"trusted.overlay.metacopy"
XATTR_ESCAPED_WHITEOUT = b"trusted.overlay.overlay.whiteout"
_DROPPED_XATTRS = frozenset((b"trusted.overlay.overlay.whiteouts", b"user.overlay.whiteout", b"user.overlay.whiteouts"))
_METACOPY_DIGEST_SIZE = 4 + 32

# Xattr name prefixes by e_name_index (EROFS_XATTR_INDEX_*); long prefixes (0x80) are not used by composefs.
_PREFIXES = tuple(fmt.XATTR_PREFIX_BY_INDEX[i] for i in range(len(fmt.XATTR_PREFIX_BY_INDEX)))

_FT_OF_TYPE = {
    S_IFREG: fmt.EROFS_FT_REG_FILE, S_IFDIR: fmt.EROFS_FT_DIR, S_IFCHR: fmt.EROFS_FT_CHRDEV,
    S_IFBLK: fmt.EROFS_FT_BLKDEV, 0o010000: fmt.EROFS_FT_FIFO, 0o140000: fmt.EROFS_FT_SOCK,
    S_IFLNK: fmt.EROFS_FT_SYMLINK,
}
_FLAT_LAYOUTS = (fmt.EROFS_INODE_FLAT_PLAIN, fmt.EROFS_INODE_FLAT_INLINE)
_LAYOUT_NAMES = {0: "flat plain", 1: "compressed (full)", 2: "flat inline", 3: "compressed (compact)", 4: "chunk-based"}

_SUPER_USED = struct.Struct("<IIIBBHQQIIII")  # the superblock fields up to xattr_blkaddr
_U16 = struct.Struct("<H")
_DIRENT_HEAD = struct.Struct("<QHBx")  # struct erofs_dirent
_OBJECT_PATH = re.compile(rb"[0-9a-f]{2}/[0-9a-f]{62}\Z")

ImageInfo = collections.namedtuple("ImageInfo", [
    "composefs_version",  # format version in the composefs header (0 or 1)
    "flags",  # composefs header flags (LCFS_EROFS_FLAGS_HAS_ACL)
    "feature_compat",  # EROFS superblock compat features
    "root_nid",
    "inodes",  # inode count recorded in the superblock
    "build_time",  # (seconds, nanoseconds): the mtime of compact inodes
    "blocks",  # image size in blocks, as recorded
    "meta_blkaddr",
    "xattr_blkaddr",
])


class ImageError(ComposefsError):
    """A composefs image was rejected: not composefs, malformed, or hostile.

    ``str(error)`` names the file path inside the image when known, and the
    problem with the inode number (nid) or offset concerned.
    """


def _fail(problem, path=None):
    return ImageError(problem, None, path)


def _show(data):
    """Input bytes for a message: printable and at most a short excerpt (common.text)."""
    return excerpt(data, 256)


# --- input --------------------------------------------------------------------------


def _read_bytes(src):
    if isinstance(src, bytes):
        return src
    if isinstance(src, (bytearray, memoryview)):
        return bytes(src)
    if isinstance(src, str) or hasattr(src, "__fspath__"):
        try:
            # Non-blocking open and fstat: a FIFO or device is refused, never waited on.
            return read_regular(src, what="image")
        except OSError as exc:
            raise _fail("Can't read image %s: %s" % (os.fsdecode(os.fspath(src)), exc.strerror or exc))
    data = src.read()
    if not isinstance(data, bytes):
        raise TypeError("images are read from binary file objects")
    return data


def _parse_super(data):
    """Check the composefs header and the EROFS superblock; return ImageInfo."""
    if len(data) < BLK:
        raise _fail("Not a composefs image: %d bytes, shorter than one %d-byte block" % (len(data), BLK))
    magic, version, flags, cfs_version = fmt.COMPOSEFS_HEADER.unpack_from(data, 0)
    if magic != fmt.LCFS_EROFS_MAGIC:
        raise _fail("Not a composefs image: bad composefs magic 0x%08x (expected 0x%08x)" % (magic, fmt.LCFS_EROFS_MAGIC))
    if version != fmt.LCFS_EROFS_VERSION:
        raise _fail("Unsupported composefs image: header version %d (this reader knows %d)"
                    % (version, fmt.LCFS_EROFS_VERSION))
    (emagic, _checksum, feature_compat, blkszbits, _extslots, root_nid, inos, build_time, build_time_nsec,
     blocks, meta_blkaddr, xattr_blkaddr) = _SUPER_USED.unpack_from(data, fmt.EROFS_SUPER_OFFSET)
    if emagic != fmt.EROFS_SUPER_MAGIC_V1:
        raise _fail("Not a composefs image: bad EROFS superblock magic 0x%08x (expected 0x%08x)"
                    % (emagic, fmt.EROFS_SUPER_MAGIC_V1))
    if blkszbits != fmt.EROFS_BLKSIZ_BITS:
        raise _fail("Unsupported EROFS block size 2**%d (composefs images use %d-byte blocks)" % (blkszbits, BLK))
    if blocks * BLK > len(data):
        raise _fail("Truncated image: the superblock says %d blocks (%d bytes), the image has %d bytes"
                    % (blocks, blocks * BLK, len(data)))
    if meta_blkaddr * BLK >= len(data):
        raise _fail("Metadata block %d is past the end of the %d-byte image" % (meta_blkaddr, len(data)))
    if xattr_blkaddr * BLK >= len(data):
        raise _fail("Shared xattr block %d is past the end of the %d-byte image" % (xattr_blkaddr, len(data)))
    build_time &= _U64
    if build_time >> 63:
        build_time -= 1 << 64
    return ImageInfo(cfs_version, flags, feature_compat, root_nid, inos, (build_time, build_time_nsec), blocks,
                     meta_blkaddr, xattr_blkaddr)


def read_superblock(src):
    """The composefs header and EROFS superblock of an image, checked, as :class:`ImageInfo`."""
    return _parse_super(_read_bytes(src))


# --- the reader ---------------------------------------------------------------------------


class _Reader:
    def __init__(self, data):
        self.data = data
        self.size = len(data)
        self.info = info = _parse_super(data)
        self.meta = info.meta_blkaddr * BLK
        self.xattr_base = info.xattr_blkaddr * BLK
        self.build_sec, self.build_nsec = info.build_time
        self.seen = {}  # nid -> node, for hardlinks and loops
        self.shared = {}  # shared xattr id -> (name, value)
        # In a real image every inode's directory entries, xattrs and inline data occupy
        # bytes of their own, so they add up to less than the image. Holding hostile
        # images (inodes sharing blocks or overlapping) to that bounds the work done.
        self.budget = self.size

    def spend(self, count, path):
        self.budget -= count
        if self.budget < 0:
            raise _fail("Directories, xattrs and inline data add up to more bytes than the image has "
                        "(structures shared between inodes?)", path)

    # -- inodes -------------------------------------------------------------------------

    def visit(self, nid, path):
        """The node for inode ``nid`` met at ``path``: (node, entries or None), or (None, None) for a whiteout."""
        existing = self.seen.get(nid)
        if existing is not None:
            if existing.children is not None:
                raise _fail("Directory inode %d is reached a second time (directory loop or hardlinked directory)"
                            % nid, path)
            link = Node.__new__(Node)
            link.mode = existing.mode
            link.nlink = 1
            link.uid = link.gid = link.rdev = link.size = link.mtime_sec = link.mtime_nsec = 0
            link.payload = link.content = link.digest = link.children = link.parent = link.name = link.lineno = None
            link.xattrs = {}
            link.link_to = existing
            return link, None

        data = self.data
        pos = self.meta + (nid << fmt.EROFS_ISLOTBITS)
        if pos + fmt.INODE_COMPACT.size > self.size:
            raise _fail("Inode %d at offset %d is past the end of the %d-byte image" % (nid, pos, self.size), path)
        i_format = _U16.unpack_from(data, pos)[0]
        if i_format & ~((fmt.EROFS_I_DATALAYOUT_MASK << fmt.EROFS_I_DATALAYOUT_BIT) | fmt.EROFS_I_VERSION_MASK):
            raise _fail("Inode %d has unknown format bits 0x%04x" % (nid, i_format), path)
        layout = (i_format >> fmt.EROFS_I_DATALAYOUT_BIT) & fmt.EROFS_I_DATALAYOUT_MASK
        if i_format & fmt.EROFS_I_VERSION_MASK:
            isize = fmt.INODE_EXTENDED.size
            if pos + isize > self.size:
                raise _fail("Inode %d at offset %d is past the end of the %d-byte image" % (nid, pos, self.size), path)
            (_f, icount, mode, _r, size, i_u, _ino, uid, gid, mtime_sec, mtime_nsec,
             nlink) = fmt.INODE_EXTENDED.unpack_from(data, pos)
            if mtime_sec >> 63:
                mtime_sec -= 1 << 64
        else:
            isize = fmt.INODE_COMPACT.size
            (_f, icount, mode, nlink, size, _r, i_u, _ino, uid, gid, _r2) = fmt.INODE_COMPACT.unpack_from(data, pos)
            mtime_sec = self.build_sec
            mtime_nsec = self.build_nsec
        t = mode & S_IFMT
        if t not in VALID_TYPES:
            raise _fail("Inode %d has an invalid mode %o" % (nid, mode), path)
        if t == S_IFCHR and i_u == 0:
            return None, None  # a whiteout: hides the object store's 00..ff in the root

        xattr_size = XATTR_HEADER_SIZE + (icount - 1) * 4 if icount else 0
        xattr_pos = pos + isize
        tail_pos = xattr_pos + xattr_size
        if tail_pos > self.size:
            raise _fail("Xattrs of inode %d run past the end of the image" % nid, path)
        self.spend(xattr_size, path)

        node = Node.__new__(Node)
        node.mode = mode
        node.nlink = nlink
        node.uid = uid
        node.gid = gid
        node.rdev = i_u if (t == S_IFCHR or t == S_IFBLK) else 0
        node.size = size
        node.mtime_sec = mtime_sec
        node.mtime_nsec = mtime_nsec
        node.payload = node.content = node.digest = node.link_to = node.parent = node.name = node.lineno = None
        node.children = None
        node.xattrs = {}
        self.seen[nid] = node

        entries = None
        if layout in (fmt.EROFS_INODE_COMPRESSED_FULL, fmt.EROFS_INODE_COMPRESSED_COMPACT) or layout > 4:
            raise _fail("Inode %d has a %s data layout, which composefs images do not use"
                        % (nid, _LAYOUT_NAMES.get(layout, "unknown (%d)" % layout)), path)
        if t == S_IFDIR:
            node.children = {}
            entries = self.dir_entries(nid, path, layout, size, i_u, tail_pos)
        elif t == S_IFLNK:
            node.payload = self.symlink_target(nid, path, layout, size, i_u, tail_pos)
        elif t == S_IFREG and size:
            if layout == fmt.EROFS_INODE_CHUNK_BASED:
                self.check_chunks(nid, path, size, i_u, tail_pos)
            else:
                node.content = self.flat_data(nid, path, layout, size, i_u, tail_pos, INLINE_CONTENT_MAX, "Inline content")
        if icount:
            self.xattrs(node, nid, path, xattr_pos, xattr_size)
        return node, entries

    def flat_data(self, nid, path, layout, size, blkaddr, tail_pos, limit, what):
        """The data of a flat (plain or inline) inode of ``size`` <= ``limit`` bytes."""
        if size > limit:
            raise _fail("%s of inode %d is %d bytes, over the %d an image can hold" % (what, nid, size, limit), path)
        self.spend(size, path)
        data = self.data
        if layout == fmt.EROFS_INODE_FLAT_INLINE:
            tail = size % BLK
            if tail == 0:
                raise _fail("Inode %d is tail-packed but has no tail (size %d)" % (nid, size), path)
            head = size - tail
        elif layout == fmt.EROFS_INODE_FLAT_PLAIN:
            tail = 0
            head = size
        else:
            raise _fail("Inode %d of %d bytes has a %s data layout" % (nid, size, _LAYOUT_NAMES[layout]), path)
        parts = []
        if head:
            start = blkaddr * BLK
            if start + head > self.size:
                raise _fail("Data blocks of inode %d (block %d, %d bytes) are past the end of the image"
                            % (nid, blkaddr, head), path)
            parts.append(data[start:start + head])
        if tail:
            if tail_pos + tail > self.size:
                raise _fail("Inline data of inode %d runs past the end of the image" % nid, path)
            if tail_pos // BLK != (tail_pos + tail - 1) // BLK:
                raise _fail("Inline data of inode %d crosses a block boundary" % nid, path)
            parts.append(data[tail_pos:tail_pos + tail])
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def symlink_target(self, nid, path, layout, size, blkaddr, tail_pos):
        if layout not in _FLAT_LAYOUTS:
            raise _fail("Symlink inode %d has a %s data layout" % (nid, _LAYOUT_NAMES[layout]), path)
        if size == 0:
            raise _fail("Symlink inode %d has an empty target" % nid, path)
        target = self.flat_data(nid, path, layout, size, blkaddr, tail_pos, MAX_PAYLOAD_LENGTH, "Symlink target")
        if b"\0" in target:
            raise _fail("Symlink target of inode %d holds a NUL byte" % nid, path)
        return target

    def check_chunks(self, nid, path, size, i_u, tail_pos):
        """A chunk-based (external) file: its chunk index must be in the image (its content is not)."""
        chunk_format = i_u & 0xFFFF
        if chunk_format & ~(fmt.EROFS_CHUNK_FORMAT_BLKBITS_MASK | fmt.EROFS_CHUNK_FORMAT_INDEXES):
            raise _fail("Inode %d has unknown chunk format bits 0x%04x" % (nid, chunk_format), path)
        chunkbits = fmt.EROFS_BLKSIZ_BITS + (chunk_format & fmt.EROFS_CHUNK_FORMAT_BLKBITS_MASK)
        count = (size + (1 << chunkbits) - 1) >> chunkbits
        entry = 8 if chunk_format & fmt.EROFS_CHUNK_FORMAT_INDEXES else 4
        if tail_pos + count * entry > self.size:
            raise _fail("Chunk index of inode %d (%d chunks) runs past the end of the image" % (nid, count), path)

    def dir_entries(self, nid, path, layout, size, blkaddr, tail_pos):
        """[(name, nid, file type)] of a directory, without "." and ".."."""
        if layout not in _FLAT_LAYOUTS:
            raise _fail("Directory inode %d has a %s data layout" % (nid, _LAYOUT_NAMES[layout]), path)
        if size == 0:
            raise _fail("Directory inode %d is empty (no . and .. entries)" % nid, path)
        self.spend(size, path)
        if layout == fmt.EROFS_INODE_FLAT_INLINE:
            tail = size % BLK
            if tail == 0:
                raise _fail("Directory inode %d is tail-packed but has no tail (size %d)" % (nid, size), path)
        else:
            tail = 0
        head = size - tail
        start = blkaddr * BLK
        if head and start + head > self.size:
            raise _fail("Blocks of directory inode %d (block %d, %d bytes) are past the end of the image"
                        % (nid, blkaddr, head), path)
        entries = []
        for off in range(0, head, BLK):
            self.dir_block(nid, path, start + off, min(BLK, head - off), entries)
        if tail:
            if tail_pos + tail > self.size:
                raise _fail("Inline entries of directory inode %d run past the end of the image" % nid, path)
            if tail_pos // BLK != (tail_pos + tail - 1) // BLK:
                raise _fail("Inline entries of directory inode %d cross a block boundary" % nid, path)
            self.dir_block(nid, path, tail_pos, tail, entries)
        return entries

    def dir_block(self, nid, path, start, block_size, out):
        data = self.data
        if block_size < fmt.DIRENT.size:
            raise _fail("Directory inode %d has a %d-byte block, too short for an entry" % (nid, block_size), path)
        first_nameoff = _U16.unpack_from(data, start + 8)[0]
        if first_nameoff % fmt.DIRENT.size or not fmt.DIRENT.size <= first_nameoff <= block_size:
            raise _fail("Directory inode %d has a corrupt block at offset %d (first name at %d)"
                        % (nid, start, first_nameoff), path)
        heads = list(_DIRENT_HEAD.iter_unpack(data[start:start + first_nameoff]))
        block = data[start:start + block_size]
        # Name i runs from its nameoff to the next one; the last one to a NUL or the block's end.
        nameoffs = [h[1] for h in heads]
        nameoffs.append(block_size)
        if sorted(nameoffs) != nameoffs:
            raise _fail("Directory inode %d has a corrupt block at offset %d (names out of order)" % (nid, start), path)
        last = block.find(b"\0", nameoffs[-2])
        if last >= 0:
            nameoffs[-1] = last
        for i, (child, nameoff, ftype) in enumerate(heads):
            name = block[nameoff:nameoffs[i + 1]]
            if name == b"." or name == b"..":
                continue
            if not name or len(name) > MAX_NAME_LENGTH or b"/" in name or b"\0" in name:
                raise _fail("Directory inode %d has an invalid entry name %r" % (nid, name), path)
            out.append((name, child, ftype))

    # -- xattrs -------------------------------------------------------------------------

    def xattrs(self, node, nid, path, pos, xattr_size):
        data = self.data
        end = pos + xattr_size
        shared_count = data[pos + 4]
        inline = pos + XATTR_HEADER_SIZE + 4 * shared_count
        if inline > end:
            raise _fail("Inode %d lists %d shared xattrs, more than its xattr space holds" % (nid, shared_count), path)
        items = []
        while inline + fmt.XATTR_ENTRY.size <= end:
            name_len, index, value_size = fmt.XATTR_ENTRY.unpack_from(data, inline)
            body = inline + fmt.XATTR_ENTRY.size
            stop = body + name_len + value_size
            if stop > end:
                raise _fail("Xattr entry at offset %d of inode %d runs past its xattr space" % (inline, nid), path)
            items.append((self.xattr_name(index, data[body:body + name_len], nid, path),
                          data[body + name_len:stop]))
            inline = (stop + 3) & ~3
        if inline < end:
            raise _fail("Xattr space of inode %d ends in a partial entry" % nid, path)
        if shared_count:
            ids = struct.unpack_from("<%dI" % shared_count, data, pos + XATTR_HEADER_SIZE)
            for xid in ids:
                item = self.shared.get(xid)
                if item is None:
                    item = self.shared[xid] = self.shared_xattr(xid, nid, path)
                items.append(item)
        self.apply_xattrs(node, items, nid, path)

    def shared_xattr(self, xid, nid, path):
        data = self.data
        start = self.xattr_base + 4 * xid
        if start + fmt.XATTR_ENTRY.size > self.size:
            raise _fail("Shared xattr %d of inode %d is past the end of the image" % (xid, nid), path)
        name_len, index, value_size = fmt.XATTR_ENTRY.unpack_from(data, start)
        body = start + fmt.XATTR_ENTRY.size
        stop = body + name_len + value_size
        if stop > self.size:
            raise _fail("Shared xattr %d of inode %d runs past the end of the image" % (xid, nid), path)
        return self.xattr_name(index, data[body:body + name_len], nid, path), data[body + name_len:stop]

    @staticmethod
    def xattr_name(index, suffix, nid, path):
        if index >= len(_PREFIXES):
            raise _fail("Inode %d has an xattr with unknown name index %d" % (nid, index), path)
        name = _PREFIXES[index] + suffix
        if not name or len(name) > XATTR_NAME_MAX or b"\0" in name:
            raise _fail("Inode %d has an invalid xattr name %r" % (nid, name), path)
        return name

    @staticmethod
    def apply_xattrs(node, items, nid, path):
        """lcfs_build_node_erofs_xattr() for each xattr, in image order."""
        kept = []
        for name, value in items:
            if name.startswith(XATTR_OVERLAY_PREFIX) or name in _DROPPED_XATTRS:
                t = node.mode & S_IFMT
                if name == XATTR_REDIRECT:
                    if t == S_IFREG:
                        if len(value) > 1 and value[:1] == b"/":
                            value = value[1:]
                        nul = value.find(b"\0")
                        node.payload = value if nul < 0 else value[:nul]
                    continue
                if name == XATTR_METACOPY:
                    if t == S_IFREG and len(value) == _METACOPY_DIGEST_SIZE:
                        node.digest = value[4:]
                    continue
                if name == XATTR_ESCAPED_WHITEOUT and t == S_IFREG:
                    node.mode = S_IFCHR | (node.mode & ~S_IFMT)
                    node.rdev = 0
                    node.size = 0
                    if node.content is not None:
                        node.content = b""  # libcomposefs keeps the content but its size is now 0
                    continue
                if name in _DROPPED_XATTRS:
                    continue
                if not name.startswith(XATTR_OVERLAY_ESCAPE_PREFIX):
                    continue  # the writer's own overlay xattrs (opaque, ...)
                name = XATTR_OVERLAY_PREFIX + name[len(XATTR_OVERLAY_ESCAPE_PREFIX):]
            kept.append((name, value))
        if not kept:
            return
        if len(kept) > 1 and len(set(k for k, _v in kept)) != len(kept):
            kept = _dedup_like_libcomposefs(kept)
        space = XATTR_HEADER_SIZE
        for name, value in kept:
            space += XATTR_ENTRY_OVERHEAD + len(name) + len(value)
        if space > XATTR_SPACE_MAX:
            raise _fail("Xattrs of inode %d take %d bytes, over the limit of %d" % (nid, space, XATTR_SPACE_MAX), path)
        node.xattrs = dict(kept)

    # -- the tree -----------------------------------------------------------------------

    def tree(self, toplevel=None):
        root, entries = self.visit(self.info.root_nid, b"/")
        if root is None or root.children is None:
            raise _fail("Root inode %d is not a directory" % self.info.root_nid, b"/")
        stack = [(root, b"", iter(entries))]
        seen = self.seen
        while stack:
            parent, prefix, it = stack[-1]
            children = parent.children
            for name, nid, ftype in it:
                if toplevel is not None and parent is root and name not in toplevel:
                    continue
                path = prefix + b"/" + name
                child, child_entries = self.visit(nid, path)
                if child is None:
                    continue
                raw = seen.get(nid)
                if ftype != fmt.EROFS_FT_UNKNOWN and raw is not None and ftype != _FT_OF_TYPE[_raw_type(raw)]:
                    raise _fail("Directory entry type %d does not match the inode's mode %o" % (ftype, raw.mode), path)
                if name in children:
                    raise _fail("Duplicate directory entry", path)
                children[name] = child
                child.parent = parent
                child.name = name
                if child_entries is not None:
                    stack.append((child, path, iter(child_entries)))
                    break
            else:
                stack.pop()
        return Tree(root)


def _raw_type(node):
    """The file type the image gave the inode (a whiteout read back was a regular file)."""
    t = node.mode & S_IFMT
    if t == S_IFCHR and node.rdev == 0:
        return S_IFREG
    return t


def _dedup_like_libcomposefs(items):
    """Setting an xattr again replaces it as lcfs_node_set_xattr does: the last one moves into its slot."""
    out = []
    index = {}
    for name, value in items:
        i = index.pop(name, None)
        if i is not None:
            last = out.pop()
            if i < len(out):
                out[i] = last
                index[last[0]] = i
        index[name] = len(out)
        out.append((name, value))
    return out


def read_image(src, toplevel=None):
    """Read a composefs image into a :class:`Tree` (``lcfs_load_node_from_image``).

    ``src`` is a path, bytes or a binary file object. ``toplevel``, an iterable
    of names (bytes or str), keeps only those entries of the root directory
    (composefs-info ``--filter``). Raises :class:`ImageError` for anything that
    is not a well-formed composefs image.
    """
    data = _read_bytes(src)
    if toplevel is not None:
        toplevel = frozenset(os.fsencode(n) for n in toplevel)
    reader = _Reader(data)
    with paused_gc():
        return reader.tree(toplevel)


def _tree_of(src):
    return src if isinstance(src, Tree) else read_image(src)


# --- composefs-info ---------------------------------------------------------------------------


def _dump_escape():
    # dumpfile's escaping, for dump() and ls() only: a module that reads an image (a mount's
    # check, a repository's object list) does not compile the dumpfile code on every run
    from ansible_collections.composefs.fleet.plugins.module_utils.composefs.dumpfile import escape
    return escape


def dump(src):
    """The composefs-info ``dump`` of an image (or Tree): composefs-dump(5) bytes.

    Same as ``Tree.to_dumpfile()`` except that each file's xattrs come in image
    order (inline, then shared), as composefs-info prints them.
    """
    escape = _dump_escape()
    tree = _tree_of(src)
    lines = []
    for path, node in tree.walk():
        target = node.link_to
        if target is not None:
            shown = node.resolve()
            fields = [escape(path), b"%d" % shown.size, b"@%o" % shown.mode]
            payload = target.path
        else:
            shown = node
            fields = [escape(path), b"%d" % node.size, b"%o" % node.mode]
            payload = node.payload
        fields.append(b"%d %d %d %d %d.%d" % (shown.nlink, shown.uid, shown.gid, shown.rdev,
                                              shown.mtime_sec, shown.mtime_nsec))
        fields.append(b"-" if payload is None else escape(payload, lone_dash=True))
        fields.append(b"-" if shown.content is None else escape(shown.content, lone_dash=True))
        fields.append(b"-" if shown.digest is None else shown.digest.hex().encode("ascii"))
        for key, value in shown.xattrs.items():
            fields.append(escape(key, equal=True) + b"=" + escape(value, equal=True))
        lines.append(b" ".join(fields))
    lines.append(b"")
    return b"\n".join(lines)


# composefs-info ls escapes paths like dump but leaves spaces alone (isprint, not isgraph).
_LS_ESCAPE_RE = re.compile(rb"[^\x20-\x5b\x5d-\x7e]")
_LS_ESCAPE_MAP = dict((bytes((c,)), b"\\x%02x" % c) for c in range(256))
_LS_ESCAPE_MAP.update({b"\\": b"\\\\", b"\n": b"\\n", b"\r": b"\\r", b"\t": b"\\t"})


def _ls_escape(data):
    return _LS_ESCAPE_RE.sub(lambda m: _LS_ESCAPE_MAP[m.group()], data)


def ls(src):
    """The composefs-info ``ls`` of an image (or Tree): one line per path below the root.

    ``PATH/<TAB>`` for directories, ``PATH<TAB>-> TARGET`` for symlinks,
    ``PATH<TAB>@ PAYLOAD`` for external regular files, ``PATH`` otherwise
    (including hardlinks).
    """
    escape = _dump_escape()
    tree = _tree_of(src)
    lines = []
    for path, node in tree.walk():
        if node is tree.root:
            continue
        line = _ls_escape(path)
        if node.link_to is None:
            t = node.mode & S_IFMT
            if t == S_IFDIR:
                line += b"/\t"
            elif t == S_IFLNK:
                line += b"\t-> " + escape(node.payload or b"")
            elif t == S_IFREG and node.payload is not None:
                line += b"\t@ " + escape(node.payload)
        lines.append(line)
    lines.append(b"")
    return b"\n".join(lines)


def check_object_path(payload, path=None):
    """``payload`` (bytes) as an object-store path ``XX/<62 hex>`` (str); raises ImageError for anything else.

    Refuses absolute paths, ``..``, other shapes and upper-case hex: only these
    names can be objects, and anything else could reach outside the store.
    """
    if not _OBJECT_PATH.match(payload):
        raise _fail("Refusing object path %r: not an object-store path XX/<62 hex> (it could name a file outside "
                    "the store)" % (_show(payload),), path)
    return payload.decode("ascii")


def _sources(src):
    if isinstance(src, (list, tuple)):
        return src
    return [src]


def _payloads(src):
    """{payload: path of the first file using it} of regular, non-hardlink files."""
    found = {}
    for one in _sources(src):
        for path, node in _tree_of(one).walk():
            if node.link_to is None and node.payload is not None and (node.mode & S_IFMT) == S_IFREG:
                found.setdefault(node.payload, path)
    return found


def objects(src, strict=True):
    """Sorted unique object paths the image(s) reference (composefs-info ``objects``), as str.

    With ``strict`` (the default) every one must be ``XX/<62 hex>``
    (:func:`check_object_path`), else ImageError; ``strict=False`` lists the
    payloads as they are (decoded with surrogateescape), as composefs-info does.
    """
    found = _payloads(src)
    if strict:
        return sorted(check_object_path(p, path) for p, path in found.items())
    return [os.fsdecode(p) for p in sorted(found)]


def missing_objects(src, store):
    """Sorted object paths the image(s) reference that ``store`` lacks (composefs-info ``missing-objects``).

    Every object path is checked first (:func:`check_object_path`); an object is
    present when ``stat`` (following symlinks, as composefs-info) succeeds below ``store``.
    """
    wanted = sorted(check_object_path(p, path) for p, path in _payloads(src).items())
    try:
        fd = os.open(store, os.O_RDONLY | os.O_DIRECTORY | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise ComposefsError("Can't open object store %s: %s" % (os.fsdecode(os.fspath(store)), exc.strerror or exc))
    try:
        missing = []
        for rel in wanted:
            try:
                os.stat(rel, dir_fd=fd)
            except OSError:
                missing.append(rel)
        return missing
    finally:
        os.close(fd)
