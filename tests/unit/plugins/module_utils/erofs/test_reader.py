# -*- coding: utf-8 -*-
# Copyright: composefs.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The image reader against composefs-info 1.0.8 (the oracle), and on hostile images.

For every upstream asset that mkcomposefs accepts: the oracle builds the image,
our reader's dump / ls / objects / missing-objects must equal composefs-info's,
and upstream's round trip (image -> dump -> image) must give identical bytes
through the oracle and through our writer.
"""

import gzip
import hashlib
import os
import random
import struct

import pytest

import cfs_oracle
from ansible_collections.composefs.fleet.plugins.module_utils.composefs import dumpfile
from ansible_collections.composefs.fleet.plugins.module_utils.composefs.errors import ComposefsError
from ansible_collections.composefs.fleet.plugins.module_utils.composefs.tree import S_IFCHR, S_IFDIR, S_IFMT, S_IFREG
from ansible_collections.composefs.fleet.plugins.module_utils.erofs import format as fmt
from ansible_collections.composefs.fleet.plugins.module_utils.erofs import reader
from ansible_collections.composefs.fleet.plugins.module_utils.erofs.reader import ImageError
from ansible_collections.composefs.fleet.plugins.module_utils.erofs.writer import build_image

ROOT = b"/ 4096 40755 2 0 0 0 0.0 - - -\n"
D1 = "1" * 64
D2 = "ab" + "c" * 62
D3 = "0f" + "e" * 62
P1, P2, P3 = (d[:2] + "/" + d[2:] for d in (D1, D2, D3))


@pytest.fixture(scope="session")
def oracle():
    cfs_oracle.check_available()
    return cfs_oracle


@pytest.fixture(scope="session")
def vector_images(oracle, tmp_path_factory):
    """name -> (image path, image bytes), built by the oracle once per session."""
    base = tmp_path_factory.mktemp("vector-images")
    cache = {}

    def get(vector):
        if vector.name not in cache:
            with open(vector.path, "rb") as handle:
                text = handle.read()
            if vector.name.endswith(".gz"):
                text = gzip.decompress(text)
            path = base / (vector.name + ".cfs")
            data = oracle.mkcomposefs_from_dump(text, path, vector.min_version, vector.max_version)
            assert hashlib.sha256(data).hexdigest() == vector.sha256, "the oracle is not mkcomposefs 1.0.8?"
            cache[vector.name] = (path, data)
        return cache[vector.name]
    return get


_TREES = {}


def read_cached(vector, data):
    if vector.name not in _TREES:
        _TREES[vector.name] = reader.read_image(data)
    return _TREES[vector.name]


def small_image(oracle, tmp_path, text, min_version=None, max_version=None, name="small.cfs"):
    path = tmp_path / name
    return path, oracle.mkcomposefs_from_dump(text, path, min_version, max_version)


# --- upstream's assets ----------------------------------------------------------------------------


def test_dump_equals_composefs_info(image_vector, vector_images, oracle):
    path, data = vector_images(image_vector)
    tree = reader.read_image(data)
    assert reader.dump(tree) == oracle.info("dump", path)


def test_ls_equals_composefs_info(image_vector, vector_images, oracle):
    path, data = vector_images(image_vector)
    assert reader.ls(read_cached(image_vector, data)) == oracle.info("ls", path)


def test_objects_equal_composefs_info(image_vector, vector_images, oracle):
    path, data = vector_images(image_vector)
    tree = read_cached(image_vector, data)
    theirs = oracle.info("objects", path).decode("ascii").splitlines()
    assert reader.objects(tree, strict=False) == theirs
    if all(reader._OBJECT_PATH.match(o.encode()) for o in theirs):
        assert reader.objects(tree) == theirs
    else:
        # cs9-x86_64-minimal holds old-style "XX/<62 hex>.file" payloads: not store paths.
        with pytest.raises(ImageError, match="Refusing object path"):
            reader.objects(tree)


def test_missing_objects_equal_composefs_info(image_vector, vector_images, oracle, tmp_path):
    path, data = vector_images(image_vector)
    tree = read_cached(image_vector, data)
    objects = reader.objects(tree, strict=False)
    store = tmp_path / "store"
    store.mkdir()
    for obj in objects[::2]:  # every other object is present
        if reader._OBJECT_PATH.match(obj.encode()):
            (store / obj).parent.mkdir(exist_ok=True)
            (store / obj).write_bytes(b"")
    theirs = oracle.info("missing-objects", path, basedir=store).decode("ascii").splitlines()
    if all(reader._OBJECT_PATH.match(o.encode()) for o in objects):
        assert reader.missing_objects(tree, str(store)) == theirs
        assert reader.missing_objects(path, store) == theirs
    else:
        with pytest.raises(ImageError, match="Refusing object path"):
            reader.missing_objects(tree, str(store))


def test_round_trip_through_the_oracle(image_vector, vector_images, oracle, tmp_path):
    """Upstream's check: composefs-info dump | mkcomposefs --from-file gives the same image; ours too."""
    _path, data = vector_images(image_vector)
    ours = reader.dump(read_cached(image_vector, data))
    again = oracle.mkcomposefs_from_dump(ours, tmp_path / "again.cfs", image_vector.min_version, image_vector.max_version)
    assert again == data


