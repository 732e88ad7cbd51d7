"""composefs-rs repository layout: meta.json bytes and rules, link targets, names (pure logic)."""
import json

import pytest

from ansible_collections.composefs.fleet.plugins.module_utils.repository import layout, meta
from ansible_collections.composefs.fleet.plugins.module_utils.repository.errors import RepositoryError

D256 = "4e67eaccd9fd" + "0" * 52
D512 = "ab" * 64

# What composefs-rs (RepoMetadata::to_json: serde_json::to_vec_pretty + "\n") writes for `cfsctl init`
# (sha512, EROFS V1 default) and `cfsctl init --algorithm fsverity-sha256-12 --erofs-version 2`.
CFSCTL_SHA512_V1 = (b'{\n  "version": 1,\n  "algorithm": "fsverity-sha512-12",\n  "features": {\n    "compatible": [],\n'
                    b'    "read-only-compatible": [\n      "v1_erofs"\n    ],\n    "incompatible": []\n  },\n'
                    b'  "erofs_formats": {\n    "default": 1\n  }\n}\n')
CFSCTL_SHA256_V2 = (b'{\n  "version": 1,\n  "algorithm": "fsverity-sha256-12",\n  "features": {\n    "compatible": [],\n'
                    b'    "read-only-compatible": [],\n    "incompatible": []\n  },\n'
                    b'  "erofs_formats": {\n    "default": 2\n  }\n}\n')


def test_meta_json_bytes_as_composefs_rs_writes_them():
    assert meta.to_json(meta.build("sha512", 1)) == CFSCTL_SHA512_V1
    assert meta.to_json(meta.build("sha256", 2)) == CFSCTL_SHA256_V2


def test_meta_parse_round_trip_and_legacy_forms():
    m = meta.parse(CFSCTL_SHA512_V1)
    assert (m.algorithm, m.erofs_version, m.writable) == ("sha512", 1, True)
    assert m.same_config("sha512", 1) and not m.same_config("sha256", 1) and not m.same_config("sha512", 0)
    # Repositories from before erofs_formats (composefs-rs's own test inputs): the flag says V1, else V2.
    assert meta.parse(b'{"version":1,"algorithm":"fsverity-sha256-12","features":{}}').erofs_version == 2
    assert meta.parse(b'{"version":1,"algorithm":"fsverity-sha256-12","features":{"read-only-compatible":["v1_erofs"]}}'
                      ).erofs_version == 1
    dual = meta.parse(b'{"version":1,"algorithm":"fsverity-sha512-12","erofs_formats":{"default":1,"extra":[2,1]}}')
    assert dual.extra_erofs_versions == [2] and not dual.same_config("sha512", 1)


@pytest.mark.parametrize("data,words", [
    (b'{"version":2,"algorithm":"fsverity-sha256-12"}', "format version 2"),
    (b'{"version":1,"algorithm":"fsverity-sha256-10"}', "fsverity-sha256-10"),
    (b'{"version":1,"algorithm":"fsverity-md5-12"}', "knows"),
    (b'{"version":1,"algorithm":"fsverity-sha256-12","features":{"incompatible":["zstd"]}}', "incompatible features zstd"),
    (b'{"version":"1","algorithm":"fsverity-sha256-12"}', "integer 'version'"),
    (b'not json', "not valid JSON"),
    (b'[]', "JSON object"),
    (b'{"version":1,"algorithm":"fsverity-sha256-12","erofs_formats":{"default":7}}', "0, 1 or 2"),
])
def test_meta_refusals(data, words):
    with pytest.raises(RepositoryError, match=words):
        meta.parse(data)


def test_unknown_read_only_feature_allows_reading_only():
    m = meta.parse(json.dumps({"version": 1, "algorithm": "fsverity-sha256-12",
                               "features": {"read-only-compatible": ["v1_erofs", "future"]}}).encode())
    assert not m.writable and m.read_only_features == ["future"]


def test_link_targets_as_composefs_rs_symlink_impl():
    # images/<digest> -> ../objects/XX/<rest>; images/refs/<name> -> one '..' per name component, then the digest.
    assert layout.image_link_target(D256) == "../objects/4e/67eaccd9fd" + "0" * 52
    assert layout.ref_link_target("myimage", D256) == "../" + D256
    assert layout.ref_link_target("system/rootfs/v1", D512) == "../../../" + D512
    assert layout.digest_of_image_link(layout.image_link_target(D512), "sha512") == D512
    assert layout.digest_of_image_link(layout.image_link_target(D512), "sha256") is None
    assert layout.digest_of_image_link("../objects/../etc/passwd", "sha256") is None
    assert layout.digest_of_ref_link("../../" + D256, "sha256") == D256


@pytest.mark.parametrize("name", ["", "/abs", "a/../b", "a//b", "./a", "a/", "x\0y", "n" * 256])
def test_bad_ref_names(name):
    with pytest.raises(RepositoryError):
        layout.check_ref_name(name)


def test_digest_checks():
    assert layout.check_digest("SHA512:" + D512.upper(), "sha512") == D512
    with pytest.raises(RepositoryError, match="prefixed 'sha256'"):
        layout.check_digest("sha256:" + D256, "sha512")
    with pytest.raises(RepositoryError, match="128 lowercase hex"):
        layout.check_digest(D256, "sha512")
