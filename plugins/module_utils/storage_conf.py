# -*- coding: utf-8 -*-
# Copyright: composefs.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Facts about containers-storage's storage.conf shared by the storage_conf modules and action plugin.

Standard library only: the modules import this on the managed node, the action
plugin and plugin_utils import it on the controller. Nothing here parses TOML.

Sources (containers/storage git history and containers/podman go.mod):

- ``[storage.options.overlay] use_composefs`` is read at run time since
  containers/storage v1.52.0 (commit "config: new option use_composefs",
  pull request containers/storage#1769). Podman 4.8 and 4.9.x pin storage
  v1.51.0, which only had composefs behind a build tag; Podman 5.0.0 is the
  first release on storage v1.53.0. So composefs needs Podman >= 5.0.0.
- ``pull_options`` is a ``map[string]string``; storage reads each boolean key as
  ``strings.ToLower(value) == "true"`` and ignores unknown keys.
  ``convert_images`` appears in storage v1.53.0 (Podman 5.0) and
  ``insecure_allow_unpredictable_image_contents`` in v1.57 (Podman 5.4).
- Every ``[storage.options.overlay]`` field is a Go string: a TOML boolean there
  (or in ``pull_options``) is a decode error for the whole file.
- storage writes composefs blobs with ``mkcomposefs --from-file``, which
  composefs added in 1.0.1.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import errno
import os
import re
import stat

# The first Podman release whose containers/storage honours use_composefs.
MIN_PODMAN_COMPOSEFS = (5, 0, 0)
# The first Podman release that reads storage.conf drop-ins (container-libs' configfile package).
MIN_PODMAN_DROPINS = (6, 0, 0)
# mkcomposefs gained --from-file (used by containers/storage) in composefs 1.0.1.
MIN_MKCOMPOSEFS = (1, 0, 1)

MAIN_FILE = "/etc/containers/storage.conf"
VENDOR_FILE = "/usr/share/containers/storage.conf"
ROOTFUL_DROPIN_DIR = "/etc/containers/storage.rootful.conf.d"
USER_MAIN_FILE = "~/.config/containers/storage.conf"
# Drop-in directories a rootful Podman >= 6 reads, in the order containers-storage
# walks them; a later directory's file shadows an earlier one with the same name.
ROOTFUL_DROPIN_DIRS = (
    "/usr/share/containers/storage.conf.d",
    "/usr/share/containers/storage.rootful.conf.d",
    "/etc/containers/storage.conf.d",
    "/etc/containers/storage.rootful.conf.d",
    "~/.config/containers/storage.conf.d",
)
DEFAULT_GRAPHROOT = "/var/lib/containers/storage"
DEFAULT_DROPIN_NAME = "50-composefs-fleet.conf"

# pull_options keys containers/storage reads: kind and the first Podman that reads it
# (None: older than any Podman with composefs).
KNOWN_PULL_OPTIONS = {
    "enable_partial_images": ("bool", None),
    "use_hard_links": ("bool", None),
    "ostree_repos": ("str", None),
    "convert_images": ("bool", (5, 0, 0)),
    "insecure_allow_unpredictable_image_contents": ("bool", (5, 4, 0)),
}

# [storage.options.overlay] keys other than use_composefs (its own option), with their kind.
KNOWN_OVERLAY_OPTIONS = {
    "ignore_chown_errors": "bool",
    "mountopt": "str",
    "mount_program": "str",
    "size": "str",
    "inodes": "str",
    "skip_mount_home": "bool",
    "force_mask": "str",
}

# Keys of the [storage] table that need `podman system reset` when they change.
RESET_KEYS = ("driver", "graphroot", "runroot")

# The storage_conf module's options: the module (for ansible-doc and
# validate-modules) and the action plugin (which validates them) share this.
ARGUMENT_SPEC = dict(
    use_composefs=dict(type="bool"),
    pull_options=dict(type="dict"),
    overlay_options=dict(type="dict"),
    driver=dict(type="str"),
    graphroot=dict(type="path"),
    runroot=dict(type="path"),
    scope=dict(type="str", choices=["rootful", "path"]),
    path=dict(type="path"),
    layout=dict(type="str", choices=["auto", "file", "dropin"], default="auto"),
    dropin_name=dict(type="str", default=DEFAULT_DROPIN_NAME),
    mode=dict(type="raw"),
    owner=dict(type="str"),
    group=dict(type="str"),
    follow=dict(type="bool", default=True),
    backup=dict(type="bool", default=False),
    podman_version_check=dict(type="bool", default=True),
)
REQUIRED_IF = [("scope", "path", ("path",))]


def parse_version(text):
    """The first dotted version in ``text`` as a tuple of three ints, or None."""
    if not text:
        return None
    match = re.search(r"(\d+)\.(\d+)(?:\.(\d+))?", text)
    if not match:
        return None
    return (int(match.group(1)), int(match.group(2)), int(match.group(3) or 0))


def version_string(version):
    return ".".join(str(part) for part in version) if version else None


# --------------------------------------------------------------------------
# Reading and resolving files on the managed node (storage_conf_info, storage_conf_write)
# --------------------------------------------------------------------------


class UnsafeFile(Exception):
    """A file or link the storage_conf modules refuse to read or write through; the message says why."""


def trusted_uid(uid):
    """Files and links the modules trust: owned by root or by the user the module runs as."""
    return uid in (0, os.geteuid())


def resolve_path(path, max_links=40):
    """(resolved, is_link): ``path`` with every symlink resolved, like realpath, but refusing links owned by
    anyone other than root or the module's user (a planted link) and dangling links (following one would
    create a file wherever it points). A missing last component is fine: that is a file to create.
    Raises UnsafeFile."""
    if not path.startswith("/"):
        raise UnsafeFile("%s is not an absolute path" % path)
    pending = [part for part in path.split("/") if part]
    resolved = "/"
    hops = 0
    is_link = False
    while pending:
        part = pending.pop(0)
        if part == ".":
            continue
        if part == "..":
            resolved = os.path.dirname(resolved)
            continue
        candidate = os.path.join(resolved, part)
        try:
            st = os.lstat(candidate)
        except FileNotFoundError:
            if is_link:
                raise UnsafeFile("%s is a symlink to %s, which does not exist: create the target or point the link "
                                 "at an existing file" % (path, candidate))
            return os.path.join(candidate, *pending), is_link
        except OSError as exc:
            raise UnsafeFile("cannot look up %s: %s" % (candidate, exc.strerror))
        if not stat.S_ISLNK(st.st_mode):
            resolved = candidate
            continue
        if not trusted_uid(st.st_uid):
            raise UnsafeFile("%s is a symlink owned by uid %d, neither root nor the user the module runs as "
                             "(uid %d): it is not followed" % (candidate, st.st_uid, os.geteuid()))
        hops += 1
        if hops > max_links:
            raise UnsafeFile("%s: too many levels of symbolic links" % path)
        is_link = is_link or not pending  # the last component itself is a link
        target = os.readlink(candidate)
        if target.startswith("/"):
            resolved = "/"
        pending = [p for p in target.split("/") if p] + pending
    return resolved, is_link


_TOML_KEY = r"""(?:[A-Za-z0-9_-]+|"(?:[^"\\]|\\.)*"|'[^']*')"""
_TOML_KEYPATH = r"%s(?:[ \t]*\.[ \t]*%s)*" % (_TOML_KEY, _TOML_KEY)
_TOML_HEADER = re.compile(r"^[ \t]*\[\[?[ \t]*%s[ \t]*\]\]?[ \t]*(?:#.*)?$" % _TOML_KEYPATH)
_TOML_ASSIGN = re.compile(r"^[ \t]*%s[ \t]*=" % _TOML_KEYPATH)
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def toml_like_problem(text):
    """Why ``text`` does not look like a TOML file, or None.

    A lexical check for the managed node, which has no TOML parser before Python 3.11: every logical line is
    blank, a comment, a [table] header or ``key = value``, strings and brackets close. The controller parses
    for real; this only keeps other files (a planted link to /etc/shadow, binaries) from being returned. The
    message quotes nothing of the content."""
    bad = _CONTROL.search(text)
    if bad:
        return "it contains control character U+%04X at offset %d: not a text file" % (ord(bad.group()), bad.start())
    depth = 0
    multiline = None
    for lineno, line in enumerate(text.split("\n"), 1):
        line = line[:-1] if line.endswith("\r") else line
        i = 0
        if multiline is None and depth == 0:
            stripped = line.strip()
            if not stripped or stripped.startswith("#"):
                continue
            if stripped.startswith("["):
                if _TOML_HEADER.match(line):
                    continue
                return "line %d is not a TOML table header" % lineno
            match = _TOML_ASSIGN.match(line)
            if not match:
                return "line %d is not a TOML table header, key = value or comment" % lineno
            i = match.end()
        while i < len(line):
            if multiline is not None:
                end = line.find(multiline, i)
                while end > 0 and multiline == '"""' and _escaped(line, end):
                    end = line.find(multiline, end + 1)
                if end < 0:
                    break
                i = end + 3
                multiline = None
                continue
            char = line[i]
            if char == "#":
                break
            if char in "\"'":
                if line.startswith(char * 3, i):
                    multiline = char * 3
                    i += 3
                    continue
                end = line.find(char, i + 1)
                while end > 0 and char == '"' and _escaped(line, end):
                    end = line.find(char, end + 1)
                if end < 0:
                    break  # not valid TOML, but the next line is still checked: the controller names the error
                i = end + 1
                continue
            if char in "[{":
                depth += 1
            elif char in "]}":
                depth -= 1
                if depth < 0:
                    return "line %d closes a bracket that was never opened" % lineno
            i += 1
    if multiline is not None:
        return "a multi-line string never ends"
    if depth:
        return "an array or inline table never ends"
    return None


def _escaped(line, pos):
    """Whether the character at ``pos`` is escaped by an odd number of backslashes."""
    count = 0
    while pos - count - 1 >= 0 and line[pos - count - 1] == "\\":
        count += 1
    return count % 2 == 1


def read_config_text(path, max_size):
    """(bytes, text) of the regular file ``path`` (already resolved), or raise UnsafeFile.

    Opened with O_NOFOLLOW (a link swapped in since the path was resolved is refused) and O_NONBLOCK (a FIFO
    never hangs the module); read only if it is a regular file owned by root or the module's user, at most
    ``max_size`` bytes, UTF-8 and TOML-like."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | getattr(os, "O_NOCTTY", 0))
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UnsafeFile("%s became a symlink while it was being read: not followed" % path)
        raise UnsafeFile("cannot open %s: %s" % (path, exc.strerror))
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UnsafeFile("%s is not a regular file" % path)
        if not trusted_uid(st.st_uid):
            raise UnsafeFile("%s is owned by uid %d, neither root nor the user the module runs as (uid %d): not read"
                             % (path, st.st_uid, os.geteuid()))
        if st.st_size > max_size:
            raise UnsafeFile("%s is %d bytes, larger than max_size %d" % (path, st.st_size, max_size))
        chunks = []
        size = 0
        while size <= max_size:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        data = b"".join(chunks)
    except OSError as exc:
        raise UnsafeFile("cannot read %s: %s" % (path, exc.strerror))
    finally:
        os.close(fd)
    if len(data) > max_size:
        raise UnsafeFile("%s is larger than max_size %d" % (path, max_size))
    nul = data.find(b"\0")
    if nul >= 0:
        raise UnsafeFile("%s holds binary data (a NUL byte at offset %d), not a TOML file: not returned" % (path, nul))
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UnsafeFile("%s is not UTF-8 text (byte 0x%02x at offset %d): not returned"
                         % (path, data[exc.start], exc.start))
    problem = toml_like_problem(text)
    if problem:
        raise UnsafeFile("%s does not look like a TOML file (%s): not returned" % (path, problem))
    return data, text
