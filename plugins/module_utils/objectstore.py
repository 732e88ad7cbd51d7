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

Symlinks inside the store are never followed: the fan-out directories are
opened with ``O_NOFOLLOW`` relative to a descriptor of the store's root, and
every object, temporary file and rename goes through those descriptors, so a
planted ``store/1f -> /elsewhere`` is refused instead of written through. (The
root itself is the path the caller gave, resolved once.)

A build that is killed leaves ``.tmp-*`` files. Writers hold a shared
``flock`` on the store's root directory while they stage files; the next
build that gets the lock exclusively (no writer is active) removes temporary
files older than :data:`STALE_TEMP_GRACE` seconds. The lock is on the directory
itself, so the store's layout stays exactly ``mkcomposefs``'s.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import errno
import fcntl
import os
import re
import stat
import time

from ansible_collections.composefs.fleet.plugins.module_utils.common.regular_file import open_regular
from ansible_collections.composefs.fleet.plugins.module_utils.fsverity import ioctl
from ansible_collections.composefs.fleet.plugins.module_utils.fsverity.digest import file_digest

FICLONE = 0x40049409  # _IOW(0x94, 9, int)
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_OBJECT_NAME = re.compile(r"^[0-9a-f]{2}/[0-9a-f]{62}$")
# A composefs-rs repository's objects/ is the same fan-out, named by SHA-512 digests where its meta.json says so.
_HEX = {"sha256": _HEX64, "sha512": re.compile(r"^[0-9a-f]{128}$")}
_NAME = {"sha256": _OBJECT_NAME, "sha512": re.compile(r"^[0-9a-f]{2}/[0-9a-f]{126}$")}
TEMP_PREFIX = ".tmp-"
# A temporary file this old, with no writer holding the store lock, belongs to a dead build.
STALE_TEMP_GRACE = 15 * 60
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class ObjectStoreError(Exception):
    """A store operation failed; the message names the object or path and the cause."""


def object_relpath(digest_hex, hash_algorithm="sha256"):
    """``XX/<62 hex>`` for a digest (``XX/<126 hex>`` for SHA-512); refuses anything else."""
    if not _HEX[hash_algorithm].match(digest_hex or ""):
        raise ObjectStoreError("%r is not a %s fs-verity digest (%d lowercase hex digits)" % (
            digest_hex, hash_algorithm.upper().replace("SHA", "SHA-"), 64 if hash_algorithm == "sha256" else 128))
    return digest_hex[:2] + "/" + digest_hex[2:]


