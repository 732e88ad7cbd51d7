# -*- coding: utf-8 -*-
# Copyright: composefs.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""composefs-dump(5): the text form of a composefs tree.

One file per line, 11 space-separated fields then ``KEY=VALUE`` xattrs::

    PATH SIZE MODE NLINK UID GID RDEV MTIME PAYLOAD CONTENT DIGEST [XATTR...]

MODE is octal, prefixed by ``@`` for a hardlink (whose PAYLOAD is the target
path; its other fields are ignored). MTIME is ``SECONDS.NANOSECONDS``. Optional
fields (PAYLOAD, CONTENT, DIGEST) are ``-`` when unset. Fields are escaped with
``\\\\``, ``\\n``, ``\\r``, ``\\t`` and ``\\xHH``; a field that really is ``-`` is
written ``\\x2d``, and ``=`` is escaped in xattrs.

:func:`parse` accepts exactly what ``mkcomposefs --from-file`` 1.0.8 accepts
(including its quirks: numbers are read like C ``strtoull``, names stop at an
escaped NUL byte), with ``strict=True`` matching ``CFS_PARSE_STRICT=1``. It adds
two rejections where libcomposefs would go on to write a broken image: a
hardlink whose target is a directory, and a DIGEST that is not 64 hex digits.
Every problem raises :class:`ComposefsError` naming the line.

:func:`write` prints a tree the way ``composefs-info dump`` does, with xattrs in
byte order.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import gzip
import io
from binascii import unhexlify
import os
import re

from ansible_collections.composefs.fleet.plugins.module_utils.common.regular_file import open_regular
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
    VALID_TYPES,
    XATTR_ENTRY_OVERHEAD,
    XATTR_HEADER_SIZE,
    XATTR_NAME_MAX,
    XATTR_SPACE_MAX_EXTERNAL,
    XATTR_VALUE_MAX,
    LinkResolver,
    Node,
    Tree,
    paused_gc,
)

FIELD_NAMES = ("PATH", "SIZE", "MODE", "NLINK", "UID", "GID", "RDEV", "MTIME", "PAYLOAD", "CONTENT", "DIGEST")
# mkcomposefs caps what follows the fixed fields (the xattrs) at 65535 bytes.
MAX_XATTRS_TEXT = 0xFFFF

_U32 = 0xFFFFFFFF
_U64 = 0xFFFFFFFFFFFFFFFF

# --- escaping -----------------------------------------------------------------

_HEX = "0123456789abcdefABCDEF"
_UNESCAPE_MAP = {b"\\\\": b"\\", b"\\n": b"\n", b"\\r": b"\r", b"\\t": b"\t"}
for _a in _HEX:
    for _b in _HEX:
        _UNESCAPE_MAP[("\\x" + _a + _b).encode("ascii")] = bytes((int(_a + _b, 16),))
del _a, _b
# A backslash and what it escapes: "x" and up to two more bytes, or any byte, or nothing.
_UNESCAPE_RE = re.compile(rb"\\(?:x.{0,2}|.)?", re.S)


class _EscapeError(Exception):
    pass


def _unescape_repl(match):
    seq = match.group()
    try:
        return _UNESCAPE_MAP[seq]
    except KeyError:
        pass
    if len(seq) == 1:
        raise _EscapeError("No character after escape")
    if seq[1:2] == b"x":
        if len(seq) < 4:
            raise _EscapeError("No hex characters after hex escape")
        raise _EscapeError("Invalid hex characters after hex escape")
    raise _EscapeError("Unsupported escape type %s" % seq[1:2].decode("latin-1"))


def unescape(field):
    """Decode one escaped field (bytes); raises ComposefsError on a bad escape."""
    if field.find(b"\\") < 0:
        return field
    try:
        return _UNESCAPE_RE.sub(_unescape_repl, field)
    except _EscapeError as exc:
        raise ComposefsError(str(exc))


# Bytes printed as they are: isgraph() in the C locale (0x21-0x7e) except the backslash,
# and for xattrs also except "=".
_ESCAPE_RE = re.compile(rb"[^\x21-\x5b\x5d-\x7e]")
_ESCAPE_EQUAL_RE = re.compile(rb"[^\x21-\x3c\x3e-\x5b\x5d-\x7e]")
_ESCAPE_MAP = {}
for _c in range(256):
    _ESCAPE_MAP[bytes((_c,))] = b"\\x%02x" % _c