def test_round_trip_through_our_writer(image_vector, vector_images):
    _path, data = vector_images(image_vector)
    tree = read_cached(image_vector, data)
    assert build_image(tree, image_vector.min_version, image_vector.max_version) == data
    # and through our dumpfile text (xattrs sorted there: the writer sorts them anyway)
    again = dumpfile.loads(tree.to_dumpfile(), strict=True)
    assert build_image(again, image_vector.min_version, image_vector.max_version) == data


def test_superblock(image_vector, vector_images):
    _path, data = vector_images(image_vector)
    info = reader.read_superblock(data)
    assert info.blocks * fmt.EROFS_BLKSIZ == len(data)
    assert info.composefs_version in (0, 1)
    assert info.feature_compat == fmt.EROFS_FEATURE_COMPAT_MTIME | fmt.EROFS_FEATURE_COMPAT_XATTR_FILTER
    if image_vector.min_version == image_vector.max_version:
        assert info.composefs_version == image_vector.min_version


def test_filter_like_upstream(vectors_dir, oracle, tmp_path):
    """tests/test-dump-filtered.sh: --filter keeps only those top-level entries."""
    with open(os.path.join(vectors_dir, "composefs", "special.dump"), "rb") as handle:
        path, data = small_image(oracle, tmp_path, handle.read())
    names = ["chardev", "inline", "whiteout"]
    ours = reader.dump(reader.read_image(data, toplevel=names))
    assert ours == oracle.info("dump", path, filters=names)
    assert len(ours.splitlines()) == 4
    assert reader.read_image(path, toplevel=[b"inline"]).root.children.keys() == {b"inline"}


# --- meaning of the image ----------------------------------------------------------------------------------


HARDLINKS = (ROOT
             + b"/a 0 40755 2 7 8 0 5.5 - - -\n"
             + b"/a/file 5000 100644 3 1 2 0 9.123456789 " + P2.encode() + b" - " + D2.encode() + b" user.k=v\n"
             + b"/a/small 3 100600 2 0 0 0 1.0 - abc - user.k=v\n"
             + b"/b 0 40755 2 0 0 0 0.0 - - -\n"
             + b"/b/link1 0 @100644 0 0 0 0 0.0 /a/file - -\n"
             + b"/b/link2 0 @100644 0 0 0 0 0.0 /a/file - -\n"
             + b"/b/link3 0 @100644 0 0 0 0 0.0 /a/small - -\n"
             + b"/sym 7 120777 1 0 0 0 0.0 /a/file - -\n"
             + b"/dev 0 20644 1 0 0 1025 0.0 - - -\n"
             + b"/blk 0 60644 1 70000 70000 2049 -5.0 - - -\n"
             + b"/fifo 0 10644 1 0 0 0 0.0 - - -\n"
             + b"/sock 0 140644 1 0 0 0 0.0 - - -\n"
             + b"/wh 0 20000 1 0 0 0 0.0 - - -\n")


