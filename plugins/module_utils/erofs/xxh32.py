# -*- coding: utf-8 -*-
# Copyright: composefs.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""xxHash32 (XXH32), as EROFS uses it for the xattr name bloom filter.

Written from the published algorithm description (xxhash.com, "XXH32 algorithm
description"). EROFS only hashes short xattr names, so this favours clarity;
the 16-byte stripes are still unpacked with struct rather than byte by byte.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import struct

PRIME32_1 = 0x9E3779B1
PRIME32_2 = 0x85EBCA77
PRIME32_3 = 0xC2B2AE3D
PRIME32_4 = 0x27D4EB2F
PRIME32_5 = 0x165667B1
_MASK = 0xFFFFFFFF


def _rotl(value, bits):
    return ((value << bits) | (value >> (32 - bits))) & _MASK


def _round(acc, lane):
    acc = (acc + lane * PRIME32_2) & _MASK
    return (_rotl(acc, 13) * PRIME32_1) & _MASK


def xxh32(data, seed=0):
    """XXH32 of ``data`` (bytes-like) with a 32-bit ``seed``; returns an int."""
    data = bytes(data)
    seed &= _MASK
    length = len(data)
    stripes = length // 16
    pos = stripes * 16
    if stripes:
        v1 = (seed + PRIME32_1 + PRIME32_2) & _MASK
        v2 = (seed + PRIME32_2) & _MASK
        v3 = seed
        v4 = (seed - PRIME32_1) & _MASK
        for a, b, c, d in struct.iter_unpack("<IIII", data[:pos]):
            v1 = _round(v1, a)
            v2 = _round(v2, b)
            v3 = _round(v3, c)
            v4 = _round(v4, d)
        acc = (_rotl(v1, 1) + _rotl(v2, 7) + _rotl(v3, 12) + _rotl(v4, 18)) & _MASK
    else:
        acc = (seed + PRIME32_5) & _MASK
    acc = (acc + length) & _MASK
    words = (length - pos) // 4
    if words:
        for (lane,) in struct.iter_unpack("<I", data[pos:pos + 4 * words]):
            acc = (acc + lane * PRIME32_3) & _MASK
            acc = (_rotl(acc, 17) * PRIME32_4) & _MASK
        pos += 4 * words
    for byte in data[pos:]:
        acc = (acc + byte * PRIME32_5) & _MASK
        acc = (_rotl(acc, 11) * PRIME32_1) & _MASK
    acc ^= acc >> 15
    acc = (acc * PRIME32_2) & _MASK
    acc ^= acc >> 13
    acc = (acc * PRIME32_3) & _MASK
    acc ^= acc >> 16
    return acc
