"""Our images under the host kernel: erofs + overlayfs (data-only lower layer) show the source tree.

For each tree (random ones from hypothesis, and a fixed one with every feature),
written to an ext4 loop filesystem: Tree.from_directory + our writer build the
image, the objects are copied into a store, ``fsck.erofs --extract`` checks the
image, then it is mounted as composefs does it by hand::

    mount -t erofs -o ro IMAGE META                    (file-backed; -o loop as fallback)
    mount -t overlay overlay -o ro,metacopy=on,redirect_dir=on,lowerdir+=META,datadir+=STORE TARGET

and every path of the source must be in TARGET (and nothing else) with the same
type, permission bits, owner, mtime (ns), size, symlink target, device number,
xattrs and content. Whiteouts (character devices 0:0) are what composefs keeps
of them: empty regular files marked ``trusted.overlay.whiteout``, for an overlay
stacked above. Needs root, a kernel with erofs and overlayfs data-only layers.
Every mount is undone, also when the test fails.
"""
import contextlib
import os
import shutil
import stat
import subprocess
import tempfile

import pytest
from hypothesis import HealthCheck, Phase, given, settings

import cfs_oracle
import treegen
from source_fs import example_dirs
from ansible_collections.composefs.fleet.plugins.module_utils.composefs.errors import ComposefsError
from ansible_collections.composefs.fleet.plugins.module_utils.composefs.tree import S_IFREG, Tree
from ansible_collections.composefs.fleet.plugins.module_utils.erofs import reader, writer

PHASES = tuple(Phase) if os.environ.get("CFSF_HYPOTHESIS_SHRINK") else (Phase.explicit, Phase.generate)


def _run(*argv):
    result = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, check=False)
    return result.returncode, result.stdout.decode("utf-8", "replace")


def _umount(path):
    code, out = _run("umount", path)
    if code != 0 and os.path.ismount(path):
        _run("umount", "-l", path)


@contextlib.contextmanager
def composefs_mount(image, store):
    """Mount ``image`` (file-backed erofs, else loop) with overlayfs over it; yield the overlay's path."""
    base = tempfile.mkdtemp(prefix="cfsf-mount-")
    meta = os.path.join(base, "meta")
    target = os.path.join(base, "target")
    os.mkdir(meta)
    os.mkdir(target)
    mounted = []
    try:
        code, out = _run("mount", "-t", "erofs", "-o", "ro", image, meta)
        if code != 0:
            code, out2 = _run("mount", "-t", "erofs", "-o", "ro,loop", image, meta)
            if code != 0:
                pytest.fail("mounting the erofs image failed: file-backed: %s; loop: %s" % (out, out2), pytrace=False)
        mounted.append(meta)
        options = "ro,metacopy=on,redirect_dir=on,lowerdir+=%s,datadir+=%s" % (meta, store)
        code, out = _run("mount", "-t", "overlay", "overlay", "-o", options, target)
        if code != 0:
            code, out2 = _run("mount", "-t", "overlay", "overlay", "-o",
                              "ro,metacopy=on,redirect_dir=on,lowerdir=%s::%s" % (meta, store), target)
            if code != 0:
                pytest.fail("mounting the overlay failed: %s; legacy syntax: %s" % (out, out2), pytrace=False)
        mounted.append(target)
        yield target
    finally:
        for path in reversed(mounted):
            _umount(path)
        shutil.rmtree(base, ignore_errors=True)


def fill_store(tree, src, store):
    """Copy each external file of ``tree`` (read from ``src``) to ``store/PAYLOAD``."""
    for path, node in tree.walk():
        if node.link_to is None and node.payload is not None and (node.mode & 0o170000) == S_IFREG:
            dest = os.path.join(store, os.fsdecode(reader.check_object_path(node.payload)))
            if not os.path.exists(dest):
                os.makedirs(os.path.dirname(dest), exist_ok=True)
                shutil.copyfile(os.path.join(os.fsencode(src), path.lstrip(b"/")), dest)


def fsck(image):
    code, out = _run("fsck.erofs", "--extract", image)
    assert code == 0, "fsck.erofs --extract %s failed:\n%s" % (image, out)


def expected_view(source):
    """What the composefs mount should show of a source snapshot (records adjusted in place)."""
    expected = {}
    for rel, rec in source.items():
        rec = dict(rec, xattrs=dict(rec["xattrs"]))
        if rec["type"] == stat.S_IFCHR and rec["rdev"] == 0:
            # A whiteout is kept as an empty file marked for an overlay above; its directory too.
            rec.update(type=stat.S_IFREG, size=0, rdev=0, sha256=_EMPTY_SHA256)
            rec["xattrs"][b"trusted.overlay.whiteout"] = b""
            rec["xattrs"][b"user.overlay.whiteout"] = b""
            parent = expected.setdefault(b"__parents__", set())
            parent.add(os.path.dirname(rel))
        if rec["type"] != stat.S_IFDIR:
            rec["nlink"] = 1  # mkcomposefs 1.0 (and Tree.from_directory by default) keeps no hardlinks
        expected[rel] = rec
    for rel in expected.pop(b"__parents__", ()):
        expected[rel]["xattrs"].update({b"trusted.overlay.whiteouts": b"", b"user.overlay.whiteouts": b"",
                                        b"trusted.overlay.opaque": b"x", b"user.overlay.opaque": b"x"})
    return expected


_EMPTY_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


