# -*- coding: utf-8 -*-
# Copyright: composefs.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Checking an image against its pinned digest before it is mounted.

The image is opened once; the digest is taken from that open file and the
mount is made from that same file descriptor, so swapping the file at the path
between check and mount changes nothing.

``verity`` modes:

``require``
    The image must have fs-verity: its digest is the kernel's measurement
    (``FS_IOC_MEASURE_VERITY``), compared with the pin. The overlay is then
    mounted with ``verity=require``, so the kernel checks every object's
    fs-verity digest against the one the image records for it, at every open.
``userspace``
    For kernels that cannot enforce fs-verity: the image's digest is computed
    in userspace and compared with the pin, and every object the image
    references must exist in a basedir. Nothing is checked after mounting.
``off``
    No check of the objects and no kernel verity. A pinned digest, when one
    is given, is still compared (a pin is never ignored).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import errno
import os
import stat
import struct

from ansible_collections.composefs.fleet.plugins.module_utils.common.params import ParameterError
from ansible_collections.composefs.fleet.plugins.module_utils.common.params import normalize_digest as _normalize_digest
from ansible_collections.composefs.fleet.plugins.module_utils.common.regular_file import NotRegularFile, open_regular
from ansible_collections.composefs.fleet.plugins.module_utils.erofs import reader
from ansible_collections.composefs.fleet.plugins.module_utils.erofs.format import LCFS_EROFS_FLAGS_HAS_ACL, LCFS_EROFS_MAGIC
from ansible_collections.composefs.fleet.plugins.module_utils.fsverity import ioctl
from ansible_collections.composefs.fleet.plugins.module_utils.fsverity.digest import data_digest
from ansible_collections.composefs.fleet.plugins.module_utils.mount.errors import MountError

VERITY_MODES = ("require", "userspace", "off")
# What the result's ``verity`` says for each mode.
VERITY_RESULT = {"require": "kernel", "userspace": "userspace", "off": "none"}
SHOW_MISSING = 5


def userspace_warning(count=None):
    """The warning every verity=userspace mount gets."""
    objects = "its objects" if count is None else "its %d object%s" % (count, "" if count == 1 else "s")
    return ("verity=userspace: the image digest and the presence of %s were checked in userspace before mounting, "
            "but the kernel does not enforce fs-verity on this mount, so tampering with the image or the objects at "
            "runtime will not be detected" % objects)


def normalize_digest(value):
    """A pinned digest as 64 lowercase hex digits; accepts an optional ``sha256:`` prefix (common.params)."""
    try:
        return _normalize_digest(value, "digest")[1]
    except ParameterError as exc:
        raise MountError(str(exc), "invalid")


class ImageCheck:
    """The outcome of :func:`check_image`. ``fd`` is the open image; the caller closes it (:meth:`close`)."""

    def __init__(self, path, fd, digest, verity, objects, has_acl):
        self.path = path
        self.fd = fd
        self.digest = digest
        self.verity = verity  # kernel | userspace | none
        self.objects = objects  # number of objects checked, or None when not checked
        self.has_acl = has_acl
        self.warnings = []
        self.data = None  # the image's bytes, once read
        self.mode = None  # the verity mode it was checked for

    def close(self):
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def open_image(path):
    """Open the image read-only; clear errors for a missing path, a non-file and a non-composefs file."""
    try:
        # Non-blocking open and fstat: a FIFO or a device at the path is refused, never waited on.
        fd = open_regular(path, what="image")
    except NotRegularFile as exc:
        raise MountError(exc.strerror, "invalid")
    except FileNotFoundError:
        raise MountError("image %s does not exist" % path, "image-missing")
    except OSError as exc:
        raise MountError("cannot open image %s: %s" % (path, exc.strerror), "image-missing")
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise MountError("image %s is not a regular file" % path, "invalid")
        header = os.pread(fd, 16, 0)
        if len(header) < 16 or struct.unpack_from("<I", header, 0)[0] != LCFS_EROFS_MAGIC:
            raise MountError("%s is not a composefs image (no composefs header: build it with "
                             "composefs.fleet.image or mkcomposefs)" % path, "invalid")
    except BaseException:
        os.close(fd)
        raise
    return fd


def _read_all(fd):
    size = os.fstat(fd).st_size
    chunks = []
    offset = 0
    while True:
        chunk = os.pread(fd, max(size - offset, 0) + 65536, offset)
        if not chunk:
            break
        chunks.append(chunk)
        offset += len(chunk)
    return b"".join(chunks)


def userspace_digest(path):
    """The image's fs-verity digest computed in userspace (hex), or None when it cannot be opened as an image."""
    try:
        fd = open_image(path)
    except MountError:
        return None
    try:
        return data_digest(_read_all(fd)).hex()
    finally:
        os.close(fd)


