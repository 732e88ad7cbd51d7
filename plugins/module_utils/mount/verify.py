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
    references must exist in a basedir (``verify_objects: digest``: and have
    its digest, hashed in userspace). The checked bytes are mounted from a
    private copy (:mod:`.image_copy`), since the file itself could be
    rewritten in place. Nothing is checked after mounting.
``off``
    No check of the objects and no kernel verity. A pinned digest, when one
    is given, is still compared (a pin is never ignored).

With a pin, in every mode, the image may only reference digest-named objects
(:func:`check_payload_names`).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import errno
import os
import re
import stat
import struct

from ansible_collections.composefs.fleet.plugins.module_utils.common.params import ParameterError
from ansible_collections.composefs.fleet.plugins.module_utils.common.params import normalize_digest as _normalize_digest
from ansible_collections.composefs.fleet.plugins.module_utils.common.regular_file import NotRegularFile, open_regular
from ansible_collections.composefs.fleet.plugins.module_utils.erofs import reader
from ansible_collections.composefs.fleet.plugins.module_utils.erofs.format import LCFS_EROFS_FLAGS_HAS_ACL, LCFS_EROFS_MAGIC
from ansible_collections.composefs.fleet.plugins.module_utils.fsverity import ioctl
from ansible_collections.composefs.fleet.plugins.module_utils.fsverity.digest import data_digest, digest_files
from ansible_collections.composefs.fleet.plugins.module_utils.mount.errors import MountError

VERITY_MODES = ("require", "userspace", "off")
# What the result's ``verity`` says for each mode.
VERITY_RESULT = {"require": "kernel", "userspace": "userspace", "off": "none"}
_OBJECT_NAME = re.compile(r"^[0-9a-f]{2}/[0-9a-f]{62}$")
VERIFY_OBJECTS = ("exists", "digest")
SHOW_MISSING = 5


def userspace_warning(count=None, hashed=False):
    """The warning every verity=userspace mount gets."""
    objects = "its objects" if count is None else "its %d object%s" % (count, "" if count == 1 else "s")
    what = "the digests of %s" % objects if hashed else "the presence of %s" % objects
    return ("verity=userspace: the image digest and %s were checked in userspace before mounting, "
            "but the kernel does not enforce fs-verity on this mount, so tampering with the image or the objects at "
            "runtime will not be detected" % what)


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
        self.pinned = False  # checked against a pinned digest
        self.objects_verified = False  # every object hashed in userspace (verify_objects: digest)
        self.copy = None  # the private copy mounted instead of the image (userspace and off)

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


def references(data, path):
    """The objects the image references: sorted ``[(payload, recorded digest hex or None)]``, one per payload.

    A payload is a regular file's ``trusted.overlay.redirect`` (minus the
    leading ``/``); its recorded digest is the one ``trusted.overlay.metacopy``
    holds, which the kernel checks under ``verity=require``.
    """
    try:
        tree = reader.read_image(data)
    except reader.ImageError as exc:
        raise MountError("%s is not a valid composefs image: %s" % (path, exc), "invalid")
    found = {}
    for _name, node in tree.walk():
        if node.link_to is None and node.payload is not None and stat.S_ISREG(node.mode):
            rel = os.fsdecode(node.payload)
            digest = node.digest.hex() if node.digest is not None else None
            if found.get(rel) is None:
                found[rel] = digest
    return sorted(found.items())


def _inside_basedir(rel):
    parts = rel.split("/")
    return bool(rel) and not rel.startswith("/") and ".." not in parts


def check_payload_names(refs, path):
    """With a pin: every payload must be ``XX/<62 hex>``, named after the digest the image records for it.

    A pinned image is trusted for what it names, so it must name only objects of
    the store: no path that escapes the basedir, no file that is not an object,
    and no object other than the one the image's own metacopy digest names.
    """
    bad = []
    for rel, digest in refs:
        if not _OBJECT_NAME.match(rel):
            bad.append("%r (not an object-store name XX/<62 hex>)" % (rel,))
        elif digest is not None and rel.replace("/", "") != digest:
            bad.append("%s (the image records digest %s for it)" % (rel, digest))
    if bad:
        shown = ", ".join(bad[:SHOW_MISSING])
        more = " and %d more" % (len(bad) - SHOW_MISSING) if len(bad) > SHOW_MISSING else ""
        raise MountError("image %s references %d payload%s that %s not digest-named objects of the store: %s%s; a "
                         "pinned image may only reference XX/<62 hex> objects named after their own digest (rebuild "
                         "it with composefs.fleet.image or mkcomposefs --digest-store)"
                         % (path, len(bad), "" if len(bad) == 1 else "s", "is" if len(bad) == 1 else "are", shown, more),
                         "invalid")


