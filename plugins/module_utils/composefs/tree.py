# -*- coding: utf-8 -*-
# Copyright: composefs.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""In-memory composefs tree: what goes into an image.

A :class:`Tree` holds a root :class:`Node` (a directory). Every node is one
file of the image: regular file, directory, symlink, character or block device,
fifo or socket. A *hardlink* is a node whose ``link_to`` names another node; its
own fields are ignored and the image gives it the target's inode.

Names, symlink targets, payloads, xattr names and values and file content are
all ``bytes`` (filesystem names are bytes). Numbers follow libcomposefs's
storage widths: mode, nlink, uid, gid and rdev are 32-bit, mtime seconds a
signed 64-bit number, size an unsigned 64-bit one.

Build a tree from a composefs-dump(5) file (:meth:`Tree.from_dumpfile`), from a
directory on disk (:meth:`Tree.from_directory`, like ``mkcomposefs DIR``), or
node by node. Write it out with :meth:`Tree.to_dumpfile` or
``erofs.writer.write_image``.

Regular files carry either inline ``content`` (small files) or a ``payload``:
the path of the backing file relative to the object store, by convention
``XX/YYYY...`` built from the fs-verity ``digest`` (see :func:`digest_to_payload`).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import contextlib
import errno
import gc
import operator
import os
import stat

from ansible_collections.composefs.fleet.plugins.module_utils.common.text import excerpt
from ansible_collections.composefs.fleet.plugins.module_utils.composefs.errors import ComposefsError

S_IFMT = 0o170000
S_IFREG = 0o100000
S_IFDIR = 0o040000
S_IFLNK = 0o120000
S_IFCHR = 0o020000
S_IFBLK = 0o060000
S_IFIFO = 0o010000
S_IFSOCK = 0o140000
VALID_TYPES = frozenset((S_IFREG, S_IFDIR, S_IFLNK, S_IFCHR, S_IFBLK, S_IFIFO, S_IFSOCK))

DIGEST_SIZE = 32
# Longest file name, symlink target / payload (PATH_MAX - 1), xattr name.
MAX_NAME_LENGTH = 255
MAX_PAYLOAD_LENGTH = 4095
XATTR_NAME_MAX = 255
XATTR_VALUE_MAX = 0xFFFF
# libcomposefs caps the xattr space of one inode, counted as
# 12 + sum(2 * 4 - 1 + len(name) + len(value)), at 65535 / 2 for external input
# (dumpfiles, directories) to leave room for the overlay xattrs it adds itself.
XATTR_SPACE_MAX_EXTERNAL = 0xFFFF // 2
XATTR_SPACE_MAX = 0xFFFF
XATTR_HEADER_SIZE = 12
XATTR_ENTRY_OVERHEAD = 2 * 4 - 1
# Inline content: at most 5000 bytes in an image; mkcomposefs inlines files of
# 1 to 64 bytes (64 is the size of the digest reference it would replace).
INLINE_CONTENT_MAX = 5000
RECOMMENDED_INLINE_CONTENT_MAX = 64

_U32 = 0xFFFFFFFF
_U64 = 0xFFFFFFFFFFFFFFFF


# Scratch space of the image writer (erofs.writer), which lays a tree's nodes out in
# place instead of copying each one: the final nlink of a directory, the sorted
# xattrs, the entries and their blocks, the place and type of the inode (for the
# entries that name it), its data blocks. Only the writer sets and reads them, while
# it writes an image; they are not part of the tree.
WRITER_SLOTS = ("w_nlink", "w_items", "w_entries", "w_dir_chunks", "w_nid", "w_ftype", "w_n_blocks")


def xattr_space(xattrs):
    """libcomposefs's accounting of the xattr space of one inode."""
    if not xattrs:
        return 0
    total = XATTR_HEADER_SIZE
    for key, value in xattrs.items():
        total += XATTR_ENTRY_OVERHEAD + len(key) + len(value)
    return total


def digest_to_payload(digest):
    """The object-store path ``XX/62hex`` mkcomposefs uses for a raw digest."""
    hexed = digest.hex()
    return (hexed[:2] + "/" + hexed[2:]).encode("ascii")


