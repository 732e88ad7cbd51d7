# -*- coding: utf-8 -*-
# Copyright: composefs.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Hardlink chains (a link to a link to ... a file): resolved in linear time, and still right.

Issue 9, item 14: 8000 chained links took 8.5 s to parse and 8.7 s to build, because
every link walked its chain from the start. The time is measured by bench/image_build.py
(a 100k-link chain), never here; these tests check that long chains resolve to the
right file, give mkcomposefs's bytes, and that loops and links to directories still
fail with a clear message.
"""

import random

import pytest

import cfs_oracle
from ansible_collections.composefs.fleet.plugins.module_utils.composefs import dumpfile
from ansible_collections.composefs.fleet.plugins.module_utils.composefs.errors import ComposefsError
from ansible_collections.composefs.fleet.plugins.module_utils.composefs.tree import LinkResolver, Node, Tree
from ansible_collections.composefs.fleet.plugins.module_utils.erofs.writer import build_image

ROOT = b"/ 4096 40755 2 0 0 0 0.0 - - -\n"
FILE = b" 10 100644 1 7 8 0 5.0 - 0123456789 -\n"
LONG = 20000


def link_line(path, target):
    return path + b" 0 @100644 1 0 0 0 0.0 " + target + b" - -\n"


def forward_chain(n):
    """/f0 is the file; /f1 links to /f0, /f2 to /f1, ... (each target before its link)."""
    return ROOT + b"/f0" + FILE + b"".join(link_line(b"/f%d" % i, b"/f%d" % (i - 1)) for i in range(1, n + 1))


def reverse_chain(n):
    """/f0 links to /f1, /f1 to /f2, ... and the file /f<n> comes last."""
    return (ROOT + b"".join(link_line(b"/f%06d" % i, b"/f%06d" % (i + 1)) for i in range(n))
            + b"/f%06d" % n + FILE)


def star(n):
    """The same files, every link straight to /f0."""
    return ROOT + b"/f0" + FILE + b"".join(link_line(b"/f%d" % i, b"/f0") for i in range(1, n + 1))


def forest(n, seed=1):
    """Links to random earlier links or files, across directories."""
    rng = random.Random(seed)
    lines = [ROOT, b"/d 0 40755 2 0 0 0 0.0 - - -\n", b"/d/e 0 40755 2 0 0 0 0.0 - - -\n"]
    names = []
    for i in range(n):
        path = (b"/r%d", b"/d/r%d", b"/d/e/r%d")[i % 3] % i
        if names and rng.random() < 0.9:
            lines.append(link_line(path, rng.choice(names)))
        else:
            lines.append(path + b" 4000 100644 1 0 0 0 %d.0 %02x/%062x - -\n" % (i, i % 256, i))
        names.append(path)
    return b"".join(lines)


@pytest.fixture(scope="module")
def oracle():
    cfs_oracle.check_available()
    return cfs_oracle


def test_a_long_chain_resolves_to_its_file():
    tree = dumpfile.loads(forward_chain(LONG))
    first = tree.lookup("/f0")
    last = tree.lookup("/f%d" % LONG)
    assert last.link_to is tree.lookup("/f%d" % (LONG - 1))  # the tree keeps the chain as written
    links = LinkResolver()
    assert all(links.resolve(tree.lookup("/f%d" % i)) is first for i in range(LONG, 0, -7))
    assert last.resolve() is first
    tree.validate()


def test_a_long_chain_gives_the_image_of_links_straight_to_the_file():
    assert build_image(dumpfile.loads(forward_chain(LONG))) == build_image(dumpfile.loads(star(LONG)))


def test_a_long_reverse_chain_resolves_to_the_last_file():
    tree = dumpfile.loads(reverse_chain(LONG))
    final = tree.lookup("/f%06d" % LONG)
    assert final.link_to is None and tree.lookup("/f000000").resolve() is final
    assert build_image(tree)


def test_a_long_chain_is_written_back_as_it_was_read():
    text = forward_chain(2000)
    tree = dumpfile.loads(text)
    out = tree.to_dumpfile()
    assert out.count(b" @100644 1 7 8 0 5.0 ") == 2000  # each link shows its final target's fields
    assert b"/f2000 10 @100644 1 7 8 0 5.0 /f1999 0123456789 -\n" in out
    assert dumpfile.loads(out).to_dumpfile() == out


@pytest.mark.parametrize("text", [forward_chain(3000), reverse_chain(3000), forest(3000)],
                         ids=["forward", "reverse", "forest"])
def test_chains_give_the_oracle_image(oracle, tmp_path, text):
    assert build_image(dumpfile.loads(text)) == oracle.mkcomposefs_from_dump(text, tmp_path / "oracle.cfs")


# --- what must still fail ----------------------------------------------------------------

def rejects(text, fragment):
    with pytest.raises(ComposefsError) as info:
        dumpfile.loads(text)
    assert fragment in str(info.value), str(info.value)
    return info.value


def test_a_long_loop_is_refused():
    n = 20000
    text = ROOT + b"".join(link_line(b"/l%d" % i, b"/l%d" % ((i + 1) % n)) for i in range(n))
    error = rejects(text, "hardlink loop")
    assert error.lineno == 2 and error.path == b"/l0"


def test_a_long_chain_into_a_loop_is_refused():
    n = 20000
    text = (ROOT + b"".join(link_line(b"/c%d" % i, b"/c%d" % (i + 1)) for i in range(n))
            + link_line(b"/c%d" % n, b"/x") + link_line(b"/x", b"/y") + link_line(b"/y", b"/x"))
    error = rejects(text, "hardlink loop")
    assert error.lineno == 2 and error.path == b"/c0"


def test_a_long_chain_to_a_directory_is_refused():
    n = 20000
    text = (ROOT + b"/d 0 40755 2 0 0 0 0.0 - - -\n"
            + b"".join(link_line(b"/c%d" % i, b"/c%d" % (i + 1)) for i in range(n)) + link_line(b"/c%d" % n, b"/d"))
    error = rejects(text, "Hardlink target /c1 is a directory")
    assert error.lineno == 3


def _api_chain(n, end):
    tree = Tree()
    tree.add("/end", end)
    previous = end
    for i in range(n):
        previous = tree.add("/c%d" % i, Node(0o100644, link_to=previous))
    return tree, previous


def test_api_built_chains_resolve_and_fail_like_parsed_ones():
    tree, last = _api_chain(LONG, Node(0o100644, content=b"x"))
    assert LinkResolver().resolve(last) is tree.lookup("/end")
    tree.validate()
    assert build_image(tree)

    tree, _last = _api_chain(LONG, Node(0o40755))
    with pytest.raises(ComposefsError, match="Hardlink to a directory"):
        tree.validate()
    with pytest.raises(ComposefsError, match="Hardlink to a directory"):
        build_image(tree)

    tree, last = _api_chain(LONG, Node(0o100644, content=b"x"))
    tree.lookup("/end").link_to = last  # close the chain into a loop
    with pytest.raises(ComposefsError, match="hardlink loop"):
        tree.validate()
    with pytest.raises(ComposefsError, match="hardlink loop"):
        build_image(tree)