_ESCAPE_MAP.update({b"\\": b"\\\\", b"\n": b"\\n", b"\r": b"\\r", b"\t": b"\\t"})
del _c


def _escape_repl(match):
    return _ESCAPE_MAP[match.group()]


def escape(data, equal=False, lone_dash=False):
    """Escape bytes for a dumpfile field.

    ``equal`` also escapes ``=`` (xattr names and values); ``lone_dash`` writes a
    field that is exactly ``-`` as ``\\x2d`` (optional fields).
    """
    if lone_dash and data == b"-":
        return b"\\x2d"
    return (_ESCAPE_EQUAL_RE if equal else _ESCAPE_RE).sub(_escape_repl, data)


# --- numbers -------------------------------------------------------------------

_C_SPACE = b" \t\n\v\f\r"
_DIGITS = {8: frozenset(b"01234567"), 10: frozenset(b"0123456789")}


def _strtoull(text, base):
    """C ``strtoull`` over the whole field: the value, or None when invalid.

    Leading white space and a sign are allowed, a negative number wraps modulo
    2**64 and an out-of-range one gives 2**64 - 1, as in C.
    """
    if text.isdigit():  # plain ASCII digits: the common case
        try:
            value = int(text, base)
        except ValueError:
            return None  # 8 or 9 in an octal number
        return value if value <= _U64 else _U64
    digits = _DIGITS[base]
    pos = 0
    end = len(text)
    while pos < end and text[pos] in _C_SPACE:
        pos += 1
    negative = False
    if pos < end and text[pos] in b"+-":
        negative = text[pos] == 0x2D
        pos += 1
    start = pos
    while pos < end and text[pos] in digits:
        pos += 1
    if pos == start or pos != end:
        return None
    value = int(text[start:end], base)
    if value > _U64:
        return _U64
    return (-value) & _U64 if negative else value


def _cstr(data):
    """What C sees of a decoded field: everything before the first NUL."""
    nul = data.find(b"\0")
    return data if nul < 0 else data[:nul]


_HEX_DIGEST_RE = re.compile(rb"[0-9a-fA-F]{64}")


# --- parsing -------------------------------------------------------------------


def _lines_with(data, byte):
    """The numbers (from 1) of the lines of ``data`` that contain ``byte``: one search of the whole input."""
    found = set()
    line = 1
    counted = 0
    pos = data.find(byte)
    while pos >= 0:
        line += data.count(b"\n", counted, pos)
        counted = pos
        found.add(line)
        end = data.find(b"\n", pos)
        if end < 0:
            break
        pos = data.find(byte, end)
    return found


