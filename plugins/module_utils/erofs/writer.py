# -*- coding: utf-8 -*-
# Copyright: composefs.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Write a composefs tree as an EROFS image, byte for byte as libcomposefs 1.0.x does.

Public API::

    data = build_image(tree, min_version=0, max_version=1)        # bytes
    digest = write_image(tree, fileobj, min_version=0, max_version=1,
                         digest=True)                             # raw fs-verity digest
    digest = image_digest(data)                                   # as mkcomposefs --print-digest

What the writer does to the tree, in libcomposefs's order. The tree's own fields
are never changed: an inode the writer rewrites (the root, a whiteout, a file
whose ``trusted.overlay.*`` xattrs it escapes) is copied first, as libcomposefs
clones the tree; the others are laid out in place, in their nodes' scratch slots
(``tree.WRITER_SLOTS``), which hold the last image's layout until the next one.

1. Format version: ``min_version``, raised up to ``max_version`` when a file is
   a whiteout (character device 0:0), the only reason for version 1.
2. Depth-first, each directory before its entries: existing ``trusted.overlay.*``
   xattrs are escaped to ``trusted.overlay.overlay.*``; a non-empty regular file
   without inline content gets ``trusted.overlay.metacopy`` (holding its
   fs-verity digest when known) and ``trusted.overlay.redirect`` = ``/PAYLOAD``;
   a whiteout becomes an empty regular file marked with escaped whiteout xattrs,
   and its directory gets the ``whiteouts`` xattrs (plus ``opaque=x`` in v1).
3. The root gets ``trusted.overlay.opaque=y`` and a whiteout for each missing
   ``00``..``ff`` entry (so the object-store directories below stay hidden).
4. Inodes are numbered breadth-first, entries in byte (strcmp) order with ``.``
   and ``..``; directory nlink is 2 + subdirectories; xattrs sorted by name.
5. Xattrs (name and value) used by more than one inode go to the shared table,
   sorted in descending order; each inode references at most 128 of them.
6. Layout: header, superblock at 1024, inodes from 1152 on 32-byte slots. An
   inode is compact (32 bytes) when its mtime is the image's smallest and its
   numbers fit 16/32 bits, else extended (64 bytes). Tail data (short
   directories, inline content, symlink targets, chunk indexes) follows the
   inode and never crosses a block boundary, padding first if needed. Then the
   shared xattrs, then the data blocks.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from collections import Counter
from operator import itemgetter

from ansible_collections.composefs.fleet.plugins.module_utils.composefs.errors import ComposefsError
from ansible_collections.composefs.fleet.plugins.module_utils.composefs.tree import (
    INLINE_CONTENT_MAX,
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
    XATTR_SPACE_MAX_EXTERNAL,
    XATTR_VALUE_MAX,
    WRITER_SLOTS,
    LinkResolver,
    paused_gc,
)
from ansible_collections.composefs.fleet.plugins.module_utils.erofs import format as fmt
from ansible_collections.composefs.fleet.plugins.module_utils.erofs.xxh32 import xxh32

BLK = fmt.EROFS_BLKSIZ
SLOT = fmt.EROFS_SLOTSIZE

XATTR_OVERLAY_PREFIX = b"trusted.overlay."
XATTR_OVERLAY_ESCAPE_PREFIX = b"trusted.overlay.overlay."
XATTR_METACOPY = b"trusted.overlay.metacopy"
XATTR_REDIRECT = b"trusted.overlay.redirect"
XATTR_OPAQUE = b"trusted.overlay.opaque"
XATTR_ESCAPED_WHITEOUT = b"trusted.overlay.overlay.whiteout"
XATTR_ESCAPED_WHITEOUTS = b"trusted.overlay.overlay.whiteouts"
XATTR_ESCAPED_OPAQUE = b"trusted.overlay.overlay.opaque"
XATTR_USERXATTR_WHITEOUT = b"user.overlay.whiteout"
XATTR_USERXATTR_WHITEOUTS = b"user.overlay.whiteouts"
XATTR_USERXATTR_OPAQUE = b"user.overlay.opaque"
FS_VERITY_HASH_ALG_SHA256 = 1

_S_IFMT = S_IFMT
_MAX_CHUNKED_SIZE = fmt.LCFS_MAX_NONINLINE_CHUNKS << (fmt.EROFS_BLKSIZ_BITS + fmt.EROFS_CHUNK_FORMAT_BLKBITS_MASK)
_NULL_CHUNK = b"\xff\xff\xff\xff"
# The largest file fmt.chunking() gives one chunk: 2**31 blocks.
_ONE_CHUNK_MAX = 1 << (fmt.EROFS_BLKSIZ_BITS + fmt.EROFS_CHUNK_FORMAT_BLKBITS_MASK)
_ZEROS = bytes(BLK)
_BLK_BITS = fmt.EROFS_BLKSIZ_BITS
_SLOT_ROUND = SLOT - 1
_SLOT_MASK = ~(SLOT - 1)
_PADS = [bytes(n) for n in range(SLOT)]
_PACK_COMPACT = fmt.INODE_COMPACT.pack
_PACK_EXTENDED = fmt.INODE_EXTENDED.pack
_PACK_XATTR_HEADER = fmt.XATTR_IBODY_HEADER.pack
_PACK_DIRENT = fmt.DIRENT.pack
_FLAT_PLAIN = fmt.EROFS_INODE_FLAT_PLAIN << fmt.EROFS_I_DATALAYOUT_BIT
_FLAT_INLINE = fmt.EROFS_INODE_FLAT_INLINE << fmt.EROFS_I_DATALAYOUT_BIT
_CHUNK_BASED = fmt.EROFS_INODE_CHUNK_BASED << fmt.EROFS_I_DATALAYOUT_BIT
_EXTENDED = 1 << fmt.EROFS_I_VERSION_BIT