@contextlib.contextmanager
def paused_gc():
    """Pause the cyclic garbage collector while building large trees or images.

    Tens of thousands of new nodes otherwise trigger repeated full collections
    that cost more than the work itself; nothing built here forms cycles that
    need collecting early. Restores the previous state.
    """
    enabled = gc.isenabled()
    if enabled:
        gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _to_signed64(value):
    value &= _U64
    return value - (1 << 64) if value >> 63 else value


class Node:
    """One file of a composefs tree. See the module docstring for field types.

    ``size`` defaults to ``len(content)`` when inline ``content`` is given.
    A directory node has a ``children`` dict (name -> node); use
    :meth:`add_child` or :meth:`Tree.add` to fill it.
    """

    __slots__ = (
        "mode", "nlink", "uid", "gid", "rdev", "size", "mtime_sec", "mtime_nsec",
        "payload", "content", "digest", "xattrs", "children", "link_to",
        "parent", "name", "lineno",
    ) + WRITER_SLOTS

    def __init__(self, mode, nlink=1, uid=0, gid=0, rdev=0, size=0, mtime_sec=0, mtime_nsec=0,
                 payload=None, content=None, digest=None, xattrs=None, link_to=None):
        self.mode = mode & _U32
        self.nlink = nlink & _U32
        self.uid = uid & _U32
        self.gid = gid & _U32
        self.rdev = rdev & _U32
        if content is not None and not size:
            size = len(content)
        self.size = size & _U64
        self.mtime_sec = _to_signed64(mtime_sec)
        self.mtime_nsec = mtime_nsec & _U32
        self.payload = payload
        self.content = content
        self.digest = digest
        self.xattrs = dict(xattrs) if xattrs else {}
        self.children = {} if (mode & S_IFMT) == S_IFDIR and link_to is None else None
        self.link_to = link_to
        self.parent = None
        self.name = None
        self.lineno = None  # dumpfile line the node came from, for error messages

    # --- type ------------------------------------------------------------
    @property
    def type(self):
        """``mode & S_IFMT``."""
        return self.mode & S_IFMT

    def is_dir(self):
        return (self.mode & S_IFMT) == S_IFDIR and self.link_to is None

    def is_hardlink(self):
        return self.link_to is not None

    def resolve(self):
        """The node a hardlink finally points to (itself for other nodes)."""
        node = self
        seen = None
        while node.link_to is not None:
            node = node.link_to
            if node is self:
                raise ComposefsError("hardlink loop", self.lineno, self.path)
            if seen is None:
                seen = set()
            if id(node) in seen:
                raise ComposefsError("hardlink loop", self.lineno, self.path)
            seen.add(id(node))
        return node

    # --- structure -------------------------------------------------------
    @property
    def path(self):
        """Absolute path (bytes) of the node in its tree; ``b"/"`` for the root."""
        parts = []
        node = self
        while node.parent is not None:
            parts.append(node.name)
            node = node.parent
        if not parts:
            return b"/" if self.name is None else self.name
        parts.reverse()
        return b"/" + b"/".join(parts)

    def add_child(self, name, child):
        """Add ``child`` as ``name`` (bytes) of this directory; returns ``child``."""
        if self.children is None:
            raise ComposefsError("Parent must be a directory", path=self.path)
        if not name:
            raise ComposefsError("Invalid empty file name", path=self.path)
        if len(name) > MAX_NAME_LENGTH:
            raise ComposefsError("File name longer than %d bytes" % MAX_NAME_LENGTH, path=self.path)
        if name in (b".", b".."):
            raise ComposefsError("Invalid . or .. file name", path=self.path)
        if name.find(b"/") >= 0 or name.find(b"\0") >= 0:
            raise ComposefsError("Invalid / or NUL in file name %r" % (name,), path=self.path)
        if child.name is not None or child.parent is not None:
            raise ComposefsError("Node is already in a tree", path=self.path)
        if name in self.children:
            raise ComposefsError("Path %s already exist" % _show(self._child_path(name)))
        self.children[name] = child
        child.parent = self
        child.name = name
        return child

    def _child_path(self, name):
        base = self.path
        return (base if base.endswith(b"/") else base + b"/") + name

    def lookup(self, name):
        """Child ``name`` of this directory, or None."""
        if self.children is None:
            return None
        return self.children.get(name)

    def sorted_children(self):
        """``(name, node)`` pairs in byte (strcmp) order."""
        if not self.children:
            return []
        return sorted(self.children.items())

    # --- attributes ------------------------------------------------------
    def set_xattr(self, key, value, limit=XATTR_SPACE_MAX_EXTERNAL):
        """Set xattr ``key`` (bytes) to ``value`` (bytes), with libcomposefs's checks.

        ``limit`` caps the inode's xattr space (see :func:`xattr_space`).
        """
        if not key or len(key) > XATTR_NAME_MAX or key.find(b"\0") >= 0:
            raise ComposefsError("Invalid xattr name %s (must be 1 to %d bytes, no NUL)"
                                 % (_show(key), XATTR_NAME_MAX), self.lineno, self.path)
        value = bytes(value)
        if len(value) > XATTR_VALUE_MAX:
            raise ComposefsError("Xattr %s value longer than %d bytes" % (_show(key), XATTR_VALUE_MAX),
                                 self.lineno, self.path)
        xattrs = self.xattrs
        old = xattrs.pop(key, None)
        used = xattr_space(xattrs)
        need = XATTR_ENTRY_OVERHEAD + len(key) + len(value) + (0 if xattrs else XATTR_HEADER_SIZE)
        if used + need > limit:
            if old is not None:
                xattrs[key] = old
            raise ComposefsError("Xattrs too large: setting %s would use %d bytes of xattr space, over the limit of %d"
                                 % (_show(key), used + need, limit), self.lineno, self.path)
        xattrs[key] = value

    def set_symlink_target(self, target):
        """Set a symlink's target (1..4095 bytes, no NUL) and its size."""
        if not target:
            raise ComposefsError("Invalid symlink: empty target", self.lineno, self.path)
        if len(target) > MAX_PAYLOAD_LENGTH or target.find(b"\0") >= 0:
            raise ComposefsError("Invalid symlink: target longer than %d bytes" % MAX_PAYLOAD_LENGTH,
                                 self.lineno, self.path)
        self.payload = target
        self.size = len(target)

    def set_content(self, content):
        """Inline ``content`` (at most 5000 bytes; empty clears it) and set the size."""
        content = bytes(content)
        if len(content) > INLINE_CONTENT_MAX:
            raise ComposefsError("Inline content size %d exceeds maximum %d" % (len(content), INLINE_CONTENT_MAX),
                                 self.lineno, self.path)
        self.content = content or None
        self.size = len(content)

    def validate(self):
        """Check what libcomposefs checks before writing; raises ComposefsError."""
        if self.link_to is not None:
            self.resolve()
            return
        t = self.mode & S_IFMT
        if t not in VALID_TYPES:
            raise ComposefsError("Invalid mode %o" % self.mode, self.lineno, self.path)
        if t == S_IFREG and self.size > 0 and self.content is None:
            # Chunk-based file: at most 1024 chunks of at most 2**43 bytes.
            if self.size > 1024 << 43:
                raise ComposefsError("File too big: %d bytes, the most a non-inline file can have is %d"
                                     % (self.size, 1024 << 43), self.lineno, self.path)
        if t == S_IFLNK and not self.payload:
            raise ComposefsError("Invalid symlink: empty target", self.lineno, self.path)

    def __repr__(self):
        return "<Node %s mode=%o>" % (_show(self.path), self.mode)


