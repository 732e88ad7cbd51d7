# -*- coding: utf-8 -*-
# Copyright: composefs.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""bootc's composefs backend read from its files, and ``bootc status --json``.

From bootc (crates/lib/src/composefs_consts.rs, bootc_composefs/): the repository is
``/sysroot/composefs`` (composefs-rs format, images under ``images/``); each
deployment is ``/sysroot/state/deploy/ID/ID.origin``, a key file with
``[origin] container-image-reference`` and ``[boot] boot_type`` / ``digest``; the
karg ``composefs=[?]HEX`` names the booted image by its fs-verity digest, ``?``
meaning a missing verity is allowed. ``bootc status --json`` (host-v1 schema)
gives each boot entry a ``composefs`` object with ``verity``, ``bootType``,
``bootloader``, ``missingVerityAllowed`` and ``bootDigest``.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os
import re

from ansible_collections.composefs.fleet.plugins.module_utils.boot.keyfile import KeyFile, KeyFileError
from ansible_collections.composefs.fleet.plugins.module_utils.boot.prepare_root import cmdline_value

KARG = "composefs"
REPO = "composefs"
STATE_DIR = "state/deploy"
_HEX_RE = re.compile(r"^[0-9a-f]{64}([0-9a-f]{64})?$")


class BootcError(ValueError):
    """A bootc file or document that is not what bootc writes."""


def parse_karg(cmdline):
    """``{"digest": HEX, "verity_optional": bool}`` from ``composefs=[?]HEX``, or None."""
    value = cmdline_value(cmdline, KARG)
    if value is None:
        return None
    optional = value.startswith("?")
    digest = value[1:] if optional else value
    if not _HEX_RE.match(digest):
        raise BootcError("karg composefs=%s: not a SHA-256 or SHA-512 hex digest" % value)
    return dict(digest=digest, verity_optional=optional)


def parse_origin(text):
    """The parts of a ``.origin`` file the facts use, plus every setting."""
    try:
        keyfile = KeyFile(text)
    except KeyFileError as exc:
        raise BootcError("not a key file: %s" % exc)
    return dict(
        image=keyfile.get("origin", "container-image-reference"),
        boot_type=keyfile.get("boot", "boot_type"),
        boot_digest=keyfile.get("boot", "digest"),
        manifest_digest=keyfile.get("image", "manifest_digest"),
        settings=keyfile.as_dict(),
    )


def deployments(src, sysroot, booted_digest=None):
    """Every ``state/deploy/ID`` with its origin; the booted one first."""
    base = os.path.join(sysroot, STATE_DIR)
    images = os.path.join(sysroot, REPO, "images")
    out = []
    for name in src.listdir(base) or []:
        path = os.path.join(base, name)
        if not _HEX_RE.match(name) or not src.isdir(path):
            continue
        image = os.path.join(images, name)
        entry = dict(id=name, path=path, booted=name == booted_digest, origin=None, errors=[],
                     image_path=image, image_present=src.exists(image))
        origin = os.path.join(path, name + ".origin")
        data = src.read(origin)
        if data is None:
            entry["errors"].append("cannot read %s" % origin)
        else:
            try:
                entry["origin"] = parse_origin(data.decode("utf-8", "replace"))
            except BootcError as exc:
                entry["errors"].append("%s: %s" % (origin, exc))
        out.append(entry)
    out.sort(key=lambda d: not d["booted"])
    return out


def parse_status(text):
    """``bootc status --json`` reduced to the composefs view of each boot entry.

    Returns ``{"backend": "composefs"|"ostree"|None, "entries": [{slot, image, composefs, ostree}]}``.
    """
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise BootcError("bootc status --json did not print JSON: %s" % exc)
    if not isinstance(doc, dict) or doc.get("kind") != "BootcHost":
        raise BootcError("bootc status --json did not print a BootcHost document")
    status = doc.get("status") or {}
    entries = []
    backend = None
    for slot in ("booted", "staged", "rollback"):
        entry = status.get(slot)
        if not isinstance(entry, dict):
            continue
        composefs = entry.get("composefs")
        if composefs:
            backend = "composefs"
        elif entry.get("ostree") and backend is None:
            backend = "ostree"
        image = entry.get("image") or {}
        entries.append(dict(
            slot=slot,
            image=((image.get("image") or {}).get("image")),
            image_digest=image.get("imageDigest"),
            composefs=dict(
                verity=composefs.get("verity"),
                boot_type=composefs.get("bootType"),
                bootloader=composefs.get("bootloader"),
                missing_verity_allowed=composefs.get("missingVerityAllowed"),
                boot_digest=composefs.get("bootDigest"),
            ) if isinstance(composefs, dict) else None,
            ostree=entry.get("ostree"),
        ))
    return dict(backend=backend, entries=entries)
