# -*- coding: utf-8 -*-
# Copyright: composefs.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The content-addressed object store of composefs.

Layout, as ``mkcomposefs --digest-store=DIR`` makes it: ``DIR/XX/<62 hex>``, the
file named by its fs-verity SHA-256 digest. An image's redirect xattrs hold the
``XX/<62 hex>`` part, so any store holding the objects can serve as the mount's
``basedir``.

Adding an object never exposes a partial file: the copy is made under a
temporary name in the final directory (reflink, else ``copy_file_range``, else a
plain copy), fsynced, given fs-verity where possible, checked against the
expected digest, and only then renamed into place. Concurrent builders into one
store can only ever replace an object with an identical, verified copy. An
object found in place is verified before it is trusted.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import errno
import fcntl
import os
import re

from ansible_collections.composefs.fleet.plugins.module_utils.common.atomic import fsync_dir
from ansible_collections.composefs.fleet.plugins.module_utils.fsverity import ioctl
from ansible_collections.composefs.fleet.plugins.module_utils.fsverity.digest import file_digest

FICLONE = 0x40049409  # _IOW(0x94, 9, int)
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_OBJECT_NAME = re.compile(r"^[0-9a-f]{2}/[0-9a-f]{62}$")
TEMP_PREFIX = ".tmp-"


class ObjectStoreError(Exception):
    """A store operation failed; the message names the object or path and the cause."""


def object_relpath(digest_hex):
    """``XX/<62 hex>`` for a digest; refuses anything that is not 64 lowercase hex digits."""
    if not _HEX64.match(digest_hex or ""):
        raise ObjectStoreError("%r is not a SHA-256 fs-verity digest (64 lowercase hex digits)" % (digest_hex,))
    return digest_hex[:2] + "/" + digest_hex[2:]


def digest_of_relpath(relpath):
    """The digest an object path names, or None. Only ``XX/<62 hex>`` qualifies: no '..', no absolute paths."""
    if relpath and _OBJECT_NAME.match(relpath):
        return relpath.replace("/", "")
    return None


def _copy_into(src_fd, dst_fd, size):
    """Reflink where the filesystem can, else copy_file_range, else read/write. Returns the method used."""
    try:
        fcntl.ioctl(dst_fd, FICLONE, src_fd)
        return "reflink"
    except OSError as exc:
        if exc.errno not in (errno.EOPNOTSUPP, errno.ENOTTY, errno.EXDEV, errno.EINVAL, errno.EBADF, errno.ENOSYS, errno.EPERM):
            raise
    copy_file_range = getattr(os, "copy_file_range", None)
    if copy_file_range is not None:
        try:
            done = 0
            while done < size:
                n = copy_file_range(src_fd, dst_fd, size - done, done, done)
                if n == 0:
                    break
                done += n
            if done == size:
                return "copy_file_range"
        except OSError as exc:
            if exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL, errno.EBADF):
                raise
        os.ftruncate(dst_fd, 0)
    offset = 0
    while True:
        chunk = os.pread(src_fd, 1 << 20, offset)
        if not chunk:
            break
        view = memoryview(chunk)
        while view:
            written = os.pwrite(dst_fd, view, offset)
            offset += written
            view = view[written:]
    return "copy"