class LinkResolver:
    """Final targets of hardlinks, each chain walked once.

    :meth:`Node.resolve` walks a chain from its start, so resolving every link of
    a chain of n links that way takes n**2 / 2 steps (8000 links: seconds). This
    remembers the final target of every node it passes, so resolving all the
    links of a tree is linear in their number, however the chains are shaped.
    """

    def __init__(self):
        self._final = {}  # hardlink node -> final node (nodes hash by identity)

    def resolve(self, node):
        """The node ``node`` finally points to (itself for a non-link); raises ComposefsError on a loop."""
        target = node.link_to
        if target is None:
            return node
        if target.link_to is None:
            return target  # the common case: a link straight to a file
        final = self._final
        known = final.get(node)
        if known is not None:
            return known
        chain = []
        on_chain = set()
        current = node
        while current.link_to is not None:
            known = final.get(current)
            if known is not None:
                current = known
                break
            if current in on_chain:
                raise ComposefsError("hardlink loop", node.lineno, node.path)
            on_chain.add(current)
            chain.append(current)
            current = current.link_to
        for link in chain:
            final[link] = current
        return current


def _show(name):
    """A name for a message: printable and at most a short excerpt (common.text)."""
    return excerpt(name, 256)


class Tree:
    """A composefs tree: ``root`` is the root directory :class:`Node`."""

    def __init__(self, root=None):
        if root is None:
            root = Node(S_IFDIR | 0o755)
        if root.type != S_IFDIR or root.link_to is not None:
            raise ComposefsError("Root must be a directory")
        self.root = root

    # --- constructors ----------------------------------------------------
    @classmethod
    def from_dumpfile(cls, src, strict=False):
        """Parse a composefs-dump(5) file: a path, or a binary file object.

        ``strict`` is upstream's ``CFS_PARSE_STRICT``: a trailing newline is
        required, rdev must be 0 on non-devices and a symlink's size must equal
        its target's length (and it can have no content).
        """
        from ansible_collections.composefs.fleet.plugins.module_utils.composefs import dumpfile
        return dumpfile.parse(src, strict=strict)

    @classmethod
    def from_directory(cls, path, use_epoch=False, skip_xattrs=False, user_xattrs=False,
                       skip_devices=False, hardlinks=False, compute_digests=True, workers=None):
        """Build a tree from directory ``path`` on disk, as ``mkcomposefs DIR`` does.

        - ``use_epoch``: all mtimes 0 (``--use-epoch``).
        - ``skip_xattrs``: no xattrs (``--skip-xattrs``); ``user_xattrs``: only
          ``user.*`` xattrs (``--user-xattrs``). They exclude each other.
        - ``skip_devices``: leave out block and character devices (``--skip-devices``).
        - ``hardlinks``: False (default) does what mkcomposefs 1.0.x does: every
          path is its own inode with nlink 1, hardlinks are lost. True keeps
          them: later paths of an inode become hardlinks to the first one met
          (each directory's entries are read in byte order before its
          subdirectories are entered, in byte order), and its nlink counts the
          paths in the tree.
        - Regular files of 1 to 64 bytes are inlined; larger ones get their
          fs-verity SHA-256 ``digest`` and the payload ``XX/62hex``
          (``compute_digests=False`` leaves both unset), hashed by
          ``fsverity.digest.DigestPool`` with ``workers`` workers (default:
          the CPU count).
        """
        if skip_xattrs and user_xattrs:
            raise ComposefsError("skip_xattrs and user_xattrs exclude each other")
        walker = _DirectoryWalker(use_epoch, skip_xattrs, user_xattrs, skip_devices, hardlinks)
        if not compute_digests:
            with paused_gc():
                return walker.walk(path)
        from ansible_collections.composefs.fleet.plugins.module_utils.fsverity.digest import DigestPool
        # SHA-256, 4096-byte blocks, no salt: what mkcomposefs uses. The workers hash
        # files while the walk goes on.
        with DigestPool(workers) as pool:
            walker.digest_pool = pool
            with paused_gc():
                tree = walker.walk(path)
            walker.collect_digests()
        return tree

    # --- access ------------------------------------------------------------
    def lookup(self, path):
        """The node at absolute ``path`` (bytes or str), or None. Hardlinks are not followed."""
        if isinstance(path, str):
            path = os.fsencode(path)
        node = self.root
        for part in path.split(b"/"):
            if not part:
                continue
            node = node.lookup(part)
            if node is None:
                return None
        return node

    def add(self, path, node):
        """Add ``node`` at absolute ``path``; the parent directory must exist."""
        if isinstance(path, str):
            path = os.fsencode(path)
        parent_path, _sep, name = path.rstrip(b"/").rpartition(b"/")
        parent = self.lookup(parent_path or b"/")
        if parent is None:
            raise ComposefsError("Parent directory missing for %s" % _show(path))
        return parent.add_child(name, node)

    def walk(self):
        """Yield ``(path, node)`` depth-first, children in byte order, root first."""
        stack = [(b"/", self.root)]
        while stack:
            path, node = stack.pop()
            yield path, node
            if node.children:
                prefix = path if path == b"/" else path + b"/"
                for name, child in sorted(node.children.items(), reverse=True):
                    stack.append((prefix + name, child))

    def validate(self):
        """Check every node as the image writer would; raises ComposefsError."""
        links = LinkResolver()
        for _path, node in self.walk():
            if node.link_to is not None:
                if links.resolve(node).is_dir():
                    raise ComposefsError("Hardlink to a directory", node.lineno, node.path)
                continue
            node.validate()

    def to_dumpfile(self, out=None):
        """Write composefs-dump(5) text; returns bytes when ``out`` is None."""
        from ansible_collections.composefs.fleet.plugins.module_utils.composefs import dumpfile
        return dumpfile.write(self, out)

    def release(self):
        """Unlink every node from its parent, so that the tree is freed as soon as it is dropped.

        Parent links make every directory a reference cycle, which only the cyclic
        garbage collector frees, by walking every object of the tree once more. After
        this the nodes keep their names and children, but :attr:`Node.path` gives
        only a node's name: call it when the tree is no longer needed.
        """
        stack = [self.root]
        while stack:
            for child in stack.pop().children.values():
                child.parent = None
                if child.children:
                    stack.append(child)

    def __len__(self):
        count = 0
        for _item in self.walk():
            count += 1
        return count


