"""Upstream's own test dumpfiles that ../shared/test-vectors does not carry, byte for byte.

scripts/fetch-oracle.sh unpacks composefs 1.0.8's tests/assets from the Debian source
package of the oracle; each dumpfile there has the sha256 of the image mkcomposefs makes
of it. The shared vectors (tests/unit/.../erofs) already cover the ones they list; these
are the rest: the larger cs9 developer tree (64,246 entries, the benchmark's second
dumpfile row), Fedora Silverblue and a config tree with hard links.
"""
import hashlib
import os

import pytest

import cfs_oracle
from support import shared_vectors
from ansible_collections.composefs.fleet.plugins.module_utils.composefs import dumpfile
from ansible_collections.composefs.fleet.plugins.module_utils.erofs import writer


def _listed_in_shared_vectors():
    with open(shared_vectors("composefs", "MANIFEST.tsv")) as manifest:
        return set(line.split("\t", 1)[0] for line in manifest if line.strip() and not line.startswith("#"))


def _upstream_only():
    if not os.path.isdir(cfs_oracle.ASSETS):
        raise RuntimeError("upstream test assets missing: %s; run scripts/fetch-oracle.sh" % cfs_oracle.ASSETS)
    shared = _listed_in_shared_vectors()
    names = sorted(name[:-len(".sha256")] for name in os.listdir(cfs_oracle.ASSETS) if name.endswith(".sha256"))
    return [name for name in names
            if name not in shared and os.path.exists(os.path.join(cfs_oracle.ASSETS, name))
            and not os.path.exists(os.path.join(cfs_oracle.ASSETS, name + ".version"))]


UPSTREAM_ONLY = _upstream_only()


def test_the_larger_assets_are_there():
    assert "cs9-x86_64-developer.dump.gz" in UPSTREAM_ONLY, UPSTREAM_ONLY


@pytest.mark.parametrize("name", UPSTREAM_ONLY)
def test_image_of_upstream_asset_is_byte_identical(name):
    path = os.path.join(cfs_oracle.ASSETS, name)
    with open(path + ".sha256") as handle:
        want = handle.read().split()[0]
    image = writer.build_image(dumpfile.parse(path), 0, 1)
    assert hashlib.sha256(image).hexdigest() == want, name
