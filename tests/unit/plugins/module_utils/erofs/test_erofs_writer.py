# -*- coding: utf-8 -*-
# Copyright: composefs.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The EROFS writer: byte-identical to mkcomposefs 1.0.8 on upstream's assets."""

import hashlib
import io
import os
import struct
import subprocess
import time

import pytest

from ansible_collections.composefs.fleet.plugins.module_utils.composefs import dumpfile
from ansible_collections.composefs.fleet.plugins.module_utils.composefs.errors import ComposefsError
from ansible_collections.composefs.fleet.plugins.module_utils.composefs.tree import Node, Tree
from ansible_collections.composefs.fleet.plugins.module_utils.erofs import format as fmt
from ansible_collections.composefs.fleet.plugins.module_utils.erofs.writer import (
    build_image,
    image_digest,
    write_image,
)

ROOT = b"/ 4096 40755 2 0 0 0 0.0 - - -\n"
_TREES = {}


def vector_tree(vector):
    """Parsed once per session (the big assets take a while)."""
    if vector.name not in _TREES:
        _TREES[vector.name] = Tree.from_dumpfile(vector.path, strict=vector.strict)
    return _TREES[vector.name]


def sha256(data):
    return hashlib.sha256(data).hexdigest()


# --- the bar: upstream's checksums ------------------------------------------------------

def test_image_is_byte_identical_to_mkcomposefs(image_vector):
    started = time.time()
    image = build_image(vector_tree(image_vector), image_vector.min_version, image_vector.max_version)
    elapsed = time.time() - started
    assert sha256(image) == image_vector.sha256
    assert len(image) % fmt.EROFS_BLKSIZ == 0
    print("%s: %d bytes in %.2fs" % (image_vector.name, len(image), elapsed))


def test_round_trip_through_our_dumpfile_gives_the_same_image(image_vector):
    tree = vector_tree(image_vector)
    text = tree.to_dumpfile()
    again = dumpfile.loads(text, strict=True)
    image = build_image(again, image_vector.min_version, image_vector.max_version)
    assert sha256(image) == image_vector.sha256


def test_writing_leaves_the_tree_alone(image_vector):
    tree = vector_tree(image_vector)
    before = tree.to_dumpfile()
    first = build_image(tree, image_vector.min_version, image_vector.max_version)
    assert tree.to_dumpfile() == before
    assert build_image(tree, image_vector.min_version, image_vector.max_version) == first


def test_too_big_file_is_rejected_when_writing(vectors_dir):
    tree = Tree.from_dumpfile(vectors_dir + "/composefs/should-fail-too-big.dump")
    out = io.BytesIO()
    with pytest.raises(ComposefsError) as info:
        write_image(tree, out)
    assert str(info.value).startswith("line 2: /bigfile: File too big")
    assert out.getvalue() == b""  # nothing written