def _find_objects(refs, path, basedirs):
    """{payload: the file that holds it (first basedir with it)} and the sorted list of missing payloads."""
    dirfds = []
    try:
        for base in basedirs:
            dirfds.append(os.open(base, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC))
        found = {}
        missing = []
        for rel, _digest in refs:
            if not _inside_basedir(rel):
                raise MountError("image %s references %r, which is not a path inside a basedir" % (path, rel), "invalid")
            for base, dfd in zip(basedirs, dirfds):
                try:
                    os.stat(rel, dir_fd=dfd)
                except OSError:
                    continue
                found[rel] = os.path.join(base, rel)
                break
            else:
                missing.append(rel)
        return found, missing
    except OSError as exc:
        raise MountError("cannot read basedir: %s" % exc, "invalid")
    finally:
        for dfd in dirfds:
            os.close(dfd)


def missing_objects(data, path, basedirs):
    """(objects the image references, the ones no basedir holds) as sorted lists of relative paths."""
    refs = references(data, path)
    _found, missing = _find_objects(refs, path, basedirs)
    return [rel for rel, _d in refs], missing


def check_object_digests(refs, found, path):
    """``verify_objects: digest``: hash every object in userspace; each must have the digest its name and the
    image record. Reads every byte of every object the image references, in worker processes (one per CPU)."""
    bad = []
    expected = {}
    paths = []
    for rel, recorded in refs:
        held = found[rel]
        try:
            st = os.lstat(held)
        except OSError as exc:
            bad.append("%s (%s)" % (held, exc.strerror or exc))
            continue
        if not stat.S_ISREG(st.st_mode):  # never open a FIFO or a device, never follow a symlink
            bad.append("%s (not a regular file)" % held)
            continue
        expected[held] = recorded or (rel.replace("/", "") if _OBJECT_NAME.match(rel) else None)
        paths.append(held)
    for held, result in digest_files(paths):
        if isinstance(result, OSError):
            bad.append("%s (%s)" % (held, result.strerror or result))
        elif expected[held] is not None and result.hex() != expected[held]:
            bad.append("%s (digest %s, expected %s)" % (held, result.hex(), expected[held]))
    if bad:
        shown = ", ".join(bad[:SHOW_MISSING])
        more = " and %d more" % (len(bad) - SHOW_MISSING) if len(bad) > SHOW_MISSING else ""
        raise MountError("verify_objects=digest: %d of the %d objects image %s references do not have their digest: "
                         "%s%s; refusing to mount it (restore the objects, e.g. by rebuilding the image into the store)"
                         % (len(bad), len(refs), path, shown, more), "objects-digest")


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
        check.pinned = pin is not None
        if objects:
            check_objects(check, basedirs)
        return check
    except BaseException:
        os.close(fd)
        raise


def check_objects(check, basedirs, verify_objects="exists"):
    """What the image references, before it is mounted.

    With a pin (any mode): every payload is a digest-named object
    (:func:`check_payload_names`). Under ``require`` and ``userspace``: every
    object must be in a basedir; under ``userspace`` with ``verify_objects``
    ``digest``, every object must also have its digest (hashed in userspace).
    """
    if verify_objects not in VERIFY_OBJECTS:
        raise MountError("verify_objects must be one of %s, not %r" % (", ".join(VERIFY_OBJECTS), verify_objects),
                         "invalid")
    if check.data is None:
        check.data = _read_all(check.fd)  # with fs-verity on the image, the kernel checks every byte of this read
    refs = references(check.data, check.path)
    if check.pinned:
        check_payload_names(refs, check.path)
    if check.mode == "off":
        return
    found, missing = _find_objects(refs, check.path, basedirs)
    if missing:
        shown = ", ".join(missing[:SHOW_MISSING])
        more = " and %d more" % (len(missing) - SHOW_MISSING) if len(missing) > SHOW_MISSING else ""
        raise MountError(
            "%d of the %d objects image %s references are missing from basedir %s: %s%s"
            % (len(missing), len(refs), check.path, ":".join(basedirs), shown, more), "objects-missing")
    check.objects = len(refs)
    if check.mode == "userspace" and verify_objects == "digest":
        check_object_digests(refs, found, check.path)
        check.objects_verified = True
    if check.mode == "userspace":
        check.warnings.append(userspace_warning(check.objects, check.objects_verified))