_entry_name = operator.attrgetter("name")


class _DirectoryWalker:
    """lcfs_build(): read a directory tree with lstat, readlink and xattrs."""

    def __init__(self, use_epoch, skip_xattrs, user_xattrs, skip_devices, hardlinks):
        self.use_epoch = use_epoch
        self.skip_xattrs = skip_xattrs
        self.user_xattrs = user_xattrs
        self.skip_devices = skip_devices
        self.hardlinks = hardlinks
        self.to_digest = []  # (fs path, node) of regular files above the inline size
        self.digest_pool = None  # fsverity.digest.DigestPool hashing them as they are found
        self.inodes = {}  # (st_dev, st_ino) -> first node, when keeping hardlinks

    def _fail(self, fspath, exc):
        return ComposefsError("error accessing %s: %s" % (_show(os.fsencode(fspath)), exc.strerror or exc))

    def _load(self, fspath, st):
        """lcfs_load_node_from_file() for an lstat result ``st``."""
        mode = st.st_mode
        t = stat.S_IFMT(mode)
        node = Node(mode)
        node.uid = st.st_uid & _U32
        node.gid = st.st_gid & _U32
        node.rdev = st.st_rdev & _U32
        node.size = st.st_size
        if not self.use_epoch:
            node.mtime_sec = st.st_mtime_ns // 1000000000
            node.mtime_nsec = st.st_mtime_ns % 1000000000
        if t == S_IFREG:
            if 0 < st.st_size <= RECOMMENDED_INLINE_CONTENT_MAX:
                try:
                    fd = os.open(fspath, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0))
                    try:
                        data = os.read(fd, st.st_size)
                        while len(data) < st.st_size:
                            more = os.read(fd, st.st_size - len(data))
                            if not more:
                                break
                            data += more
                    finally:
                        os.close(fd)
                except OSError as exc:
                    raise self._fail(fspath, exc)
                if len(data) != st.st_size:
                    raise ComposefsError("error accessing %s: file shrank while read" % _show(os.fsencode(fspath)))
                node.content = data
            elif st.st_size > 0:
                self.to_digest.append((fspath, node))
                if self.digest_pool is not None:
                    self.digest_pool.add(fspath)
        elif t == S_IFLNK:
            try:
                target = os.readlink(fspath)
            except OSError as exc:
                raise self._fail(fspath, exc)
            node.set_symlink_target(os.fsencode(target))
        if not self.skip_xattrs:
            self._read_xattrs(fspath, node)
        return node

    def _read_xattrs(self, fspath, node):
        try:
            names = os.listxattr(fspath, follow_symlinks=False)
        except OSError as exc:
            if exc.errno in (errno.ENOTSUP, errno.EOPNOTSUPP):
                return  # no xattr support on this filesystem: no xattrs
            raise self._fail(fspath, exc)
        for name in names:
            if self.user_xattrs and not name.startswith("user."):
                continue
            try:
                value = os.getxattr(fspath, name, follow_symlinks=False)
            except OSError as exc:
                raise self._fail(fspath, exc)
            try:
                node.set_xattr(os.fsencode(name), value)
            except ComposefsError as exc:
                raise exc.with_context(path=os.fsencode(fspath))

    def walk(self, top):
        # Bytes paths throughout: names come back as bytes, nothing is encoded per file.
        top = os.fsencode(top)
        try:
            st = os.lstat(top)
        except OSError as exc:
            raise self._fail(top, exc)
        root = self._load(top, st)
        if root.type != S_IFDIR:
            raise ComposefsError("%s is not a directory" % _show(os.fsencode(top)))
        stack = [(top, root)]
        while stack:
            dirpath, dirnode = stack.pop()
            try:
                entries = list(os.scandir(dirpath))
            except OSError as exc:
                raise self._fail(dirpath, exc)
            entries.sort(key=_entry_name)
            subdirs = []
            children = dirnode.children
            for entry in entries:
                name = entry.name
                fspath = entry.path
                try:
                    st = entry.stat(follow_symlinks=False)
                except OSError as exc:
                    raise self._fail(fspath, exc)
                t = stat.S_IFMT(st.st_mode)
                if self.skip_devices and t in (S_IFBLK, S_IFCHR):
                    continue
                if self.hardlinks and t != S_IFDIR and st.st_nlink > 1:
                    key = (st.st_dev, st.st_ino)
                    first = self.inodes.get(key)
                    if first is not None:
                        link = Node(first.mode, link_to=first)
                        first.nlink += 1
                        self._add(dirnode, name, link, fspath)
                        continue
                node = self._load(fspath, st)
                if self.hardlinks and t != S_IFDIR and st.st_nlink > 1:
                    self.inodes[(st.st_dev, st.st_ino)] = node
                # What add_child() checks holds for the names of one directory read
                # by scandir(): unique, no "/" or NUL, not "." or "..", at most 255 bytes.
                children[name] = node
                node.parent = dirnode
                node.name = name
                if t == S_IFDIR:
                    subdirs.append((fspath, node))
            # Descend in byte order: pop the first subdirectory first.
            subdirs.reverse()
            stack.extend(subdirs)
        return Tree(root)

    @staticmethod
    def _add(dirnode, name, node, fspath):
        try:
            dirnode.add_child(name, node)
        except ComposefsError as exc:
            raise exc.with_context(path=os.fsencode(fspath))

    def collect_digests(self):
        """Give every file found its digest and payload from the digest pool."""
        # The pool answers in the order the paths were added: the order of to_digest.
        found = self.to_digest
        count = 0
        for (fspath, result), (added, node) in zip(self.digest_pool.results(), found):
            if fspath is not added and fspath != added:
                raise AssertionError("digest pool answered out of order")
            if isinstance(result, Exception):
                raise self._fail(fspath, result)
            node.digest = result
            hexed = result.hex()
            node.payload = (hexed[:2] + "/" + hexed[2:]).encode("ascii")  # digest_to_payload()
            count += 1
        if count != len(found):
            raise AssertionError("digest pool answered %d of %d files" % (count, len(found)))
