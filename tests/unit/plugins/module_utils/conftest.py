# -*- coding: utf-8 -*-
# Copyright: composefs.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Test vectors from ../shared/test-vectors (beside the checkout).

The composefs assets there are upstream's tests/assets at release 1.0.8
(commit ec2573a) with MANIFEST.tsv giving, per file, the --min-version /
--max-version, whether upstream parses it strictly, and the sha256 of the
image mkcomposefs 1.0.8 writes (FAIL: must be rejected).
"""

import collections
import os

import pytest

from support import shared_vectors

VECTORS = shared_vectors()
COMPOSEFS_VECTORS = shared_vectors("composefs")

Vector = collections.namedtuple("Vector", "name path min_version max_version strict sha256")


def load_manifest():
    manifest = shared_vectors("composefs", "MANIFEST.tsv")
    vectors = []
    with open(manifest) as handle:
        for line in handle:
            if line.startswith("#") or not line.strip():
                continue
            name, min_v, max_v, strict, sha = line.rstrip("\n").split("\t")
            vectors.append(Vector(
                name, os.path.join(COMPOSEFS_VECTORS, name),
                0 if min_v == "-" else int(min_v), 1 if max_v == "-" else int(max_v),
                strict == "yes", sha))
    if not vectors:
        raise RuntimeError("%s lists no vectors" % manifest)
    return vectors


MANIFEST = load_manifest()
IMAGE_VECTORS = [v for v in MANIFEST if v.sha256 != "FAIL"]
FAILING_VECTORS = [v for v in MANIFEST if v.sha256 == "FAIL"]


def pytest_generate_tests(metafunc):
    if "image_vector" in metafunc.fixturenames:
        metafunc.parametrize("image_vector", IMAGE_VECTORS, ids=[v.name for v in IMAGE_VECTORS])
    if "failing_vector" in metafunc.fixturenames:
        metafunc.parametrize("failing_vector", FAILING_VECTORS, ids=[v.name for v in FAILING_VECTORS])


@pytest.fixture(scope="session")
def vectors_dir():
    return VECTORS


@pytest.fixture(scope="session")
def manifest():
    """MANIFEST.tsv as {file name: Vector}."""
    return dict((v.name, v) for v in MANIFEST)


@pytest.fixture(scope="session")
def fsverity_vectors():
    """(content bytes, hex digest) pairs from fsverity.tsv."""
    import ast
    path = shared_vectors("fsverity.tsv")
    pairs = []
    with open(path) as handle:
        for line in handle:
            if line.startswith("#") or not line.strip():
                continue
            expr, digest = line.rstrip("\n").split("\t")[:2]
            pairs.append((_eval_bytes(ast.parse(expr, mode="eval").body), digest))
    return pairs


def _eval_bytes(node):
    """Evaluate the tiny bytes expressions of fsverity.tsv (literals, +, *)."""
    import ast
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        return _eval_bytes(node.left) + _eval_bytes(node.right)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mult):
        return _eval_bytes(node.left) * _eval_bytes(node.right)
    raise ValueError("unsupported expression in fsverity.tsv: %s" % ast.dump(node))
