# -*- coding: utf-8 -*-
# Copyright: composefs.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""composefs-dump(5) parsing and writing, checked against upstream's test assets."""

import io
import random

import pytest

from ansible_collections.composefs.fleet.plugins.module_utils.composefs import dumpfile
from ansible_collections.composefs.fleet.plugins.module_utils.composefs.errors import ComposefsError
from ansible_collections.composefs.fleet.plugins.module_utils.composefs.tree import Node, Tree

ROOT = b"/ 4096 40755 2 0 0 0 0.0 - - -\n"


def parse(text, strict=False):
    return dumpfile.loads(text, strict=strict)


def rejects(text, fragment, strict=False, line=None):
    with pytest.raises(ComposefsError) as info:
        parse(text, strict=strict)
    message = str(info.value)
    assert fragment in message, message
    if line is not None:
        assert info.value.lineno == line, message
        assert message.startswith("line %d: " % line), message
    return info.value


# --- upstream assets ------------------------------------------------------------

# What each should-fail asset is rejected for (mkcomposefs 1.0.8 stops at the same check).
FAILURES = {
    "should-fail-big-inline.dump": (2, "Inline content size 5004 exceeds maximum 5000"),
    "should-fail-dir-hardlink.dump": (2, "Directories can't be hardlinked"),
    "should-fail-dot-name.dump": (2, "Invalid . or .. in path"),
    "should-fail-dotdot-name.dump": (2, "Invalid . or .. in path"),
    "should-fail-empty-link-name.dump": (2, "Invalid symlink"),
    "should-fail-empty-name.dump": (2, "Can't add child"),
    "should-fail-empty-xattr-key.dump": (2, "Can't set xattr"),
    "should-fail-honggfuzz-long-xattr.dump": (1, "Can't set xattr user.foo2"),
    "should-fail-long-link.dump": (2, "Invalid symlink"),
    "should-fail-long-xattr-key.dump": (2, "Too many xattrs"),
    # The value is too long, but upstream already stops at the mode "644" (no file type).
    "should-fail-long-xattr-value.dump": (2, "Invalid mode 644"),
    "should-fail-no-ftype.dump": (2, "Invalid mode 0"),
    "should-fail-self-hardlink.dump": (2, "Self-referential hardlink /037blockdev"),
    # Rejected when the image is written (see the erofs writer tests); parsing accepts it.
    "should-fail-too-big.dump": None,
}


def test_every_failing_vector_is_covered(failing_vector):
    assert failing_vector.name in FAILURES


def test_failing_vectors_are_rejected_naming_line_and_problem(failing_vector):
    expected = FAILURES[failing_vector.name]
    if expected is None:
        tree = Tree.from_dumpfile(failing_vector.path, strict=failing_vector.strict)
        with pytest.raises(ComposefsError) as info:
            tree.validate()
        assert info.value.lineno == 2 and "File too big" in str(info.value)
        return
    line, fragment = expected
    with pytest.raises(ComposefsError) as info:
        Tree.from_dumpfile(failing_vector.path, strict=failing_vector.strict)
    message = str(info.value)
    assert info.value.lineno == line, message
    assert message.startswith("line %d: " % line), message
    assert fragment in message, message


def test_image_vectors_parse_with_their_strictness(image_vector):
    tree = Tree.from_dumpfile(image_vector.path, strict=image_vector.strict)
    assert tree.root.is_dir()


@pytest.mark.parametrize("name, line, fragment", [
    ("no-newline.dump", 1, "Non-zero devnum on non-device"),
    ("longlink.dump", 2, "Invalid symlink size 4070, must match size 5"),
    ("honggfuzz-longlink-unterminated.dump", 2, "Invalid symlink size 4095, must match size 0"),
])
def test_nonstrict_vectors_fail_strict_parsing(vectors_dir, name, line, fragment):
    with pytest.raises(ComposefsError) as info:
        Tree.from_dumpfile("%s/composefs/%s" % (vectors_dir, name), strict=True)
    assert info.value.lineno == line
    assert fragment in str(info.value)


