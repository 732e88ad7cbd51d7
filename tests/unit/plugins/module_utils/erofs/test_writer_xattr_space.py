# -*- coding: utf-8 -*-
# Copyright: composefs.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The writer's xattr space accounting against mkcomposefs 1.0.8 (found while testing the reader).

libcomposefs writes a deep clone of the tree (lcfs_write_to -> lcfs_node_clone_deep),
and lcfs_node_clone() copies the xattrs but not ``xattr_size``: in the writer every
inode's xattr space count starts at 0, whatever xattrs it already has. The count
is a size_t, so replacing an xattr the clone already had (unset subtracts its
size) can wrap around below zero. So:

- the 32767-byte external limit applies only to what the writer adds itself
  (metacopy, redirect, whiteout markers), not to the file's own xattrs;
- replacing an existing xattr with a shorter one, when other xattrs remain,
  wraps the count to ~2**64 and mkcomposefs fails with ERANGE ("Numerical result
  out of range"), e.g. a whiteout (chr 0:0) whose source has
  ``trusted.overlay.whiteout`` with a non-empty value and any other xattr.

The writer reproduces both (``_set_xattr``, ``_add_overlay_xattrs``); these tests
compare with the oracle.
"""

import pytest

import cfs_oracle
from ansible_collections.composefs.fleet.plugins.module_utils.composefs import dumpfile
from ansible_collections.composefs.fleet.plugins.module_utils.composefs.errors import ComposefsError
from ansible_collections.composefs.fleet.plugins.module_utils.composefs.tree import Node, Tree
from ansible_collections.composefs.fleet.plugins.module_utils.erofs.writer import build_image

ROOT = b"/ 4096 40755 2 0 0 0 0.0 - - -\n"
PAYLOAD = b"ab/" + b"c" * 62


@pytest.fixture(scope="module")
def oracle():
    cfs_oracle.check_available()
    return cfs_oracle


def _oracle_image(oracle, tmp_path, text):
    return oracle.mkcomposefs_from_dump(text, tmp_path / "oracle.cfs")


def test_file_xattrs_do_not_count_against_the_writers_additions(oracle, tmp_path):
    """mkcomposefs accepts a file whose own xattrs fill the space and then adds metacopy/redirect."""
    text = (ROOT + b"/f 5000 100644 1 0 0 0 0.0 " + PAYLOAD + b" - " + b"d" * 64
            + b" user.big=" + b"v" * 32700 + b"\n")
    expected = _oracle_image(oracle, tmp_path, text)
    assert build_image(dumpfile.loads(text)) == expected


def test_same_case_as_test_metacopy_xattr_can_overflow_the_xattr_space(oracle, tmp_path):
    """test_erofs_writer.py expects a rejection here; mkcomposefs 1.0.8 writes the image."""
    big = b"v" * (32767 - 12 - 7 - len(b"user.big") - 20)
    tree = Tree()
    tree.add("/f", Node(0o100644, size=10, payload=b"aa/bb", xattrs={b"user.big": big}))
    expected = _oracle_image(oracle, tmp_path, tree.to_dumpfile())
    assert build_image(tree) == expected


@pytest.mark.parametrize("xattrs", [
    b"trusted.overlay.whiteout=x user.a=1",
    b"trusted.overlay.opaque=0123456789 trusted.overlay.whiteout=abcd",
])
def test_replacing_a_source_xattr_wraps_and_mkcomposefs_refuses(oracle, tmp_path, xattrs):
    """A whiteout whose source xattrs include a non-empty trusted.overlay.whiteout, and another xattr: ERANGE."""
    text = ROOT + b"/w 0 20644 1 0 0 0 0.0 - - - " + xattrs + b"\n"
    with pytest.raises(cfs_oracle.OracleError, match="Numerical result out of range"):
        _oracle_image(oracle, tmp_path, text)
    with pytest.raises(ComposefsError):
        build_image(dumpfile.loads(text))


@pytest.mark.parametrize("xattrs", [
    b"trusted.overlay.whiteout= user.a=1",  # empty value: the count wraps back to exactly 0
    b"trusted.overlay.whiteout=x",  # the only xattr: unset resets the count to 0
    b"user.overlay.whiteout=xy user.a=1",  # the writer's own addition came first: no wrap
])
def test_replacing_without_wrapping_is_accepted(oracle, tmp_path, xattrs):
    text = ROOT + b"/w 0 20644 1 0 0 0 0.0 - - - " + xattrs + b"\n"
    assert build_image(dumpfile.loads(text)) == _oracle_image(oracle, tmp_path, text)
