"""The image module on dumpfiles whose payloads are not their own digest's store path (issue 9 item 9),
and error messages that quote only a short excerpt of binary garbage (issue 10 item 8)."""
import os

import pytest

from ansible_collections.composefs.fleet.plugins.module_utils.composefs.build import tree_objects
from ansible_collections.composefs.fleet.plugins.module_utils.composefs.errors import ComposefsError
from ansible_collections.composefs.fleet.plugins.module_utils.composefs.tree import Tree
from ansible_collections.composefs.fleet.plugins.module_utils.erofs import reader

D1 = "85d600d462f5c3738b55c3ebf570c31263353dc6aa35448c6a8f9aa519429c8a"
D2 = "1f" + "0" * 62


def _dump(payload, digest=D1):
    return ("/ 0 40755 2 0 0 0 0.0 - - -\n"
            "/f 4096 100644 1 0 0 0 0.0 %s - %s\n" % (payload, digest)).encode()


def _warnings(payload, digest=D1):
    warnings = []
    tree_objects(Tree.from_dumpfile(_dump(payload, digest)), None, warnings)
    return warnings


def test_store_path_of_its_own_digest_is_quiet():
    assert _warnings(D1[:2] + "/" + D1[2:]) == []


@pytest.mark.parametrize("payload", ["etc/shadow", "./etc/passwd", D2[:2] + "/" + D2[2:], D1[:2] + "/" + D1[2:].upper()])
def test_other_payloads_warn(payload):
    warnings = _warnings(payload)
    assert len(warnings) == 1 and "not XX/<digest> of their own digest" in warnings[0], warnings
    assert payload in warnings[0] and D1 in warnings[0]


def test_dumpfile_garbage_is_quoted_short():
    huge = b"/" + b"\xfe\x01" * 200000 + b" 0 40755 1 0 0 0 0.0 - - -\n"
    with pytest.raises(ComposefsError) as exc:
        Tree.from_dumpfile(huge)
    assert len(str(exc.value)) < 600, len(str(exc.value))
    assert "\x01" not in str(exc.value)


def test_image_garbage_is_quoted_short():
    with pytest.raises(reader.ImageError) as exc:
        reader.read_image(os.urandom(100000))
    assert len(str(exc.value)) < 600


def _tree_of(lines):
    return Tree.from_dumpfile(("/ 0 40755 2 0 0 0 0.0 - - -\n/d 0 40755 2 0 0 0 0.0 - - -\n" + "".join(lines)).encode())


@pytest.mark.parametrize("lines", [
    # own store paths, no payload, inline, a hardlink, a duplicate digest
    ["/d/a 4096 100644 1 0 0 0 0.0 %s/%s - %s\n" % (D1[:2], D1[2:], D1),
     "/d/b 4096 100644 1 0 0 0 0.0 - - %s\n" % D2,
     "/d/c 5 100644 1 0 0 0 0.0 - hello -\n",
     "/d/e 0 @100644 1 0 0 0 0.0 /d/a - -\n",
     "/f 4096 100644 1 0 0 0 0.0 %s/%s - %s\n" % (D1[:2], D1[2:], D1)],
    # odd payloads (no digest, a store path of another digest, upper case), in reverse byte order
    ["/z 4096 100644 1 0 0 0 0.0 50/231e63ee.file - -\n",
     "/y 4096 100644 1 0 0 0 0.0 %s/%s - %s\n" % (D2[:2], D2[2:], D1),
     "/d/x 4096 100644 1 0 0 0 0.0 %s/%s - -\n" % (D1[:2], D1[2:].upper()),
     "/d/w 4096 100644 1 0 0 0 0.0 %s/%s - -\n" % (D2[:2], D2[2:]),
     "/d/v 4096 100644 1 0 0 0 0.0 %s/%s\\n - -\n" % (D2[:2], D2[2:])],
])
def test_fast_scan_equals_the_ordered_one(lines):
    from ansible_collections.composefs.fleet.plugins.module_utils.composefs import build
    fast, ordered = [], []
    assert build.tree_objects(_tree_of(lines), None, fast) == build._tree_objects_in_order(_tree_of(lines), None, ordered)
    assert fast == ordered


@pytest.mark.parametrize("payload", ["../../etc/shadow", "ab/../../x", "/etc/passwd"])
def test_payload_leading_out_is_refused_with_the_first_file(payload):
    from ansible_collections.composefs.fleet.plugins.module_utils.composefs import build
    lines = ["/z 4096 100644 1 0 0 0 0.0 %s - -\n" % payload, "/d/a 4096 100644 1 0 0 0 0.0 %s - -\n" % payload]
    with pytest.raises(build.ImageBuildError, match="/d/a: payload"):
        build.tree_objects(_tree_of(lines), None, [])