class _Parser:
    def __init__(self, strict, data):
        self.strict = strict
        self.root = None
        self.fixups = []  # (node, target path or None, line number)
        # One search of the whole input each, instead of one per line (or per field):
        self.may_have_nul = data.find(b"\0") >= 0  # lines are searched for a NUL only if there is one
        self.escaped_lines = _lines_with(data, b"\\")  # the lines whose fields may hold escapes
        self.dirs = {}  # normalised path -> directory node, to find parents fast

    def fail(self, lineno, problem, path=None):
        return ComposefsError(problem, lineno, path)

    def field(self, parts, index, lineno, optional=False):
        raw = parts[index]
        if optional and raw == b"-":
            return None
        try:
            return unescape(raw)
        except ComposefsError as exc:
            raise self.fail(lineno, "Invalid %s field: %s" % (FIELD_NAMES[index], exc.problem))

    def number(self, parts, index, base, lineno):
        value = _strtoull(parts[index], base)
        if value is None:
            raise self.fail(lineno, "Invalid integer %s in %s field" % (_show(parts[index]), FIELD_NAMES[index]))
        return value

    def add_node(self, path, node, lineno):
        if path == b"/":
            if (node.mode & S_IFMT) != S_IFDIR:
                raise self.fail(lineno, "Root must be a directory", path)
            if self.root is not None:
                raise self.fail(lineno, "Can't have multiple roots", path)
            self.root = node
            node.parent = node.name = None
            node.children = {}
            self.dirs[b""] = node
            return
        if self.root is None:
            raise self.fail(lineno, "Root node not present", path)
        slash = path.rfind(b"/")
        if slash >= 0 and path[:1] == b"/":
            # Only "" (the root) and normalised directory paths are keys of self.dirs, so
            # a parent found here means the path is normalised (no "//", no "." or "..").
            parent = self.dirs.get(path[:slash])
            name = path[slash + 1:]
            if parent is not None and name and name != b"." and name != b".." \
                    and len(name) <= MAX_NAME_LENGTH and name not in parent.children:
                parent.children[name] = node
                node.parent = parent
                node.name = name
                if (node.mode & S_IFMT) == S_IFDIR:
                    self.dirs[path] = node
                return
        # Walk to the parent: slashes are separators, repeated ones ignored.
        parent = self.root
        rest = path
        while True:
            rest = rest.lstrip(b"/")
            slash = rest.find(b"/")
            if slash < 0:
                break
            children = parent.children
            child = children.get(rest[:slash]) if children is not None else None
            if child is None:
                raise self.fail(lineno, "Parent directory missing for %s" % _show(path), path)
            parent = child
            rest = rest[slash:]
        name = rest
        if parent.children is None:
            raise self.fail(lineno, "Parent must be a directory for %s" % _show(path), path)
        if name == b"." or name == b"..":
            raise self.fail(lineno, "Invalid . or .. in path: %s" % _show(path), path)
        if not name:
            raise self.fail(lineno, "Can't add child: empty file name in %s" % _show(path), path)
        if len(name) > MAX_NAME_LENGTH:
            raise self.fail(lineno, "Can't add child: file name longer than %d bytes" % MAX_NAME_LENGTH, path)
        if name in parent.children:
            raise self.fail(lineno, "Path %s already exist" % _show(path), path)
        parent.children[name] = node
        node.parent = parent
        node.name = name
        if (node.mode & S_IFMT) == S_IFDIR and path[:1] == b"/" and path.find(b"//") < 0:
            self.dirs[path] = node

    def lines(self, lines, lineno):
        """Parse ``lines``, the first being line ``lineno`` (one loop: no call per line)."""
        strict = self.strict
        may_have_nul = self.may_have_nul
        escaped_lines = self.escaped_lines
        dirs = self.dirs
        new_node = Node.__new__
        lineno -= 1
        for line in lines:
            lineno += 1
            if may_have_nul:
                nul = line.find(b"\0")
                if nul >= 0:
                    raise self.fail(lineno, "Invalid embedded NUL character at position %d" % nul)
            parts = line.split(b" ", 11)
            count = len(parts)
            if count == 11:
                rest = b""
            elif count == 12:
                rest = parts.pop()
            else:
                rest = b""
                parts.extend([b""] * (11 - count))
            (path, size_text, mode_text, nlink_text, uid_text, gid_text, rdev_text, mtime_text,
             payload, content, digest) = parts
            escaped = lineno in escaped_lines
            if escaped and path.find(b"\\") >= 0:
                path = _cstr(self.field(parts, 0, lineno))
            if not path:
                raise self.fail(lineno, "Invalid empty path")

            is_hardlink = False
            plain = mode_text.isdigit()
            if not plain and mode_text[:1] == b"@":
                is_hardlink = True
                mode_text = mode_text[1:]
                plain = mode_text.isdigit()
            if plain and len(mode_text) <= 21:
                try:
                    mode = int(mode_text, 8)
                except ValueError:
                    mode = None  # 8 or 9 in an octal number
            else:
                mode = _strtoull(mode_text, 8)
            if mode is None:
                raise self.fail(lineno, "Invalid integer %s in MODE field" % _show(mode_text), path)
            mode &= _U32
            ftype = mode & S_IFMT
            if ftype not in VALID_TYPES:
                raise self.fail(lineno, "Invalid mode %o" % mode, path)

            node = new_node(Node)
            node.mode = mode
            node.payload = node.content = node.digest = node.link_to = None
            node.xattrs = {}
            node.lineno = lineno  # (parent and name: set when the node is added)
            if is_hardlink:
                node.nlink = 1
                node.uid = node.gid = node.rdev = node.size = node.mtime_sec = node.mtime_nsec = 0
                node.children = None
                self.add_node(path, node, lineno)
                if ftype == S_IFDIR:
                    raise self.fail(lineno, "Directories can't be hardlinked", path)
                target = self.field(parts, 8, lineno, optional=True)
                self.fixups.append((node, None if target is None else _cstr(target), lineno))
                continue
            node.children = {} if ftype == S_IFDIR else None

            sec_text, dot, nsec_text = mtime_text.partition(b".")
            if (size_text.isdigit() and nlink_text.isdigit() and uid_text.isdigit() and gid_text.isdigit()
                    and rdev_text.isdigit() and sec_text.isdigit() and nsec_text.isdigit()):
                # Plain decimal numbers, the common case: what _strtoull gives, without its checks.
                size, nlink, uid, gid, rdev = int(size_text), int(nlink_text), int(uid_text), int(gid_text), int(rdev_text)
                mtime_sec, mtime_nsec = int(sec_text), int(nsec_text)
                # None of them is negative: if their sum is in range, each one is.
                if size + nlink + uid + gid + rdev + mtime_sec + mtime_nsec > _U64:
                    size, nlink, uid, gid, rdev, mtime_sec, mtime_nsec = [
                        min(value, _U64) for value in (size, nlink, uid, gid, rdev, mtime_sec, mtime_nsec)]
                # No number can be wrong here, so the node goes in now (add_node() inline when
                # its parent is known); elsewhere a wrong path is reported before a wrong number.
                slash = path.rfind(b"/")
                # (a key of dirs is "" or starts with "/": a parent found means path starts with "/")
                parent = dirs.get(path[:slash]) if slash >= 0 else None
                name = path[slash + 1:]
                if (parent is not None and name and name != b"." and name != b".." and len(name) <= MAX_NAME_LENGTH
                        and name not in parent.children):
                    parent.children[name] = node
                    node.parent = parent
                    node.name = name
                    if ftype == S_IFDIR:
                        dirs[path] = node
                else:
                    self.add_node(path, node, lineno)
            else:
                self.add_node(path, node, lineno)
                size = self.number(parts, 1, 10, lineno)
                nlink = self.number(parts, 3, 10, lineno)
                uid = self.number(parts, 4, 10, lineno)
                # mkcomposefs 1.0.8 reports a bad GID or RDEV only when UID is 0 (it
                # tests the wrong variable); otherwise the field silently reads as 0.
                gid = _strtoull(gid_text, 10)
                if gid is None:
                    if uid == 0:
                        self.number(parts, 5, 10, lineno)
                    gid = 0
                rdev = _strtoull(rdev_text, 10)
                if rdev is None:
                    if uid == 0:
                        self.number(parts, 6, 10, lineno)
                    rdev = 0
                mtime_sec = _strtoull(sec_text, 10)
                mtime_nsec = _strtoull(nsec_text, 10) if mtime_sec is not None else None
                if mtime_nsec is None:
                    bad = sec_text if mtime_sec is None else nsec_text
                    raise self.fail(lineno, "Invalid integer %s in MTIME field" % _show(bad), path)

            if payload == b"-":
                payload = None
            elif escaped and payload.find(b"\\") >= 0:
                payload = _cstr(self.field(parts, 8, lineno))
            if content == b"-":
                content = None
            else:
                if escaped and content.find(b"\\") >= 0:
                    content = self.field(parts, 9, lineno)
                if len(content) != size:
                    raise self.fail(lineno, "Invalid content size %d, must match size %d" % (len(content), size), path)
            if digest == b"-":
                digest = None
            elif escaped and digest.find(b"\\") >= 0:
                digest = self.field(parts, 10, lineno)

            node.size = size  # a symlink's is its target's length, set below
            if (nlink | uid | gid | mtime_nsec) > _U32:  # (all are at most 2**64 - 1 here)
                nlink &= _U32
                uid &= _U32
                gid &= _U32
                mtime_nsec &= _U32
            node.nlink = nlink
            node.uid = uid
            node.gid = gid
            if ftype == S_IFCHR or ftype == S_IFBLK:
                node.rdev = rdev & _U32
            else:
                node.rdev = 0
                if strict and rdev != 0:
                    raise self.fail(lineno, "Non-zero devnum on non-device", path)
            node.mtime_sec = mtime_sec - (1 << 64) if mtime_sec >> 63 else mtime_sec  # a signed 64-bit number
            node.mtime_nsec = mtime_nsec

            if ftype == S_IFLNK:
                if not payload:
                    raise self.fail(lineno, "Invalid symlink: no target", path)
                if len(payload) > MAX_PAYLOAD_LENGTH:
                    raise self.fail(lineno, "Invalid symlink: target of %d bytes, longer than %d"
                                    % (len(payload), MAX_PAYLOAD_LENGTH), path)
                node.payload = payload
                node.size = len(payload)
                if strict:
                    if size != len(payload):
                        raise self.fail(lineno, "Invalid symlink size %d, must match size %d" % (len(payload), size), path)
                    if content:
                        raise self.fail(lineno, "Symlink cannot have content", path)
            else:
                if payload is not None and len(payload) > MAX_PAYLOAD_LENGTH:
                    raise self.fail(lineno, "Invalid payload: %d bytes, longer than %d"
                                    % (len(payload), MAX_PAYLOAD_LENGTH), path)
                node.payload = payload
                if content is not None:
                    if len(content) > INLINE_CONTENT_MAX:
                        raise self.fail(lineno, "Inline content size %d exceeds maximum %d"
                                        % (len(content), INLINE_CONTENT_MAX), path)
                    node.content = content or None
                    node.size = len(content)

            if digest is not None:
                digest = _cstr(digest)
                if digest:
                    # Like libcomposefs, only the first 64 hex digits count.
                    if not _HEX_DIGEST_RE.match(digest):
                        raise self.fail(lineno, "Invalid digest %s: not 64 hex digits" % _show(digest), path)
                    node.digest = unhexlify(digest[:64])

            if len(rest) > MAX_XATTRS_TEXT:
                raise self.fail(lineno, "Too many xattrs", path)
            if rest:
                self.xattrs(node, rest, lineno, path)

    def xattrs(self, node, rest, lineno, path):
        pieces = rest.split(b" ")
        if rest.endswith(b" "):
            pieces.pop()
        xattrs = node.xattrs
        used = 0
        for piece in pieces:
            raw_key, eq, raw_value = piece.partition(b"=")
            if not eq:
                raise self.fail(lineno, "Missing = in xattr %s" % _show(piece[:64]), path)
            try:
                key = _cstr(unescape(raw_key))
                value = unescape(raw_value)
            except ComposefsError as exc:
                raise self.fail(lineno, "Invalid xattr: %s" % exc.problem, path)
            if not key or len(key) > XATTR_NAME_MAX:
                raise self.fail(lineno, "Can't set xattr %s: name must be 1 to %d bytes"
                                % (_show(key[:64]), XATTR_NAME_MAX), path)
            if len(value) > XATTR_VALUE_MAX:
                raise self.fail(lineno, "Can't set xattr %s: value of %d bytes is longer than %d"
                                % (_show(key), len(value), XATTR_VALUE_MAX), path)
            old = xattrs.pop(key, None)
            if old is not None:
                used = used - (XATTR_ENTRY_OVERHEAD + len(key) + len(old)) if xattrs else 0
            need = XATTR_ENTRY_OVERHEAD + len(key) + len(value)
            if not xattrs:
                need += XATTR_HEADER_SIZE
            if used + need > XATTR_SPACE_MAX_EXTERNAL:
                raise self.fail(lineno, "Can't set xattr %s: the file's xattrs would take %d bytes, over the limit of %d"
                                % (_show(key), used + need, XATTR_SPACE_MAX_EXTERNAL), path)
            xattrs[key] = value
            used += need

    def finish(self):
        if self.root is None:
            raise ComposefsError("No files in dump file")
        root = self.root
        # mkcomposefs resolves hardlinks last, in reverse order of appearance.
        for node, target_path, lineno in reversed(self.fixups):
            if target_path is None:
                raise self.fail(lineno, "No target path for the hardlink", node.path)
            target = root
            for part in target_path.split(b"/"):
                if part:
                    children = target.children
                    target = children.get(part) if children is not None else None
                    if target is None:
                        break
            if target is None:
                raise self.fail(lineno, "No target at %s for hardlink" % _show(target_path), node.path)
            if target is node:
                raise self.fail(lineno, "Self-referential hardlink %s" % _show(target_path), node.path)
            node.link_to = target
        links = LinkResolver()
        for node, target_path, lineno in self.fixups:
            final = links.resolve(node)
            if final.children is not None:
                raise self.fail(lineno, "Hardlink target %s is a directory" % _show(target_path), node.path)
        return Tree(root)


