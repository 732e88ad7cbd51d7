# -*- coding: utf-8 -*-
# Copyright: composefs.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Persistence across reboots: one ``/etc/fstab`` line of type ``composefs`` per mount.

Why fstab and not a systemd ``.mount`` unit: at boot both end in the same
place, ``mount(8)`` running ``/sbin/mount.composefs`` (a ``.mount`` unit with
``Type=composefs`` does exactly that, and systemd-fstab-generator turns the fstab
line into such a unit), so neither can use this module's own mount code at boot
and both need the composefs package. fstab works with and without systemd, is
what ``mount -a`` and ``mount PATH`` read (so it can be activated and tested the
way a booted system does, on any host), and is one file to keep instead of a unit
file, its escaped name and a ``daemon-reload``. systemd still gets the ordering
it needs from ``x-systemd.requires-mounts-for=`` (which libmount does not pass to
the helper).

A managed line is preceded by a marker comment that records what the line
cannot say::

    # composefs.fleet: /mnt/app digest=<64 hex> verity=require
    /srv/app.cfs /mnt/app composefs basedir=/srv/objects,digest=<64 hex>,x-systemd.requires-mounts-for=... 0 0

With ``verity=require`` the line carries ``digest=``, so mount.composefs has the
kernel check the image against the pin at boot (and mounts with
``verity=require``). mount.composefs cannot check a digest without fs-verity,
so for ``userspace`` and ``off`` the pin is only in the comment: at boot the
image is mounted unchecked, and this module checks it on its next run.

Fields are written as getmntent(3) and libmount read them back: a space,
tab, newline or backslash in a path is written as an octal escape (``\\040``,
``\\011``, ``\\012``, ``\\134``), in every field, options included, as
ansible.posix.mount does. What no escape can carry is refused: a comma, a quote
or a backslash inside an option value (libmount splits options at commas and
mount.composefs reads a backslash as its own escape), and ``:`` inside a basedir
(mount.composefs splits ``basedir=`` at ``:``).

Only lines with a marker are ever changed or removed; every other line of the
file is kept byte for byte. The file is replaced atomically.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import re
import shutil
import time

from ansible_collections.composefs.fleet.plugins.module_utils.common.atomic import atomic_write
from ansible_collections.composefs.fleet.plugins.module_utils.mount.errors import MountError

FSTAB = "/etc/fstab"
FSTYPE = "composefs"
MARKER = "# composefs.fleet:"
_MARKER_RE = re.compile(r"^# composefs\.fleet: (\S+) digest=(\S+) verity=(\S+)\s*$")
_OCTAL = re.compile(r"\\([0-7]{3})")
# Characters an option value cannot hold, escaped or not: libmount splits options at commas (and knows no escape
# for them in fstab) and treats quotes specially, and mount.composefs reads a backslash as an escape of its own.
_BAD_OPTION_CHARS = re.compile(r"[,\\\"']")


def escape_field(text):
    """fstab field escaping (getmntent): space, tab, newline and backslash as octal."""
    return (text.replace("\\", "\\134").replace(" ", "\\040").replace("\t", "\\011").replace("\n", "\\012"))


def unescape_field(text):
    return _OCTAL.sub(lambda m: chr(int(m.group(1), 8)), text)


def _option_value(name, value):
    if _BAD_OPTION_CHARS.search(value):
        raise MountError("%s %r cannot go into an fstab line's options (no commas, quotes or backslashes: libmount "
                         "and mount.composefs have no escape for them there)" % (name, value), "invalid")
    return value


# systemd splits RequiresMountsFor= at whitespace and unquotes backslashes and quotes.
_SYSTEMD_UNSAFE = re.compile(r"[,\s\\\"'%]")


def _requires_path(path):
    """The path for ``x-systemd.requires-mounts-for=``: ``path``, or its longest ancestor systemd reads unchanged.

    The ordering it gives is the mounts above the path; a name systemd would
    split or unquote is cut off, keeping every mount above it.
    """
    while _SYSTEMD_UNSAFE.search(path):
        path = os.path.dirname(path)
    return path or "/"


