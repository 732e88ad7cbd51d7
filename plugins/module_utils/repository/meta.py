# -*- coding: utf-8 -*-
# Copyright: composefs.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""meta.json of a composefs-rs repository: what it holds, how it is written, what we may do with it.

composefs-rs (``RepoMetadata``) writes it with serde_json's pretty printer and a
trailing newline, in this key order::

    {"version": 1, "algorithm": "fsverity-sha512-12",
     "features": {"compatible": [], "read-only-compatible": ["v1_erofs"], "incompatible": []},
     "erofs_formats": {"default": 1}}

``v1_erofs`` is kept in step with ``erofs_formats.default == 1`` for tools that
predate ``erofs_formats``. The rules for reading follow composefs-rs: a version
above 1 or an unknown incompatible feature is refused; an unknown
read-only-compatible feature allows reading only.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json

from ansible_collections.composefs.fleet.plugins.module_utils.repository.errors import RepositoryError
from ansible_collections.composefs.fleet.plugins.module_utils.repository.layout import IDENTIFIERS, algorithm_of_identifier

FORMAT_VERSION = 1
V1_EROFS = "v1_erofs"
KNOWN_RO_COMPAT = (V1_EROFS,)
EROFS_VERSIONS = (0, 1, 2)


def build(algorithm, erofs_version=1):
    """The meta.json content (an ordered dict) composefs-rs writes for a new repository."""
    if algorithm not in IDENTIFIERS:
        raise RepositoryError("algorithm must be one of %s, not %r" % (", ".join(sorted(IDENTIFIERS)), algorithm))
    if erofs_version not in EROFS_VERSIONS:
        raise RepositoryError("erofs_version must be 0, 1 or 2, not %r" % (erofs_version,))
    return {
        "version": FORMAT_VERSION,
        "algorithm": IDENTIFIERS[algorithm],
        "features": {
            "compatible": [],
            "read-only-compatible": [V1_EROFS] if erofs_version == 1 else [],
            "incompatible": [],
        },
        "erofs_formats": {"default": erofs_version},
    }


def to_json(meta):
    """Bytes as serde_json::to_vec_pretty writes them, plus the trailing newline."""
    return (json.dumps(meta, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


class RepoMeta:
    """A parsed meta.json: ``algorithm`` (sha256/sha512), ``erofs_version``, ``extra_erofs_versions``,
    ``read_only_features`` (unknown read-only-compatible ones: no writes), ``raw`` (the parsed dict)."""

    def __init__(self, raw, algorithm, erofs_version, extra, read_only_features):
        self.raw = raw
        self.algorithm = algorithm
        self.erofs_version = erofs_version
        self.extra_erofs_versions = extra
        self.read_only_features = read_only_features

    @property
    def writable(self):
        return not self.read_only_features

    def same_config(self, algorithm, erofs_version):
        return self.algorithm == algorithm and self.erofs_version == erofs_version and not self.extra_erofs_versions

    def as_dict(self):
        return {
            "version": self.raw.get("version"),
            "algorithm": self.algorithm,
            "algorithm_id": IDENTIFIERS[self.algorithm],
            "erofs_version": self.erofs_version,
            "extra_erofs_versions": list(self.extra_erofs_versions),
            "read_only_features": list(self.read_only_features),
        }


def parse(data, where="meta.json"):
    """A :class:`RepoMeta` from meta.json bytes; RepositoryError naming the problem otherwise."""
    try:
        raw = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise RepositoryError("%s is not valid JSON (%s); it is not a composefs repository's metadata, or it is damaged"
                              % (where, exc))
    if not isinstance(raw, dict):
        raise RepositoryError("%s must hold a JSON object" % where)
    version = raw.get("version")
    if isinstance(version, bool) or not isinstance(version, int):
        raise RepositoryError("%s has no integer 'version'" % where)
    if version > FORMAT_VERSION:
        raise RepositoryError("%s has repository format version %d; this collection understands version %d only"
                              % (where, version, FORMAT_VERSION))
    algorithm = algorithm_of_identifier(raw.get("algorithm"))
    features = raw.get("features") or {}
    if not isinstance(features, dict):
        raise RepositoryError("%s: 'features' must be an object" % where)
    lists = {}
    for key in ("compatible", "read-only-compatible", "incompatible"):
        value = features.get(key) or []
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise RepositoryError("%s: features.%s must be a list of strings" % (where, key))
        lists[key] = value
    if lists["incompatible"]:
        raise RepositoryError("%s lists incompatible features %s that this collection does not know; refusing the "
                              "repository (use a composefs-rs tool that knows them)" % (where, ", ".join(lists["incompatible"])))
    read_only = [f for f in lists["read-only-compatible"] if f not in KNOWN_RO_COMPAT]
    formats = raw.get("erofs_formats")
    if formats is None:
        # Repositories from before erofs_formats: the v1_erofs flag says V1, else V2.
        default, extra = (1 if V1_EROFS in lists["read-only-compatible"] else 2), []
    else:
        if not isinstance(formats, dict):
            raise RepositoryError("%s: 'erofs_formats' must be an object" % where)
        default = formats.get("default")
        extra = formats.get("extra") or []
        if default not in EROFS_VERSIONS or not isinstance(extra, list) or any(v not in EROFS_VERSIONS for v in extra):
            raise RepositoryError("%s: erofs_formats %r names an EROFS format version other than 0, 1 or 2" % (where, formats))
        extra = sorted(set(v for v in extra if v != default))
    return RepoMeta(raw, algorithm, default, extra, read_only)
