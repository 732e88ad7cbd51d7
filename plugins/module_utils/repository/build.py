# -*- coding: utf-8 -*-
# Copyright: composefs.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Building an image straight into a repository: objects into its objects/, the image committed under a ref.

The objects/ of a repository is the object store's fan-out, so the ordinary
build fills it. The whole build holds the repository lock shared: a garbage
collection waits, and never takes the fresh objects before the image (and its
ref) names them. Images built here name SHA-256 objects in EROFS format V0/V1,
so the repository must be ``fsverity-sha256-12`` with ``erofs_formats`` 0 or 1.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os

from ansible_collections.composefs.fleet.plugins.module_utils.composefs.build import build
from ansible_collections.composefs.fleet.plugins.module_utils.repository import layout
from ansible_collections.composefs.fleet.plugins.module_utils.repository.errors import RepositoryError
from ansible_collections.composefs.fleet.plugins.module_utils.repository.repo import Repository


def check_buildable(repo):
    if repo.algorithm != "sha256":
        raise RepositoryError("%s is a %s repository; images built by this collection name SHA-256 objects, so they can "
                              "only be committed to a repository made with algorithm sha256" % (repo.path, layout.IDENTIFIERS[repo.algorithm]))
    if repo.meta.erofs_version not in (0, 1):
        raise RepositoryError("%s makes EROFS format %d images; this collection builds formats 0 and 1 (mkcomposefs's)"
                              % (repo.path, repo.meta.erofs_version))
    repo.require_writable()


def build_into(repository, ref=None, dest=None, lock_timeout=None, check_mode=False, enable_verity="auto", **options):
    """Build (see composefs.build.build) with the repository's objects/ as the store; commit the image under ``ref``.

    ``min_version`` is the repository's EROFS format. Returns build()'s result
    dict plus ``repository`` (commit details: digest, ref, ref_before, ...).
    """
    with Repository(repository) as repo:
        check_buildable(repo)
        options["min_version"] = repo.meta.erofs_version
        options["max_version"] = 1
        if repo.secure:
            enable_verity = "true"  # composefs-rs requires fs-verity on every object of such a repository
        if ref is not None:
            layout.check_ref_name(ref)
        with repo.lock(exclusive=False, timeout=lock_timeout):
            image = dest
            temporary = None
            if dest is None and not check_mode:
                temporary = image = os.path.join(repo.path, ".tmp-image-%d-%s.cfs" % (os.getpid(), os.urandom(4).hex()))
            try:
                result = build(dest=image, digest_store=repo.objects_path, enable_verity=enable_verity,
                               check_mode=check_mode, **options)
                if check_mode:
                    commit = _planned_commit(repo, result["digest"], ref, result["size"])
                else:
                    commit = repo.commit(image, ref, lock_timeout=lock_timeout)
            finally:
                if temporary is not None:
                    try:
                        os.unlink(temporary)
                    except OSError:
                        pass
        if temporary is not None:
            # Writing the temporary image is no change; what the store and the repository got is.
            result["changed"] = bool(result["objects"]["added"] or result["objects"]["stale_removed"])
            result["dest"] = None
            result.pop("before", None)
            result.pop("after", None)
            result.pop("verity", None)
        result["repository"] = dict(path=repo.path, digest=commit["digest"], ref=ref, ref_before=commit["ref_before"],
                                    ref_changed=commit["ref_changed"], image_added=commit["object_added"],
                                    image_linked=commit["image_linked"], missing_objects=commit["missing_objects"])
        result["changed"] = result["changed"] or commit["changed"]
        return result


def _planned_commit(repo, digest, ref, size):
    state = repo.store().check_object(digest)
    linked = os.path.lexists(os.path.join(repo.images_path, digest)) and repo.images().get(digest) is not None
    out = {"digest": digest, "object_added": state != "ok", "bytes_added": size if state != "ok" else 0,
           "image_linked": not linked, "ref_before": None, "ref_changed": False, "missing_objects": []}
    if ref is not None:
        out["ref_before"] = repo.refs().get(ref)
        out["ref_changed"] = not repo.ref_target_ok(ref, digest)
    out["changed"] = out["object_added"] or out["image_linked"] or out["ref_changed"]
    return out
