"""Images of real directory trees: Tree.from_directory + our writer against ``mkcomposefs DIR`` 1.0.8.

Random trees (hypothesis) are written to an ext4 loop filesystem, which takes
trusted.* and security.* xattrs, owners above 65535, devices, fifos, sockets,
nanosecond mtimes; then both tools build the image and the bytes and the
``--print-digest`` digests must be equal; ``fsck.erofs --extract`` must accept
the image and our reader's dump and ls must equal composefs-info's. When the
images differ, both are decoded with our reader and the dumps diffed to say
what differs.
Also the trees of this machine: /usr/lib/python3 and the whole of /usr/share.
"""
import difflib
import os
import shutil
import subprocess
import tempfile
import time

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

import cfs_oracle
import treegen
from source_fs import example_dirs
from ansible_collections.composefs.fleet.plugins.module_utils.composefs.errors import ComposefsError
from ansible_collections.composefs.fleet.plugins.module_utils.composefs.tree import Tree
from ansible_collections.composefs.fleet.plugins.module_utils.erofs import format as fmt
from ansible_collections.composefs.fleet.plugins.module_utils.erofs import reader, writer

# mkcomposefs options and the matching Tree.from_directory arguments.
OPTIONS = {
    (): {},
    ("--use-epoch",): {"use_epoch": True},
    ("--skip-xattrs",): {"skip_xattrs": True},
    ("--user-xattrs",): {"user_xattrs": True},
    ("--skip-devices",): {"skip_devices": True},
}
AMBIGUOUS_XATTRS = frozenset((b"user.overlay.whiteout", b"user.overlay.whiteouts", b"trusted.overlay.whiteout",
                              b"trusted.overlay.whiteouts"))
option_sets = st.one_of(st.just(()), st.sampled_from(sorted(OPTIONS)))