def test_dumpfile_round_trip_is_stable(image_vector):
    tree = Tree.from_dumpfile(image_vector.path, strict=image_vector.strict)
    text = tree.to_dumpfile()
    again = dumpfile.loads(text, strict=True)  # what we write is always strict-clean
    assert again.to_dumpfile() == text


def test_special_dump_fields(vectors_dir):
    tree = Tree.from_dumpfile(vectors_dir + "/composefs/special.dump", strict=True)
    root = tree.root
    assert root.mode == 0o40555 and root.mtime_sec == 1633950376
    assert root.xattrs == {b"trusted.foo1": b"bar-1", b"user.foo2": b"bar-2"}
    inline = tree.lookup("/inline")
    assert inline.content == b"FOOBAR\nINAFILE\n" and inline.size == 15
    assert tree.lookup(b"/blockdev").rdev == 107690
    assert tree.lookup("/escaped-xattr").xattrs[b"trusted.overlay.redirect"] == b"/foo\n"
    assert len(tree.lookup("/inline-large3").content) == 4097
    assert [name for name, _node in root.sorted_children()][:3] == [b"blockdev", b"chardev", b"escaped-xattr"]


def test_gzip_paths_and_file_objects(vectors_dir):
    path = vectors_dir + "/composefs/config.dump.gz"
    tree = Tree.from_dumpfile(path, strict=True)
    import gzip
    with gzip.open(path, "rb") as handle:
        assert Tree.from_dumpfile(handle, strict=True).to_dumpfile() == tree.to_dumpfile()


# --- escaping ---------------------------------------------------------------------

@pytest.mark.parametrize("escaped, raw", [
    (b"plain", b"plain"),
    (b"a\\\\b", b"a\\b"),
    (b"\\n\\r\\t", b"\n\r\t"),
    (b"\\x00\\xff\\xAb", b"\x00\xff\xab"),
    (b"\\x3d\\x20", b"= "),
    (b"", b""),
])
def test_unescape(escaped, raw):
    assert dumpfile.unescape(escaped) == raw


@pytest.mark.parametrize("escaped, problem", [
    (b"abc\\", "No character after escape"),
    (b"\\x", "No hex characters after hex escape"),
    (b"\\x4", "No hex characters after hex escape"),
    (b"\\x4g", "Invalid hex characters after hex escape"),
    (b"\\q", "Unsupported escape type q"),
])
def test_unescape_errors(escaped, problem):
    with pytest.raises(ComposefsError) as info:
        dumpfile.unescape(escaped)
    assert problem in str(info.value)


def test_escape_rules():
    assert dumpfile.escape(b"a b") == b"a\\x20b"
    assert dumpfile.escape(b"back\\slash\n\r\t") == b"back\\\\slash\\n\\r\\t"
    assert dumpfile.escape(b"k=v") == b"k=v"
    assert dumpfile.escape(b"k=v", equal=True) == b"k\\x3dv"
    assert dumpfile.escape(b"-") == b"-"
    assert dumpfile.escape(b"-", lone_dash=True) == b"\\x2d"
    assert dumpfile.escape(b"--", lone_dash=True) == b"--"
    assert dumpfile.escape(b"\x7f\x80\xff~!") == b"\\x7f\\x80\\xff~!"


def test_escape_unescape_round_trip_random_bytes():
    rng = random.Random(1234)
    for _round in range(300):
        data = bytes(rng.randrange(256) for _byte in range(rng.randrange(40)))
        for equal in (False, True):
            escaped = dumpfile.escape(data, equal=equal, lone_dash=True)
            assert b" " not in escaped and b"\n" not in escaped
            if equal:
                assert b"=" not in escaped
            assert dumpfile.unescape(escaped) == data


def test_field_errors_name_the_field():
    rejects(ROOT + b"/a\\q 0 100644 1 0 0 0 0.0 - - -\n", "Invalid PATH field: Unsupported escape type q", line=2)
    rejects(ROOT + b"/a 1 100644 1 0 0 0 0.0 - \\x -\n", "Invalid CONTENT field", line=2)
    rejects(ROOT + b"/a 0 100644 1 0 0 0 0.0 - - - k=\\\n", "Invalid xattr: No character after escape", line=2)


