# -*- coding: utf-8 -*-
# Copyright: composefs.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Whether a host already runs a deployment's image, read in one pass.

A deployment is an image committed in a host's repository under ``NAME/current`` and
mounted, pinned, at a mount point with a managed fstab line (the deploy role). This reads
the repository (meta, refs, the image and its objects) under the shared lock, and asks
the mount code, in check mode, whether ``state: mounted`` with the role's options would
change anything: the same decision :mod:`.mount.manager` makes, so "in place" here means
what a deploy's own tasks would report as unchanged. Nothing is written.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os

from ansible_collections.composefs.fleet.plugins.module_utils.mount.errors import MountError
from ansible_collections.composefs.fleet.plugins.module_utils.mount.info import mount_status
from ansible_collections.composefs.fleet.plugins.module_utils.mount.manager import MountRun, Request
from ansible_collections.composefs.fleet.plugins.module_utils.repository import layout
from ansible_collections.composefs.fleet.plugins.module_utils.repository import repo as repository
from ansible_collections.composefs.fleet.plugins.module_utils.repository.errors import RepositoryError

# At most this many missing object names are returned (the count is always whole).
MISSING_LISTED = 20


def _image_status(repo, digest, differences):
    """The desired image in ``repo``: stored, linked under images/, and the objects it lacks."""
    out = dict(digest=digest, stored=False, linked=False, missing_objects=[], missing_count=None)
    try:
        digest = repo.digest(digest)
    except RepositoryError as exc:
        differences.append(str(exc))
        return out
    out["stored"] = os.path.isfile(repo.object_path(digest))
    out["linked"] = repo.image_linked(digest)
    if not out["stored"]:
        differences.append("the image %s is not in the repository" % digest)
        return out
    if not out["linked"]:
        differences.append("images/%s does not link the image" % digest)
    try:
        missing = repo.missing_objects(digest)
    except RepositoryError as exc:
        differences.append(str(exc))
        return out
    out["missing_objects"] = missing[:MISSING_LISTED]
    out["missing_count"] = len(missing)
    if missing:
        differences.append("%d objects of the image are missing (%s%s)" % (
            len(missing), ", ".join(missing[:3]), ", ..." if len(missing) > 3 else ""))
    return out


def _why_not_mounted(mount, mount_point, digest, verity, fstab):
    """In words, why the mount module would change the mount at ``mount_point`` (from its mount_status)."""
    if not mount["mounted"]:
        return {"other": "someone else's mount is at %s", "covered": "the composefs mount at %s is covered by another mount"
                }.get(mount["kind"], "nothing is mounted at %s") % mount_point
    if mount["digest"] != digest:
        return "%s runs %s" % (mount_point, mount["digest"] or "an image without a pin")
    if mount["verity_mode"] != verity:
        return "%s is mounted with verity=%s, not %s" % (mount_point, mount["verity_mode"], verity)
    line = mount["fstab"]
    if line is None:
        return "%s is not persisted in %s" % (mount_point, fstab)
    if line["digest"] != digest or line["verity"] != verity:
        return "the fstab line of %s pins %s with verity=%s" % (mount_point, line["digest"] or "nothing", line["verity"])
    return "%s is not mounted and persisted as asked (the mount module would change it)" % mount_point


def _mount_in_place(mount_point, image, objects, digest, mount_options, mount, differences, run_options):
    """Whether ``state: mounted`` of the image with these options would change nothing (check mode)."""
    try:
        request = Request(mount_point, image=image, basedir=[objects], digest=digest, state="mounted", **mount_options)
        result = MountRun(request, check_mode=True, **run_options).run()
    except MountError as exc:
        differences.append("the mount would fail: %s" % exc)
        return False
    if result["changed"]:
        differences.append(_why_not_mounted(mount, request.path, digest, request.verity, request.fstab))
        return False
    return True


def deployment_status(path, name, mount_point, digest=None, mount_options=None, lock_timeout=None,
                      mount_run_options=None):
    """A dict: the repository at ``path``, its refs, the image ``digest`` and the mount at ``mount_point``.

    ``in_place`` is true when the repository holds the image with all its objects,
    ``NAME/current`` names it, and the mount (and its fstab line) is exactly what
    ``composefs.fleet.mount`` with ``mount_options`` would leave; ``differences`` says
    what is not. Without ``digest`` only the facts are read, ``image`` is the one
    ``NAME/current`` names, and ``in_place`` is null.
    """
    mount_options = dict(mount_options or {})
    run_options = dict(mount_run_options or {})
    differences = []
    current_ref = "%s/current" % name
    out = dict(path=os.path.abspath(path), repository=None, refs={}, current=None, image=None)
    repo = None
    if not os.path.isdir(path):
        differences.append("%s does not exist" % path)
    else:
        try:
            repo = repository.Repository(path)
        except RepositoryError as exc:
            differences.append(str(exc))
    if repo is not None:
        with repo, repo.lock(exclusive=False, timeout=lock_timeout):
            out["repository"] = repo.meta.as_dict()
            out["refs"] = repo.refs()
            out["current"] = out["refs"].get(current_ref)
            if digest:
                out["image"] = _image_status(repo, digest, differences)
                if out["current"] != out["image"]["digest"]:
                    differences.append("%s names %s" % (current_ref, out["current"] or "nothing"))
            elif out["current"]:
                # facts only: the image NAME/current names (its problems are not differences)
                out["image"] = _image_status(repo, out["current"], [])
    out["mount"] = mount_status(mount_point, mount_options.get("fstab", "/etc/fstab"), **run_options)
    if not digest:
        out["in_place"] = None
        out["differences"] = differences
        return out
    image = out["image"]
    mounted = False
    if image is not None and image["stored"]:
        objects = os.path.join(repo.path, layout.OBJECTS)
        mounted = _mount_in_place(mount_point, repo.object_path(image["digest"]), objects, image["digest"],
                                  mount_options, out["mount"], differences, run_options)
    elif out["mount"]["digest"] != digest:
        differences.append("%s runs %s" % (mount_point, out["mount"]["digest"] or "no image of this collection's"))
    out["in_place"] = not differences and mounted
    out["differences"] = differences
    return out
