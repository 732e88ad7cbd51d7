"""The one digest, path and workers check every module uses (issue 10 item 5), and short excerpts (item 8)."""
import pytest

from ansible_collections.composefs.fleet.plugins.module_utils.common.params import (
    ParameterError,
    check_workers,
    normalize_digest,
    require_absolute,
)
from ansible_collections.composefs.fleet.plugins.module_utils.common.text import excerpt

HEX64 = "85d600d462f5c3738b55c3ebf570c31263353dc6aa35448c6a8f9aa519429c8a"


@pytest.mark.parametrize("value", [HEX64, HEX64.upper(), "sha256:" + HEX64, " SHA256:" + HEX64 + "\n"])
def test_sha256_with_or_without_prefix(value):
    assert normalize_digest(value) == ("sha256", HEX64)


def test_sha512_where_allowed():
    assert normalize_digest("sha512:" + "ab" * 64, algorithms=("sha256", "sha512")) == ("sha512", "ab" * 64)
    assert normalize_digest("ab" * 64, algorithms=("sha256", "sha512")) == ("sha512", "ab" * 64)
    with pytest.raises(ParameterError, match="unknown prefix 'sha512'"):
        normalize_digest("sha512:" + "ab" * 64)


@pytest.mark.parametrize("value,words", [
    ("85d600d4", "8 hex digits, expected 64"),  # a typo, not a "mismatch" found later
    (HEX64 + "0", "65 hex digits"),
    ("sha256:" + "ab" * 64, "128 hex digits, expected 64"),
    ("md5:" + HEX64, "unknown prefix 'md5'"),
    ("zz" * 32, "not hex"),
    ("", "not hex"),
])
def test_wrong_digests_are_refused_up_front(value, words):
    with pytest.raises(ParameterError) as exc:
        normalize_digest(value, "expected_digest")
    assert "expected_digest" in str(exc.value) and "not a SHA-256 fs-verity digest" in str(exc.value)
    assert words in str(exc.value)


def test_none_is_no_digest():
    assert normalize_digest(None) == (None, None)


def test_relative_paths_refused_with_one_message():
    assert require_absolute("/srv/x", "dest") == "/srv/x"
    assert require_absolute(None, "dest") is None
    for value in ("srv/x", "./x", "~/x", ""):
        with pytest.raises(ParameterError) as exc:
            require_absolute(value, "dest")
        assert str(exc.value).startswith("dest must be an absolute path, not ")
        assert "managed node" in str(exc.value)


@pytest.mark.parametrize("value", [0, -1, -8, True, "2"])
def test_workers_zero_and_negative_refused(value):
    with pytest.raises(ParameterError, match="workers must be at least 1"):
        check_workers(value)


def test_workers_accepted():
    assert check_workers(None) is None
    assert check_workers(1) == 1
    assert check_workers(16) == 16


def test_excerpt_is_short_and_printable():
    garbage = bytes(range(256)) * 4096  # 1 MiB of binary garbage
    shown = excerpt(garbage)
    assert len(shown) < 200 and "(1048576 bytes)" in shown
    assert all(32 <= ord(c) < 127 for c in shown)
    assert excerpt("a\nb\x1b[31m") == "a\\x0ab\\x1b[31m"
    assert excerpt(b"short") == "short"