def _show(data):
    """Input bytes for a message: printable and at most a short excerpt (common.text)."""
    return excerpt(data, 256)


def _read_source(src):
    if isinstance(src, (bytes, bytearray, memoryview)):
        return bytes(src)
    if isinstance(src, str) or hasattr(src, "__fspath__"):
        path = os.fspath(src)
        # Non-blocking open and fstat: a FIFO or device is refused, never waited on.
        raw = os.fdopen(open_regular(path, what="dumpfile"), "rb")
        with (gzip.GzipFile(fileobj=raw) if str(path).endswith(".gz") else raw) as handle:
            try:
                return handle.read()
            finally:
                raw.close()
    data = src.read()
    if isinstance(data, str):
        raise TypeError("dumpfiles are read from binary file objects")
    return data


def parse(src, strict=False):
    """Parse a dumpfile into a :class:`Tree`.

    ``src`` is a path (``*.gz`` is decompressed), a binary file object or bytes.
    ``strict`` matches upstream's ``CFS_PARSE_STRICT=1``.
    """
    data = _read_source(src)
    lines = data.split(b"\n")
    partial = lines.pop()  # after the last newline: empty when the file ends with one
    parser = _Parser(strict, data)
    with paused_gc():
        parser.lines(lines, 1)
        if partial:
            if strict:
                raise ComposefsError("Missing trailing newline", len(lines) + 1)
            parser.lines([partial], len(lines) + 1)
        return parser.finish()


