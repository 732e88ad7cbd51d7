# -*- coding: utf-8 -*-
# Copyright: composefs.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private copies of images checked in userspace, so that the bytes mounted are the bytes checked.

Without kernel fs-verity nothing stops the image file from being rewritten in
place (same inode) after its digest was computed and before, or while, the
kernel reads it. So under ``verity: userspace`` and ``off`` the image's bytes,
read once and hashed (:func:`.verify.check_image`), are written to a fresh file
in a root-only directory, ``/run/composefs-fleet/images/<digest>`` (0700
directories, 0400 file), the copy's digest is measured again through its own
file descriptor, and that descriptor is what gets mounted. An image is metadata
only (the file contents are objects in the store), so the copy is small.

A copy stays while a record (:mod:`.state`) names it, and goes with the last
mount that uses it.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os
import stat

from ansible_collections.composefs.fleet.plugins.module_utils.common.atomic import fsync_dir, remove_durably
from ansible_collections.composefs.fleet.plugins.module_utils.fsverity.digest import file_digest
from ansible_collections.composefs.fleet.plugins.module_utils.mount.errors import MountError
from ansible_collections.composefs.fleet.plugins.module_utils.mount.state import MOUNTS_DIR, RUN_DIR

IMAGES_DIR = RUN_DIR + "/images"


def private_dir(path):
    """Create ``path`` and its missing parents as root-only directories; refuse a symlink or another owner."""
    parent = os.path.dirname(path)
    if parent and parent != path and not os.path.isdir(parent):
        private_dir(parent)
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    except OSError as exc:
        raise MountError("cannot create %s: %s" % (path, exc.strerror or exc))
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid():
        raise MountError("%s is not a directory owned by uid %d (%s); it holds checked image copies and must be "
                         "private: remove it" % (path, os.geteuid(), "a symlink" if stat.S_ISLNK(st.st_mode) else
                                                 "mode %o, uid %d" % (st.st_mode, st.st_uid)), "invalid")
    if stat.S_IMODE(st.st_mode) != 0o700:
        os.chmod(path, 0o700)


def copy_path(digest, images_dir=IMAGES_DIR):
    return os.path.join(images_dir, digest)


def make_copy(check, images_dir=IMAGES_DIR):
    """Write the checked bytes (``check.data``) to ``images_dir/<digest>``, verify the copy, and switch ``check``
    to it: ``check.fd`` becomes the copy's descriptor and ``check.copy`` its path. The original image is closed."""
    if check.data is None or check.digest is None:
        raise MountError("internal error: the image %s was not read before copying it" % check.path)
    private_dir(images_dir)
    final = copy_path(check.digest, images_dir)
    tmp = os.path.join(images_dir, ".%s.tmp-%d-%s" % (check.digest, os.getpid(), os.urandom(4).hex()))
    fd = None
    try:
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o400)
        view = memoryview(check.data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
        copied = file_digest(fd).hex()
        if copied != check.digest:
            raise MountError("the private copy %s of image %s has digest %s, not the checked %s; nothing was mounted"
                             % (final, check.path, copied, check.digest), "digest-mismatch")
        # A copy of the same digest may be mounted already: it keeps its inode, this one takes the name.
        os.rename(tmp, final)
        tmp = None
        fsync_dir(images_dir)
    except OSError as exc:
        if fd is not None:
            os.close(fd)
        raise MountError("cannot copy image %s to %s: %s" % (check.path, final, exc.strerror or exc))
    except BaseException:
        if fd is not None:
            os.close(fd)
        raise
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass
    check.close()
    check.fd = fd
    check.copy = final
    return final


def copies_in_use(mounts_dir=MOUNTS_DIR):
    """The copies that records name."""
    used = set()
    try:
        names = os.listdir(mounts_dir)
    except OSError:
        return used
    for name in names:
        if not name.endswith(".json"):
            continue
        try:
            with open(os.path.join(mounts_dir, name), "r") as f:
                record = json.load(f)
        except (OSError, ValueError):
            continue
        if isinstance(record, dict) and record.get("copy"):
            used.add(record["copy"])
    return used


def remove_if_unused(copy, mounts_dir=MOUNTS_DIR, images_dir=IMAGES_DIR):
    """Remove ``copy`` unless a record still names it; only files directly inside ``images_dir`` are touched."""
    if not copy or os.path.dirname(copy) != images_dir or copy in copies_in_use(mounts_dir):
        return False
    try:
        return remove_durably(copy)
    except OSError:
        return False