def test_hardlinks_are_one_inode(oracle, tmp_path):
    path, data = small_image(oracle, tmp_path, HARDLINKS)
    tree = reader.read_image(data)
    first = tree.lookup("/a/file")
    assert first.link_to is None and first.payload == P2.encode() and first.digest == bytes.fromhex(D2)
    assert first.nlink == 3 and first.size == 5000 and (first.uid, first.gid) == (1, 2)
    assert (first.mtime_sec, first.mtime_nsec) == (9, 123456789)
    for name in (b"link1", b"link2"):
        assert tree.lookup(b"/b/" + name).link_to is first
    assert tree.lookup("/b/link3").link_to is tree.lookup("/a/small")
    assert tree.lookup("/a/small").content == b"abc"
    assert reader.dump(tree) == oracle.info("dump", path)
    assert reader.ls(tree) == oracle.info("ls", path)


def test_file_types_and_numbers(oracle, tmp_path):
    _path, data = small_image(oracle, tmp_path, HARDLINKS)
    tree = reader.read_image(data)
    assert tree.lookup("/sym").payload == b"/a/file"
    assert (tree.lookup("/dev").mode, tree.lookup("/dev").rdev) == (0o20644, 1025)
    blk = tree.lookup("/blk")
    assert (blk.mode, blk.rdev, blk.uid, blk.gid, blk.mtime_sec) == (0o60644, 2049, 70000, 70000, -5)
    assert tree.lookup("/fifo").mode == 0o10644 and tree.lookup("/sock").mode == 0o140644
    # The whiteout comes back as a character device 0:0; the root's 00..ff whiteouts do not show.
    wh = tree.lookup("/wh")
    assert (wh.mode, wh.rdev, wh.size, wh.xattrs) == (0o20000, 0, 0, {})
    assert sorted(tree.root.children) == [b"a", b"b", b"blk", b"dev", b"fifo", b"sock", b"sym", b"wh"]
    assert tree.lookup("/a").nlink == 2 and tree.lookup("/").nlink == 4


def test_overlay_xattrs_are_unescaped(oracle, tmp_path):
    text = ROOT + b"/f 0 100644 1 0 0 0 0.0 - - - trusted.overlay.foo=1 trusted.overlay.redirect=/x user.a=2\n"
    path, data = small_image(oracle, tmp_path, text)
    assert b"overlay.overlay.foo" in data  # stored escaped
    f = reader.read_image(data).lookup("/f")
    assert f.xattrs == {b"trusted.overlay.foo": b"1", b"trusted.overlay.redirect": b"/x", b"user.a": b"2"}
    assert f.payload is None  # an empty file: the redirect is the user's, escaped
    assert reader.dump(data) == oracle.info("dump", path)


def test_regular_file_marked_as_whiteout(oracle, tmp_path):
    """A source file with trusted.overlay.whiteout is stored escaped and reads back as a whiteout, as upstream."""
    text = (ROOT + b"/small 5 100644 1 0 0 0 0.0 - hello - trusted.overlay.whiteout=\n"
            + b"/big 5000 100644 1 0 0 0 0.0 " + P1.encode() + b" - " + D1.encode() + b" trusted.overlay.whiteout=\n")
    path, data = small_image(oracle, tmp_path, text)
    tree = reader.read_image(data)
    small = tree.lookup("/small")
    assert (small.mode, small.rdev, small.size, small.content) == (0o20644, 0, 0, b"")  # content kept, size 0
    big = tree.lookup("/big")
    # Both whiteout markers are shared xattrs, read after the inline metacopy and redirect.
    assert (big.mode, big.payload, big.digest) == (0o20644, P1.encode(), bytes.fromhex(D1))
    assert reader.dump(tree) == oracle.info("dump", path)