class _Inode:
    """The writer's copy of one inode (libcomposefs clones the tree the same way).

    ``items`` are its final xattrs, sorted (name, value) pairs, or None.
    """

    __slots__ = (
        "node", "path", "parent", "mode", "nlink", "uid", "gid", "rdev", "size", "mtime_sec",
        "mtime_nsec", "payload", "content", "digest", "xattrs", "xattr_space",
    ) + WRITER_SLOTS

    def __init__(self):
        self.parent = None
        self.w_entries = None

    @property
    def lineno(self):
        return None if self.node is None else self.node.lineno


_U64 = (1 << 64) - 1  # size_t


def _error(ino, problem):
    return ComposefsError(problem, ino.lineno, ino.path)


def _set_xattr(ino, key, value):
    """lcfs_node_set_xattr() with libcomposefs's space accounting (external-input limit)."""
    if not key or len(key) > XATTR_NAME_MAX:
        raise _error(ino, "Can't set xattr %r: invalid name" % (key,))
    if len(value) > XATTR_VALUE_MAX:
        raise _error(ino, "Can't set xattr %s: value too long" % key.decode("ascii", "replace"))
    xattrs = ino.xattrs
    if ino.xattr_space is None:
        # First change: take a private copy (copy on write). The count starts at 0, not
        # at the file's own xattrs: libcomposefs writes a clone of the tree, and
        # lcfs_node_clone() copies the xattrs but not their xattr_size.
        xattrs = ino.xattrs = dict(xattrs)
        ino.xattr_space = 0
    old = xattrs.pop(key, None)
    if old is not None:
        # size_t arithmetic, as in lcfs_node_unset_xattr(): the count may wrap below zero.
        ino.xattr_space = (ino.xattr_space - (XATTR_ENTRY_OVERHEAD + len(key) + len(old))) & _U64 if xattrs else 0
    need = XATTR_ENTRY_OVERHEAD + len(key) + len(value)
    if not xattrs:
        need += XATTR_HEADER_SIZE
    total = (ino.xattr_space + need) & _U64
    if total > XATTR_SPACE_MAX_EXTERNAL:
        raise _error(ino, "Can't set xattr %s: the file's xattrs would take %d bytes, over the limit of %d"
                     % (key.decode("ascii", "replace"), total, XATTR_SPACE_MAX_EXTERNAL))
    xattrs[key] = value
    ino.xattr_space = total


def _copy(node, path, parent):
    ino = _Inode()
    ino.node = node
    ino.path = path
    ino.parent = parent
    ino.mode = node.mode
    ino.nlink = node.nlink
    ino.uid = node.uid
    ino.gid = node.gid
    ino.rdev = node.rdev & 0xFFFFFFFF
    ino.size = node.size
    ino.mtime_sec = node.mtime_sec
    ino.mtime_nsec = node.mtime_nsec
    ino.payload = node.payload
    if (node.mode & _S_IFMT) == S_IFLNK:
        ino.size = len(node.payload or b"")
    ino.content = node.content
    ino.digest = node.digest
    ino.xattrs = node.xattrs  # shared with the tree until _set_xattr copies it
    ino.xattr_space = None
    return ino


def _resolve_versions(min_version, max_version):
    if min_version is None:
        min_version = fmt.LCFS_DEFAULT_VERSION_MIN
    if max_version is None:
        max_version = fmt.LCFS_DEFAULT_VERSION_MAX
    if min_version < 0 or max_version < 0 or min_version > fmt.LCFS_VERSION_MAX or max_version > fmt.LCFS_VERSION_MAX:
        raise ComposefsError("Unsupported format version: min %d, max %d (this writer knows 0 to %d)"
                             % (min_version, max_version, fmt.LCFS_VERSION_MAX))
    if max_version < min_version:
        max_version = min_version
    return min_version, max_version


def _prepare(tree, min_version, max_version):
    """Steps 1-4: the rewritten copy of the tree, in breadth-first inode order.

    The breadth-first way (:func:`_prepare_breadth_first`) does it in fewer passes.
    A tree with a whiteout, or one that fails a check, is done again from scratch in
    libcomposefs's order (:func:`_prepare_in_order`): that decides the image version
    before any whiteout is rewritten, and the first problem found is the one
    mkcomposefs reports.
    """
    try:
        done = _prepare_breadth_first(tree, min_version, max_version)
    except ComposefsError:
        done = None
    if done is None:
        return _prepare_in_order(tree, min_version, max_version)
    return done


