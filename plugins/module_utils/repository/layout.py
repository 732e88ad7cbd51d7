# -*- coding: utf-8 -*-
# Copyright: composefs.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Names and symlink targets of a composefs-rs repository (crates/composefs/src/repository.rs).

::

    meta.json
    objects/XX/<rest of the digest>            the files, named by their fs-verity digest
    images/<digest>  -> ../objects/XX/<rest>   the images this repository may mount
    images/refs/<name> -> ../<digest>          named images (GC roots); a name a/b -> ../../<digest>
    streams/...                                 split streams (OCI layers): composefs-rs's own

Symlink targets are relative, exactly as composefs-rs computes them (one ``..``
per directory of the link below ``images/``), so either tool can read the
other's repository.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import re

from ansible_collections.composefs.fleet.plugins.module_utils.repository.errors import RepositoryError

META_FILENAME = "meta.json"
OBJECTS = "objects"
IMAGES = "images"
REFS = "refs"
STREAMS = "streams"
# Short algorithm name -> meta.json's identifier (fsverity-<hash>-<log2 block size>).
IDENTIFIERS = {"sha256": "fsverity-sha256-12", "sha512": "fsverity-sha512-12"}
BLOCK_SIZE = 4096
HEX_LENGTHS = {"sha256": 64, "sha512": 128}
_HEX = re.compile(r"^[0-9a-f]+$")
NAME_MAX = 255


def algorithm_of_identifier(identifier):
    """``sha256``/``sha512`` for a meta.json ``algorithm``; RepositoryError for anything else."""
    for name, ident in IDENTIFIERS.items():
        if identifier == ident:
            return name
    raise RepositoryError("meta.json names the algorithm %r; this collection knows %s (4 KiB fs-verity blocks)"
                          % (identifier, " and ".join(sorted(IDENTIFIERS.values()))))


def check_digest(digest, algorithm):
    """The digest as lowercase hex of the algorithm's length (a ``sha256:``/``sha512:`` prefix is accepted)."""
    text = str(digest or "").strip().lower()
    if ":" in text:
        prefix, text = text.split(":", 1)
        if prefix != algorithm:
            raise RepositoryError("digest %r is prefixed %r, but the repository uses %s" % (digest, prefix, algorithm))
    if len(text) != HEX_LENGTHS[algorithm] or not _HEX.match(text):
        raise RepositoryError("%r is not a %s fs-verity digest of this repository (%d lowercase hex digits)"
                              % (digest, algorithm, HEX_LENGTHS[algorithm]))
    return text


def is_digest(name, algorithm):
    return len(name) == HEX_LENGTHS[algorithm] and bool(_HEX.match(name))


def object_relpath(digest):
    """``XX/<rest>`` below objects/ (also what an image's redirect names)."""
    return digest[:2] + "/" + digest[2:]


def image_link_target(digest):
    """Target of ``images/<digest>``."""
    return "../" + OBJECTS + "/" + object_relpath(digest)


def check_ref_name(name):
    """A ref name below images/refs/: relative, ``/``-separated, no empty, ``.`` or ``..`` component."""
    if not isinstance(name, str) or not name:
        raise RepositoryError("a ref name must be a non-empty string, not %r" % (name,))
    if "\0" in name or name.startswith("/") or name.endswith("/"):
        raise RepositoryError("ref name %r must be relative, without NUL and without a trailing '/'" % (name,))
    for part in name.split("/"):
        if part in ("", ".", ".."):
            raise RepositoryError("ref name %r has an empty, '.' or '..' component; it could point outside images/refs/"
                                  % (name,))
        if len(part.encode("utf-8", "surrogateescape")) > NAME_MAX:
            raise RepositoryError("ref name %r has a component longer than %d bytes" % (name, NAME_MAX))
    return name


def ref_link_target(name, digest):
    """Target of ``images/refs/<name>``: one ``..`` per component of the name, then the digest."""
    return "../" * len(name.split("/")) + digest


def digest_of_image_link(target, algorithm):
    """The digest an ``images/<digest>`` link target names, or None when it is not ``../objects/XX/<rest>``."""
    prefix = "../" + OBJECTS + "/"
    if not target.startswith(prefix):
        return None
    rel = target[len(prefix):]
    if len(rel) != HEX_LENGTHS[algorithm] + 1 or rel[2:3] != "/":
        return None
    digest = rel[:2] + rel[3:]
    return digest if is_digest(digest, algorithm) else None


def digest_of_ref_link(target, algorithm):
    """The digest a ref link's target ends in (composefs-rs takes the last component), or None."""
    last = target.rstrip("/").rsplit("/", 1)[-1]
    return last if is_digest(last, algorithm) else None