def test_dump_keeps_image_xattr_order(oracle, tmp_path):
    """composefs-info prints inline xattrs, then shared ones; Tree.to_dumpfile sorts them."""
    text = (ROOT + b"/a 0 100644 1 0 0 0 0.0 - - - security.selinux=x user.a=1\n"
            + b"/b 0 100644 1 0 0 0 0.0 - - - security.selinux=x user.b=2\n")
    path, data = small_image(oracle, tmp_path, text)
    tree = reader.read_image(data)
    assert list(tree.lookup("/a").xattrs) == [b"user.a", b"security.selinux"]  # selinux is shared
    assert reader.dump(tree) == oracle.info("dump", path)
    assert b"/a 0 100644 1 0 0 0 0.0 - - - user.a=1 security.selinux=x\n" in reader.dump(tree)
    assert b"/a 0 100644 1 0 0 0 0.0 - - - security.selinux=x user.a=1\n" in tree.to_dumpfile()


def test_version_1_opaque_markers(oracle, tmp_path, vectors_dir):
    with open(os.path.join(vectors_dir, "composefs", "special.dump"), "rb") as handle:
        text = handle.read()
    for version in (0, 1):
        path, data = small_image(oracle, tmp_path, text, version, version, name="v%d.cfs" % version)
        root = reader.read_image(data).root
        assert (b"trusted.overlay.opaque" in root.xattrs) == (version == 1)  # escaped "x", not the writer's "y"
        assert reader.dump(data) == oracle.info("dump", path)


# --- where composefs-info 1.0.8 is wrong and we are not ----------------------------------------------


def test_redirect_value_4_byte_aligned(oracle, tmp_path):
    """composefs-info appends up to two bytes after a 4-byte aligned redirect value; we do not."""
    text = (ROOT + b"/c 5000 100644 1 0 0 0 0.0 abc - - user.z=3\n"
            + b"/d 5000 100644 1 0 0 0 0.0 abc - - user.z=3\n")
    path, data = small_image(oracle, tmp_path, text)
    tree = reader.read_image(data)
    assert tree.lookup("/c").payload == b"abc"
    assert reader.objects(tree, strict=False) == ["abc"]
    theirs = oracle.info("objects", path)
    assert theirs.startswith(b"abc") and theirs != b"abc\n"  # upstream's bug (value_size++ instead of --)
    # Our dump rebuilds the same image; composefs-info's does not.
    assert oracle.mkcomposefs_from_dump(reader.dump(tree), tmp_path / "ours.cfs") == data
    assert build_image(tree) == data


def test_last_4_byte_inline_xattr(oracle, tmp_path):
    """composefs-info drops an empty posix ACL xattr when it is the last inline entry; we keep it."""
    text = ROOT + b"/a 0 100644 1 0 0 0 0.0 - - - system.posix_acl_access=\n/b 0 100644 1 0 0 0 0.0 - - - user.x=1\n"
    path, data = small_image(oracle, tmp_path, text)
    tree = reader.read_image(data)
    assert tree.lookup("/a").xattrs == {b"system.posix_acl_access": b""}
    assert b"/a 0 100644 1 0 0 0 0.0 - - -\n" in oracle.info("dump", path)  # upstream lost it
    assert oracle.mkcomposefs_from_dump(reader.dump(tree), tmp_path / "ours.cfs") == data
    assert build_image(tree) == data


# --- objects -------------------------------------------------------------------------------------


