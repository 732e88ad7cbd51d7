# -*- coding: utf-8 -*-
# Copyright: composefs.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""xxh32 against known values.

Origin: the reference implementation's published values for "" / "a" / "abc"
and the python-xxhash README example; the rest were computed once with
python-xxhash (``xxhash.xxh32(data, seed).intdigest()``).
"""

import pytest

from ansible_collections.composefs.fleet.plugins.module_utils.erofs.xxh32 import xxh32


@pytest.mark.parametrize("data, seed, expected", [
    (b"", 0, 0x02CC5D05),
    (b"", 1, 0x0B2CB792),
    (b"a", 0, 0x550D7456),
    (b"abc", 0, 0x32D153FF),
    (b"Nobody inspects the spammish repetition", 0, 0xE2293B2F),
    (b"abc", 0x25BBE08F, 0x61C300AA),
    (b"selinux", 0x25BBE08F + 6, 0x9490146B),
    (b"overlay.metacopy", 0x25BBE08F + 4, 0xDBE5E05F),
    (b"0123456789abcdef", 0, 0xC2C45B69),
    (b"0123456789abcdefg", 0x9E3779B1, 0x498C0EFA),
    (bytes(range(256)), 0xFFFFFFFF, 0x3EE648A9),
])
def test_known_values(data, seed, expected):
    assert xxh32(data, seed) == expected


def test_accepts_bytes_like_and_wraps_seed():
    assert xxh32(bytearray(b"abc")) == xxh32(memoryview(b"abc")) == 0x32D153FF
    assert xxh32(b"abc", 0x25BBE08F + (1 << 32)) == 0x61C300AA