def compare(source, mounted):
    """Differences between the expected view of ``source`` and the ``mounted`` snapshot, as text lines."""
    expected = expected_view(source)
    problems = []
    for rel in sorted(set(expected) | set(mounted)):
        want = expected.get(rel)
        got = mounted.get(rel)
        if want is None or got is None:
            problems.append("%r: %s" % (rel, "missing in the mount" if got is None else "not in the source"))
            continue
        for key in ("type", "mode", "uid", "gid", "mtime_ns", "nlink", "size", "rdev", "target", "sha256", "xattrs"):
            a = want.get(key)
            b = got.get(key)
            if key == "size" and want["type"] == stat.S_IFDIR:
                continue  # directory sizes are the filesystem's own
            if key == "nlink" and want["type"] == stat.S_IFDIR and rel == b"":
                continue  # the root's 00..ff whiteout directories are hidden but not its count
            if key == "rdev" and want["type"] not in (stat.S_IFCHR, stat.S_IFBLK):
                continue
            if a != b:
                problems.append("%r: %s: source %r, mount %r" % (rel, key, a, b))
    return problems


def check_tree(src, workdir):
    tree = Tree.from_directory(src)
    image = os.path.join(workdir, "image.cfs")
    try:
        with open(image, "wb") as handle:
            writer.write_image(tree, handle)
    except ComposefsError as exc:
        # Only where mkcomposefs refuses the tree too (the image tests compare that).
        try:
            cfs_oracle.mkcomposefs_dir(src, os.path.join(workdir, "oracle.cfs"))
        except cfs_oracle.OracleError:
            return
        pytest.fail("our writer refuses a tree mkcomposefs takes: %s" % exc, pytrace=False)
    store = os.path.join(workdir, "store")
    os.mkdir(store)
    fill_store(tree, src, store)
    assert reader.missing_objects(image, store) == []
    fsck(image)
    source = treegen.snapshot(src)
    with composefs_mount(image, store) as target:
        mounted = treegen.snapshot(target)
    problems = compare(source, mounted)
    assert not problems, "the mount differs from the source:\n" + "\n".join(problems[:40])


@settings(max_examples=int(os.environ.get("CFSF_HYPOTHESIS_MOUNT_EXAMPLES", "25")), deadline=None, database=None,
          print_blob=True, phases=PHASES, suppress_health_check=list(HealthCheck))
@given(spec=treegen.tree_specs())
def test_random_trees_mount_as_the_source(ext4, spec):
    with example_dirs(ext4) as (src_parent, work):
        check_tree(treegen.materialize(spec, src_parent), work)


def test_fixed_tree_mounts_as_the_source(ext4):
    meta = (0o644, 70000, 65536, (1700000000, 123456789), {b"user.a": b"1", b"trusted.overlay.redirect": b"/x",
                                                           b"security.selinux": b"system_u:object_r:usr_t:s0\0"})
    special = (0o640, 1, 2, (-5, 6), {b"trusted.foo": b"y", b"security.selinux": b"l\0"})
    files = dict((b"size-%d" % size, ("file", meta, (size, 1, False))) for size in treegen.SIZES)
    files[b"big sparse"] = ("file", meta, (5 << 20, 0, True))
    files[b"big"] = ("file", meta, ((3 << 20) + 7, 1, False))
    files[b"big copy"] = ("file", meta, ((3 << 20) + 7, 1, False))
    files[b"link"] = ("symlink", (0o777, 0, 0, (0, 0), {}), b"size-64")
    files[b"long link"] = ("symlink", (0o777, 5, 6, (7, 8), {b"trusted.x": b"1"}), b"x/" * 2000)
    files[b"chr"] = ("chr", special, (4095, (1 << 20) - 1))
    files[b"blk"] = ("blk", special, (8, 1))
    files[b"whiteout"] = ("chr", special, (0, 0))
    files[b"fifo"] = ("fifo", special, None)
    files[b"sock"] = ("sock", special, None)
    files[b"name with spaces\nand=\xff"] = ("file", meta, (65, 2, False))
    files[b"-leading"] = ("file", meta, (0, 0, False))
    files[b"ff"] = ("dir", (0o700, 3, 4, (2 ** 31 + 3, 999999999), {b"user.d": b"d" * 700}), {})
    spec = (("dir", (0o755, 0, 0, (1, 1), {b"user.root": b"r"}), {b"d": ("dir", meta[:4] + ({},), files),
                                                                  b"00": ("file", meta, (64, 3, False))}),
            {"links": [(1, 0, b"hardlink")], "many_links": 60, "wide": 300, "deep": 40})
    with example_dirs(ext4) as (src_parent, work):
        check_tree(treegen.materialize(spec, src_parent), work)


def test_oracle_images_mount_too(ext4):
    """The same check on an image mkcomposefs made: the harness agrees with the reference too."""
    cfs_oracle.check_available()
    entries = {b"f": ("file", (0o644, 0, 0, (3, 4), {b"user.x": b"y"}), (9000, 1, False)),
               b"w": ("chr", (0o600, 0, 0, (3, 4), {}), (0, 0))}
    spec = (("dir", (0o755, 0, 0, (1, 1), {}), entries), {"links": [], "many_links": 0, "wide": 0, "deep": 0})
    with example_dirs(ext4) as (src_parent, work):
        src = treegen.materialize(spec, src_parent)
        store = os.path.join(work, "store")
        image = os.path.join(work, "oracle.cfs")
        cfs_oracle.mkcomposefs_dir(src, image, "--digest-store=%s" % store)
        fsck(image)
        with composefs_mount(image, store) as target:
            mounted = treegen.snapshot(target)
        problems = compare(treegen.snapshot(src), mounted)
        assert not problems, "\n".join(problems)