def test_objects_and_missing_objects(oracle, tmp_path):
    text = (ROOT + b"/x 5000 100644 1 0 0 0 0.0 " + P1.encode() + b" - -\n"
            + b"/y 5000 100644 1 0 0 0 0.0 " + P2.encode() + b" - " + D2.encode() + b"\n"
            + b"/z 5000 100644 1 0 0 0 0.0 " + P1.encode() + b" - -\n"
            + b"/w 5000 100644 1 0 0 0 0.0 " + P3.encode() + b" - -\n")
    path, data = small_image(oracle, tmp_path, text)
    assert reader.objects(data) == sorted([P1, P2, P3]) == oracle.info("objects", path).decode().split()
    store = tmp_path / "store"
    (store / D2[:2]).mkdir(parents=True)
    (store / P2).write_bytes(b"x")
    assert reader.missing_objects(path, store) == [P3, P1]
    assert reader.missing_objects(path, store) == oracle.info("missing-objects", path, basedir=store).decode().split()
    # several images: the union
    other, _data = small_image(oracle, tmp_path, ROOT + b"/q 9000 100644 1 0 0 0 0.0 " + P1.encode() + b" - -\n",
                               name="other.cfs")
    assert reader.objects([path, other]) == oracle.info("objects", path, other).decode().split()
    with pytest.raises(ComposefsError, match="Can't open object store"):
        reader.missing_objects(path, tmp_path / "nowhere")


@pytest.mark.parametrize("payload", [
    b"../../../etc/passwd", b"/etc/passwd", b"ab/../../" + b"c" * 56, b"AB/" + b"C" * 62, b"ab/" + b"c" * 61,
    b"ab/" + b"c" * 63, b"ab/" + b"c" * 62 + b".file", b"abc/" + b"c" * 61, b"-", b"ab\\" + b"c" * 62,
])
def test_object_paths_that_escape_the_store_are_refused(oracle, tmp_path, payload):
    text = ROOT + b"/evil 5000 100644 1 0 0 0 0.0 " + dumpfile.escape(payload, lone_dash=True) + b" - -\n"
    path, data = small_image(oracle, tmp_path, text)
    tree = reader.read_image(data)
    assert tree.lookup("/evil").payload == payload
    with pytest.raises(ImageError, match="/evil: Refusing object path"):
        reader.objects(tree)
    with pytest.raises(ImageError, match="/evil: Refusing object path"):
        reader.missing_objects(tree, str(tmp_path))
    assert reader.objects(tree, strict=False) == [os.fsdecode(tree.lookup("/evil").payload)]


def test_check_object_path():
    assert reader.check_object_path(P1.encode()) == P1
    for bad in (b"", b"..", b"ab/" + b"c" * 62 + b"\n", b"\x00b/" + b"c" * 62):
        with pytest.raises(ImageError):
            reader.check_object_path(bad)


# --- hostile images ------------------------------------------------------------------------------


def _inode(data, nid):
    """(offset, i_format, size, i_u, icount, inode size) of inode nid."""
    meta = struct.unpack_from("<I", data, fmt.EROFS_SUPER_OFFSET + 40)[0] * fmt.EROFS_BLKSIZ
    pos = meta + nid * 32
    i_format = struct.unpack_from("<H", data, pos)[0]
    if i_format & 1:
        f = fmt.INODE_EXTENDED.unpack_from(data, pos)
        return pos, i_format, f[4], f[5], f[1], 64
    f = fmt.INODE_COMPACT.unpack_from(data, pos)
    return pos, i_format, f[4], f[6], f[1], 32


def _root_nid(data):
    return struct.unpack_from("<H", data, fmt.EROFS_SUPER_OFFSET + 14)[0]


