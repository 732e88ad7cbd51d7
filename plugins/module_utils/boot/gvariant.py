# -*- coding: utf-8 -*-
# Copyright: composefs.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A reader of serialized GVariant data (GLib's binary format), standard library only.

ostree writes ``/run/ostree-booted`` as an ``a{sv}`` and its commit objects as
``(a{sv}aya(say)sstayay)``, both little-endian as GLib serializes them on these
hosts. The rules followed are those of the GVariant specification (Ryan Lortie,
"GVariant Serialisation Format"): alignment, framing offsets sized by the
container, variants ending in their type string. Data that breaks those rules
raises :class:`GVariantError` rather than being guessed at.

Values come back as Python values: ``b`` bool, integers int, ``d`` float,
``s o g`` str, ``ay`` bytes, other arrays lists, ``a{..}`` dicts (key order
kept), tuples tuples, ``m`` None or the value, ``v`` :class:`Variant`.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import struct

_FIXED = {"b": (1, 1), "y": (1, 1), "n": (2, 2), "q": (2, 2), "i": (4, 4), "u": (4, 4), "h": (4, 4),
          "x": (8, 8), "t": (8, 8), "d": (8, 8)}
_STRUCT = {"b": "<B", "y": "<B", "n": "<h", "q": "<H", "i": "<i", "u": "<I", "h": "<i", "x": "<q", "t": "<Q", "d": "<d"}
_STRINGS = "sog"
MAX_DEPTH = 64


class GVariantError(ValueError):
    """Serialized data or a type string that is not valid GVariant."""


class Variant:
    """A ``v`` value: its type string and its value."""

    __slots__ = ("type", "value")

    def __init__(self, type_string, value):
        self.type = type_string
        self.value = value

    def __eq__(self, other):
        return isinstance(other, Variant) and (self.type, self.value) == (other.type, other.value)

    def __ne__(self, other):
        return not self == other

    def __hash__(self):
        return hash((self.type, repr(self.value)))

    def __repr__(self):
        return "Variant(%r, %r)" % (self.type, self.value)


def _split_types(sig):
    """The complete types of a concatenation of type strings, e.g. ``"sa{sv}y"`` -> ``["s", "a{sv}", "y"]``."""
    out = []
    pos = 0
    while pos < len(sig):
        end = _type_end(sig, pos, 0)
        out.append(sig[pos:end])
        pos = end
    return out


def _type_end(sig, pos, depth):
    if depth > MAX_DEPTH:
        raise GVariantError("type string nested too deeply: %r" % sig)
    if pos >= len(sig):
        raise GVariantError("incomplete type string: %r" % sig)
    c = sig[pos]
    if c in _FIXED or c in _STRINGS or c == "v":
        return pos + 1
    if c in "am":
        return _type_end(sig, pos + 1, depth + 1)
    if c == "(":
        pos += 1
        while pos < len(sig) and sig[pos] != ")":
            pos = _type_end(sig, pos, depth + 1)
        if pos >= len(sig):
            raise GVariantError("unclosed tuple in type string: %r" % sig)
        return pos + 1
    if c == "{":
        key_end = _type_end(sig, pos + 1, depth + 1)
        if sig[pos + 1] not in _FIXED and sig[pos + 1] not in _STRINGS:
            raise GVariantError("dictionary key must be a basic type in %r" % sig)
        value_end = _type_end(sig, key_end, depth + 1)
        if value_end >= len(sig) or sig[value_end] != "}":
            raise GVariantError("a dictionary entry has exactly two types in %r" % sig)
        return value_end + 1
    raise GVariantError("unknown type %r in type string %r" % (c, sig))


def check_type(sig):
    """Raise GVariantError unless ``sig`` is exactly one complete type."""
    if not isinstance(sig, str) or not sig:
        raise GVariantError("empty type string")
    if _type_end(sig, 0, 0) != len(sig):
        raise GVariantError("%r is more than one type" % sig)


def _members(sig):
    """The member types of a tuple or dictionary entry type."""
    return _split_types(sig[1:-1])


def alignment(sig):
    c = sig[0]
    if c in _FIXED:
        return _FIXED[c][0]
    if c in _STRINGS:
        return 1
    if c == "v":
        return 8
    if c in "am":
        return alignment(sig[1:])
    return max([alignment(m) for m in _members(sig)] or [1])


def fixed_size(sig):
    """The serialized size of a fixed-size type, or None when its size varies."""
    c = sig[0]
    if c in _FIXED:
        return _FIXED[c][1]
    if c in _STRINGS or c in "amv":
        return None
    size = 0
    for member in _members(sig):
        msize = fixed_size(member)
        if msize is None:
            return None
        size = _align(size, alignment(member)) + msize
    if size == 0:
        return 1  # the unit tuple "()" is one zero byte
    return _align(size, alignment(sig))


