# -*- coding: utf-8 -*-
# Copyright: composefs.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Checking a repository: objects against their names, images against their objects, nothing stray.

* every object's name is its fs-verity digest in the repository's algorithm
  (the kernel's measurement where the object has fs-verity, else computed);
* fs-verity is enabled on every object where the repository requires it
  (meta.json has fs-verity) or the filesystem supports it;
* every images/ entry is a link to its own object, every image's objects are
  present, every ref names an image;
* nothing else is in objects/ (temporary files of writers are listed apart).

Corrupt objects can be moved to ``quarantine/`` in the repository (a directory
composefs-rs does not look at), named ``XX<rest>.<unix time>``.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import re
import stat
import time

from ansible_collections.composefs.fleet.plugins.module_utils.common.atomic import fsync_dir
from ansible_collections.composefs.fleet.plugins.module_utils.fsverity import ioctl
from ansible_collections.composefs.fleet.plugins.module_utils.fsverity.digest import digest_files
from ansible_collections.composefs.fleet.plugins.module_utils.repository import layout
from ansible_collections.composefs.fleet.plugins.module_utils.repository.errors import RepositoryError

QUARANTINE = "quarantine"
_FANOUT = re.compile(r"^[0-9a-f]{2}$")
# Writers' temporary files: ours (objectstore) and composefs-rs's named fallback.
_TEMP_PREFIXES = (".tmp-",)


def _verity_expected(repo):
    if repo.secure:
        return True
    return ioctl.kernel_has_fs_verity() is True and ioctl.predict_enable_failure(repo.objects_path) is None


def _scan_objects(repo, result):
    """[(digest, path)] of well-named regular files; fills stray/temporary/corrupt for the rest."""
    found = []
    top = repo.objects_path
    try:
        names = sorted(os.listdir(top))
    except FileNotFoundError:
        return found
    for sub in names:
        full = os.path.join(top, sub)
        st = os.lstat(full)
        if not _FANOUT.match(sub) or not stat.S_ISDIR(st.st_mode):
            result["stray"].append(full)
            continue
        for name in sorted(os.listdir(full)):
            path = os.path.join(full, name)
            if name.startswith(_TEMP_PREFIXES):
                result["temporary"].append(path)
                continue
            digest = sub + name
            if not layout.is_digest(digest, repo.algorithm):
                result["stray"].append(path)
                continue
            if not stat.S_ISREG(os.lstat(path).st_mode):
                result["corrupt"].append({"path": path, "digest": digest, "actual": None,
                                          "problem": "not a regular file"})
                continue
            found.append((digest, path))
    return found


def _check_objects(repo, found, result, workers):
    verity_wanted = _verity_expected(repo)
    to_compute = []
    for digest, path in found:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError as exc:
            result["corrupt"].append({"path": path, "digest": digest, "actual": None, "problem": "cannot open: %s" % exc.strerror})
            continue
        try:
            if ioctl.verity_enabled(fd, path):
                alg, raw = ioctl.measure(fd, path)
                actual = raw.hex()
                if alg != repo.algorithm or actual != digest:
                    result["corrupt"].append({"path": path, "digest": digest, "actual": "%s:%s" % (alg, actual),
                                              "problem": "fs-verity digest differs from the name"})
                continue
        except ioctl.VerityError as exc:
            result["corrupt"].append({"path": path, "digest": digest, "actual": None, "problem": exc.reason})
            continue
        finally:
            os.close(fd)
        if verity_wanted:
            result["without_verity"].append(path)
        to_compute.append((digest, path))
    by_path = dict((path, digest) for digest, path in to_compute)
    for path, got in digest_files([p for _d, p in to_compute], repo.algorithm, workers=workers):
        digest = by_path[path]
        if isinstance(got, OSError):
            result["corrupt"].append({"path": path, "digest": digest, "actual": None, "problem": "cannot read: %s" % got})
        elif got.hex() != digest:
            result["corrupt"].append({"path": path, "digest": digest, "actual": "%s:%s" % (repo.algorithm, got.hex()),
                                      "problem": "content does not match the name"})


def _check_images(repo, result):
    for name, problem in repo.bad_image_entries():
        result["bad_images"].append({"image": name, "problem": problem})
    corrupt = set(c["digest"] for c in result["corrupt"])
    for digest, info in sorted(repo.images().items()):
        result["images_checked"] += 1
        if info["size"] is None:
            result["bad_images"].append({"image": digest, "problem": "its object is missing"})
            continue
        if digest in corrupt:
            result["bad_images"].append({"image": digest, "problem": "its object is corrupt"})
            continue
        try:
            missing = repo.missing_objects(digest)
        except RepositoryError as exc:
            result["bad_images"].append({"image": digest, "problem": str(exc)})
            continue
        if missing:
            result["missing_objects"][digest] = missing
    images = repo.images()
    for name, digest in sorted(repo.refs().items()):
        if digest is None or digest not in images:
            result["broken_refs"].append(name)


def fsck(repo, workers=None):
    """Check the repository (with the lock held shared by the caller); returns the findings as a dict."""
    result = {
        "objects_checked": 0, "corrupt": [], "without_verity": [], "stray": [], "temporary": [],
        "images_checked": 0, "bad_images": [], "missing_objects": {}, "broken_refs": [],
    }
    found = _scan_objects(repo, result)
    result["objects_checked"] = len(found) + len(result["corrupt"])
    _check_objects(repo, found, result, workers)
    result["corrupt"].sort(key=lambda c: c["path"])
    _check_images(repo, result)
    result["ok"] = not (result["corrupt"] or result["without_verity"] or result["stray"] or result["bad_images"]
                        or result["missing_objects"] or result["broken_refs"])
    return result


def quarantine(repo, corrupt, check_mode=False, now=None):
    """Move each corrupt object (fsck's ``corrupt`` entries) to quarantine/; returns the destinations."""
    where = os.path.join(repo.path, QUARANTINE)
    stamp = int(now if now is not None else time.time())
    moved = []
    for item in corrupt:
        dest = os.path.join(where, "%s.%d" % (item["digest"], stamp))
        moved.append({"path": item["path"], "quarantined_to": dest})
        if check_mode:
            continue
        os.makedirs(where, 0o700, exist_ok=True)
        try:
            os.rename(item["path"], dest)
        except FileNotFoundError:
            moved.pop()
            continue
        except OSError as exc:
            raise RepositoryError("cannot move %s to %s: %s" % (item["path"], dest, exc.strerror))
        fsync_dir(os.path.dirname(item["path"]))
    if moved and not check_mode:
        fsync_dir(where)
    return moved