def _dirents(data, nid, with_name_offsets=False):
    """[(offset of the dirent in the image, name, child nid)] of directory inode nid.

    With ``with_name_offsets``: [(dirent offset, name offset, name, child nid)].
    """
    pos, i_format, size, i_u, icount, isize = _inode(data, nid)
    inline = (i_format >> 1) & 7 == fmt.EROFS_INODE_FLAT_INLINE
    tail = size % fmt.EROFS_BLKSIZ if inline else 0
    blocks = [(i_u * fmt.EROFS_BLKSIZ + off, min(fmt.EROFS_BLKSIZ, size - tail - off))
              for off in range(0, size - tail, fmt.EROFS_BLKSIZ)]
    if tail:
        blocks.append((pos + isize + (12 + (icount - 1) * 4 if icount else 0), tail))
    out = []
    for start, length in blocks:
        block = data[start:start + length]
        count = struct.unpack_from("<H", block, 8)[0] // 12
        heads = [struct.unpack_from("<QH", block, 12 * i) for i in range(count)]
        for i, (child, nameoff) in enumerate(heads):
            if i + 1 < count:
                end = heads[i + 1][1]
            else:
                end = block.find(b"\0", nameoff)
                end = length if end < 0 else end
            name = block[nameoff:end]
            out.append((start + 12 * i, start + nameoff, name, child) if with_name_offsets else
                       (start + 12 * i, name, child))
    return out


HOSTILE_BASE = (ROOT
                + b"/d 0 40755 2 0 0 0 0.0 - - -\n"
                + b"/d/e 0 40755 2 0 0 0 0.0 - - -\n"
                + b"/d/e/f 5 100644 1 0 0 0 0.0 - hello - user.x=1 security.selinux=s\n"
                + b"/d/g 5000 100644 1 0 0 0 0.0 " + P1.encode() + b" - - security.selinux=s\n"
                + b"/l 3 120777 1 0 0 0 0.0 d/g - -\n")


@pytest.fixture
def hostile_base(oracle, tmp_path):
    _path, data = small_image(oracle, tmp_path, HOSTILE_BASE)
    reader.read_image(data)  # sane to begin with
    return data


def _entry(data, parent_nid, name):
    for off, entry_name, child in _dirents(data, parent_nid):
        if entry_name == name:
            return off, child
    raise AssertionError("no entry %r" % name)


def _patch(data, offset, fmt_, *values):
    out = bytearray(data)
    struct.pack_into(fmt_, out, offset, *values)
    return bytes(out)


def _rejects(data, match):
    with pytest.raises(ImageError, match=match):
        reader.dump(data)


def test_helpers_find_entries(hostile_base):
    names = [name for _o, name, _n in _dirents(hostile_base, _root_nid(hostile_base))]
    assert b"d" in names and b"00" in names and b"." in names


@pytest.mark.parametrize("cut", [0, 1, 31, 1023, 1024 + 64, 4095])
def test_short_images_are_rejected(hostile_base, cut):
    _rejects(hostile_base[:cut], "shorter than one 4096-byte block")


def test_truncated_images_are_rejected(hostile_base):
    for cut in range(4096, len(hostile_base), 512):
        _rejects(hostile_base[:cut], "Truncated image")
    _rejects(hostile_base[:-1], "Truncated image")


def test_bad_magic_and_versions(hostile_base):
    _rejects(_patch(hostile_base, 0, "<I", 0x12345678), "bad composefs magic")
    _rejects(_patch(hostile_base, 4, "<I", 2), "header version 2")
    _rejects(_patch(hostile_base, 1024, "<I", 0), "bad EROFS superblock magic")
    _rejects(_patch(hostile_base, 1024 + 12, "<B", 9), "block size")
    _rejects(_patch(hostile_base, 1024 + 40, "<I", 1000), "Metadata block 1000 is past the end")
    _rejects(_patch(hostile_base, 1024 + 44, "<I", 1 << 20), "Shared xattr block .* past the end")
    with pytest.raises(ImageError, match="Can't read image"):
        reader.read_image("/nonexistent/image.cfs")


def test_inode_offsets_past_the_end(hostile_base):
    _rejects(_patch(hostile_base, 1024 + 14, "<H", 0xFFFF), "Inode 65535 at offset .* past the end")
    off, _nid = _entry(hostile_base, _root_nid(hostile_base), b"d")
    _rejects(_patch(hostile_base, off, "<Q", 1 << 40), "/d: Inode 1099511627776 at offset .* past the end")
    _rejects(_patch(hostile_base, off, "<Q", (1 << 64) - 1), "past the end")