# --- numbers ----------------------------------------------------------------------

def test_numbers_are_read_like_strtoull():
    tree = parse(b"/ 4096 40755 2 0 0 0 0.0 - - -\n"
                 b"/a \t+7 0100644 00001 -1 18446744073709551616 0 -1.+5 - - -\n")
    node = tree.lookup("/a")
    assert node.size == 7
    assert node.mode == 0o100644 and node.nlink == 1
    assert node.uid == 0xFFFFFFFF  # -1 wraps, then 32-bit storage
    assert node.gid == 0xFFFFFFFF  # overflow saturates at 2**64 - 1
    assert node.mtime_sec == -1 and node.mtime_nsec == 5


@pytest.mark.parametrize("line, fragment", [
    (b"/a x 100644 1 0 0 0 0.0 - - -", "Invalid integer x in SIZE field"),
    (b"/a 0 100648 1 0 0 0 0.0 - - -", "Invalid integer 100648 in MODE field"),
    (b"/a 0 @ 1 0 0 0 0.0 - - -", "Invalid integer  in MODE field"),
    (b"/a 0 100644 1 0 0 0 0 - - -", "Invalid integer  in MTIME field"),
    (b"/a 0 100644 1 0 0 0 1.2.3 - - -", "Invalid integer 2.3 in MTIME field"),
    (b"/a 0 100644 1 0 x 0 0.0 - - -", "Invalid integer x in GID field"),
    (b"/a 0 100644 1 0 0 x 0.0 - - -", "Invalid integer x in RDEV field"),
    (b"/a 0 100644 1", "Invalid integer  in UID field"),
    (b"/a 0 170644 1 0 0 0 0.0 - - -", "Invalid mode 170644"),
])
def test_number_errors(line, fragment):
    rejects(ROOT + line + b"\n", fragment, line=2)


def test_bad_gid_and_rdev_pass_when_uid_is_not_zero():
    # mkcomposefs 1.0.8 checks the UID variable after parsing GID and RDEV.
    tree = parse(ROOT + b"/a 0 100644 1 5 x y 0.0 - - -\n")
    node = tree.lookup("/a")
    assert (node.uid, node.gid, node.rdev) == (5, 0, 0)


def test_thirty_two_bit_fields_truncate():
    tree = parse(ROOT + b"/c 0 20644 4294967297 4294967298 4294967299 4294967301 0.4294967297 - - -\n")
    node = tree.lookup("/c")
    assert (node.nlink, node.uid, node.gid, node.rdev, node.mtime_nsec) == (1, 2, 3, 5, 1)


# --- structure --------------------------------------------------------------------

@pytest.mark.parametrize("text, line, fragment", [
    (b"", None, "No files in dump file"),
    (b"/a 0 100644 1 0 0 0 0.0 - - -\n", 1, "Root node not present"),
    (b"/ 0 100644 1 0 0 0 0.0 - - -\n", 1, "Root must be a directory"),
    (ROOT + ROOT, 2, "Can't have multiple roots"),
    (ROOT + b"/a/b 0 100644 1 0 0 0 0.0 - - -\n", 2, "Parent directory missing for /a/b"),
    (ROOT + b"/f 0 100644 1 0 0 0 0.0 - - -\n/f/b 0 100644 1 0 0 0 0.0 - - -\n", 3, "Parent must be a directory for /f/b"),
    (ROOT + b"/f 0 100644 1 0 0 0 0.0 - - -\n/f 0 100644 1 0 0 0 0.0 - - -\n", 3, "Path /f already exist"),
    (ROOT + b"/d/ 0 40755 1 0 0 0 0.0 - - -\n", 2, "Parent directory missing"),
    (ROOT + b"/" + b"n" * 256 + b" 0 100644 1 0 0 0 0.0 - - -\n", 2, "file name longer than 255"),
    (ROOT + b"\n", 2, "Invalid empty path"),
    (ROOT + b"/a\\x00 0 100644 1 0 0 0 0.0 - - -\n/a 0 100644 1 0 0 0 0.0 - - -\n", 3, "Path /a already exist"),
    (ROOT + b"/a 0 100644 1 0 0 0 0.0 - - -\x00\n", 2, "Invalid embedded NUL character at position 29"),
])
def test_structure_errors(text, line, fragment):
    error = rejects(text, fragment)
    assert error.lineno == line