def _prepare_breadth_first(tree, min_version, max_version):
    """:func:`_prepare_in_order` for a common tree, in one breadth-first pass, mostly in place.

    Each directory's entries are taken in byte order, so the visiting order is the
    final inode order (but for the root's whiteouts, added at the end). Only the
    root is copied (it gets the opaque xattr and the whiteouts); every other inode
    is the tree's node itself, checked and given its overlay xattrs (``w_items``)
    as it is met, without changing its own fields. A tree where that is not
    enough (a whiteout, an overlay xattr to escape, anything that fails a check)
    gets None: :func:`_prepare` then copies and rewrites it in libcomposefs's
    order. Without those, no inode's overlay xattrs depend on another's, so the
    result is the same.
    """
    version, max_version = _resolve_versions(min_version, max_version)
    root_node = tree.root
    root = _copy(root_node, b"/", None)
    _check(root)
    _add_overlay_xattrs(root, version)
    order = [root]
    with_links = []
    dir_pos = 0
    dirs = [(root, root_node.children, root)]  # (inode, its children, its parent's inode)
    while dir_pos < len(dirs):  # breadth-first: the loop appends to dirs
        ino, children, parent = dirs[dir_pos]
        dir_pos += 1
        entries = [(b".", ino, False), (b"..", parent, False)]
        n_link = 2  # 2 + subdirectories
        if children:
            links = False
            for name in sorted(children):
                node = children[name]
                if node.link_to is not None:
                    entries.append((name, node, False))
                    links = True
                    continue
                entries.append((name, node, True))
                order.append(node)
                xattrs = node.xattrs
                if xattrs:
                    for k in xattrs:  # (a plain loop: most inodes have one or two xattrs)
                        if k.startswith(XATTR_OVERLAY_PREFIX):
                            return None  # escaped on a copy
                t = node.mode & _S_IFMT
                if t == S_IFREG:
                    content = node.content
                    size = node.size
                    if content is None:
                        if size > 0:
                            # A file in the object store: a metacopy of a digest up to 64 bytes and a
                            # redirect up to PATH_MAX always fit (they start a new count, see _set_xattr).
                            payload = node.payload
                            digest = node.digest
                            if ((payload and len(payload) > MAX_PAYLOAD_LENGTH) or size > _MAX_CHUNKED_SIZE
                                    or (digest is not None and len(digest) > 64)):
                                return None
                            metacopy = _NO_DIGEST_METACOPY if digest is None else (
                                XATTR_METACOPY, _metacopy_value(digest))
                            if xattrs:
                                items = list(xattrs.items())
                                items.append(metacopy)
                                if payload:
                                    items.append((XATTR_REDIRECT, b"/" + payload))
                                items.sort()
                                node.w_items = items
                            elif payload:
                                node.w_items = (metacopy, (XATTR_REDIRECT, b"/" + payload))
                            else:
                                node.w_items = (metacopy,)
                            if node.children:
                                return None
                            continue
                    elif len(content) != size or size > INLINE_CONTENT_MAX:
                        return None
                elif t == S_IFDIR:
                    dirs.append((node, node.children, ino))
                    n_link += 1
                elif t == S_IFLNK:
                    if not node.payload:
                        return None
                elif t == S_IFCHR:
                    if node.rdev == 0:
                        return None  # a whiteout
                elif t not in VALID_TYPES:
                    return None
                if t != S_IFDIR and node.children:
                    return None
                node.w_items = sorted(xattrs.items()) if xattrs else None
            if links:
                with_links.append(ino)
            if entries[2][0] < b"..":  # a name that sorts before "." and ".." (the rest is in order)
                entries.sort(key=_entry_name)
        ino.w_entries = entries
        ino.w_nlink = n_link

    if with_links and not _resolve_links_in_place(root_node, with_links):
        return None
    entries = root.w_entries
    first_level = sum(1 for entry in entries if entry[2])
    _set_xattr(root, XATTR_OPAQUE, b"y")
    root.w_items = sorted(root.xattrs.items())
    _add_root_whiteouts(root)
    entries.sort(key=_entry_name)
    final = [root]
    final.extend([entry[1] for entry in entries if entry[2]])
    final.extend(order[1 + first_level:])
    return final, version


def _resolve_links_in_place(root_node, with_links):
    """:func:`_resolve_links` for :func:`_prepare_breadth_first`: False if a link is wrong (reported by the other way)."""
    links = LinkResolver()
    for ino in with_links:
        entries = ino.w_entries
        for i, (name, target, real) in enumerate(entries):
            if real or isinstance(target, _Inode) or target.link_to is None:  # a file, "." or ".."
                continue
            try:
                final = links.resolve(target)
            except ComposefsError:
                return False
            if (final.mode & _S_IFMT) == S_IFDIR or final.link_to is not None:
                return False
            # In this tree: its parents lead to the root (the root itself is a directory).
            up = final.parent
            while up is not None and up is not root_node:
                up = up.parent
            if up is None:
                return False
            entries[i] = (name, final, False)
    return True


def _resolve_links(inodes, with_links):
    """Hardlink entries of ``with_links`` point at their final target's inode (chains resolved in linear time)."""
    if not with_links:
        return
    links = LinkResolver()
    copies = dict((ino.node, ino) for ino in inodes)  # nodes hash by identity
    for ino in with_links:
        entries = ino.w_entries
        for i, (name, target, _real) in enumerate(entries):
            if not isinstance(target, _Inode):
                final = links.resolve(target)
                tino = copies.get(final)
                if tino is None:
                    raise ComposefsError("Hardlink target is not in the tree", target.lineno, ino.path + b"/" + name)
                if (tino.mode & _S_IFMT) == S_IFDIR:
                    raise ComposefsError("Hardlink to a directory", target.lineno, ino.path + b"/" + name)
                entries[i] = (name, tino, False)


