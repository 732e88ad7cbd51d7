# -*- coding: utf-8 -*-
# Copyright: composefs.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The in-memory tree: node API and building from a directory (like ``mkcomposefs DIR``)."""

import errno
import os
import stat

import pytest

from ansible_collections.composefs.fleet.plugins.module_utils.composefs import dumpfile
from ansible_collections.composefs.fleet.plugins.module_utils.composefs.errors import ComposefsError
from ansible_collections.composefs.fleet.plugins.module_utils.composefs.tree import (
    Node,
    Tree,
    digest_to_payload,
    xattr_space,
)
from ansible_collections.composefs.fleet.plugins.module_utils.erofs.writer import build_image

# --- node API -----------------------------------------------------------------------


def test_node_defaults_and_widths():
    node = Node(0o100644, uid=1 << 32 | 7, mtime_sec=(1 << 64) - 1, size=5)
    assert node.uid == 7 and node.mtime_sec == -1 and node.nlink == 1
    assert not node.is_dir() and node.children is None
    assert Node(0o40755).is_dir() and Node(0o40755).children == {}


def test_add_child_and_paths():
    tree = Tree()
    d = tree.add("/d", Node(0o40755))
    f = d.add_child(b"f", Node(0o100644))
    assert f.path == b"/d/f" and tree.lookup("/d/f") is f and tree.lookup(b"d//f") is f
    assert tree.lookup("/nope") is None and tree.lookup("/d/f/x") is None
    assert tree.root.path == b"/"
    for name, fragment in [(b"", "empty"), (b".", "Invalid ."), (b"..", "Invalid ."), (b"a/b", "Invalid /"),
                           (b"n" * 256, "longer than 255"), (b"f", "already exist")]:
        with pytest.raises(ComposefsError) as info:
            d.add_child(name, Node(0o100644))
        assert fragment in str(info.value)
    with pytest.raises(ComposefsError):
        f.add_child(b"x", Node(0o100644))
    with pytest.raises(ComposefsError):
        d.add_child(b"g", f)  # already in the tree
    with pytest.raises(ComposefsError):
        tree.add("/missing/x", Node(0o100644))
    assert [p for p, _n in tree.walk()] == [b"/", b"/d", b"/d/f"]
    assert len(tree) == 3


def test_set_xattr_checks():
    node = Node(0o100644)
    node.set_xattr(b"user.a", b"1")
    assert xattr_space(node.xattrs) == 12 + 7 + 6 + 1
    for key in (b"", b"k" * 256, b"a\0b"):
        with pytest.raises(ComposefsError):
            node.set_xattr(key, b"")
    with pytest.raises(ComposefsError):
        node.set_xattr(b"user.big", b"v" * 65536)
    with pytest.raises(ComposefsError) as info:
        node.set_xattr(b"user.b", b"v" * 32767)
    assert "over the limit" in str(info.value)
    assert node.xattrs == {b"user.a": b"1"}  # unchanged after a refusal
    node.set_xattr(b"user.b", b"v" * 32767, limit=65535)


def test_symlink_and_content_setters():
    link = Node(0o120777)
    link.set_symlink_target(b"target")
    assert link.size == 6
    for bad in (b"", b"x" * 4096):
        with pytest.raises(ComposefsError):
            link.set_symlink_target(bad)
    f = Node(0o100644)
    f.set_content(b"abc")
    assert f.size == 3 and f.content == b"abc"
    with pytest.raises(ComposefsError):
        f.set_content(b"x" * 5001)


def test_validate():
    tree = Tree()
    tree.add("/big", Node(0o100644, size=(1 << 53) + 1))
    with pytest.raises(ComposefsError) as info:
        tree.validate()
    assert "File too big" in str(info.value)
    tree = Tree()
    tree.add("/d", Node(0o40755))
    tree.add("/l", Node(0o100644, link_to=tree.lookup("/d")))
    with pytest.raises(ComposefsError):
        tree.validate()


def test_digest_to_payload():
    digest = bytes.fromhex("35d02f81325122d77ec1d11baba655bc9bf8a891ab26119a41c50fa03ddfb408")
    assert digest_to_payload(digest) == b"35/d02f81325122d77ec1d11baba655bc9bf8a891ab26119a41c50fa03ddfb408"


