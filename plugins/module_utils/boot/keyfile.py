# -*- coding: utf-8 -*-
# Copyright: composefs.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""GLib key files (``g_key_file_load_from_data``): parse as GLib does, edit in place, render.

What GLib does, and this follows:

* lines are ``[group]``, ``key=value``, comments (``#`` first) or blank;
  anything else, or a key before the first group, makes the whole file
  invalid (and ostree-prepare-root then fails the boot);
* the key loses trailing whitespace, the value leading whitespace
  (``g_key_file_get_value`` returns it otherwise raw);
* a group repeated later is the same group; a key repeated keeps the last value;
* booleans are exactly ``true``/``false``/``1``/``0`` (``g_key_file_get_boolean``);
  ostree's own tristates also take ``yes``/``no`` and ``maybe``.

Editing keeps comments, order and untouched lines; set values are written
``key=value`` as GLib's ``g_key_file_to_data`` does.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import re

_GROUP_RE = re.compile(r"^\[([^\[\]\x00-\x1f]+)\]\s*$")
_KEY_RE = re.compile(r"^[A-Za-z0-9\-.\[\]@_]+$")


class KeyFileError(ValueError):
    """A key file GLib would refuse to load, or a value it cannot hold."""


def parse_boolean(value):
    """GLib's ``g_key_file_get_boolean``: True/False, or KeyFileError."""
    text = value.strip()
    if text in ("true", "1"):
        return True
    if text in ("false", "0"):
        return False
    raise KeyFileError("%r is not a GLib key file boolean (true, false, 1 or 0)" % value)


class KeyFile:
    """A parsed key file that can be edited and rendered back with its comments."""

    def __init__(self, text=""):
        # Each line: ("group", name) | ("kv", group, key, value) | ("other", raw text).
        self.lines = []
        self.parse(text)

    def parse(self, text):
        group = None
        for number, raw in enumerate(text.splitlines(), 1):
            stripped = raw.strip()
            if not stripped or raw.lstrip().startswith("#"):
                self.lines.append(("other", raw))
                continue
            match = _GROUP_RE.match(stripped)
            if stripped.startswith("["):
                if not match:
                    raise KeyFileError("line %d: %r is not a valid group header" % (number, raw))
                group = match.group(1)
                self.lines.append(("group", group))
                continue
            if "=" not in raw:
                raise KeyFileError("line %d: %r is not a key-value pair, group, or comment" % (number, raw))
            if group is None:
                raise KeyFileError("line %d: key file does not start with a group" % number)
            key, value = raw.split("=", 1)
            key = key.rstrip()
            if not key or not _KEY_RE.match(key):
                raise KeyFileError("line %d: invalid key name %r" % (number, key))
            self.lines.append(("kv", group, key, value.lstrip(" \t")))

    def groups(self):
        seen = []
        for line in self.lines:
            if line[0] == "group" and line[1] not in seen:
                seen.append(line[1])
        return seen

    def get(self, group, key, default=None):
        """The raw value (``g_key_file_get_value``), the last one when repeated."""
        value = default
        for line in self.lines:
            if line[0] == "kv" and line[1] == group and line[2] == key:
                value = line[3]
        return value

    def has(self, group, key):
        return any(line[0] == "kv" and line[1] == group and line[2] == key for line in self.lines)

    def items(self, group):
        out = {}
        for line in self.lines:
            if line[0] == "kv" and line[1] == group:
                out[line[2]] = line[3]
        return out

    def as_dict(self):
        return dict((g, self.items(g)) for g in self.groups())

    def set(self, group, key, value):
        """Set ``key`` in ``group`` (the last occurrence is rewritten, earlier ones dropped)."""
        if not _KEY_RE.match(key) or not _GROUP_RE.match("[%s]" % group):
            raise KeyFileError("invalid group or key name: [%s] %s" % (group, key))
        if "\n" in value or "\r" in value:
            raise KeyFileError("a key file value cannot hold a line break: [%s] %s" % (group, key))
        positions = [i for i, line in enumerate(self.lines) if line[0] == "kv" and line[1] == group and line[2] == key]
        if positions:
            for i in positions[:-1]:
                self.lines[i] = None
            self.lines[positions[-1]] = ("kv", group, key, value)
            self.lines = [line for line in self.lines if line is not None]
            return
        last = None
        for i, line in enumerate(self.lines):
            if (line[0] == "group" and line[1] == group) or (line[0] == "kv" and line[1] == group):
                last = i
        if last is None:
            if self.lines and not (self.lines[-1][0] == "other" and not self.lines[-1][1].strip()):
                self.lines.append(("other", ""))
            self.lines.append(("group", group))
            self.lines.append(("kv", group, key, value))
        else:
            self.lines.insert(last + 1, ("kv", group, key, value))

    def remove(self, group, key):
        self.lines = [line for line in self.lines if not (line[0] == "kv" and line[1] == group and line[2] == key)]

    def render(self):
        out = []
        for line in self.lines:
            if line[0] == "group":
                out.append("[%s]" % line[1])
            elif line[0] == "kv":
                out.append("%s=%s" % (line[2], line[3]))
            else:
                out.append(line[1])
        return "\n".join(out) + "\n" if out else ""