def _prepare_in_order(tree, min_version, max_version):
    """Steps 1-4 in libcomposefs's order: copy, version, links, a depth-first rewrite, numbering."""
    root_node = tree.root
    version, max_version = _resolve_versions(min_version, max_version)

    # Copy every inode; each directory gets its entries, "." and ".." included,
    # in byte order. Hardlink entries still hold tree nodes until resolved below.
    root = _copy(root_node, b"/", None)
    has_whiteout = False
    with_links = []
    todo = [root]
    queue_pos = 0
    while queue_pos < len(todo):  # breadth-first: the loop appends to todo
        ino = todo[queue_pos]
        queue_pos += 1
        t = ino.mode & _S_IFMT
        if t == S_IFCHR and ino.rdev == 0:
            has_whiteout = True
        children = ino.node.children
        if t != S_IFDIR:
            if children:
                raise _error(ino, "Only directories can have children")
            continue
        path = ino.path
        prefix = path if path == b"/" else path + b"/"
        entries = [(b".", ino, False), (b"..", ino if ino.parent is None else ino.parent, False)]
        links = False
        if children:
            for name, child in children.items():
                if child.link_to is not None:
                    entries.append((name, child, False))
                    links = True
                else:
                    cino = _copy(child, prefix + name, ino)
                    entries.append((name, cino, True))
                    todo.append(cino)
            entries.sort(key=_entry_name)
        ino.w_entries = entries
        if links:
            with_links.append(ino)

    if version < 1 and max_version >= 1 and has_whiteout:
        version = 1

    # Hardlinks point at the final target's inode (chains resolved in linear time).
    _resolve_links(todo, with_links)

    # Depth-first, each directory before its entries (libcomposefs's rewrite
    # pass): validate, then overlay xattrs.
    stack = [root]
    while stack:
        ino = stack.pop()
        _check(ino)
        _add_overlay_xattrs(ino, version)
        entries = ino.w_entries
        if entries is not None:
            for entry in reversed(entries):
                if entry[2]:
                    stack.append(entry[1])

    _set_xattr(root, XATTR_OPAQUE, b"y")
    _add_root_whiteouts(root)
    root.w_entries.sort(key=_entry_name)

    # Breadth-first numbering; directory nlink is 2 + subdirectories.
    order = [root]
    index = 0
    while index < len(order):  # breadth-first: the loop appends to order
        ino = order[index]
        index += 1
        ino.w_items = sorted(ino.xattrs.items()) if ino.xattrs else None
        entries = ino.w_entries
        if entries is not None:
            n_link = 2
            for _name, child, is_real in entries:
                if is_real:
                    order.append(child)
                    if (child.mode & _S_IFMT) == S_IFDIR:
                        n_link += 1
            ino.w_nlink = n_link
    return order, version


_entry_name = itemgetter(0)


def _check(ino):
    """lcfs_node_validate() for a non-hardlink inode."""
    t = ino.mode & _S_IFMT
    if t not in VALID_TYPES:
        raise _error(ino, "Invalid mode %o" % ino.mode)
    if t == S_IFREG and ino.size > 0 and ino.content is None and ino.size > _MAX_CHUNKED_SIZE:
        raise _error(ino, "File too big: %d bytes, over the %d a non-inline file can have"
                     % (ino.size, _MAX_CHUNKED_SIZE))
    if t == S_IFLNK and not ino.payload:
        raise _error(ino, "Invalid symlink: no target")
    if ino.content is not None and t == S_IFREG:
        if len(ino.content) != ino.size:
            raise _error(ino, "Inline content of %d bytes does not match the size %d" % (len(ino.content), ino.size))
        if len(ino.content) > INLINE_CONTENT_MAX:
            raise _error(ino, "Inline content size %d exceeds maximum %d" % (len(ino.content), INLINE_CONTENT_MAX))


def _add_overlay_xattrs(ino, version):
    """add_overlayfs_xattrs(): escape, metacopy/redirect, whiteout escaping."""
    xattrs = ino.xattrs
    if xattrs:
        for k in xattrs:  # (a plain loop: most inodes have one or two xattrs)
            if k.startswith(XATTR_OVERLAY_PREFIX):
                break
        else:
            k = None
        if k is not None:
            # Renaming keeps libcomposefs's space count (it does not recount renames);
            # like any first change, it starts from 0 on the clone.
            plen = len(XATTR_OVERLAY_PREFIX)
            space = 0 if ino.xattr_space is None else ino.xattr_space
            ino.xattrs = dict(
                (XATTR_OVERLAY_ESCAPE_PREFIX + k[plen:] if k.startswith(XATTR_OVERLAY_PREFIX) else k, v)
                for k, v in xattrs.items()
            )
            ino.xattr_space = space
    t = ino.mode & _S_IFMT
    if t == S_IFREG and ino.size > 0 and ino.content is None:
        value = b"" if ino.digest is None else _metacopy_value(ino.digest)
        redirect = b"/" + ino.payload if ino.payload else None
        xattrs = ino.xattrs
        # What _set_xattr does, in one step for the common case: new names (the escaping
        # above renamed any trusted.overlay.* the file had), values within the limits,
        # and room for both in the xattr space. Anything else goes through _set_xattr.
        space = 0 if ino.xattr_space is None else ino.xattr_space
        need = XATTR_ENTRY_OVERHEAD + len(XATTR_METACOPY) + len(value) + (0 if xattrs else XATTR_HEADER_SIZE)
        if redirect is not None:
            need += XATTR_ENTRY_OVERHEAD + len(XATTR_REDIRECT) + len(redirect)
        if (space + need <= XATTR_SPACE_MAX_EXTERNAL and len(value) <= XATTR_VALUE_MAX
                and (redirect is None or len(redirect) <= XATTR_VALUE_MAX)
                and XATTR_METACOPY not in xattrs and XATTR_REDIRECT not in xattrs):
            if ino.xattr_space is None:
                xattrs = ino.xattrs = dict(xattrs)  # copy on write, as _set_xattr
            xattrs[XATTR_METACOPY] = value
            if redirect is not None:
                xattrs[XATTR_REDIRECT] = redirect
            ino.xattr_space = space + need
        else:
            _set_xattr(ino, XATTR_METACOPY, value)
            if redirect is not None:
                _set_xattr(ino, XATTR_REDIRECT, redirect)
    if t == S_IFCHR and ino.rdev == 0:
        parent = ino.parent
        ino.size = 0
        ino.mode = S_IFREG | (ino.mode & ~_S_IFMT & 0xFFFFFFFF)
        _set_xattr(ino, XATTR_ESCAPED_WHITEOUT, b"")
        _set_xattr(ino, XATTR_USERXATTR_WHITEOUT, b"")
        _set_xattr(parent, XATTR_ESCAPED_WHITEOUTS, b"")
        _set_xattr(parent, XATTR_USERXATTR_WHITEOUTS, b"")
        if version >= 1:
            _set_xattr(parent, XATTR_ESCAPED_OPAQUE, b"x")
            _set_xattr(parent, XATTR_USERXATTR_OPAQUE, b"x")


