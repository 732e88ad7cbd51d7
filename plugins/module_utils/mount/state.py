# -*- coding: utf-8 -*-
# Copyright: composefs.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What is mounted at a path, and whether this module mounted it.

The truth is ``/proc/self/mountinfo``: the top mount at the path, its filesystem
type and source (``overlay``, ``composefs``), its options (``ro``), and the
overlay's own options (``lowerdir+``, ``datadir+``, ``verity=require``,
``upperdir``). What mountinfo cannot say is which image digest is mounted, so
each mount this module makes is recorded in a state file,
``/run/composefs-fleet/mounts/<escaped path>.json``, holding the digest, the
verity mode and the mount's identity: its mount id and the path of the private
temporary EROFS mount point the overlay shows as its first lower layer. That
path is unique to one mount (a fresh ``mkdtemp`` name, for the helper too), so a
record matches a mount only while that very mount is there; a record whose
mount is gone, or replaced by someone else's, is stale and ignored.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os
import re
import time

from ansible_collections.composefs.fleet.plugins.module_utils.common.atomic import atomic_write, remove_durably

RUN_DIR = "/run/composefs-fleet"
MOUNTS_DIR = RUN_DIR + "/mounts"
TMP_DIR = RUN_DIR + "/tmp"
RECORD_VERSION = 1
MOUNT_SOURCE = "composefs"

_OCTAL = re.compile(r"\\([0-7]{3})")
_SAFE = re.compile(r"[A-Za-z0-9:_.]")


def escape_path(path):
    """``systemd-escape --path``: ``/mnt/app-1`` -> ``mnt-app\\x2d1``; ``/`` -> ``-``."""
    trimmed = os.path.normpath(path).strip("/")
    if not trimmed:
        return "-"
    out = []
    for i, ch in enumerate(trimmed):
        if ch == "/":
            out.append("-")
        elif _SAFE.match(ch) and not (i == 0 and ch == "."):
            out.append(ch)
        else:
            out.append("".join("\\x%02x" % b for b in ch.encode("utf-8", "surrogateescape")))
    return "".join(out)


def record_path(path, mounts_dir=MOUNTS_DIR):
    return os.path.join(mounts_dir, escape_path(path) + ".json")


def load_record(path, mounts_dir=MOUNTS_DIR):
    """The record for mount point ``path``, or None (missing or unreadable records count as none)."""
    try:
        with open(record_path(path, mounts_dir), "r") as f:
            record = json.load(f)
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("version") != RECORD_VERSION or record.get("path") != path:
        return None
    return record


def save_record(record, mounts_dir=MOUNTS_DIR):
    os.makedirs(mounts_dir, 0o700, exist_ok=True)
    record = dict(record, version=RECORD_VERSION, recorded_at=int(time.time()))
    atomic_write(record_path(record["path"], mounts_dir), (json.dumps(record, indent=2, sort_keys=True) + "\n").encode(),
                 mode=0o600)


def remove_record(path, mounts_dir=MOUNTS_DIR):
    return remove_durably(record_path(path, mounts_dir))


# --- mountinfo --------------------------------------------------------------------------


def unescape(text):
    return _OCTAL.sub(lambda m: chr(int(m.group(1), 8)), text)


def split_options(text):
    """Mount options as a list; mountinfo escapes commas inside values (``\\054``), so a plain split is safe."""
    return [unescape(part) for part in text.split(",") if part] if text else []


def option_values(options, key):
    prefix = key + "="
    return [o[len(prefix):] for o in options if o.startswith(prefix)]


def _split_lowerdir(value):
    """A legacy ``lowerdir=`` string as (lower layers, data-only layers).

    Layers are separated by ``:``, data-only ones by ``::``; ``\\`` escapes the
    next character (``\\:`` is a ``:`` inside a path). The kernel shows the string
    as it was given, so this undoes :func:`.composefs_mount.escape_lowerdir`.
    """
    layers = []
    current = []
    separators = []
    i = 0
    while i < len(value):
        ch = value[i]
        if ch == "\\" and i + 1 < len(value):
            current.append(value[i + 1])
            i += 2
            continue
        if ch == ":":
            double = value[i:i + 2] == "::"
            layers.append("".join(current))
            separators.append(double)
            current = []
            i += 2 if double else 1
            continue
        current.append(ch)
        i += 1
    layers.append("".join(current))
    # Everything after the first "::" is a data-only layer.
    if True in separators:
        first = separators.index(True) + 1
        return layers[:first], layers[first:]
    return layers, []


def lower_layers(options):
    """(lower layers, data-only layers) of an overlay's options, from ``lowerdir+``/``datadir+`` or ``lowerdir=``."""
    plus = option_values(options, "lowerdir+")
    if plus:
        return plus, option_values(options, "datadir+")
    legacy = option_values(options, "lowerdir")
    if legacy:
        return _split_lowerdir(legacy[0])
    return [], []


def is_composefs(entry):
    return entry is not None and entry.fstype == "overlay" and entry.source == MOUNT_SOURCE


def mounts_at(mounts, mountpoint):
    return [e for e in mounts if e.mountpoint == mountpoint]


def top_mount(mounts, mountpoint):
    """The mount visible at ``mountpoint``: among the mounts there, the one no other is stacked on (or None)."""
    here = mounts_at(mounts, mountpoint)
    if not here:
        return None
    ids = set(e.mount_id for e in here)
    covered = set(e.parent_id for e in here if e.parent_id in ids)
    tops = [e for e in here if e.mount_id not in covered]
    return (tops or here)[-1]


def submounts(mounts, entry):
    """Mounts inside ``entry`` (not counting mounts stacked on its root)."""
    return [e for e in mounts if e.parent_id == entry.mount_id and e.mountpoint != entry.mountpoint]


class MountFacts:
    """What mountinfo says about one overlay mount, in the terms the module compares."""

    def __init__(self, entry):
        self.entry = entry
        self.super_options = split_options(entry.super_options)
        self.mount_options = split_options(entry.options)
        self.lowers, self.datadirs = lower_layers(self.super_options)
        self.label = self.lowers[0] if self.lowers else None
        self.readonly = "ro" in self.mount_options or "ro" in self.super_options
        verity = option_values(self.super_options, "verity")
        self.verity = verity[-1] if verity else "off"
        upper = option_values(self.super_options, "upperdir")
        work = option_values(self.super_options, "workdir")
        self.upperdir = upper[-1] if upper else None
        self.workdir = work[-1] if work else None

    def describe(self):
        e = self.entry
        return "%s %s (mount id %d)" % (e.fstype, e.source, e.mount_id)


def identify(path, mounts, record):
    """Classify what is mounted at ``path`` against our ``record``.

    Returns ``(kind, entry, stale)``: ``kind`` is ``none`` (nothing mounted there),
    ``ours`` (the top mount is the one recorded), ``covered`` (ours is there but
    someone else's is stacked on it), or ``other`` (something else is on top);
    ``stale`` says the record matches no mount and should be dropped.
    """
    top = top_mount(mounts, path)
    matched = None
    if record:
        for entry in mounts_at(mounts, path):
            if entry.mount_id == record.get("mount_id") and is_composefs(entry) and \
                    MountFacts(entry).label == record.get("label"):
                matched = entry
    if matched is not None:
        if top is not None and top.mount_id == matched.mount_id:
            return "ours", matched, False
        return "covered", top, False
    stale = bool(record)
    if top is None:
        return "none", None, stale
    return "other", top, stale