def test_fsck_erofs_accepts_the_images(image_vector, tmp_path):
    path = tmp_path / "image.cfs"
    path.write_bytes(build_image(vector_tree(image_vector), image_vector.min_version, image_vector.max_version))
    result = subprocess.run(["fsck.erofs", str(path)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, check=False)
    assert result.returncode == 0, result.stdout


# --- versions -----------------------------------------------------------------------------

def _special(vectors_dir):
    return Tree.from_dumpfile(vectors_dir + "/composefs/special.dump", strict=True)


def test_version_follows_min_and_max(vectors_dir, manifest):
    tree = _special(vectors_dir)  # has a whiteout, so it wants version 1
    v0 = manifest["special.dump"].sha256
    v1 = manifest["special_v1.dump"].sha256
    assert sha256(build_image(tree, 0, 0)) == v0
    assert sha256(build_image(tree, 0, 1)) == v1  # raised to the max for the whiteout
    assert sha256(build_image(tree)) == v1
    assert sha256(build_image(tree, 1, 0)) == v1  # a max below the min is raised to it
    assert sha256(build_image(tree, 1, 1)) == v1
    for bad in [(2, 2), (0, 2), (-1, 1)]:
        with pytest.raises(ComposefsError):
            build_image(tree, *bad)


def test_version_stays_at_min_without_whiteouts():
    tree = dumpfile.loads(ROOT + b"/a 0 100644 1 0 0 0 0.0 - - -\n")
    header = fmt.COMPOSEFS_HEADER.unpack(build_image(tree)[:32])
    assert header == (fmt.LCFS_EROFS_MAGIC, 1, 0, 0)
    assert fmt.COMPOSEFS_HEADER.unpack(build_image(tree, 1, 1)[:32])[3] == 1


# --- structure ------------------------------------------------------------------------------

def test_header_and_superblock(vectors_dir):
    tree = dumpfile.loads(ROOT + b"/acl 0 100644 1 0 0 0 5.0 - - - system.posix_acl_access=\\x02\\x00\\x00\\x00\n"
                          + b"/00 0 40755 2 0 0 0 7.0 - - -\n")
    image = build_image(tree)
    magic, version, flags, cfs_version = fmt.COMPOSEFS_HEADER.unpack(image[:32])
    assert (magic, version, flags, cfs_version) == (fmt.LCFS_EROFS_MAGIC, 1, fmt.LCFS_EROFS_FLAGS_HAS_ACL, 0)
    assert image[32:1024] == bytes(992)
    sb = fmt.SUPER_BLOCK.unpack(image[1024:1152])
    (sb_magic, checksum, compat, blkszbits, extslots, root_nid, inos, build_time, build_nsec, blocks,
     meta_blkaddr, xattr_blkaddr) = sb[:12]
    assert sb_magic == fmt.EROFS_SUPER_MAGIC_V1 and checksum == 0
    assert compat == fmt.EROFS_FEATURE_COMPAT_MTIME | fmt.EROFS_FEATURE_COMPAT_XATTR_FILTER
    assert (blkszbits, extslots, meta_blkaddr) == (12, 0, 0)
    assert root_nid == 1152 // 32
    assert inos == 3 + 255  # root, /acl, /00 and the 255 other root whiteouts
    assert (build_time, build_nsec) == (0, 0)
    assert blocks * 4096 == len(image)
    # The root inode: compact (its mtime is the smallest); its 259 entries fill a data block.
    i_format, icount, mode, nlink, size, _reserved, raw_blkaddr = struct.unpack("<HHHHIII", image[1152:1172])
    assert i_format == fmt.EROFS_INODE_FLAT_PLAIN << 1
    assert mode == 0o40755 and nlink == 3 and size == 4096
    assert raw_blkaddr * 4096 == len(image) - 4096  # the only data block, last in the image
    assert icount > 0  # trusted.overlay.opaque=y


def test_image_digest_matches_fsverity_of_the_bytes(vectors_dir):
    from ansible_collections.composefs.fleet.plugins.module_utils.fsverity.digest import data_digest
    tree = _special(vectors_dir)
    image = build_image(tree)
    out = io.BytesIO()
    digest = write_image(tree, out, digest=True)
    assert out.getvalue() == image
    assert digest == image_digest(image) == data_digest(image)
    assert len(digest) == 32
    assert write_image(tree, io.BytesIO()) is None


def test_metacopy_xattr_is_not_counted_against_the_files_own_xattrs():
    # libcomposefs writes a clone whose xattr space count starts at 0 (lcfs_node_clone()
    # does not copy it), so a file whose own xattrs nearly fill the limit still gets its
    # metacopy and redirect xattrs: mkcomposefs 1.0.8 writes this tree.
    big = b"v" * (32767 - 12 - 7 - len(b"user.big") - 20)
    node = Node(0o100644, size=10, payload=b"aa/bb", xattrs={b"user.big": big})
    tree = Tree()
    tree.add("/f", node)
    assert build_image(tree)


def test_hardlink_to_directory_is_rejected():
    tree = Tree()
    tree.add("/d", Node(0o40755))
    tree.add("/l", Node(0o100644, link_to=tree.lookup("/d")))
    with pytest.raises(ComposefsError):
        build_image(tree)


def _rich_tree():
    """Layouts beyond the assets: multi-block dirs, block-sized inline data, long symlinks."""
    tree = Tree()
    tree.root.set_xattr(b"security.selinux", b"system_u:object_r:root_t:s0\0")
    many = tree.add("/many", Node(0o40755))
    for i in range(400):
        data = b"%d" % i
        many.add_child(b"entry-%04d-%s" % (i, b"x" * (i % 50)), Node(0o100644, content=data, size=len(data), mtime_sec=i))
    for size in (1, 64, 2048, 2049, 4095, 4096, 4097, 5000):
        data = bytes((i * 7 + size) & 0xFF for i in range(size))
        tree.add("/inline-%d" % size, Node(0o100600, content=data, size=size, uid=70000))
    tree.add("/external", Node(0o100644, size=100, payload=b"ab/cdef", digest=bytes(range(32))))
    for size in (1, 100, 3000, 4000, 4095):
        link = Node(0o120777)
        link.set_symlink_target(b"t" * size)
        tree.add("/link-%d" % size, link)
    tree.add("/deep", Node(0o40700, xattrs={b"user.a": b"1", b"trusted.overlay.opaque": b"y"}))
    tree.add("/deep/er", Node(0o40700))
    tree.add("/deep/er/f", Node(0o100644))
    tree.add("/hardlink", Node(0o100644, link_to=tree.lookup("/inline-1")))
    return tree


def test_fsck_erofs_extracts_what_we_put_in(tmp_path):
    tree = _rich_tree()
    image = tmp_path / "rich.cfs"
    image.write_bytes(build_image(tree))
    out = tmp_path / "out"
    result = subprocess.run(["fsck.erofs", "--extract=%s" % out, str(image)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, check=False)
    assert result.returncode == 0, result.stdout
    names = sorted(os.listdir(str(out)))
    assert len(names) == 256 + 17 and "00" in names and "ff" in names
    for path, node in tree.walk():
        on_disk = str(out) + path.decode()
        node = node.resolve()
        if node.content is not None:
            with open(on_disk, "rb") as handle:
                assert handle.read() == node.content, path
        elif node.type == 0o120000:
            assert os.readlink(on_disk).encode() == node.payload, path
        elif node.is_dir() and path != b"/":
            assert sorted(os.listdir(on_disk)) == sorted(n.decode() for n in node.children), path


def test_rich_tree_is_deterministic_and_round_trips():
    tree = _rich_tree()
    image = build_image(tree)
    assert build_image(dumpfile.loads(tree.to_dumpfile(), strict=True)) == image


# --- the breadth-first preparation against libcomposefs's order ---------------------------------


def test_breadth_first_preparation_gives_the_ordered_image(image_vector):
    """_prepare's fast path (in place) and the depth-first one on copies give the same inodes."""
    from ansible_collections.composefs.fleet.plugins.module_utils.erofs import writer
    tree = vector_tree(image_vector)
    nodes = [node for _path, node in tree.walk()]
    for version in ((image_vector.min_version, image_vector.max_version), (0, 0), (1, 1)):
        fast = writer._prepare_breadth_first(tree, *version)
        if fast is not None:
            fast = (fast[0], fast[1], [_final(ino) for ino in fast[0]])
        ordered = writer._prepare_in_order(tree, *version)
        if fast is None:  # a whiteout or an overlay xattr to escape: only on copies
            assert any((node.mode & 0o170000 == 0o020000 and node.rdev == 0)
                       or any(key.startswith(b"trusted.overlay.") for key in node.xattrs) for node in nodes)
            continue
        assert fast[1] == ordered[1]
        assert [ino.path for ino in fast[0]] == [ino.path for ino in ordered[0]]
        assert fast[2] == [_final(ino) for ino in ordered[0]]


def _final(ino):
    """What the layout reads of a prepared inode: nlink, mode, size, xattrs and entries."""
    is_dir = ino.mode & 0o170000 == 0o040000
    size = len(ino.payload) if ino.mode & 0o170000 == 0o120000 else ino.size
    entries = [(e[0], e[1].path, e[2]) for e in ino.w_entries] if is_dir else None
    return (ino.w_nlink if is_dir else ino.nlink, ino.mode, size, list(ino.w_items or ()), entries)


def test_first_problem_in_libcomposefs_order_is_reported():
    """Two bad symlinks: the ordered rewrite (depth-first) meets /a/z/l before /b/l, breadth-first would not."""
    tree = Tree.from_dumpfile(ROOT + b"/a 0 40755 2 0 0 0 0.0 - - -\n/a/z 0 40755 2 0 0 0 0.0 - - -\n"
                              b"/a/z/l 1 120777 1 0 0 0 0.0 x - -\n/b 0 40755 2 0 0 0 0.0 - - -\n"
                              b"/b/l 1 120777 1 0 0 0 0.0 y - -\n")
    tree.lookup(b"/a/z/l").payload = None
    tree.lookup(b"/b/l").payload = None
    with pytest.raises(ComposefsError) as exc:
        build_image(tree)
    assert "/a/z/l" in str(exc.value), str(exc.value)