# --- writing ----------------------------------------------------------------------


def _node_line(path, node, links):
    target = node.link_to
    if target is not None:
        shown = links.resolve(node)
        fields = [escape(path), b"%d" % shown.size, b"@%o" % shown.mode]
        payload = target.path
    else:
        shown = node
        size = node.size
        if (node.mode & S_IFMT) == S_IFLNK:
            size = len(node.payload or b"")
        fields = [escape(path), b"%d" % size, b"%o" % node.mode]
        payload = node.payload
    fields.append(b"%d %d %d %d %d.%d" % (shown.nlink, shown.uid, shown.gid, shown.rdev,
                                          shown.mtime_sec, shown.mtime_nsec))
    fields.append(b"-" if payload is None else escape(payload, lone_dash=True))
    content = shown.content
    fields.append(b"-" if content is None else escape(content, lone_dash=True))
    fields.append(b"-" if shown.digest is None else shown.digest.hex().encode("ascii"))
    if shown.xattrs:
        for key, value in sorted(shown.xattrs.items()):
            fields.append(escape(key, equal=True) + b"=" + escape(value, equal=True))
    return b" ".join(fields)


def write(tree, out=None):
    """Write ``tree`` as a dumpfile to binary file object ``out``; returns bytes when ``out`` is None.

    Files come depth-first with children in byte order, the root first, one
    line each, newline-terminated.
    """
    links = LinkResolver()
    lines = [_node_line(path, node, links) for path, node in tree.walk()]
    lines.append(b"")
    data = b"\n".join(lines)
    if out is None:
        return data
    out.write(data)
    return None


def dumps(tree):
    """The dumpfile of ``tree`` as bytes."""
    return write(tree)


def loads(data, strict=False):
    """Parse dumpfile bytes into a :class:`Tree`."""
    return parse(io.BytesIO(data), strict=strict)