class FstabEntry:
    """A managed composefs line (with its marker), as written or as read back."""

    def __init__(self, path, image, basedirs, digest, verity, upperdir=None, workdir=None, readonly=False):
        self.path = path
        self.image = image
        self.basedirs = list(basedirs)
        self.digest = digest
        self.verity = verity
        self.upperdir = upperdir
        self.workdir = workdir
        self.readonly = readonly

    def options(self):
        for base in self.basedirs:
            if ":" in base:
                raise MountError("basedir %s contains ':', which mount.composefs takes as a separator" % base, "invalid")
        opts = ["basedir=" + _option_value("basedir", ":".join(self.basedirs))]
        if self.verity == "require":
            opts.append("digest=" + self.digest if self.digest else "verity")
        if self.upperdir:
            opts.append("upperdir=" + _option_value("upperdir", self.upperdir))
            opts.append("workdir=" + _option_value("workdir", self.workdir))
        if self.readonly:
            opts.append("ro")
        needs = [self.image] + self.basedirs + [p for p in (self.upperdir, self.workdir) if p]
        for path in needs:
            opts.append("x-systemd.requires-mounts-for=" + _requires_path(path))
        return opts

    def lines(self):
        """The marker comment and the fstab line, without newlines."""
        marker = "%s %s digest=%s verity=%s" % (MARKER, escape_field(self.path), self.digest or "-", self.verity)
        line = "%s %s %s %s 0 0" % (escape_field(self.image), escape_field(self.path), FSTYPE,
                                    escape_field(",".join(self.options())))
        return [marker, line]

    @classmethod
    def parse(cls, marker, line):
        """The entry a marker and its line describe, or None when they do not form one."""
        m = _MARKER_RE.match(marker)
        fields = line.split()
        if not m or len(fields) < 4 or fields[2] != FSTYPE:
            return None
        path = unescape_field(fields[1])
        if unescape_field(m.group(1)) != path:
            return None
        basedirs, upperdir, workdir, readonly = [], None, None, False
        for opt in unescape_field(fields[3]).split(","):
            key, _sep, value = opt.partition("=")
            if key == "basedir":
                basedirs = [b for b in value.split(":") if b]
            elif key == "upperdir":
                upperdir = value
            elif key == "workdir":
                workdir = value
            elif key == "ro":
                readonly = True
        digest = None if m.group(2) == "-" else m.group(2)
        return cls(path, unescape_field(fields[0]), basedirs, digest, m.group(3), upperdir, workdir, readonly)


def read_fstab(path=FSTAB):
    try:
        with open(path, "r", encoding="utf-8", errors="surrogateescape") as f:
            return f.read()
    except FileNotFoundError:
        return ""
    except OSError as exc:
        raise MountError("cannot read %s: %s" % (path, exc.strerror))


def _entry_mountpoint(line):
    stripped = line.strip()
    if not stripped or stripped.startswith("#"):
        return None
    fields = stripped.split()
    return unescape_field(fields[1]) if len(fields) >= 2 else None


class FstabView:
    """The lines of an fstab, and what they hold for one mount point."""

    def __init__(self, text, path):
        self.text = text
        self.lines = text.splitlines(True)
        self.path = path
        self.managed = None  # (index of the marker line, FstabEntry)
        self.others = []  # (line number, line) of unmanaged entries for the same mount point
        skip = set()
        for i, line in enumerate(self.lines):
            if line.startswith(MARKER) and i + 1 < len(self.lines):
                entry = FstabEntry.parse(line.rstrip("\n"), self.lines[i + 1].rstrip("\n"))
                if entry is not None and entry.path == path:
                    if self.managed is None:
                        self.managed = (i, entry)
                    skip.add(i + 1)
        for i, line in enumerate(self.lines):
            if i not in skip and _entry_mountpoint(line) == path:
                self.others.append((i + 1, line.rstrip("\n")))

    def managed_lines(self):
        if self.managed is None:
            return None
        i = self.managed[0]
        return [self.lines[i].rstrip("\n"), self.lines[i + 1].rstrip("\n")]

    def with_entry(self, new_lines):
        """The file's text with our entry replaced by ``new_lines`` (None removes it); everything else as it was."""
        lines = list(self.lines)
        block = [l + "\n" for l in new_lines] if new_lines else []
        if self.managed is not None:
            i = self.managed[0]
            lines[i:i + 2] = block
        elif block:
            if lines and not lines[-1].endswith("\n"):
                lines[-1] += "\n"
            lines.extend(block)
        return "".join(lines)


def check_writable(path):
    """Fail, before anything is mounted, when ``path`` cannot be replaced (a read-only or immutable file or
    directory, a missing directory). ``access(2)`` sees read-only filesystems and the immutable flag even for root."""
    directory = os.path.dirname(path) or "."
    if not os.path.isdir(directory):
        raise MountError("cannot write %s: directory %s does not exist" % (path, directory), "invalid")
    if os.path.isdir(path):
        raise MountError("cannot write %s: it is a directory" % path, "invalid")
    problems = []
    if not os.access(directory, os.W_OK):
        problems.append("directory %s is not writable" % directory)
    if os.path.exists(path) and not os.access(path, os.W_OK):
        problems.append("%s is not writable" % path)
    if problems:
        raise MountError("cannot write %s: %s (read-only filesystem or immutable file?); nothing was changed"
                         % (path, "; ".join(problems)), "persist")


def backup_fstab(path):
    """Copy ``path`` to ``PATH.PID.YYYY-MM-DD@HH:MM:SS~`` (the name AnsibleModule.backup_local gives); returns it."""
    dest = "%s.%s.%s" % (path, os.getpid(), time.strftime("%Y-%m-%d@%H:%M:%S~", time.localtime()))
    try:
        shutil.copy2(path, dest)
    except OSError as exc:
        raise MountError("cannot back up %s to %s: %s; nothing was changed in it" % (path, dest, exc.strerror or exc),
                         "persist")
    return dest


def write_fstab(path, text):
    try:
        atomic_write(path, text.encode("utf-8", "surrogateescape"), mode=0o644)
    except OSError as exc:
        raise MountError("cannot write %s: %s" % (path, exc.strerror or exc), "persist")