def _align(pos, align):
    return (pos + align - 1) & ~(align - 1)


def _offset_size(container_size):
    if container_size == 0:
        return 0
    if container_size <= 0xFF:
        return 1
    if container_size <= 0xFFFF:
        return 2
    if container_size <= 0xFFFFFFFF:
        return 4
    return 8


def _read_offset(data, pos, size):
    return int.from_bytes(data[pos:pos + size], "little")


def loads(sig, data):
    """Deserialize ``data`` (bytes) of GVariant type ``sig``."""
    check_type(sig)
    return _load(sig, bytes(data), 0)


def _load(sig, data, depth):
    if depth > MAX_DEPTH:
        raise GVariantError("value nested too deeply")
    c = sig[0]
    if c in _FIXED:
        size = _FIXED[c][1]
        if len(data) != size:
            raise GVariantError("a %r value needs %d bytes, not %d" % (c, size, len(data)))
        value = struct.unpack(_STRUCT[c], data)[0]
        if c == "b":
            if value > 1:
                raise GVariantError("boolean byte %d is neither 0 nor 1" % value)
            return bool(value)
        return value
    if c in _STRINGS:
        if not data or data[-1:] != b"\0" or b"\0" in data[:-1]:
            raise GVariantError("a string must end with its only NUL byte")
        try:
            return data[:-1].decode("utf-8")
        except UnicodeDecodeError:
            raise GVariantError("a string is not valid UTF-8")
    if c == "v":
        sep = data.rfind(b"\0")
        if sep < 0:
            raise GVariantError("a variant has no type string")
        try:
            inner = data[sep + 1:].decode("ascii")
        except UnicodeDecodeError:
            raise GVariantError("a variant's type string is not ASCII")
        check_type(inner)
        return Variant(inner, _load(inner, data[:sep], depth + 1))
    if c == "m":
        inner = sig[1:]
        if not data:
            return None
        size = fixed_size(inner)
        if size is None:
            if data[-1:] != b"\0":
                raise GVariantError("a maybe of a variable-size type must end with a zero byte")
            return _load(inner, data[:-1], depth + 1)
        return _load(inner, data, depth + 1)
    if c == "a":
        items = _load_array(sig[1:], data, depth)
        if sig[1] == "y":
            return bytes(items)
        if sig[1] == "{":
            return dict(items)
        return items
    return _load_tuple(sig, data, depth)


def _load_array(elem, data, depth):
    if elem == "y":
        return data
    size = fixed_size(elem)
    if size is not None:
        if len(data) % size:
            raise GVariantError("array of %r: %d bytes is not a multiple of %d" % (elem, len(data), size))
        return [_load(elem, data[i:i + size], depth + 1) for i in range(0, len(data), size)]
    if not data:
        return []
    osz = _offset_size(len(data))
    last_end = _read_offset(data, len(data) - osz, osz)
    if last_end > len(data) or (len(data) - last_end) % osz:
        raise GVariantError("array of %r: bad framing offsets" % elem)
    count = (len(data) - last_end) // osz
    if count == 0:
        raise GVariantError("array of %r: no elements but data" % elem)
    align = alignment(elem)
    out = []
    start = 0
    for i in range(count):
        end = _read_offset(data, last_end + i * osz, osz)
        start = _align(start, align)
        if end < start or end > last_end:
            raise GVariantError("array of %r: element %d out of bounds" % (elem, i))
        out.append(_load(elem, data[start:end], depth + 1))
        start = end
    return out


def _load_tuple(sig, data, depth):
    members = _members(sig)
    size = fixed_size(sig)
    if size is not None and len(data) != size:
        raise GVariantError("%s needs %d bytes, not %d" % (sig, size, len(data)))
    if not members:
        return ()
    osz = _offset_size(len(data))
    frame_end = len(data)
    pos = 0
    out = []
    for i, member in enumerate(members):
        pos = _align(pos, alignment(member))
        msize = fixed_size(member)
        if msize is not None:
            end = pos + msize
        elif i == len(members) - 1:
            end = frame_end
        else:
            frame_end -= osz
            if frame_end < 0:
                raise GVariantError("%s: framing offsets run past the start" % sig)
            end = _read_offset(data, frame_end, osz)
        if end < pos or end > frame_end:
            raise GVariantError("%s: member %d out of bounds" % (sig, i))
        out.append(_load(member, data[pos:end], depth + 1))
        pos = end
    if sig[0] == "{":
        return (out[0], out[1])
    return tuple(out)


def plain(value):
    """``value`` with variants unwrapped and bytes as hex: JSON-ready for facts."""
    if isinstance(value, Variant):
        return plain(value.value)
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, dict):
        return dict((k if isinstance(k, str) else str(k), plain(v)) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value