_NO_DIGEST_METACOPY = (XATTR_METACOPY, b"")


def _metacopy_value(digest):
    """trusted.overlay.metacopy of a file with a known fs-verity digest (struct ovl_metacopy)."""
    return bytes((0, 4 + len(digest), 0, FS_VERITY_HASH_ALG_SHA256)) + digest


def _add_root_whiteouts(root):
    """Whiteouts 00..ff in the root that hide the object store's directories."""
    present = set(entry[0] for entry in root.w_entries)
    selinux = root.xattrs.get(b"security.selinux")
    for i in range(256):
        name = b"%02x" % i
        if name in present:
            continue
        ino = _Inode()
        ino.node = None
        ino.path = b"/" + name
        ino.parent = root
        ino.mode = S_IFCHR | 0o644
        ino.nlink = 1
        ino.uid = root.uid
        ino.gid = root.gid
        ino.rdev = 0
        ino.size = 0
        ino.mtime_sec = root.mtime_sec
        ino.mtime_nsec = root.mtime_nsec
        ino.payload = ino.content = ino.digest = None
        ino.xattrs = {}
        ino.xattr_space = 0
        ino.w_items = None
        if selinux is not None:
            _set_xattr(ino, b"security.selinux", selinux)
            ino.w_items = [(b"security.selinux", selinux)]
        root.w_entries.append((name, ino, True))


# --- xattr encoding ---------------------------------------------------------------

_PREFIX_CACHE = {}


def _key_info(key):
    """(name index, suffix, filter bit) of an xattr name, cached."""
    info = _PREFIX_CACHE.get(key)
    if info is None:
        index = 0
        suffix = key
        for prefix, pindex in fmt.WRITER_XATTR_PREFIXES:
            if key.startswith(prefix):
                index = pindex
                suffix = key[len(prefix):]
                break
        bit = xxh32(suffix, fmt.EROFS_XATTR_FILTER_SEED + index) & (fmt.EROFS_XATTR_FILTER_BITS - 1)
        info = (index, suffix, 1 << bit)
        if len(_PREFIX_CACHE) < 65536:
            _PREFIX_CACHE[key] = info
    return info


def _entry_frame(info, length):
    """What surrounds a value of ``length`` bytes in an erofs_xattr_entry: (head with the name suffix, padding, size)."""
    index, suffix = info[0], info[1]
    head = fmt.XATTR_ENTRY.pack(len(suffix), index, length) + suffix
    pad = -(len(head) + length) & 3
    return head, _ZEROS[:pad], len(head) + length + pad


def _xattr_entry(key, value):
    """One erofs_xattr_entry with its name suffix and value, padded to 4 bytes."""
    head, padding, _size = _entry_frame(_key_info(key), len(value))
    return head + value + padding


# --- layout -----------------------------------------------------------------------


def _shared_xattrs(order):
    """Step 5's table: (its bytes, the offset of each shared (name, value) pair, the smallest mtime).

    The smallest mtime (the image's) is gathered in the same pass over the inodes.
    """
    every = []  # every inode's (name, value) pairs, counted at once below
    root = order[0]
    min_sec = root.mtime_sec
    min_nsec = root.mtime_nsec
    for ino in order:
        items = ino.w_items
        if items:
            every += items
        sec = ino.mtime_sec
        if sec <= min_sec and (sec < min_sec or ino.mtime_nsec < min_nsec):
            min_sec = sec
            min_nsec = ino.mtime_nsec
    counts = Counter(every)
    del every
    shared = [item for item, count in counts.items() if count > 1]
    shared.sort(key=lambda kv: (kv[0], len(kv[1]), kv[1]), reverse=True)
    offsets = {}
    table = []
    offset = 0
    for item in shared:
        entry = _xattr_entry(item[0], item[1])
        offsets[item] = offset
        table.append(entry)
        offset += len(entry)
    return b"".join(table), offsets, min_sec, min_nsec


def _dir_chunks(entries):
    """Split directory entries into blocks: [(first, count, bytes used)]."""
    chunks = []
    first = 0
    used = 0
    for i, entry in enumerate(entries):
        size = 12 + len(entry[0])
        if used + size > BLK:
            chunks.append((first, i - first, used))
            first = i
            used = 0
        used += size
    chunks.append((first, len(entries) - first, used))
    return chunks


_FILE_TYPES = dict((t, fmt.file_type_of_mode(t)) for t in VALID_TYPES)


