# -*- coding: utf-8 -*-
# Copyright: composefs.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""An ostree sysroot read from its files: deployments, their ``.ostree.cfs``, commits, the repository config.

Layout (ostree 2026.4): ``SYSROOT/ostree/deploy/OSNAME/deploy/CHECKSUM.SERIAL/`` is a
deployment, with ``CHECKSUM.SERIAL.origin`` beside it and its composefs image
``.ostree.cfs`` inside. The karg ``ostree=/ostree/boot.N/OSNAME/BOOTCSUM/I`` names
the booted one through symlinks; ``/run/ostree-booted`` records its (device, inode)
as ``backing-root-device-inode``. Commits are ``repo/objects/XX/REST.commit``,
GVariant ``(a{sv}aya(say)sstayay)``; the composefs digest is the commit metadata's
``ostree.composefs.digest.v0`` (``ay``).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import re

from ansible_collections.composefs.fleet.plugins.module_utils.boot.gvariant import GVariantError, loads, plain
from ansible_collections.composefs.fleet.plugins.module_utils.boot.keyfile import KeyFile, KeyFileError
from ansible_collections.composefs.fleet.plugins.module_utils.boot.prepare_root import PrepareRootError, cmdline_value, parse_tristate
from ansible_collections.composefs.fleet.plugins.module_utils.fsverity.ioctl import VerityError, verity_enabled

RUN_BOOTED = "/run/ostree-booted"
# ostree-sysroot-deploy.c: {"target": <{"name": <"CSUM.SERIAL">, "osname": ..., "bootcsum": ...}>, "kargs": ..., ...}
STAGED = "/run/ostree/staged-deployment"
COMMIT_TYPE = "(a{sv}aya(say)sstayay)"
COMPOSEFS_DIGEST_KEY = "ostree.composefs.digest.v0"
CFS_NAME = ".ostree.cfs"
BOOTED_KEYS = ("composefs", "composefs.verity", "composefs.signed", "root.transient", "root.transient-ro",
               "sysroot-ro", "backing-root-device-inode", "transient-etc")
_DEPLOY_RE = re.compile(r"^([0-9a-f]{64})\.([0-9]+)$")
_OBJECT_RE = re.compile(r"^[0-9a-f]{2}/[0-9a-f]{62}\.file$")


class OstreeError(Exception):
    """A sysroot or repository file that cannot be read as ostree writes it."""


def parse_booted(data):
    """``/run/ostree-booted`` (bytes) as a plain dict; unknown keys are kept."""
    try:
        value = loads("a{sv}", data)
    except GVariantError as exc:
        raise OstreeError("%s is not a GVariant a{sv}: %s" % (RUN_BOOTED, exc))
    out = plain(value)
    if isinstance(out.get("backing-root-device-inode"), list):
        dev, ino = out["backing-root-device-inode"]
        out["backing-root-device-inode"] = dict(device=dev, inode=ino)
    return out


def parse_staged(data):
    """The ``CHECKSUM.SERIAL`` name of the staged deployment from ``/run/ostree/staged-deployment``, or None."""
    try:
        value = loads("a{sv}", data)
    except GVariantError:
        return None
    target = value.get("target")
    if target is None or not isinstance(target.value, dict):
        return None
    name = target.value.get("name")
    return name.value if name is not None and isinstance(name.value, str) else None


def parse_commit(data):
    """A commit object's metadata (plain dict), parent, subject, timestamp and composefs digest."""
    try:
        meta, parent, related, subject, body, timestamp, root_contents, root_meta = loads(COMMIT_TYPE, data)
    except GVariantError as exc:
        raise OstreeError("not an ostree commit object: %s" % exc)
    del related, body, root_contents, root_meta
    digest = meta.get(COMPOSEFS_DIGEST_KEY)
    digest = digest.value if digest is not None else None
    return dict(
        parent=parent.hex() or None,
        subject=subject,
        # ostree stores the timestamp big-endian inside the little-endian frame.
        timestamp=int.from_bytes(timestamp.to_bytes(8, "little"), "big"),
        composefs_digest=digest.hex() if isinstance(digest, bytes) else None,
        metadata_keys=sorted(meta),
        version=plain(meta.get("version")),
    )