def digest_of_relpath(relpath, hash_algorithm="sha256"):
    """The digest an object path names, or None. Only ``XX/<62 hex>`` (SHA-512: 126) qualifies: no '..', no absolute paths."""
    if relpath and _NAME[hash_algorithm].match(relpath):
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
    """One store directory. ``enable_verity`` is 'auto' (where the filesystem can), True (required) or False.

    Holds descriptors of the root and the fan-out directories: :meth:`close` it
    (or use it as a context manager).
    """

    def __init__(self, root, enable_verity="auto", sync_dirs=True, hash_algorithm="sha256"):
        self.root = os.path.abspath(root)
        self.enable_verity = enable_verity
        self.hash_algorithm = hash_algorithm  # of the objects' names and their fs-verity
        # With 'auto', the first "this filesystem cannot" answer holds for the whole store.
        self._verity_unsupported = False
        # sync_dirs=False leaves fsyncing the fan-out directories to sync_pending_dirs(), once per batch.
        self.sync_dirs = sync_dirs
        self.pending_dirs = set()
        self._root_fd = None
        self._subdir_fds = {}
        self._locked = None

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def close(self):
        for fd in self._subdir_fds.values():
            os.close(fd)
        self._subdir_fds = {}
        if self._root_fd is not None:
            os.close(self._root_fd)  # also releases the flock
            self._root_fd = None
            self._locked = None

    def path_of(self, digest_hex):
        return os.path.join(self.root, object_relpath(digest_hex, self.hash_algorithm))

    def ensure_root(self):
        try:
            os.makedirs(self.root, 0o755, exist_ok=True)
        except OSError as exc:
            raise ObjectStoreError("cannot create the object store %s: %s" % (self.root, exc.strerror))

    def _root(self, create=False):
        """The root's descriptor, or None when the store does not exist (and ``create`` is false)."""
        if self._root_fd is None:
            if create:
                self.ensure_root()
            try:
                self._root_fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            except FileNotFoundError:
                if create:
                    raise ObjectStoreError("cannot open the object store %s: it vanished" % self.root)
                return None
            except OSError as exc:
                raise ObjectStoreError("cannot open the object store %s: %s" % (self.root, exc.strerror))
        return self._root_fd

    def _subdir(self, name, create=False):
        """The descriptor of the fan-out directory ``name`` (``XX``), or None if missing (and not ``create``).

        Opened with O_NOFOLLOW below the root's descriptor: a symlink (or
        anything not a directory) there is an error, never followed.
        """
        fd = self._subdir_fds.get(name)
        if fd is not None:
            return fd
        root = self._root(create)
        if root is None:
            return None
        where = os.path.join(self.root, name)
        for attempt in (0, 1):
            try:
                fd = os.open(name, _DIR_FLAGS, dir_fd=root)
                break
            except FileNotFoundError:
                if not create or attempt:
                    return None
                try:
                    os.mkdir(name, 0o755, dir_fd=root)
                except FileExistsError:
                    pass  # a concurrent builder made it
                except OSError as exc:
                    raise ObjectStoreError("cannot create %s: %s" % (where, exc.strerror))
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise ObjectStoreError("%s is a symlink or not a directory; objects are never read or written through "
                                           "a symlink inside the store: remove it (the store's fan-out directories must be "
                                           "plain directories)" % where)
                raise ObjectStoreError("cannot open %s: %s" % (where, exc.strerror))
        self._subdir_fds[name] = fd
        return fd

    def check_object(self, digest_hex):
        """'ok' if the object exists with the right content, 'missing', or 'corrupt'.

        Where the object has fs-verity the kernel's measurement is used; else its
        digest is computed. A symlink or special file in the object's place is
        'corrupt' (it is never opened as the object).
        """
        rel = object_relpath(digest_hex, self.hash_algorithm)
        dfd = self._subdir(rel[:2])
        if dfd is None:
            return "missing"
        path = self.path_of(digest_hex)
        try:
            fd = os.open(rel[3:], os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=dfd)
        except FileNotFoundError:
            return "missing"
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENXIO):
                return "corrupt"
            raise ObjectStoreError("cannot open object %s: %s" % (path, exc.strerror))
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                return "corrupt"
            actual = _digest_of_fd(fd, path, self.hash_algorithm)
        except (OSError, ioctl.VerityError):
            return "corrupt"
        finally:
            os.close(fd)
        return "ok" if actual == digest_hex else "corrupt"

    def _enable_verity(self, fd, path):
        """Give the staged copy (``fd``, read-only) fs-verity per ``enable_verity``; returns whether it has it."""
        if self.enable_verity is False or self.enable_verity == "false" or self._verity_unsupported:
            return False
        try:
            ioctl.enable(fd, path, hash_algorithm=self.hash_algorithm)
            return True
        except ioctl.VerityError as exc:
            if exc.unsupported and self.enable_verity == "auto":
                self._verity_unsupported = True
                return False
            raise ObjectStoreError("object store %s: %s" % (self.root, exc))

    # --- writers: a shared lock while staging; stale temporary files cleaned under an exclusive one ---

    def lock_for_writing(self):
        """Take the shared writer lock (held until :meth:`close`)."""
        if self._locked is None:
            fcntl.flock(self._root(create=True), fcntl.LOCK_SH)
            self._locked = "shared"

    def clean_stale_temp_files(self, grace=STALE_TEMP_GRACE, now=None):
        """Remove ``.tmp-*`` files older than ``grace`` seconds, if no other writer is active.

        Tries the exclusive lock without waiting: a build holding the shared lock
        may own those files, so nothing is removed then (a later build will). Returns
        the paths removed. Ends holding the shared writer lock.
        """
        root = self._root(create=True)
        if self._locked is None:
            try:
                fcntl.flock(root, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                    raise
                self.lock_for_writing()
                return []
            self._locked = "exclusive"
        if self._locked != "exclusive":
            return []
        now = time.time() if now is None else now
        removed = []
        try:
            for name in self._fanout_names():
                dfd = self._subdir(name)
                for entry in sorted(os.listdir(dfd)):
                    if not entry.startswith(TEMP_PREFIX):
                        continue
                    try:
                        st = os.stat(entry, dir_fd=dfd, follow_symlinks=False)
                        if now - st.st_mtime < grace:
                            continue
                        os.unlink(entry, dir_fd=dfd)
                    except FileNotFoundError:
                        continue
                    removed.append(os.path.join(self.root, name, entry))
                if removed and self.sync_dirs:
                    os.fsync(dfd)
        finally:
            # Downgrade: other builds may stage alongside us from here on.
            fcntl.flock(root, fcntl.LOCK_SH)
            self._locked = "shared"
        return removed

    def _fanout_names(self):
        root = self._root()
        if root is None:
            return []
        names = []
        for name in sorted(os.listdir(root)):
            if len(name) == 2 and re.match(r"^[0-9a-f]{2}$", name):
                st = os.stat(name, dir_fd=root, follow_symlinks=False)
                if stat.S_ISDIR(st.st_mode):
                    names.append(name)
        return names

    def add_file(self, src, digest_hex, checked=False):
        """Store ``src`` as the object ``digest_hex``. Returns (added: bool, bytes_added: int).

        An existing, intact object is kept (added=False); a missing or corrupt one is
        written. ``checked=True`` says the caller has just found it not intact.
        Raises ObjectStoreError if ``src`` does not have that digest.
        """
        if not checked and self.check_object(digest_hex) == "ok":
            return False, 0
        self.lock_for_writing()
        tmp, size = self._stage(src, digest_hex, fsync=True)
        self._publish(tmp, src, digest_hex)
        return True, size

    def add_files(self, pairs):
        """Store many ``(src, digest_hex)`` the caller found missing or damaged; returns (added, bytes_added).

        The copies are made first, made durable with one syncfs() for the batch
        (not an fsync each: one journal commit instead of hundreds), then given
        fs-verity, checked and renamed into place one by one.
        """
        self.lock_for_writing()
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
                self._unlink_temp(tmp)
        return len(pairs), nbytes

    def _stage(self, src, digest_hex, fsync):
        """Copy ``src`` to a temporary file beside its final name; returns ((subdir name, temp name), size)."""
        rel = object_relpath(digest_hex, self.hash_algorithm)
        dfd = self._subdir(rel[:2], create=True)
        name = "%s%s.%d.%s" % (TEMP_PREFIX, digest_hex[2:14], os.getpid(), os.urandom(4).hex())
        tmp = (rel[:2], name)
        try:
            src_fd = open_regular(src, follow=False)
        except OSError as exc:
            raise ObjectStoreError("cannot read %s: %s" % (src, exc.strerror))
        try:
            size = os.fstat(src_fd).st_size
            dst_fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644, dir_fd=dfd)
            try:
                _copy_into(src_fd, dst_fd, size)
                os.fchmod(dst_fd, 0o644)
                if fsync:
                    os.fsync(dst_fd)
            finally:
                os.close(dst_fd)
        except OSError as exc:
            self._unlink_temp(tmp)
            raise ObjectStoreError("cannot copy %s into the object store %s: %s" % (src, self.root, exc.strerror or exc))
        finally:
            os.close(src_fd)
        return tmp, size

    def _sync_staged(self, temps):
        """Make the staged copies durable: syncfs() on the store's filesystem, else an fsync each."""
        if not temps:
            return
        if _syncfs(self._root()):
            return
        for sub, name in temps:
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=self._subdir(sub))
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    # --- staging from a stream (transfers): the caller writes the bytes, then publishes or discards ---

    def open_staging(self, digest_hex, name=None):
        """A staging file beside the object's final name, open for writing: ``(tmp, fd, size)``.

        Without ``name`` it is a new, unique ``.tmp-*`` file. With ``name`` (which
        must start with ``.tmp-``) an existing file of that name is reopened
        without truncation and its ``size`` returned, so that an interrupted
        download can be continued; it is ``flock``ed exclusively, and when
        another process holds it a unique file is used instead. The caller
        closes ``fd``, then :meth:`publish_staged` or :meth:`discard_staged`.
        """
        rel = object_relpath(digest_hex, self.hash_algorithm)
        self.lock_for_writing()
        dfd = self._subdir(rel[:2], create=True)
        if name is not None:
            if not name.startswith(TEMP_PREFIX) or "/" in name:
                raise ObjectStoreError("staging name %r must start with %r and name no directory" % (name, TEMP_PREFIX))
            try:
                fd = os.open(name, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644, dir_fd=dfd)
            except OSError as exc:
                raise ObjectStoreError("cannot open the staging file %s: %s" % (os.path.join(self.root, rel[:2], name),
                                                                                exc.strerror))
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                st = os.fstat(fd)
                if stat.S_ISREG(st.st_mode):
                    return (rel[:2], name), fd, st.st_size
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                    os.close(fd)
                    raise ObjectStoreError("cannot lock the staging file %s: %s" % (name, exc.strerror))
            os.close(fd)  # another writer has it: stage under a name of our own
        name = "%s%s.%d.%s" % (TEMP_PREFIX, digest_hex[2:14], os.getpid(), os.urandom(4).hex())
        try:
            fd = os.open(name, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644, dir_fd=dfd)
        except OSError as exc:
            raise ObjectStoreError("cannot create a staging file in %s: %s" % (os.path.join(self.root, rel[:2]), exc.strerror))
        return (rel[:2], name), fd, 0

    def claim_staged(self, tmp):
        """Rename the staging file ``tmp`` to a unique name, while its writer still holds it open; returns the new ``tmp``.

        A file staged under a fixed name (``open_staging(name=...)``) can then not
        be reopened by another writer between the close of its descriptor (which
        fs-verity needs: no writable descriptor may be open) and its publication.
        """
        sub, name = tmp
        new = "%s%s.%d.%s" % (TEMP_PREFIX, "claimed", os.getpid(), os.urandom(4).hex())
        dfd = self._subdir(sub)
        try:
            os.rename(name, new, src_dir_fd=dfd, dst_dir_fd=dfd)
        except OSError as exc:
            raise ObjectStoreError("cannot rename the staging file %s: %s" % (os.path.join(self.root, sub, name), exc.strerror))
        return (sub, new)

    def sync_staged(self, temps):
        """Make staged files durable (one syncfs() for the batch where possible)."""
        self._sync_staged(temps)

    def publish_staged(self, tmp, digest_hex, origin, hashed=False):
        """Verify the durable staged file ``tmp`` as ``digest_hex`` and rename it into place.

        ``hashed=True`` says the caller computed the fs-verity digest of the
        bytes while writing them: then, unless fs-verity was enabled (whose
        measurement is used), the file is not read again. A file with another
        digest is removed and ObjectStoreError names ``origin``.
        """
        self._publish(tmp, origin, digest_hex, hashed=hashed,
                      mismatch="%(src)s is corrupt: its fs-verity digest is %(got)s, not %(want)s; it was refused "
                               "(not published)")

    def discard_staged(self, tmp):
        self._unlink_temp(tmp)

    def _publish(self, tmp, src, digest_hex, hashed=False, mismatch=None):
        """fs-verity, the digest check, and the rename of a durable staged copy."""
        final = self.path_of(digest_hex)
        sub, name = tmp
        dfd = self._subdir(sub)
        shown = os.path.join(self.root, sub, name)
        try:
            fd = os.open(name, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW, dir_fd=dfd)
            try:
                # fs-verity and the check through one fd: what is checked is what was sealed.
                sealed = self._enable_verity(fd, shown)
                got = _digest_of_fd(fd, shown, self.hash_algorithm) if sealed or not hashed else digest_hex
            finally:
                os.close(fd)
            if got != digest_hex:
                raise ObjectStoreError((mismatch or "%(src)s changed while it was stored: digest %(got)s, expected %(want)s")
                                       % {"src": src, "got": got, "want": digest_hex})
            # rename() is atomic: readers see no object or a complete, verified one. A
            # concurrent builder's copy of the same object may be replaced by ours:
            # same bytes, also verified; a reader holding the old one keeps it.
            os.rename(name, object_relpath(digest_hex, self.hash_algorithm)[3:], src_dir_fd=dfd, dst_dir_fd=dfd)
            tmp = None
            if self.sync_dirs:
                os.fsync(dfd)
            else:
                self.pending_dirs.add(sub)
        except OSError as exc:
            raise ObjectStoreError("cannot publish object %s: %s" % (final, exc.strerror or exc))
        finally:
            if tmp:
                self._unlink_temp(tmp)

    def sync_pending_dirs(self):
        """fsync the fan-out directories objects were linked into since the last call."""
        for sub in sorted(self.pending_dirs):
            os.fsync(self._subdir(sub))
        self.pending_dirs.clear()

    def iter_objects(self):
        """Yield the digest of every object file in the store (temp files and strays are skipped)."""
        for sub in self._fanout_names():
            for name in sorted(os.listdir(self._subdir(sub))):
                digest = digest_of_relpath(sub + "/" + name, self.hash_algorithm)
                if digest:
                    yield digest

    def stale_temp_files(self):
        """Temp files left by interrupted writers (``.tmp-*`` in the fan-out directories)."""
        out = []
        for sub in self._fanout_names():
            out.extend(os.path.join(self.root, sub, n) for n in sorted(os.listdir(self._subdir(sub))) if n.startswith(TEMP_PREFIX))
        return out

    def remove(self, digest_hex):
        rel = object_relpath(digest_hex, self.hash_algorithm)
        dfd = self._subdir(rel[:2])
        if dfd is not None:
            try:
                os.unlink(rel[3:], dir_fd=dfd)
            except OSError:
                pass

    def _unlink_temp(self, tmp):
        sub, name = tmp
        try:
            os.unlink(name, dir_fd=self._subdir(sub))
        except (OSError, ObjectStoreError):
            pass


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


def _digest_of_fd(fd, path, hash_algorithm="sha256"):
    """The object's digest: the kernel's measurement where it has fs-verity, else computed."""
    if ioctl.verity_enabled(fd, path):
        alg, digest = ioctl.measure(fd, path)
        return digest.hex() if alg == hash_algorithm else None
    return file_digest(fd, hash_algorithm).hex()