def _kernel_digest(fd, path):
    """The kernel's fs-verity digest of the image for verity=require, or a MountError saying why there is none."""
    kernel = ioctl.kernel_has_fs_verity()
    try:
        enabled = ioctl.verity_enabled(fd, path)
    except ioctl.VerityError as exc:
        raise MountError("verity=require: cannot read the fs-verity state of image %s: %s" % (path, exc.reason), "no-verity")
    if not enabled:
        if kernel is False:
            raise MountError(
                "verity=require needs fs-verity in the kernel (CONFIG_FS_VERITY) and this kernel (%s) has none: "
                "the kernel cannot enforce the pinned digest here. Use verity: userspace to check it in userspace "
                "instead (runtime tampering is then not detected)" % os.uname()[2], "kernel-feature")
        why = ioctl.predict_enable_failure(path)
        raise MountError(
            "image %s has no fs-verity, which verity=require needs: enable it with composefs.fleet.fsverity "
            "(state: enabled)%s" % (path, "; but it cannot get it where it is: %s" % why if why else ""), "no-verity")
    try:
        algorithm, raw = ioctl.measure(fd, path)
    except ioctl.VerityError as exc:
        if exc.errno == errno.ENODATA:
            raise MountError("image %s has no fs-verity, which verity=require needs: enable it with "
                             "composefs.fleet.fsverity (state: enabled)" % path, "no-verity")
        raise MountError("verity=require: %s" % exc, "no-verity")
    if algorithm != "sha256":
        raise MountError("image %s has a %s fs-verity digest; composefs pins SHA-256 digests (enable fs-verity "
                         "with hash_algorithm sha256)" % (path, algorithm), "no-verity")
    return raw.hex()


def _check_basedirs(basedirs):
    for base in basedirs:
        if not os.path.isdir(base):
            raise MountError("basedir %s %s" % (base, "is not a directory" if os.path.exists(base) else "does not exist"),
                             "invalid")


def missing_objects(data, path, basedirs):
    """(objects the image references, the ones no basedir holds) as sorted lists of relative paths."""
    try:
        tree = reader.read_image(data)
        objects = reader.objects(tree, strict=False)
    except reader.ImageError as exc:
        raise MountError("%s is not a valid composefs image: %s" % (path, exc), "invalid")
    dirfds = []
    try:
        for base in basedirs:
            dirfds.append(os.open(base, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC))
        missing = []
        for rel in objects:
            parts = rel.split("/")
            if rel.startswith("/") or ".." in parts or not rel:
                raise MountError("image %s references %r, which is not a path inside a basedir" % (path, rel), "invalid")
            for dfd in dirfds:
                try:
                    os.stat(rel, dir_fd=dfd)
                    break
                except OSError:
                    continue
            else:
                missing.append(rel)
        return objects, missing
    except OSError as exc:
        raise MountError("cannot read basedir: %s" % exc, "invalid")
    finally:
        for dfd in dirfds:
            os.close(dfd)


def check_image(path, pin, verity, basedirs, objects=True):
    """Open and check the image for ``verity`` mode (see the module docstring). Returns an :class:`ImageCheck`.

    Raises MountError (with nothing left open) for a missing or invalid image,
    a digest other than the pin (``image digest X, pinned Y``), an image without
    fs-verity under ``require``, and (with ``objects``, else see
    :func:`check_objects`) missing objects, a few of them named.
    """
    if verity not in VERITY_MODES:
        raise MountError("verity must be one of %s, not %r" % (", ".join(VERITY_MODES), verity), "invalid")
    _check_basedirs(basedirs)
    fd = open_image(path)
    try:
        flags = struct.unpack_from("<I", os.pread(fd, 12, 0), 8)[0]
        data = None
        if verity == "require":
            digest = _kernel_digest(fd, path)
        else:
            data = _read_all(fd)
            digest = data_digest(data).hex()
        if pin is not None and digest != pin:
            raise MountError("image %s: image digest %s, pinned %s; refusing to mount it" % (path, digest, pin),
                             "digest-mismatch")
        check = ImageCheck(path, fd, digest, VERITY_RESULT[verity], None, bool(flags & LCFS_EROFS_FLAGS_HAS_ACL))
        check.data = data
        check.mode = verity
        if objects:
            check_objects(check, basedirs)
        return check
    except BaseException:
        os.close(fd)
        raise


def check_objects(check, basedirs):
    """Under ``require`` and ``userspace``: every object the image references must be in a basedir."""
    if check.mode == "off":
        return
    if check.data is None:
        check.data = _read_all(check.fd)  # with fs-verity on the image, the kernel checks every byte of this read
    objects, missing = missing_objects(check.data, check.path, basedirs)
    if missing:
        shown = ", ".join(missing[:SHOW_MISSING])
        more = " and %d more" % (len(missing) - SHOW_MISSING) if len(missing) > SHOW_MISSING else ""
        raise MountError(
            "%d of the %d objects image %s references are missing from basedir %s: %s%s"
            % (len(missing), len(objects), check.path, ":".join(basedirs), shown, more), "objects-missing")
    check.objects = len(objects)
    if check.mode == "userspace":
        check.warnings.append(userspace_warning(check.objects))