def repo_config(src, repo):
    """The repository's ``config``: mode and its integrity settings as ostree reads them."""
    path = os.path.join(repo, "config")
    out = dict(path=path, exists=False, mode=None, composefs=None, fsverity=None, fsverity_effective=None,
               legacy_fsverity=None, errors=[], settings={})
    data = src.read(path)
    if data is None:
        return out
    text = data.decode("utf-8", "surrogateescape")
    out["exists"] = True
    try:
        keyfile = KeyFile(text)
    except KeyFileError as exc:
        out["errors"].append("%s: %s" % (path, exc))
        return out
    out["settings"] = keyfile.as_dict()
    out["mode"] = keyfile.get("core", "mode")
    composefs = keyfile.get("ex-integrity", "composefs")
    fsverity = keyfile.get("ex-integrity", "fsverity")
    try:
        out["composefs"] = parse_tristate(composefs) if composefs is not None else "no"
        out["fsverity"] = parse_tristate(fsverity) if fsverity is not None else None
    except PrepareRootError as exc:
        out["errors"].append("[ex-integrity]: %s" % exc)
        return out
    # ostree-repo-verity.c: composefs implies fsverity=maybe unless set; "no" falls back to [ex-fsverity].
    effective = out["fsverity"] or ("maybe" if out["composefs"] != "no" else "no")
    if effective == "no":
        required = keyfile.get("ex-fsverity", "required")
        opportunistic = keyfile.get("ex-fsverity", "opportunistic")
        if required is not None or opportunistic is not None:
            out["legacy_fsverity"] = dict(required=required, opportunistic=opportunistic)
        if (required or "").strip() in ("true", "1"):
            effective = "yes"
        elif (opportunistic or "").strip() in ("true", "1"):
            effective = "maybe"
    out["fsverity_effective"] = effective
    return out


def object_path(repo, checksum, kind):
    return os.path.join(repo, "objects", checksum[:2], "%s.%s" % (checksum[2:], kind))


def booted_path_from_cmdline(src, sysroot, cmdline):
    """The deployment directory the ``ostree=`` karg resolves to in ``sysroot``, or None."""
    target = cmdline_value(cmdline, "ostree")
    if not target:
        return None
    resolved = src.resolve(os.path.join(sysroot, target.lstrip("/")))
    return resolved if resolved and src.isdir(resolved) else None


def deployments(src, sysroot, booted_path=None, booted_devino=None):
    """Every deployment in ``sysroot``, booted first, then by osname and newest serial."""
    staged_data = src.read(STAGED)
    staged = parse_staged(staged_data) if staged_data is not None else None
    base = os.path.join(sysroot, "ostree", "deploy")
    repo = os.path.join(sysroot, "ostree", "repo")
    out = []
    for osname in src.listdir(base) or []:
        deploy_dir = os.path.join(base, osname, "deploy")
        for name in src.listdir(deploy_dir) or []:
            match = _DEPLOY_RE.match(name)
            path = os.path.join(deploy_dir, name)
            if not match or not src.isdir(path):
                continue
            entry = _deployment(src, repo, osname, path, match.group(1), int(match.group(2)), booted_path, booted_devino)
            entry["staged"] = staged == name
            out.append(entry)
    out.sort(key=lambda d: (not d["booted"], d["osname"], -d["serial"]))
    return out


def _deployment(src, repo, osname, path, checksum, serial, booted_path, booted_devino):
    entry = dict(osname=osname, checksum=checksum, serial=serial, path=path, booted=False, origin=None,
                 commit=None, composefs_image=None, errors=[])
    if booted_path is not None and path == booted_path:
        entry["booted"] = True
    elif booted_devino and src.devino(path) == (booted_devino.get("device"), booted_devino.get("inode")):
        entry["booted"] = True
    origin = src.read(path + ".origin")
    if origin is not None:
        try:
            entry["origin"] = KeyFile(origin.decode("utf-8", "replace")).as_dict()
        except KeyFileError as exc:
            entry["errors"].append("%s.origin: %s" % (path, exc))
    commit = src.read(object_path(repo, checksum, "commit"))
    if commit is None:
        entry["errors"].append("commit %s is not in %s" % (checksum, repo))
    else:
        try:
            entry["commit"] = parse_commit(commit)
        except OstreeError as exc:
            entry["errors"].append("commit %s: %s" % (checksum, exc))
    cfs = os.path.join(path, CFS_NAME)
    if src.exists(cfs):
        image = src.verity(cfs)
        expected = (entry["commit"] or {}).get("composefs_digest")
        image["expected"] = expected
        actual = image["measured"] or image["digest"]
        image["matches_commit"] = (actual == expected) if expected and actual else None
        if image["error"]:
            entry["errors"].append(image["error"])
        entry["composefs_image"] = image
    return entry


def image_objects(cfs_path):
    """The repository objects (``XX/REST.file``) that a deployment's ``.ostree.cfs`` references."""
    from ansible_collections.composefs.fleet.plugins.module_utils.erofs.reader import objects

    found = objects(cfs_path, strict=False)
    bad = [p for p in found if not _OBJECT_RE.match(p)]
    if bad:
        raise OstreeError("%s references paths that are not repository objects: %s" % (cfs_path, ", ".join(bad[:3])))
    return found


def objects_without_verity(repo, object_paths, limit=20):
    """``(checked, missing_verity, absent, examples)`` for ``object_paths`` below ``repo/objects``."""
    store = os.path.join(repo, "objects")
    checked = without = absent = 0
    examples = []
    for rel in object_paths:
        full = os.path.join(store, rel)
        try:
            fd = os.open(full, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        except OSError:
            absent += 1
            if len(examples) < limit:
                examples.append(rel + " (absent)")
            continue
        try:
            checked += 1
            try:
                has = verity_enabled(fd, full)
            except VerityError:
                has = False
            if not has:
                without += 1
                if len(examples) < limit:
                    examples.append(rel)
        finally:
            os.close(fd)
    return checked, without, absent, examples