def _lay_out(order, offsets, min_sec, min_nsec):
    """Steps 5 and 6 and the inodes' bytes, in one pass over the inodes.

    For each inode: its xattrs (shared references and inline entries), its place,
    then its bytes. Three things are only known at the end and are filled in by
    :func:`_fill_in`: the shared xattr references (they count from the end of the
    inodes), the entries of inline directories (their children come later), and
    the block address of the few inodes with data blocks.
    """
    pos = fmt.EROFS_SUPER_OFFSET + fmt.SUPER_BLOCK.size
    parts = []  # the bytes from pos on, with None where something is filled in at the end
    append = parts.append
    n_data_blocks = 0
    with_blocks = []  # (inode, index of its inode bytes in parts, what to pack them from)
    inline_dirs = []  # (index in parts, inode) of the directories whose last entries are inline
    heads = {}  # (name filter, shared references) -> that xattr header, a bytearray in parts
    file_types = _FILE_TYPES
    limit = fmt.EROFS_XATTR_LONG_PREFIX
    infos = {}  # key -> _key_info(key), without the function call per xattr
    offsets_get = offsets.get
    filter_default = fmt.EROFS_XATTR_FILTER_DEFAULT
    for index, ino in enumerate(order):
        # The xattrs: shared references, inline entries and the name filter.
        items = ino.w_items
        if items:
            shared = []
            unshared = []
            name_filter = 0
            xattr_size = XATTR_HEADER_SIZE
            few = len(items) <= limit  # then every shared one can be referenced
            for item in items:
                key = item[0]
                info = infos.get(key)
                if info is None:
                    # (name index, suffix, filter bit, {value length: (entry head, padding, entry size)})
                    info = infos[key] = _key_info(key) + ({},)
                off = offsets_get(item)
                if off is not None and (few or len(shared) < limit):
                    shared.append(off)
                    xattr_size += 4
                else:
                    # _xattr_entry(), its head and padding made once per name and value length
                    value = item[1]
                    length = len(value)
                    entry = info[3].get(length)
                    if entry is None:
                        entry = info[3][length] = _entry_frame(info, length)
                    unshared.append(entry[0] + value + entry[1])
                    xattr_size += entry[2]
                name_filter |= info[2]
            xattr_size = (xattr_size + 3) & ~3
            icount = (xattr_size - XATTR_HEADER_SIZE) // 4 + 1
            if icount > 0xFFFF:
                raise _error(ino, "Too many xattrs")
        else:
            xattr_size = icount = 0

        # compute_erofs_inode_size(); size is what decides a compact inode
        mode = ino.mode
        t = mode & _S_IFMT
        ino.w_ftype = file_types.get(t, 0)
        nlink = ino.nlink
        chunk_format = None
        size = ino.size
        if t == S_IFREG:
            if size == 0:
                n_blocks = tail = 0
            elif ino.content is not None:
                n_blocks, tail = divmod(size, BLK)
                if tail > BLK // 2:
                    n_blocks += 1
                    tail = 0
            else:
                n_blocks = 0
                if size <= _ONE_CHUNK_MAX:
                    # fmt.chunking() of a file that fits one chunk: the smallest power of 2 >= size
                    chunkbits = (size - 1).bit_length()
                    chunk_format = chunkbits - _BLK_BITS if chunkbits > _BLK_BITS else 0
                    tail = 4
                else:
                    chunkbits, count = fmt.chunking(size)
                    chunk_format = chunkbits - _BLK_BITS
                    tail = 4 * count
        elif t == S_IFDIR:
            nlink = ino.w_nlink
            entries = ino.w_entries
            tail = 12 * len(entries) + sum([len(entry[0]) for entry in entries])
            if tail <= BLK:
                chunks = None  # one block's worth
                n_blocks = 0
            else:
                chunks = _dir_chunks(entries)
                n_blocks = len(chunks) - 1
                tail = chunks[-1][2]
            if tail > BLK // 2:  # never inline more than half a block
                n_blocks += 1
                tail = 0
            ino.w_dir_chunks = chunks
            size = n_blocks * BLK + tail
        elif t == S_IFLNK:
            n_blocks = 0
            tail = size = len(ino.payload)
        else:
            n_blocks = tail = 0
        mtime_sec = ino.mtime_sec
        mtime_nsec = ino.mtime_nsec
        uid = ino.uid
        gid = ino.gid
        compact = (mtime_sec == min_sec and mtime_nsec == min_nsec and nlink <= 0xFFFF and uid <= 0xFFFF
                   and gid <= 0xFFFF and size <= 0xFFFFFFFF)
        inode_size = 32 if compact else 64

        aligned = (pos + _SLOT_ROUND) & _SLOT_MASK
        ipad = aligned - pos
        pos = aligned

        # compute_erofs_inode_padding_for_tail()
        if t == S_IFLNK:
            total = inode_size + xattr_size + tail
            if total // BLK > 0:
                n_blocks += 1
                tail = 0
            if pos // BLK != (pos + total - 1) // BLK:
                extra = -pos % BLK
                ipad += extra
                pos += extra
        else:
            non_tail = inode_size + xattr_size
            remainder = BLK - (pos + non_tail) % BLK
            if remainder < tail:
                pad = (remainder + SLOT - 1) & ~(SLOT - 1)
                remainder = BLK - (pos + non_tail + pad) % BLK
                if tail <= remainder:
                    extra = pad
                else:
                    n_blocks += 1
                    tail = 0
                    extra = -pos % BLK
                ipad += extra
                pos += extra
        ino.w_nid = pos // SLOT
        pos += inode_size + xattr_size + tail

        # The bytes: padding, the on-disk inode, its xattrs, its tail data.
        if ipad:
            append(_PADS[ipad] if ipad < SLOT else _ZEROS[:ipad])
        if chunk_format is not None:
            i_format = _CHUNK_BASED
            i_u = chunk_format
        else:
            i_format = _FLAT_INLINE if tail else _FLAT_PLAIN
            i_u = ino.rdev & 0xFFFFFFFF if t == S_IFCHR or t == S_IFBLK else 0
        if t == S_IFDIR:
            size = n_blocks * BLK + tail
        elif t != S_IFREG and t != S_IFLNK:
            size = 0
        if n_blocks:
            # The block address is known at the end (for a chunk-based file, whose chunk
            # index struct erofs_inode_chunk_info overlays on the low half of raw_blkaddr).
            ino.w_n_blocks = n_blocks
            n_data_blocks += n_blocks
            with_blocks.append((ino, len(parts), (compact, i_format, icount, mode & 0xFFFF, nlink, size, i_u, index)))
            append(None)
        elif compact:
            append(_PACK_COMPACT(i_format, icount, mode & 0xFFFF, nlink, size, 0, i_u, index, uid, gid, 0))
        else:
            append(_PACK_EXTENDED(i_format | _EXTENDED, icount, mode & 0xFFFF, 0, size, i_u, index, uid, gid,
                                  mtime_sec & 0xFFFFFFFFFFFFFFFF, mtime_nsec, nlink))
        if xattr_size:
            name_filter = filter_default & ~name_filter
            if shared:
                # The same bytearray wherever this header recurs: filled in once, at the end.
                key = (name_filter, tuple(shared))
                head = heads.get(key)
                if head is None:
                    head = heads[key] = bytearray()
                append(head)
            else:
                append(_PACK_XATTR_HEADER(name_filter, 0))
            if unshared:
                append(unshared[0] if len(unshared) == 1 else b"".join(unshared))
        if tail:
            if t == S_IFREG:
                if chunk_format is not None:
                    append(_NULL_CHUNK if tail == 4 else _NULL_CHUNK * (tail // 4))
                else:
                    append(ino.content[size - tail:])
            elif t == S_IFDIR:
                inline_dirs.append((len(parts), ino))
                append(None)
            else:
                append(ino.payload)
    inodes_end = (pos + SLOT - 1) & ~(SLOT - 1)
    if pos < inodes_end:
        append(_PADS[inodes_end - pos])
    has_acl = b"system.posix_acl_access" in infos or b"system.posix_acl_default" in infos
    return inodes_end, parts, n_data_blocks, with_blocks, inline_dirs, heads, has_acl


def _fill_in(plan, parts, inline_dirs, heads):
    """What :func:`_lay_out` left for the end: block addresses, shared xattr references, inline entries."""
    data_start = (plan.inodes_end + len(plan.shared_table) + BLK - 1) & ~(BLK - 1)
    plan.data_start = data_start
    current = data_start // BLK
    for ino, at, (compact, i_format, icount, mode, nlink, size, i_u, index) in plan.with_blocks:
        if i_format == _CHUNK_BASED:
            i_u |= current & 0xFFFF0000
        else:
            i_u = current
        current += ino.w_n_blocks
        # (the two packs of _lay_out, which does them inline for every other inode: its hot loop)
        if compact:
            parts[at] = _PACK_COMPACT(i_format, icount, mode, nlink, size, 0, i_u, index, ino.uid, ino.gid, 0)
        else:
            parts[at] = _PACK_EXTENDED(i_format | _EXTENDED, icount, mode, 0, size, i_u, index, ino.uid, ino.gid,
                                       ino.mtime_sec & 0xFFFFFFFFFFFFFFFF, ino.mtime_nsec, nlink)
    in_block = plan.inodes_end % BLK
    for (name_filter, shared), head in heads.items():
        head += _PACK_XATTR_HEADER(name_filter, len(shared)) + b"".join(
            [(in_block + off >> 2).to_bytes(4, "little") for off in shared])
    for at, ino in inline_dirs:
        entries = ino.w_entries
        chunks = ino.w_dir_chunks
        if chunks is None:
            parts[at] = _dirent_block(entries, 0, len(entries))
        else:
            first, count, _used = chunks[-1]
            parts[at] = _dirent_block(entries, first, count)


# --- writing ------------------------------------------------------------------------


def _dirent_block(entries, first, count):
    nameoff = count * 12
    heads = []
    pack = _PACK_DIRENT
    for name, target, _real in entries[first:first + count]:
        heads.append(pack(target.w_nid, nameoff, target.w_ftype, 0))
        nameoff += len(name)
    heads.extend([entry[0] for entry in entries[first:first + count]])
    return b"".join(heads)


def _data_blocks(ino):
    """Directory blocks and file blocks of one inode (whole blocks)."""
    t = ino.mode & _S_IFMT
    out = []
    if t == S_IFDIR:
        # Every chunk but the last fills a block; the last one too unless inlined.
        chunks = ino.w_dir_chunks or ((0, len(ino.w_entries), 0),)
        for first, count, _used in chunks[:ino.w_n_blocks]:
            block = _dirent_block(ino.w_entries, first, count)
            out.append(block + _ZEROS[len(block):])
    elif t == S_IFREG:
        if ino.content is None:
            # A chunk index that did not fit inline: one block of null chunk pointers.
            out.append(_NULL_CHUNK * (BLK // 4))
        else:
            content = ino.content
            for i in range(ino.w_n_blocks):
                block = content[i * BLK:(i + 1) * BLK]
                out.append(block + _ZEROS[len(block):])
    elif t == S_IFLNK:
        block = ino.payload[:BLK]
        out.append(block + _ZEROS[len(block):])
    return out


class _Plan:
    """What :func:`_plan` found, for :func:`_emit`: everything but the data blocks' bytes."""

    __slots__ = ("order", "version", "shared_table", "inodes_end", "inodes", "n_data_blocks", "with_blocks",
                 "has_acl", "min_sec", "min_nsec", "data_start")


def _plan(tree, min_version, max_version):
    """Steps 1 to 6 and the bytes of the inodes (nothing is written before the whole tree is checked)."""
    plan = _Plan()
    with paused_gc():
        plan.order, plan.version = _prepare(tree, min_version, max_version)
        plan.shared_table, offsets, plan.min_sec, plan.min_nsec = _shared_xattrs(plan.order)
        (plan.inodes_end, parts, plan.n_data_blocks, plan.with_blocks, inline_dirs, heads,
         plan.has_acl) = _lay_out(plan.order, offsets, plan.min_sec, plan.min_nsec)
        _fill_in(plan, parts, inline_dirs, heads)
        plan.inodes = b"".join(parts)
    if len(plan.inodes) != plan.inodes_end - (fmt.EROFS_SUPER_OFFSET + fmt.SUPER_BLOCK.size):
        raise AssertionError("inodes take %d bytes, %d planned" % (len(plan.inodes), plan.inodes_end))
    if plan.order[0].w_nid >= 0xFFFF:
        raise ComposefsError("Root inode too far into the image")
    return plan


def _generate(tree, min_version, max_version):
    """Yield the image as a sequence of bytes chunks (after checking the whole tree)."""
    return _emit(_plan(tree, min_version, max_version))


def _emit(plan):
    order = plan.order
    inodes_end = plan.inodes_end
    shared_table = plan.shared_table
    data_start = plan.data_start
    header = fmt.COMPOSEFS_HEADER.pack(fmt.LCFS_EROFS_MAGIC, fmt.LCFS_EROFS_VERSION,
                                       fmt.LCFS_EROFS_FLAGS_HAS_ACL if plan.has_acl else 0, plan.version)
    superblock = fmt.SUPER_BLOCK.pack(
        fmt.EROFS_SUPER_MAGIC_V1, 0, fmt.EROFS_FEATURE_COMPAT_MTIME | fmt.EROFS_FEATURE_COMPAT_XATTR_FILTER,
        fmt.EROFS_BLKSIZ_BITS, 0, order[0].w_nid, len(order), plan.min_sec & 0xFFFFFFFFFFFFFFFF, plan.min_nsec,
        data_start // BLK + plan.n_data_blocks, (fmt.EROFS_SUPER_OFFSET + fmt.SUPER_BLOCK.size) // BLK,
        inodes_end // BLK, b"", b"", 0, 0, 0, 0, 0, 0, 0, 0, 0)
    yield header + bytes(fmt.EROFS_SUPER_OFFSET - len(header)) + superblock
    yield plan.inodes
    plan.inodes = None
    yield shared_table + bytes(data_start - inodes_end - len(shared_table))

    batch = []
    batch_size = 0
    written = 0
    for ino, _at, _packed in plan.with_blocks:
        blocks = _data_blocks(ino)
        if len(blocks) != ino.w_n_blocks:
            raise AssertionError("data block count mismatch for %r" % (ino.path,))
        batch.extend(blocks)
        batch_size += len(blocks) * BLK
        written += len(blocks)
        if batch_size >= 1 << 20:
            yield b"".join(batch)
            batch = []
            batch_size = 0
    if batch:
        yield b"".join(batch)
    if written != plan.n_data_blocks:
        raise AssertionError("data blocks written %d, expected %d" % (written, plan.n_data_blocks))
    # Directories refer to themselves ("."), their parent (".." and .parent): break
    # those cycles, so that the inodes are freed by reference counting as soon as they
    # are dropped instead of by a pass of the cyclic garbage collector over every inode.
    for ino in order:
        ino.w_entries = None


def build_image(tree, min_version=fmt.LCFS_DEFAULT_VERSION_MIN, max_version=fmt.LCFS_DEFAULT_VERSION_MAX):
    """The composefs EROFS image of ``tree`` as bytes (``mkcomposefs --from-file``).

    ``min_version``/``max_version`` are mkcomposefs's ``--min-version`` and
    ``--max-version``; a max below the min is raised to it. Raises
    ComposefsError for trees libcomposefs rejects.
    """
    return b"".join(_generate(tree, min_version, max_version))


def write_image(tree, out, min_version=fmt.LCFS_DEFAULT_VERSION_MIN, max_version=fmt.LCFS_DEFAULT_VERSION_MAX,
                digest=False):
    """Stream the image of ``tree`` to binary file object ``out``.

    Returns the image's raw fs-verity SHA-256 digest when ``digest`` is true
    (what ``mkcomposefs --print-digest`` prints, in hex), else None. Nothing is
    written when the tree is rejected: the layout is computed before output.
    """
    hasher = None
    if digest:
        from ansible_collections.composefs.fleet.plugins.module_utils.fsverity.digest import FsverityHasher
        hasher = FsverityHasher()
    for chunk in _generate(tree, min_version, max_version):
        out.write(chunk)
        if hasher is not None:
            hasher.update(chunk)
    return None if hasher is None else hasher.digest()


def image_digest(data):
    """fs-verity SHA-256 digest (raw bytes) of image bytes, as mkcomposefs --print-digest computes it."""
    from ansible_collections.composefs.fleet.plugins.module_utils.fsverity.digest import data_digest
    return data_digest(data)
