# -*- coding: utf-8 -*-
# Copyright: composefs.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Garbage collection of a repository, as composefs-rs's ``gc`` for images.

Live: every image a ref under images/refs/ names, plus the ``keep`` list, and
every object those images reference. Everything else in objects/ goes; then the
images/ links and refs left pointing at nothing. The whole run holds the
repository lock exclusively (a check-mode run: shared), so a commit holding it
shared is waited for and never collected from under.

A repository with split streams (streams/, e.g. OCI layers imported by cfsctl)
is refused: which objects a stream keeps alive is recorded inside the stream,
and collecting without reading them would delete live data.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os

from ansible_collections.composefs.fleet.plugins.module_utils.common.atomic import fsync_dir
from ansible_collections.composefs.fleet.plugins.module_utils.composefs.errors import ComposefsError
from ansible_collections.composefs.fleet.plugins.module_utils.erofs import reader
from ansible_collections.composefs.fleet.plugins.module_utils.repository import layout
from ansible_collections.composefs.fleet.plugins.module_utils.repository.errors import RepositoryError


def _streams_in_use(repo):
    where = os.path.join(repo.path, layout.STREAMS)
    try:
        return [n for n in os.listdir(where) if n != layout.REFS] or bool(os.listdir(os.path.join(where, layout.REFS)))
    except FileNotFoundError:
        return False


def plan(repo, keep=(), ignore_refs=(), pending_images=()):
    """What a collection would remove, without removing anything. Call with the lock held.

    ``ignore_refs`` and ``pending_images`` (image files whose objects stay) let a
    check-mode run plan against the refs and images the same run would leave.

    Returns ``{"roots": [...], "objects": [{"digest", "path", "bytes"}], "images": [digest...],
    "refs": [name...], "bytes": total}``.
    """
    if _streams_in_use(repo):
        raise RepositoryError("%s holds split streams (streams/): the objects they keep alive are listed inside them, "
                              "which this collection does not read; collect this repository with 'cfsctl gc'" % repo.path)
    refs = repo.refs()
    images = repo.images()
    roots = set(d for name, d in refs.items() if d and d in images and name not in ignore_refs)
    for value in keep or ():
        digest = repo.resolve(value)
        if digest not in images:
            raise RepositoryError("keep names %r, but %s has no image %s" % (value, repo.path, digest))
        roots.add(digest)
    live = set()
    for digest in sorted(roots):
        if images[digest]["size"] is None:
            raise RepositoryError("image %s is kept (by a ref or keep) but its object is missing; refusing to collect "
                                  "until it is restored (see repository_info fsck)" % digest)
        live.add(digest)
        for rel in repo.image_objects(digest):
            live.add(rel.replace("/", "", 1))
    for image_file in pending_images:
        try:
            payloads = reader.objects(image_file, strict=False)
        except (ComposefsError, OSError) as exc:
            raise RepositoryError("cannot read the image %s: %s" % (image_file, exc))
        live.update(p.lstrip("/").replace("/", "", 1) for p in payloads)
    doomed = []
    total = 0
    store = repo.store()
    for digest in store.iter_objects():
        if digest in live:
            continue
        path = repo.object_path(digest)
        try:
            size = os.lstat(path).st_size
        except FileNotFoundError:
            continue
        doomed.append({"digest": digest, "path": path, "bytes": size})
        total += size
    gone = set(d["digest"] for d in doomed)
    dead_images = sorted(d for d in images if d in gone or images[d]["size"] is None)
    dead_images += sorted(name for name, _problem in repo.bad_image_entries()
                          if os.path.islink(os.path.join(repo.images_path, name))
                          and not os.path.exists(os.path.join(repo.images_path, name)))
    dead_refs = sorted(name for name, digest in refs.items() if name not in ignore_refs
                       and (digest is None or digest not in images or digest in dead_images))
    return {"roots": sorted(roots), "objects": doomed, "images": dead_images, "refs": dead_refs, "bytes": total}


def collect(repo, keep=(), check_mode=False, lock_timeout=None, ignore_refs=(), pending_images=()):
    """Run (or, in check mode, plan) a collection under the repository lock; returns :func:`plan`'s dict.

    ``ignore_refs``/``pending_images``: see :func:`plan` (for check mode).
    """
    if not check_mode:
        repo.require_writable()
    with repo.lock(exclusive=not check_mode, timeout=lock_timeout):
        result = plan(repo, keep, ignore_refs, pending_images)
        if check_mode:
            return result
        for name in result["refs"]:
            try:
                os.unlink(os.path.join(repo.refs_path, name))
            except FileNotFoundError:
                pass
        for digest in result["images"]:
            try:
                os.unlink(os.path.join(repo.images_path, digest))
            except FileNotFoundError:
                pass
        if result["images"] or result["refs"]:
            fsync_dir(repo.images_path)
        dirs = set()
        for item in result["objects"]:
            try:
                os.unlink(item["path"])
                dirs.add(os.path.dirname(item["path"]))
            except FileNotFoundError:
                pass
        for directory in sorted(dirs):
            fsync_dir(directory)
    return result