def test_paths_are_lenient_like_upstream():
    tree = parse(ROOT + b"d 0 40755 1 0 0 0 0.0 - - -\n//d///f 0 100644 1 0 0 0 0.0 - - -\n")
    assert tree.lookup("/d/f").path == b"/d/f"


def test_name_ends_at_escaped_nul():
    tree = parse(ROOT + b"/ab\\x00cd 0 100644 1 0 0 0 0.0 - - -\n")
    assert list(tree.root.children) == [b"ab"]


def test_missing_fields_read_as_empty():
    # A chardev needs no payload/content/digest fields at all.
    tree = parse(ROOT + b"/c 0 20644 1 0 0 0 0.0\n")
    node = tree.lookup("/c")
    assert node.payload == b"" and node.content is None and node.digest is None


# --- optional fields, symlinks, content ---------------------------------------------

def test_strict_mode_distinctions():
    for text, fragment in [
        (ROOT + b"/a 0 100644 1 0 0 7 0.0 - - -\n", "Non-zero devnum on non-device"),
        (ROOT + b"/l 3 120777 1 0 0 0 0.0 ab - -\n", "Invalid symlink size 2, must match size 3"),
        (ROOT + b"/l 2 120777 1 0 0 0 0.0 ab ab -\n", "Symlink cannot have content"),
        (ROOT + b"/a 0 100644 1 0 0 0 0.0 - - -", "Missing trailing newline"),
    ]:
        tree = parse(text)  # accepted by default
        assert tree.root.children
        rejects(text, fragment, strict=True, line=2)


def test_symlinks():
    tree = parse(ROOT + b"/l 99 120777 1 0 0 0 0.0 tar\\x20get - -\n")
    node = tree.lookup("/l")
    assert node.payload == b"tar get" and node.size == 7
    rejects(ROOT + b"/l 0 120777 1 0 0 0 0.0 - - -\n", "Invalid symlink: no target", line=2)
    rejects(ROOT + b"/l 0 120777 1 0 0 0 0.0 \\x00 - -\n", "Invalid symlink: no target", line=2)
    rejects(ROOT + b"/l 0 120777 1 0 0 0 0.0 " + b"a" * 4096 + b" - -\n", "Invalid symlink", line=2)
    assert parse(ROOT + b"/l 0 120777 1 0 0 0 0.0 " + b"a" * 4095 + b" - -\n").lookup("/l").size == 4095


def test_content_and_payload():
    tree = parse(ROOT + b"/a 3 100644 1 0 0 0 0.0 - a\\x00b -\n/b 0 100644 1 0 0 0 0.0 \\x2d - -\n")
    assert tree.lookup("/a").content == b"a\x00b"
    assert tree.lookup("/b").payload == b"-"
    rejects(ROOT + b"/a 4 100644 1 0 0 0 0.0 - abc -\n", "Invalid content size 3, must match size 4", line=2)
    rejects(ROOT + b"/a 0 100644 1 0 0 0 0.0 " + b"p" * 4096 + b" - -\n", "Invalid payload", line=2)
    empty = parse(ROOT + b"/a 0 100644 1 0 0 0 0.0 -  -\n").lookup("/a")
    assert empty.content is None and empty.size == 0


def test_digests():
    hexed = "35d02f81325122d77ec1d11baba655bc9bf8a891ab26119a41c50fa03ddfb408"
    tree = parse(ROOT + b"/a 5000 100644 1 0 0 0 0.0 35/d02f - " + hexed.upper().encode() + b"\n")
    assert tree.lookup("/a").digest == bytes.fromhex(hexed)
    # Like libcomposefs, only the first 64 hex digits count.
    assert parse(ROOT + b"/a 1 100644 1 0 0 0 0.0 - - " + hexed.encode() + b"ff\n").lookup("/a").digest \
        == bytes.fromhex(hexed)
    rejects(ROOT + b"/a 1 100644 1 0 0 0 0.0 - - abcd\n", "Invalid digest abcd", line=2)
    rejects(ROOT + b"/a 1 100644 1 0 0 0 0.0 - - " + b"g" * 64 + b"\n", "Invalid digest", line=2)