class ObjectStore:
    """One store directory. ``enable_verity`` is 'auto' (where the filesystem can), True (required) or False."""

    def __init__(self, root, enable_verity="auto", sync_dirs=True):
        self.root = os.path.abspath(root)
        self.enable_verity = enable_verity
        # With 'auto', the first "this filesystem cannot" answer holds for the whole store.
        self._verity_unsupported = False
        # sync_dirs=False leaves fsyncing the fan-out directories to sync_pending_dirs(), once per batch.
        self.sync_dirs = sync_dirs
        self.pending_dirs = set()
        self._made_dirs = set()

    def path_of(self, digest_hex):
        return os.path.join(self.root, object_relpath(digest_hex))

    def ensure_root(self):
        try:
            os.makedirs(self.root, 0o755, exist_ok=True)
        except OSError as exc:
            raise ObjectStoreError("cannot create the object store %s: %s" % (self.root, exc.strerror))

    def check_object(self, digest_hex):
        """'ok' if the object exists with the right content, 'missing', or 'corrupt'.

        Where the object has fs-verity the kernel's measurement is used; else its
        digest is computed.
        """
        path = self.path_of(digest_hex)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        except FileNotFoundError:
            return "missing"
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                return "corrupt"
            raise ObjectStoreError("cannot open object %s: %s" % (path, exc.strerror))
        try:
            actual = _digest_of_fd(fd, path)
        except (OSError, ioctl.VerityError):
            return "corrupt"
        finally:
            os.close(fd)
        return "ok" if actual == digest_hex else "corrupt"

    def _enable_verity(self, path):
        """Give the closed temp file fs-verity per ``enable_verity``; returns whether it has it."""
        if self.enable_verity is False or self.enable_verity == "false" or self._verity_unsupported:
            return False
        try:
            ioctl.enable_path(path)
            return True
        except ioctl.VerityError as exc:
            if exc.unsupported and self.enable_verity == "auto":
                self._verity_unsupported = True
                return False
            raise ObjectStoreError("object store %s: %s" % (self.root, exc))
        except OSError as exc:
            raise ObjectStoreError("object store %s: cannot open %s: %s" % (self.root, path, exc.strerror))

    def add_file(self, src, digest_hex, checked=False):
        """Store ``src`` as the object ``digest_hex``. Returns (added: bool, bytes_added: int).

        An existing, intact object is kept (added=False); a missing or corrupt one is
        written. ``checked=True`` says the caller has just found it not intact.
        Raises ObjectStoreError if ``src`` does not have that digest.
        """
        if not checked and self.check_object(digest_hex) == "ok":
            return False, 0
        tmp, size = self._stage(src, digest_hex, fsync=True)
        self._publish(tmp, src, digest_hex)
        return True, size

    def add_files(self, pairs):
        """Store many ``(src, digest_hex)`` the caller found missing or damaged; returns (added, bytes_added).

        The copies are made first, made durable with one syncfs() for the batch
        (not an fsync each: one journal commit instead of hundreds), then given
        fs-verity, checked and renamed into place one by one.
        """
        staged = []
        try:
            for src, digest_hex in pairs:
                staged.append((self._stage(src, digest_hex, fsync=False), src, digest_hex))
            self._sync_staged([tmp for (tmp, _size), _src, _digest in staged])
            nbytes = 0
            while staged:
                (tmp, size), src, digest_hex = staged[0]
                self._publish(tmp, src, digest_hex)
                staged.pop(0)
                nbytes += size
        finally:
            for (tmp, _size), _src, _digest in staged:
                _unlink_quietly(tmp)
        return len(pairs), nbytes

    def _stage(self, src, digest_hex, fsync):
        """Copy ``src`` to a temporary file beside its final name; returns (temp path, size)."""
        subdir = os.path.dirname(self.path_of(digest_hex))
        if subdir not in self._made_dirs:
            try:
                os.makedirs(subdir, 0o755, exist_ok=True)
            except OSError as exc:
                raise ObjectStoreError("cannot create %s: %s" % (subdir, exc.strerror))
            self._made_dirs.add(subdir)
        tmp = os.path.join(subdir, "%s%s.%d.%s" % (TEMP_PREFIX, digest_hex[2:14], os.getpid(), os.urandom(4).hex()))
        try:
            src_fd = os.open(src, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        except OSError as exc:
            raise ObjectStoreError("cannot read %s: %s" % (src, exc.strerror))
        try:
            size = os.fstat(src_fd).st_size
            dst_fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
            try:
                _copy_into(src_fd, dst_fd, size)
                os.fchmod(dst_fd, 0o644)
                if fsync:
                    os.fsync(dst_fd)
            finally:
                os.close(dst_fd)
        except OSError as exc:
            _unlink_quietly(tmp)
            raise ObjectStoreError("cannot copy %s into the object store %s: %s" % (src, self.root, exc.strerror or exc))
        finally:
            os.close(src_fd)
        return tmp, size

    def _sync_staged(self, paths):
        """Make the staged copies durable: syncfs() on the store's filesystem, else an fsync each."""
        if not paths:
            return
        fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            if _syncfs(fd):
                return
        finally:
            os.close(fd)
        for path in paths:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    def _publish(self, tmp, src, digest_hex):
        """fs-verity, the digest check, and the rename of a durable staged copy."""
        final = self.path_of(digest_hex)
        try:
            self._enable_verity(tmp)
            fd = os.open(tmp, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
            try:
                got = _digest_of_fd(fd, tmp)
            finally:
                os.close(fd)
            if got != digest_hex:
                raise ObjectStoreError("%s changed while it was stored: digest %s, expected %s" % (src, got, digest_hex))
            # rename() is atomic: readers see no object or a complete, verified one. A
            # concurrent builder's copy of the same object may be replaced by ours:
            # same bytes, also verified; a reader holding the old one keeps it.
            os.rename(tmp, final)
            tmp = None
            subdir = os.path.dirname(final)
            if self.sync_dirs:
                fsync_dir(subdir)
            else:
                self.pending_dirs.add(subdir)
        except OSError as exc:
            raise ObjectStoreError("cannot publish object %s: %s" % (final, exc.strerror or exc))
        finally:
            if tmp:
                _unlink_quietly(tmp)

    def sync_pending_dirs(self):
        """fsync the fan-out directories objects were linked into since the last call."""
        for subdir in sorted(self.pending_dirs):
            fsync_dir(subdir)
        self.pending_dirs.clear()

    def iter_objects(self):
        """Yield the digest of every object file in the store (temp files and strays are skipped)."""
        try:
            subdirs = sorted(os.listdir(self.root))
        except FileNotFoundError:
            return
        for sub in subdirs:
            if len(sub) != 2 or not re.match(r"^[0-9a-f]{2}$", sub):
                continue
            for name in sorted(os.listdir(os.path.join(self.root, sub))):
                digest = digest_of_relpath(sub + "/" + name)
                if digest:
                    yield digest

    def stale_temp_files(self):
        """Temp files left by interrupted writers (``.tmp-*`` in the fan-out directories)."""
        out = []
        for sub in sorted(os.listdir(self.root)) if os.path.isdir(self.root) else []:
            d = os.path.join(self.root, sub)
            if os.path.isdir(d):
                out.extend(os.path.join(d, n) for n in sorted(os.listdir(d)) if n.startswith(TEMP_PREFIX))
        return out

    def remove(self, digest_hex):
        path = self.path_of(digest_hex)
        _unlink_quietly(path)


_LIBC = []


def _syncfs(fd):
    """syncfs(2) through libc; False where it is not available."""
    import ctypes
    if not _LIBC:
        try:
            _LIBC.append(ctypes.CDLL(None, use_errno=True))
        except OSError:
            _LIBC.append(None)
    libc = _LIBC[0]
    if libc is None or not hasattr(libc, "syncfs"):
        return False
    if libc.syncfs(fd) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return True


def _digest_of_fd(fd, path):
    """The object's digest: the kernel's measurement where it has fs-verity, else computed."""
    if ioctl.verity_enabled(fd, path):
        alg, digest = ioctl.measure(fd, path)
        return digest.hex() if alg == "sha256" else None
    return file_digest(fd).hex()


def _unlink_quietly(path):
    try:
        os.unlink(path)
    except OSError:
        pass