# --- from_directory -----------------------------------------------------------------


def _xattrs_supported(path):
    try:
        os.setxattr(path, "user.probe", b"1", follow_symlinks=False)
        os.removexattr(path, "user.probe", follow_symlinks=False)
        return True
    except OSError:
        return False


def _set_mtime(path, sec, nsec):
    os.utime(path, ns=(sec * 10 ** 9 + nsec, sec * 10 ** 9 + nsec), follow_symlinks=False)


@pytest.fixture
def source(tmp_path, fsverity_vectors):
    """A small directory tree; returns (path, {content: digest hex})."""
    top = tmp_path / "src"
    top.mkdir()
    digests = dict(fsverity_vectors)
    big = [c for c in digests if len(c) > 64]
    assert len(big) >= 2, "fsverity.tsv should have contents longer than 64 bytes"
    (top / "empty").write_bytes(b"")
    (top / "one").write_bytes(b"1")
    (top / "sixty-four").write_bytes(b"x" * 64)
    (top / "big1").write_bytes(big[0])
    (top / "sub").mkdir()
    (top / "sub" / "big2").write_bytes(big[1])
    (top / "sub" / "deeper").mkdir()
    os.symlink("../one", str(top / "sub" / "link"))
    os.mkfifo(str(top / "fifo"))
    os.link(str(top / "big1"), str(top / "sub" / "big1-again"))
    for path in [top / "empty", top / "one", top / "sixty-four", top / "big1", top / "sub" / "big2", top / "fifo"]:
        os.chmod(str(path), 0o640)
    for path, sec in [(top / "sub" / "link", 1000), (top / "sub" / "deeper", 1700000000), (top / "sub", 1700000001),
                      (top, 1700000002)]:
        _set_mtime(str(path), sec, 123)
    for name in ["empty", "one", "sixty-four", "big1", "fifo"]:
        _set_mtime(str(top / name), 1600000000, 5)
    _set_mtime(str(top / "sub" / "big2"), 1600000000, 5)
    return top, digests


def test_from_directory_reads_like_mkcomposefs(source):
    top, digests = source
    tree = Tree.from_directory(str(top))
    paths = [p for p, _n in tree.walk()]
    assert paths == [b"/", b"/big1", b"/empty", b"/fifo", b"/one", b"/sixty-four", b"/sub", b"/sub/big1-again",
                     b"/sub/big2", b"/sub/deeper", b"/sub/link"]
    root = tree.root
    st = os.lstat(str(top))
    assert root.mode == st.st_mode and root.uid == st.st_uid and root.mtime_sec == 1700000002
    assert root.mtime_nsec == 123
    assert tree.lookup("/empty").content is None and tree.lookup("/empty").payload is None
    assert tree.lookup("/empty").digest is None
    assert tree.lookup("/one").content == b"1" and tree.lookup("/one").digest is None
    assert tree.lookup("/sixty-four").content == b"x" * 64
    big1 = tree.lookup("/big1")
    content = open(str(top / "big1"), "rb").read()
    assert big1.content is None and big1.size == len(content)
    assert big1.digest.hex() == digests[content]
    assert big1.payload == digest_to_payload(big1.digest)
    assert big1.mode == 0o100640 and big1.mtime_sec == 1600000000 and big1.mtime_nsec == 5
    link = tree.lookup("/sub/link")
    assert link.payload == b"../one" and link.size == 6 and link.mtime_sec == 1000
    assert stat.S_ISFIFO(tree.lookup("/fifo").mode)
    # mkcomposefs 1.0.x loses hardlinks: two separate inodes, nlink 1 each.
    again = tree.lookup("/sub/big1-again")
    assert again.link_to is None and again.nlink == 1 and big1.nlink == 1
    assert again.digest == big1.digest


