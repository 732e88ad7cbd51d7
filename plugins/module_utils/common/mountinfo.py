# -*- coding: utf-8 -*-
# Copyright: composefs.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Parsing /proc/self/mountinfo, and finding the filesystem a path lives on."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import collections
import os
import re

MountInfo = collections.namedtuple(
    "MountInfo", "mount_id parent_id major minor root mountpoint options fstype source super_options"
)

_OCTAL = re.compile(r"\\([0-7]{3})")


def _unescape(field):
    # The kernel escapes space, tab, newline and backslash as \ooo.
    return _OCTAL.sub(lambda m: chr(int(m.group(1), 8)), field)


def parse_mountinfo(text):
    """Parse mountinfo text into a list of MountInfo, in the kernel's order."""
    entries = []
    # only "\n" ends a line: the kernel does not escape "\r" (or \x0b, \x1c...) in a mount point
    for line in text.split("\n"):
        if not line.strip():
            continue
        fields = line.split(" ")
        sep = fields.index("-")
        major, minor = fields[2].split(":")
        entries.append(MountInfo(
            mount_id=int(fields[0]),
            parent_id=int(fields[1]),
            major=int(major),
            minor=int(minor),
            root=_unescape(fields[3]),
            mountpoint=_unescape(fields[4]),
            options=fields[5],
            fstype=fields[sep + 1],
            source=_unescape(fields[sep + 2]),
            super_options=fields[sep + 3] if len(fields) > sep + 3 else "",
        ))
    return entries


def read_mountinfo(path="/proc/self/mountinfo"):
    with open(path, "r", encoding="utf-8", errors="surrogateescape") as f:
        return parse_mountinfo(f.read())


def _is_under(path, mountpoint):
    return mountpoint == "/" or path == mountpoint or path.startswith(mountpoint.rstrip("/") + "/")


def mount_of(real, dev, mounts):
    """The MountInfo holding the resolved path ``real`` whose st_dev is ``dev`` (None if unknown), or None.

    Pure: the caller resolves the path and stats it (here, or on a host through raw commands).
    The deepest mount point above the path wins, and a later mount on the same
    point shadows an earlier one. Among equals, the entry whose device matches
    ``dev`` is preferred.
    """
    best = None
    for entry in mounts:
        if not _is_under(real, entry.mountpoint):
            continue
        if best is None or len(entry.mountpoint) >= len(best.mountpoint):
            best = entry
    if best is not None and dev is not None and os.makedev(best.major, best.minor) != dev:
        # An overmount or bind: prefer a same-point entry whose device matches.
        for entry in mounts:
            if entry.mountpoint == best.mountpoint and os.makedev(entry.major, entry.minor) == dev:
                best = entry
    return best


def filesystem_of(path, mounts=None):
    """The MountInfo of the filesystem holding ``path`` (or its nearest existing parent), or None.

    See :func:`mount_of` for how the mount is chosen.
    """
    if mounts is None:
        try:
            mounts = read_mountinfo()
        except OSError:
            return None
    real = os.path.realpath(path)
    probe = real
    while not os.path.lexists(probe) and probe != "/":
        probe = os.path.dirname(probe)
    try:
        dev = os.stat(probe).st_dev
    except OSError:
        dev = None
    return mount_of(real, dev, mounts)