def test_xattrs():
    tree = parse(ROOT + b"/a 0 100644 1 0 0 0 0.0 - - - user.k\\x3d=v\\x3d= security.x= user.k\\x3d=new \n")
    assert tree.lookup("/a").xattrs == {b"user.k=": b"new", b"security.x": b""}
    rejects(ROOT + b"/a 0 100644 1 0 0 0 0.0 - - - user.a=1  user.b=2\n", "Missing = in xattr", line=2)
    rejects(ROOT + b"/a 0 100644 1 0 0 0 0.0 - - - novalue\n", "Missing = in xattr", line=2)
    rejects(ROOT + b"/a 0 100644 1 0 0 0 0.0 - - - =v\n", "Can't set xattr", line=2)
    rejects(ROOT + b"/a 0 100644 1 0 0 0 0.0 - - - " + b"k" * 256 + b"=v\n", "Can't set xattr", line=2)


def test_xattr_space_limit_counts_like_libcomposefs():
    # 12 + 7 + len(key) + len(value) must stay <= 32767.
    value = b"v" * (32767 - 12 - 7 - 6)
    ok = ROOT + b"/a 0 100644 1 0 0 0 0.0 - - - user.a=" + value + b"\n"
    assert len(parse(ok).lookup("/a").xattrs[b"user.a"]) == len(value)
    rejects(ROOT + b"/a 0 100644 1 0 0 0 0.0 - - - user.a=" + value + b"v\n", "over the limit of 32767", line=2)
    # Replacing a value frees its space first.
    again = ROOT + b"/a 0 100644 1 0 0 0 0.0 - - - user.a=" + value + b" user.a=" + value + b"\n"
    assert parse(again).lookup("/a").xattrs[b"user.a"] == value


# --- hardlinks ----------------------------------------------------------------------

def test_hardlinks():
    text = (ROOT
            + b"/a 5 @100644 9 9 9 9 9.9 /d/f - -\n"
            + b"/b 0 @100644 0 0 0 0 0.0 /a - -\n"
            + b"/d 0 40755 2 0 0 0 0.0 - - -\n"
            + b"/d/f 3 100644 2 0 0 0 0.0 - abc -\n")
    tree = parse(text)
    f = tree.lookup("/d/f")
    assert tree.lookup("/a").link_to is f
    assert tree.lookup("/b").link_to is tree.lookup("/a")
    assert tree.lookup("/b").resolve() is f
    assert f.nlink == 2  # the dumpfile's number, as mkcomposefs keeps it
    out = tree.to_dumpfile()
    assert b"/a 3 @100644 2 0 0 0 0.0 /d/f abc -\n" in out
    assert b"/b 3 @100644 2 0 0 0 0.0 /a abc -\n" in out
    assert dumpfile.loads(out).to_dumpfile() == out


@pytest.mark.parametrize("text, line, fragment", [
    (ROOT + b"/a 0 @100644 1 0 0 0 0.0 - - -\n", 2, "No target path for the hardlink"),
    (ROOT + b"/a 0 @100644 1 0 0 0 0.0 /nope - -\n", 2, "No target at /nope for hardlink"),
    (ROOT + b"/a 0 @100644 1 0 0 0 0.0 /a - -\n", 2, "Self-referential hardlink /a"),
    (ROOT + b"/a 0 @100644 1 0 0 0 0.0 / - -\n", 2, "Hardlink target / is a directory"),
    (ROOT + b"/a 0 @100644 1 0 0 0 0.0 /b - -\n/b 0 @100644 1 0 0 0 0.0 /a - -\n", 2, "hardlink loop"),
    (ROOT + b"/d 0 @40755 1 0 0 0 0.0 / - -\n", 2, "Directories can't be hardlinked"),
    # Hardlinks are resolved last, in reverse order: the later broken one is reported.
    (ROOT + b"/a 0 @100644 1 0 0 0 0.0 /x - -\n/b 0 @100644 1 0 0 0 0.0 /y - -\n", 3, "No target at /y"),
])
def test_hardlink_errors(text, line, fragment):
    error = rejects(text, fragment)
    assert error.lineno == line