def _region(data, offset):
    """Which part of an image ``offset`` falls in."""
    if offset < 32:
        return "composefs header"
    if offset < fmt.EROFS_SUPER_OFFSET + fmt.SUPER_BLOCK.size:
        return "superblock"
    try:
        info = reader.read_superblock(data)
    except reader.ImageError:
        return "?"
    if offset < info.xattr_blkaddr * fmt.EROFS_BLKSIZ:
        return "inode nid %d" % ((offset - info.meta_blkaddr * fmt.EROFS_BLKSIZ) // 32)
    return "shared xattrs or data block %d" % (offset // fmt.EROFS_BLKSIZ)


def explain_difference(oracle_image, our_image):
    """A readable account of how two images differ: the dump diff, else the first differing bytes."""
    lines = ["images differ: oracle %d bytes, ours %d bytes" % (len(oracle_image), len(our_image))]
    try:
        oracle_dump = theirs = reader.dump(oracle_image)
        our_dump = ours = reader.dump(our_image)
    except reader.ImageError as exc:
        lines.append("reading an image failed: %s" % exc)
        theirs = ours = None
    if theirs is not None and theirs != ours:
        lines.append("dumps (read back by our reader) differ:")
        lines.append(text_difference(oracle_dump, our_dump, "oracle image", "our image"))
    else:
        for offset in range(min(len(oracle_image), len(our_image))):
            if oracle_image[offset] != our_image[offset]:
                lines.append("same dumps; first differing byte at offset %d (%s): oracle %s, ours %s" % (
                    offset, _region(oracle_image, offset), oracle_image[offset:offset + 16].hex(),
                    our_image[offset:offset + 16].hex()))
                break
    return "\n".join(lines)


class OracleRejected(Exception):
    pass


def build_both(src, workdir, options=(), store=None):
    """(oracle image, oracle digest hex, our image, our digest hex, our tree).

    When mkcomposefs rejects the tree, our writer must too (ComposefsError):
    then OracleRejected is raised.
    """
    oracle_path = os.path.join(workdir, "oracle.cfs")
    args = list(options) + ["--print-digest"]
    if store is not None:
        args.append("--digest-store=%s" % store)
    try:
        oracle_digest = cfs_oracle.mkcomposefs_dir(src, oracle_path, *args).split()[0].decode("ascii")
    except cfs_oracle.OracleError as exc:
        try:
            tree = Tree.from_directory(src, **OPTIONS[tuple(options)])
            writer.build_image(tree)
        except ComposefsError:
            raise OracleRejected(str(exc))
        keep = os.environ.get("CFSF_FAILING_TREE_DIR")
        if keep:  # for debugging: the tree as a dumpfile, to feed mkcomposefs --from-file
            with tempfile.NamedTemporaryFile(dir=keep, suffix=".dump", delete=False) as handle:
                handle.write(tree.to_dumpfile())
        text = tree.to_dumpfile().decode("utf-8", "backslashreplace")
        pytest.fail("mkcomposefs rejects this tree, our writer does not: %s\ntree:\n%s" % (exc, text[:5000]),
                    pytrace=False)
    with open(oracle_path, "rb") as handle:
        oracle_image = handle.read()
    tree = Tree.from_directory(src, **OPTIONS[tuple(options)])
    our_path = os.path.join(workdir, "ours.cfs")
    with open(our_path, "wb") as handle:
        our_digest = writer.write_image(tree, handle, digest=True).hex()
    with open(our_path, "rb") as handle:
        our_image = handle.read()
    return oracle_image, oracle_digest, our_image, our_digest, tree


def text_difference(theirs, ours, their_name, our_name):
    """Where two dumps (bytes) differ: each differing line pair with its first differing column."""
    a = theirs.split(b"\n")
    b = ours.split(b"\n")
    out = ["%s: %d lines, %s: %d lines" % (their_name, len(a), our_name, len(b))]
    matcher = difflib.SequenceMatcher(None, a, b, autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            continue
        for k in range(max(i2 - i1, j2 - j1)):
            x = a[i1 + k] if i1 + k < i2 else None
            y = b[j1 + k] if j1 + k < j2 else None
            if x is not None and y is not None:
                col = next((c for c in range(min(len(x), len(y))) if x[c] != y[c]), min(len(x), len(y)))
                lo = max(0, col - 80)
                out.append("line %d, column %d:\n  %s: ...%r\n  %s: ...%r" % (
                    i1 + k + 1, col, their_name, x[lo:col + 80], our_name, y[lo:col + 80]))
            else:
                out.append("line only in %s: %r" % (their_name if y is None else our_name, (x or y)[:300]))
        if len(out) > 30:
            break
    return "\n".join(out)


def assert_same_text(ours, theirs, what, image=None):
    if ours != theirs:
        keep = os.environ.get("CFSF_FAILING_TREE_DIR")
        if keep and image:  # for debugging
            handle, kept = tempfile.mkstemp(dir=keep, suffix=".cfs")
            os.close(handle)
            shutil.copy(image, kept)
        pytest.fail(text_difference(theirs, ours, "composefs-info " + what, "reader." + what), pytrace=False)


def assert_same(oracle_image, oracle_digest, our_image, our_digest):
    if our_image != oracle_image:
        pytest.fail(explain_difference(oracle_image, our_image), pytrace=False)
    assert our_digest == oracle_digest
    assert writer.image_digest(our_image).hex() == oracle_digest


# Shrinking a failing tree can take minutes: set CFSF_HYPOTHESIS_SHRINK=1 to have it.
PHASES = tuple(Phase) if os.environ.get("CFSF_HYPOTHESIS_SHRINK") else (Phase.explicit, Phase.generate)


@settings(max_examples=int(os.environ.get("CFSF_HYPOTHESIS_EXAMPLES", "30")), deadline=None, database=None,
          print_blob=True, phases=PHASES, suppress_health_check=list(HealthCheck))
@given(spec=treegen.tree_specs(), options=option_sets)
def test_random_trees_give_the_oracle_image(ext4, spec, options):
    with example_dirs(ext4) as (src_parent, work):
        src = treegen.materialize(spec, src_parent)
        store = os.path.join(work, "store")
        os.mkdir(store)
        try:
            oracle_image, oracle_digest, our_image, our_digest, tree = build_both(src, work, options, store)
        except OracleRejected:
            return  # both refused it
        assert_same(oracle_image, oracle_digest, our_image, our_digest)
        ambiguous = any(k in AMBIGUOUS_XATTRS for _p, node in tree.walk() for k in node.xattrs)
        # The store the oracle filled holds the objects the image names (a regular file marked
        # trusted.overlay.whiteout reads back as a whiteout: its object is stored but not named).
        stored = sorted(os.path.relpath(os.path.join(d, f), store) for d, _s, fs in os.walk(store) for f in fs)
        named = reader.objects(our_image)
        assert named == stored if not ambiguous else set(named) <= set(stored)
        assert reader.missing_objects(our_image, store) == []
        # fsck.erofs accepts it, our reader agrees with composefs-info on it ...
        image_path = os.path.join(work, "ours.cfs")
        fsck = subprocess.run(["fsck.erofs", "--extract", image_path], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              check=False)
        assert fsck.returncode == 0, fsck.stdout.decode("utf-8", "replace")
        assert_same_text(reader.dump(image_path), cfs_oracle.info("dump", image_path), "dump", image_path)
        assert_same_text(reader.ls(image_path), cfs_oracle.info("ls", image_path), "ls", image_path)
        # ... and reads back the tree we wrote, unless a source xattr is one the format cannot tell
        # from its own markers (libcomposefs drops user.overlay.whiteout(s) and turns a regular file
        # with trusted.overlay.whiteout into a whiteout when reading).
        if not ambiguous:
            assert writer.build_image(reader.read_image(our_image)) == our_image


def test_a_fixed_tree_with_everything(ext4):
    """One tree with every feature at once (and the corner sizes), independent of hypothesis's draws."""
    meta = (0o644, 70000, 65536, (1700000000, 123456789), {b"user.a": b"1", b"trusted.overlay.redirect": b"/x",
                                                           b"security.selinux": b"system_u:object_r:usr_t:s0\0"})
    special = (0o640, 1, 2, (5, 6), {b"trusted.overlay.opaque": b"y", b"security.selinux": b"l\0"})
    files = dict((b"size-%d" % size, ("file", meta, (size, 1, False))) for size in treegen.SIZES)
    files[b"big sparse"] = ("file", meta, (5 << 20, 0, True))
    files[b"big"] = ("file", meta, ((3 << 20) + 7, 1, False))
    files[b"big copy"] = ("file", meta, ((3 << 20) + 7, 1, False))
    files[b"link"] = ("symlink", (0o777, 0, 0, (0, 0), {}), b"size-64")
    files[b"chr"] = ("chr", special, (4095, (1 << 20) - 1))
    files[b"blk"] = ("blk", special, (8, 1))
    files[b"whiteout"] = ("chr", special, (0, 0))
    files[b"fifo"] = ("fifo", special, None)
    files[b"sock"] = ("sock", special, None)
    files[b"name with spaces\nand=\xff"] = ("file", meta, (65, 2, False))
    files[b"-leading"] = ("file", meta, (0, 0, False))
    spec = (("dir", (0o755, 0, 0, (1, 1), {b"user.root": b"r"}), {b"d": ("dir", meta[:4] + ({},), files)}),
            {"links": [(1, 0, b"hardlink")], "many_links": 60, "wide": 300, "deep": 40})
    with example_dirs(ext4) as (src_parent, work):
        src = treegen.materialize(spec, src_parent)
        store = os.path.join(work, "store")
        os.mkdir(store)
        for options in sorted(OPTIONS):
            assert_same(*build_both(src, work, options, store)[:4])


@pytest.mark.parametrize("top", ["/usr/lib/python3", "/usr/share"])
def test_trees_of_this_machine(top, tmp_path):
    cfs_oracle.check_available()
    if not os.path.isdir(top):
        pytest.fail("%s is missing on this host" % top)
    started = time.time()
    assert_same(*build_both(top, str(tmp_path))[:4])
    print("%s: %.1fs" % (top, time.time() - started))