def test_directory_loops(hostile_base):
    root = _root_nid(hostile_base)
    off_d, d = _entry(hostile_base, root, b"d")
    off_e, e = _entry(hostile_base, d, b"e")
    _rejects(_patch(hostile_base, off_e, "<Q", root), "/d/e: Directory inode %d is reached a second time" % root)
    _rejects(_patch(hostile_base, off_e, "<Q", d), "directory loop")
    off_f, _f = _entry(hostile_base, e, b"f")
    _rejects(_patch(hostile_base, off_f, "<Q", e), "directory loop")  # self loop
    # A hardlinked directory: /l (a symlink entry) pointing at /d.
    off_l, _l = _entry(hostile_base, root, b"l")
    bad = _patch(_patch(hostile_base, off_l, "<Q", d), off_l + 10, "<B", fmt.EROFS_FT_DIR)
    _rejects(bad, "hardlinked directory")


def test_corrupt_directory_entries(hostile_base):
    root = _root_nid(hostile_base)
    off_d, d = _entry(hostile_base, root, b"d")
    off_e, e = _entry(hostile_base, d, b"e")
    # file type contradicting the inode
    _rejects(_patch(hostile_base, off_e + 10, "<B", fmt.EROFS_FT_REG_FILE), "/d/e: Directory entry type 1")
    # first nameoff not a multiple of 12 / past the block
    first = _dirents(hostile_base, d)[0][0]
    _rejects(_patch(hostile_base, first + 8, "<H", 13), "corrupt block")
    _rejects(_patch(hostile_base, first + 8, "<H", 0xFFF0), "corrupt block")
    # names out of order
    _rejects(_patch(hostile_base, first + 12 + 8, "<H", 0), "corrupt block|invalid entry name")
    # a "/" or a NUL in a name
    name_off = [n for _o, n, name, _c in _dirents(hostile_base, d, True) if name == b"e"][0]
    _rejects(_patch(hostile_base, name_off, "<B", ord("/")), "/d: Directory inode %d has an invalid entry name" % d)
    _rejects(_patch(hostile_base, name_off, "<B", 0), "invalid entry name")


def test_corrupt_inodes(hostile_base):
    root = _root_nid(hostile_base)
    _off, d = _entry(hostile_base, root, b"d")
    _off, g = _entry(hostile_base, d, b"g")
    _off, l_nid = _entry(hostile_base, root, b"l")
    pos, i_format, _size, _iu, _ic, _is = _inode(hostile_base, g)
    _rejects(_patch(hostile_base, pos, "<H", (fmt.EROFS_INODE_COMPRESSED_FULL << 1) | (i_format & 1)), "compressed")
    _rejects(_patch(hostile_base, pos, "<H", 0x100 | i_format), "unknown format bits")
    _rejects(_patch(hostile_base, pos + 4, "<H", 0o170644), "invalid mode")
    # the chunk-based file's xattr count pointing past the end of the image
    _rejects(_patch(hostile_base, pos + 2, "<H", 0xFFFF), "past the end|past its xattr space|partial|more than")
    # a symlink claiming 5000 bytes
    pos, i_format, _size, _iu, _ic, isize = _inode(hostile_base, l_nid)
    size_off = pos + (8 if isize == 64 else 8)
    _rejects(_patch(hostile_base, size_off, "<I", 5000), "Symlink target of inode %d is 5000 bytes" % l_nid)
    # root not a directory
    _rejects(_patch(hostile_base, 1024 + 14, "<H", g), "Root inode %d is not a directory" % g)