# --- writing ------------------------------------------------------------------------

MAN_PAGE_EXAMPLE = (
    b"/ 4096 40755 4 1000 1000 0 1695372970.944925700 - - - security.selinux=unconfined_u:object_r:unlabeled_t:s0\\x00\n"
    b"/a\\x20dir\\x20w\\x20space 27 40755 2 1000 1000 0 1694598852.869646118 - - - security.selinux=unconfined_u:object_r:unlabeled_t:s0\\x00\n"
    b"/a-dir 45 40755 2 1000 1000 0 1674041780.601887980 - - - security.selinux=unconfined_u:object_r:unlabeled_t:s0\\x00\n"
    b"/a-dir/a-file 259 100644 1 1000 1000 0 1695368732.385062094 "
    b"35/d02f81325122d77ec1d11baba655bc9bf8a891ab26119a41c50fa03ddfb408 - 35d02f81325122d77ec1d11baba655bc9bf8a891ab26119a41c50fa03ddfb408 "
    b"security.selinux=unconfined_u:object_r:unlabeled_t:s0\\x00\n"
    b"/a-hardlink 259 @100644 1 1000 1000 0 1695368732.385062094 /a-dir/a-file - "
    b"35d02f81325122d77ec1d11baba655bc9bf8a891ab26119a41c50fa03ddfb408 security.selinux=unconfined_u:object_r:unlabeled_t:s0\\x00\n"
    b"/inline.txt 10 100644 1 1000 1000 0 1697019909.446146440 - some-text\\n - security.selinux=unconfined_u:object_r:unlabeled_t:s0\\x00\n"
)


def test_man_page_example_is_written_back_identically():
    # composefs-dump(5)'s example, hardlink line as composefs-info prints it (target's fields).
    tree = parse(MAN_PAGE_EXAMPLE, strict=True)
    assert tree.to_dumpfile() == MAN_PAGE_EXAMPLE


def test_write_to_file_object_and_escaping():
    tree = Tree()
    tree.add("/-", Node(0o100644, size=1, content=b"-", xattrs={b"user.a=b": b"-= \n"}))
    tree.add(b"/\xff sp", Node(0o100644, size=5000, payload=b"-", digest=bytes(32)))
    tree.add("/neg", Node(0o10644, mtime_sec=-5, mtime_nsec=7))
    out = io.BytesIO()
    assert tree.to_dumpfile(out) is None
    text = out.getvalue()
    assert text == tree.to_dumpfile()
    assert text.splitlines() == [
        b"/ 0 40755 1 0 0 0 0.0 - - -",
        b"/- 1 100644 1 0 0 0 0.0 - \\x2d - user.a\\x3db=-\\x3d\\x20\\n",
        b"/neg 0 10644 1 0 0 0 -5.7 - - -",
        b"/\\xff\\x20sp 5000 100644 1 0 0 0 0.0 \\x2d - " + b"0" * 64,
    ]
    assert dumpfile.loads(text).to_dumpfile() == text


def test_lines_with_a_backslash_are_found_in_one_search():
    data = b"a\\\nb\nc\\d\\e\n\nf\ng\\"
    assert dumpfile._lines_with(data, b"\\") == {1, 3, 6}
    assert dumpfile._lines_with(b"no escapes\nhere\n", b"\\") == set()


def test_escapes_on_any_line_are_decoded_and_others_left_alone():
    text = (b"/ 0 40755 2 0 0 0 0.0 - - -\n"
            b"/a\\x20b 3 100644 1 0 0 0 0.0 - x\\x2dy -\n"
            b"/plain 2 100644 1 0 0 0 0.0 - ab -\n"
            b"/l 3 120777 1 0 0 0 0.0 t\\\\u - -")  # the last line has no newline
    tree = dumpfile.loads(text)
    assert tree.lookup(b"/a b").content == b"x-y"
    assert tree.lookup(b"/plain").content == b"ab"
    assert tree.lookup(b"/l").payload == b"t\\u"
