# -*- coding: utf-8 -*-
# Copyright: composefs.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Quoting untrusted bytes in messages: printable, and short."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import re

EXCERPT_MAX = 80
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def excerpt(data, limit=EXCERPT_MAX):
    """``data`` (bytes or str) as printable text of at most about ``limit`` characters.

    Undecodable bytes become ``\\xNN`` and control characters ``\\xNN`` too, so a
    message never carries a terminal escape or a newline from the input; anything
    longer than ``limit`` is cut, saying how long it was. A dumpfile line of a
    megabyte of garbage thus yields a message of a line.
    """
    if isinstance(data, (bytes, bytearray, memoryview)):
        raw = bytes(data)
        total = len(raw)
        text = raw[:limit * 4].decode("utf-8", "backslashreplace")
        unit = "bytes"
    else:
        text = str(data)
        total = len(text)
        unit = "characters"
    text = _UNPRINTABLE.sub(lambda m: "\\x%02x" % ord(m.group()), text)
    if len(text) > limit:
        return "%s... (%d %s)" % (text[:limit], total, unit)
    return text
