"""The stdlib GVariant reader against GLib's own serializer (python3-gi on this host)."""
import pytest

from ansible_collections.composefs.fleet.plugins.module_utils.boot.gvariant import GVariantError, Variant, loads, plain

from glib_helper import serialize

CASES = [
    ("b", "true"), ("b", "false"), ("y", "byte 0xff"), ("n", "int16 -2"), ("q", "uint16 65535"),
    ("i", "-7"), ("u", "uint32 4000000000"), ("x", "int64 -9000000000"), ("t", "uint64 18446744073709551615"),
    ("d", "2.5"), ("s", "'héllo'"), ("s", "''"), ("o", "objectpath '/a/b'"), ("g", "signature 'a{sv}'"),
    ("ay", "b'abc'"), ("ay", "@ay []"), ("as", "['a', 'bb', '']"), ("as", "@as []"), ("ai", "[1, 2, 3]"),
    ("at", "[uint64 1, 2]"), ("aay", "[b'x', b'', b'yz']"), ("(tt)", "(uint64 64768, uint64 1234567)"),
    ("(ys)", "(byte 1, 'x')"), ("(sy)", "('x', byte 1)"), ("(sss)", "('a', 'bc', 'def')"), ("()", "()"),
    ("mi", "just 5"), ("mi", "nothing"), ("ms", "just 'a'"), ("ms", "nothing"), ("mas", "just ['x']"),
    ("v", "<'str'>"), ("v", "<(uint64 1, uint64 2)>"), ("av", "[<1>, <'two'>, <[byte 3]>]"),
    ("a{sv}", "{'composefs': <true>, 'composefs.verity': <false>, 'composefs.signed': <'/etc/ostree/k.key'>,"
              " 'backing-root-device-inode': <(uint64 64769, uint64 131)>, 'transient-etc': <'/run/ostree/t'>}"),
    ("a{sv}", "@a{sv} {}"), ("a{ss}", "{'a': 'b', 'c': 'd'}"), ("a{sa{sv}}", "{'x': {'y': <int64 3>}}"),
    ("a(say)", "[('a', b'12'), ('bc', b'')]"),
    # An ostree commit: (a{sv}aya(say)sstayay).
    ("(a{sv}aya(say)sstayay)",
     "({'ostree.composefs.digest.v0': <b'0123456789abcdef0123456789abcdef'>, 'version': <'42'>}, @ay [], @a(say) [],"
     " 'subject', '', uint64 1700000000, b'01234567890123456789012345678901', b'abcdefghijabcdefghijabcdefghij12')"),
    # Containers beyond 255 bytes need 2-byte framing offsets, beyond 65535 4-byte ones.
    ("as", "[" + ", ".join("'%s'" % ("x" * n) for n in range(40)) + "]"),
    ("a{sv}", "{" + ", ".join("'k%d': <'%s'>" % (n, "v" * 300) for n in range(300)) + "}"),
]


def glib_plain(value):
    if isinstance(value, dict) and set(value) == {"dict"}:
        return dict((glib_plain(k), glib_plain(v)) for k, v in value["dict"])
    if isinstance(value, dict) and set(value) == {"list"}:
        return [glib_plain(v) for v in value["list"]]
    if isinstance(value, dict) and set(value) == {"tuple"}:
        return tuple(glib_plain(v) for v in value["tuple"])
    return value


def ours_plain(value):
    """Our values in the shape PyGObject's unpack() gives (variants unwrapped, ay as a list of ints)."""
    if isinstance(value, Variant):
        return ours_plain(value.value)
    if isinstance(value, bytes):
        return list(value)
    if isinstance(value, dict):
        return dict((k, ours_plain(v)) for k, v in value.items())
    if isinstance(value, list):
        return [ours_plain(v) for v in value]
    if isinstance(value, tuple):
        return tuple(ours_plain(v) for v in value)
    return value


@pytest.fixture(scope="module")
def glib_cases():
    return serialize(CASES)


@pytest.mark.parametrize("index", range(len(CASES)), ids=[c[0] + ":" + c[1][:30] for c in CASES])
def test_reads_what_glib_writes(glib_cases, index):
    type_string = CASES[index][0]
    data = bytes.fromhex(glib_cases[index]["hex"])
    assert ours_plain(loads(type_string, data)) == glib_plain(glib_cases[index]["value"])


def test_variant_keeps_its_type(glib_cases):
    index = [c[0] for c in CASES].index("v")
    value = loads("v", bytes.fromhex(glib_cases[index]["hex"]))
    assert value == Variant("s", "str")


def test_plain_is_json_ready():
    assert plain({"a": Variant("ay", b"\x01\x02"), "b": Variant("(tt)", (1, 2))}) == {"a": "0102", "b": [1, 2]}


@pytest.mark.parametrize("type_string, data, problem", [
    ("b", b"\x02", "neither 0 nor 1"),
    ("i", b"\x01\x02", "needs 4 bytes"),
    ("s", b"abc", "end with its only NUL"),
    ("s", b"a\0b\0", "end with its only NUL"),
    ("s", b"\xff\0", "UTF-8"),
    ("v", b"abc", "no type string"),
    ("v", b"\x01\0z", "unknown type"),
    ("as", b"a\0\x09", "bad framing"),
    ("as", b"a\0\x05", "bad framing"),
    ("ai", b"\x01\x02\x03", "multiple of 4"),
    ("(ss)", b"a\0b\0\x09", "out of bounds"),
    ("a{sv}", b"\xff" * 3, "bad framing"),
])
def test_malformed_data_is_refused(type_string, data, problem):
    with pytest.raises(GVariantError, match=problem):
        loads(type_string, data)


@pytest.mark.parametrize("type_string", ["", "a", "{sv}x", "(s", "{vs}", "z", "ss", "a" * 100 + "y"])
def test_bad_type_strings_are_refused(type_string):
    with pytest.raises(GVariantError):
        loads(type_string, b"")