def test_corrupt_xattrs(hostile_base):
    root = _root_nid(hostile_base)
    _off, d = _entry(hostile_base, root, b"d")
    _off, e = _entry(hostile_base, d, b"e")
    _off, f = _entry(hostile_base, e, b"f")
    pos, _fmt, _size, _iu, icount, isize = _inode(hostile_base, f)
    xpos = pos + isize
    shared = hostile_base[xpos + 4]
    assert shared == 1 and icount > 1  # security.selinux shared with /d/g, user.x inline
    _rejects(_patch(hostile_base, xpos + 4, "<B", 200), "more than its xattr space holds")
    _rejects(_patch(hostile_base, xpos + 12, "<I", 1 << 30), "Shared xattr .* past the end")
    entry = xpos + 12 + 4 * shared
    _rejects(_patch(hostile_base, entry + 2, "<H", 0x4000), "runs past its xattr space")
    _rejects(_patch(hostile_base, entry + 1, "<B", 0x80 | 1), "unknown name index")
    _rejects(_patch(hostile_base, entry, "<B", 255), "runs past its xattr space")


def test_random_corruption_gives_clean_errors(hostile_base, oracle, tmp_path, vectors_dir):
    """Byte flips anywhere in the metadata: ImageError or a tree, never another exception or a hang."""
    rng = random.Random(20240601)
    _path, special = small_image(oracle, tmp_path, HARDLINKS, name="hl.cfs")
    outcomes = {"ok": 0, "error": 0}
    for base in (hostile_base, special):
        meta_end = struct.unpack_from("<I", base, 1024 + 44)[0] * fmt.EROFS_BLKSIZ + 4096
        for _round in range(1500):
            mutated = bytearray(base)
            for _flip in range(rng.choice((1, 1, 2, 3, 8))):
                where = rng.randrange(1024, min(meta_end, len(base))) if rng.random() < 0.8 else rng.randrange(len(base))
                mutated[where] = rng.randrange(256)
            try:
                reader.dump(bytes(mutated))
                reader.ls(bytes(mutated))
                outcomes["ok"] += 1
            except ImageError:
                outcomes["error"] += 1
    assert outcomes["error"] > 100 and outcomes["ok"] > 100, outcomes


def test_directory_blocks_shared_between_directories(oracle, tmp_path):
    """Many directory inodes pointing at one big directory's blocks: refused, not a blow-up."""
    text = ROOT + b"/big 0 40755 2 0 0 0 0.0 - - -\n" + b"".join(
        b"/big/%0200d 0 100644 1 0 0 0 0.0 - - -\n" % i for i in range(200))
    text += b"".join(b"/d%03d 0 40755 2 0 0 0 0.0 - - -\n" % i for i in range(50))
    _path, data = small_image(oracle, tmp_path, text)
    root = _root_nid(data)
    _off, big = _entry(data, root, b"big")
    big_pos, big_format, big_size, big_blk, _ic, _is = _inode(data, big)
    assert big_size > 40000
    out = bytearray(data)
    for name in (b"d%03d" % i for i in range(50)):
        _off, nid = _entry(data, root, name)
        pos, _f, _s, _u, _ic, isize = _inode(data, nid)
        # turn the small directory into a copy of the big one's inode (same blocks)
        out[pos:pos + isize] = data[big_pos:big_pos + isize]
    _rejects(bytes(out), "Directory inode .* reached a second time|add up to more bytes than the image")


def test_errors_are_composefs_errors():
    assert issubclass(ImageError, ComposefsError)
    with pytest.raises(ComposefsError):
        reader.read_image(b"\0" * 8192)


def test_types_of_sources(hostile_base, tmp_path):
    import io
    path = tmp_path / "img.cfs"
    path.write_bytes(hostile_base)
    expected = reader.dump(hostile_base)
    assert reader.dump(str(path)) == reader.dump(path) == reader.dump(io.BytesIO(hostile_base)) == expected
    assert reader.dump(bytearray(hostile_base)) == reader.dump(memoryview(hostile_base)) == expected
    tree = reader.read_image(path)
    assert tree.lookup("/d/e/f").content == b"hello"
    assert tree.lookup("/d/g").mode & S_IFMT == S_IFREG and tree.lookup("/d").mode & S_IFMT == S_IFDIR
    assert all(n.mode & S_IFMT != S_IFCHR for _p, n in tree.walk())