def test_from_directory_matches_the_equivalent_dumpfile(source):
    top, _digests = source
    tree = Tree.from_directory(str(top), use_epoch=True)
    st = os.lstat(str(top))
    expected = dumpfile.loads(tree.to_dumpfile(), strict=True)
    # Some lines as mkcomposefs --use-epoch sees the files on disk.
    big1 = tree.lookup("/big1")
    text = b"\n".join([
        b"/ 0 %o 1 %d %d 0 0.0 - - -" % (st.st_mode, st.st_uid, st.st_gid),
        b"/big1 %d 100640 1 %d %d 0 0.0 %s - %s" % (big1.size, st.st_uid, st.st_gid, big1.payload,
                                                    big1.digest.hex().encode()),
        b"/one 1 100640 1 %d %d 0 0.0 - 1 -" % (st.st_uid, st.st_gid),
    ]) + b"\n"
    assert all(line in expected.to_dumpfile() for line in text.splitlines()[1:])
    assert build_image(tree) == build_image(expected)
    assert all(n.mtime_sec == 0 and n.mtime_nsec == 0 for _p, n in tree.walk())


def test_from_directory_keeps_hardlinks_when_asked(source):
    top, _digests = source
    tree = Tree.from_directory(str(top), hardlinks=True)
    first = tree.lookup("/big1")
    again = tree.lookup("/sub/big1-again")
    assert again.link_to is first and first.nlink == 2
    text = tree.to_dumpfile()
    assert b"/sub/big1-again %d @100640 2" % first.size in text
    image_kept = build_image(tree)
    image_lost = build_image(Tree.from_directory(str(top)))
    assert image_kept != image_lost and len(image_kept) > 0


def test_from_directory_xattr_options(source):
    top, _digests = source
    if not _xattrs_supported(str(top)):
        pytest.fail("user xattrs are needed: run the tests with TMPDIR on a filesystem that has them (ext4, xfs, btrfs)")
    os.setxattr(str(top / "one"), "user.color", b"blue")
    os.setxattr(str(top / "sub"), "user.k", b"v\0")
    try:
        os.setxattr(str(top / "one"), "trusted.overlay.thing", b"x")
        has_trusted = True
    except OSError:
        has_trusted = False
    tree = Tree.from_directory(str(top))
    assert tree.lookup("/one").xattrs[b"user.color"] == b"blue"
    assert tree.lookup("/sub").xattrs[b"user.k"] == b"v\0"
    if has_trusted:
        assert tree.lookup("/one").xattrs[b"trusted.overlay.thing"] == b"x"
        user_only = Tree.from_directory(str(top), user_xattrs=True)
        assert set(user_only.lookup("/one").xattrs) == {b"user.color"}
    none = Tree.from_directory(str(top), skip_xattrs=True)
    assert all(not n.xattrs for _p, n in none.walk())
    with pytest.raises(ComposefsError):
        Tree.from_directory(str(top), skip_xattrs=True, user_xattrs=True)


def test_from_directory_devices(tmp_path):
    top = tmp_path / "dev"
    top.mkdir()
    try:
        os.mknod(str(top / "null"), 0o20666, os.makedev(1, 3))
        os.mknod(str(top / "whiteout"), 0o20000, os.makedev(0, 0))
        os.mknod(str(top / "loop"), 0o60660, os.makedev(7, 0))
    except OSError as exc:
        if exc.errno in (errno.EPERM, errno.EACCES):
            pytest.fail("creating device nodes needs root (the test tiers run as root)")
        raise
    (top / "file").write_bytes(b"x")
    tree = Tree.from_directory(str(top))
    assert tree.lookup("/null").rdev == os.makedev(1, 3)
    assert tree.lookup("/loop").rdev == os.makedev(7, 0)
    assert tree.lookup("/whiteout").rdev == 0
    skipped = Tree.from_directory(str(top), skip_devices=True)
    assert sorted(skipped.root.children) == [b"file"]
    # A whiteout makes the default image format version 1.
    image = build_image(tree)
    assert image[12:16] == b"\x01\x00\x00\x00"
    assert build_image(skipped)[12:16] == b"\x00\x00\x00\x00"


def test_from_directory_errors(tmp_path):
    with pytest.raises(ComposefsError) as info:
        Tree.from_directory(str(tmp_path / "missing"))
    assert "error accessing" in str(info.value)
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(ComposefsError):
        Tree.from_directory(str(tmp_path / "file"))


def test_from_directory_without_digests(source):
    top, _digests = source
    tree = Tree.from_directory(str(top), compute_digests=False)
    big1 = tree.lookup("/big1")
    assert big1.digest is None and big1.payload is None and big1.content is None
