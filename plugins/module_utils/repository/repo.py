# -*- coding: utf-8 -*-
# Copyright: composefs.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A composefs-rs repository on disk: init, commit an image, refs, listings, an image's objects.

Writers hold the repository lock shared (:mod:`.lock`); objects are written by
the object store (:mod:`..objectstore`: staged, verified, renamed into place),
with the repository's fs-verity algorithm. fs-verity is required on every object
when meta.json has it (composefs-rs's "secure" repository), else enabled where
the filesystem can.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import errno
import os
import stat

from ansible_collections.composefs.fleet.plugins.module_utils.common.atomic import fsync_dir
from ansible_collections.composefs.fleet.plugins.module_utils.common.regular_file import NotRegularFile, open_regular
from ansible_collections.composefs.fleet.plugins.module_utils.composefs.errors import ComposefsError
from ansible_collections.composefs.fleet.plugins.module_utils.erofs import reader
from ansible_collections.composefs.fleet.plugins.module_utils.fsverity import ioctl
from ansible_collections.composefs.fleet.plugins.module_utils.fsverity.digest import file_digest
from ansible_collections.composefs.fleet.plugins.module_utils.repository import layout, meta as metafile
from ansible_collections.composefs.fleet.plugins.module_utils.repository.errors import RepositoryError
from ansible_collections.composefs.fleet.plugins.module_utils.repository.lock import RepositoryLock

_TMP_LINK = ".tmp-link-"


def _read_meta_bytes(path):
    try:
        fd = open_regular(os.path.join(path, layout.META_FILENAME), follow=False, what="meta.json")
    except FileNotFoundError:
        return None, False
    except NotRegularFile as exc:
        raise RepositoryError("%s; it must be a regular file" % exc.strerror)
    except OSError as exc:
        raise RepositoryError("cannot read %s/meta.json: %s" % (path, exc.strerror))
    try:
        secure = ioctl.verity_enabled(fd)
        chunks = []
        while True:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            chunks.append(chunk)
            if sum(len(c) for c in chunks) > 1 << 20:
                raise RepositoryError("%s/meta.json is larger than 1 MiB; it is not a repository's metadata" % path)
        return b"".join(chunks), secure
    finally:
        os.close(fd)


def init(path, algorithm="sha512", erofs_version=1, insecure=False, check_mode=False):
    """Create the repository (meta.json) unless it exists with this configuration.

    Returns ``(changed, meta dict)``. An existing repository with another
    algorithm or EROFS format is refused, as ``cfsctl init`` refuses it. A
    directory that is not empty and has no meta.json is refused too.
    """
    path = os.path.abspath(path)
    wanted = metafile.build(algorithm, erofs_version)
    data, _secure = _read_meta_bytes(path) if os.path.isdir(path) else (None, False)
    if data is not None:
        existing = metafile.parse(data, os.path.join(path, layout.META_FILENAME))
        if not existing.same_config(algorithm, erofs_version):
            raise RepositoryError(
                "%s is already a repository with algorithm %s and EROFS format %d%s; it cannot be re-initialized with "
                "algorithm %s and EROFS format %d: use those values, or another path" % (
                    path, layout.IDENTIFIERS[existing.algorithm], existing.erofs_version,
                    " (+ %s)" % existing.extra_erofs_versions if existing.extra_erofs_versions else "",
                    layout.IDENTIFIERS[algorithm], erofs_version))
        return False, existing.as_dict()
    if os.path.lexists(path):
        if not os.path.isdir(path):
            raise RepositoryError("%s exists and is not a directory" % path)
        entries = os.listdir(path)
        if layout.OBJECTS in entries:
            raise RepositoryError("%s has objects/ but no meta.json: an old-format composefs-rs repository; upgrade it "
                                  "with 'cfsctl --repo %s init' first" % (path, path))
        if entries:
            raise RepositoryError("%s is not empty and has no meta.json (%s...): not a repository; use a new or empty "
                                  "directory" % (path, ", ".join(sorted(entries)[:3])))
    result = metafile.parse(metafile.to_json(wanted)).as_dict()
    if check_mode:
        return True, result
    parent = os.path.dirname(path)
    os.makedirs(parent, 0o755, exist_ok=True)
    created = False
    try:
        os.mkdir(path, 0o700)
        created = True
    except FileExistsError:
        pass
    try:
        _write_meta(path, wanted, algorithm, insecure)
    except BaseException:
        if created:
            try:
                os.rmdir(path)  # nothing half-done: the directory this run made goes again
            except OSError:
                pass
        raise
    return True, result


def _write_meta(path, wanted, algorithm, insecure):
    """Write meta.json once: a complete, fsynced (and, unless insecure, fs-verity sealed) file, then link()."""
    tmp = os.path.join(path, ".meta.json.tmp-%d-%s" % (os.getpid(), os.urandom(4).hex()))
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW, 0o644)
    try:
        try:
            os.write(fd, metafile.to_json(wanted))
            os.fchmod(fd, 0o644)
            os.fsync(fd)
        finally:
            os.close(fd)
        if not insecure:
            rfd = os.open(tmp, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
            try:
                ioctl.enable(rfd, tmp, hash_algorithm=algorithm)
            except ioctl.VerityError as exc:
                raise RepositoryError(
                    "%s: cannot enable fs-verity on meta.json (%s). A repository requires fs-verity on every object "
                    "unless it is insecure: put it on a filesystem with fs-verity, or set insecure: true (as "
                    "'cfsctl init --insecure')" % (path, exc.reason))
            finally:
                os.close(rfd)
        try:
            # link(), not rename(): a concurrent init's meta.json is never replaced.
            os.link(tmp, os.path.join(path, layout.META_FILENAME))
        except FileExistsError:
            data, _secure = _read_meta_bytes(path)
            other = metafile.parse(data)
            if not other.same_config(algorithm, wanted["erofs_formats"]["default"]):
                raise RepositoryError("%s was initialized concurrently with another configuration (%s)"
                                      % (path, layout.IDENTIFIERS[other.algorithm]))
    finally:
        try:
            os.unlink(tmp)
        except OSError:
            pass
    fsync_dir(path)


class Repository:
    """An initialized repository. Use as a context manager or :meth:`close` it."""

    def __init__(self, path):
        self.path = os.path.abspath(path)
        data, self.secure = _read_meta_bytes(self.path)
        if data is None:
            if os.path.isdir(os.path.join(self.path, layout.OBJECTS)):
                raise RepositoryError("%s has no meta.json: an old-format composefs-rs repository; upgrade it with "
                                      "'cfsctl --repo %s init'" % (self.path, self.path))
            raise RepositoryError("%s is not a composefs repository (no meta.json): initialize it first "
                                  "(composefs.fleet.repository state=present, or cfsctl init)" % self.path)
        self.meta = metafile.parse(data, os.path.join(self.path, layout.META_FILENAME))
        self.algorithm = self.meta.algorithm
        for sub in (layout.OBJECTS, layout.IMAGES, layout.STREAMS):
            where = os.path.join(self.path, sub)
            if os.path.lexists(where) and not stat.S_ISDIR(os.lstat(where).st_mode):
                raise RepositoryError("%s is a symlink or not a directory; a repository's %s/ must be a plain directory"
                                      % (where, sub))
        self._store = None

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def close(self):
        if self._store is not None:
            self._store.close()
            self._store = None

    # -- paths ---------------------------------------------------------------------

    @property
    def objects_path(self):
        return os.path.join(self.path, layout.OBJECTS)

    @property
    def images_path(self):
        return os.path.join(self.path, layout.IMAGES)

    @property
    def refs_path(self):
        return os.path.join(self.path, layout.IMAGES, layout.REFS)

    def object_path(self, digest):
        return os.path.join(self.objects_path, layout.object_relpath(digest))

    def lock(self, exclusive=False, timeout=None):
        return RepositoryLock(self.path, exclusive, timeout)

    def require_writable(self):
        if not self.meta.writable:
            raise RepositoryError("%s has read-only-compatible features this collection does not know (%s): it may "
                                  "read it but not write to it" % (self.path, ", ".join(self.meta.read_only_features)))

    def store(self):
        """The object store over objects/ (the same fan-out), in the repository's algorithm."""
        if self._store is None:
            # imported here: reading refs and listing an image's objects (deployment_info on every
            # host of a rollout) need no store code, and modules compile what they import each run
            from ansible_collections.composefs.fleet.plugins.module_utils.objectstore import ObjectStore
            self._store = ObjectStore(self.objects_path, True if self.secure else "auto", hash_algorithm=self.algorithm)
        return self._store

    def digest(self, value):
        return layout.check_digest(value, self.algorithm)

    # -- reading -----------------------------------------------------------------------

    def _readlink(self, path):
        try:
            return os.readlink(path)
        except FileNotFoundError:
            return None
        except OSError as exc:
            if exc.errno == errno.EINVAL:
                return False  # not a symlink
            raise

    def object_size(self, digest):
        """Size of the object, or None when missing (a symlink or special file counts as missing)."""
        try:
            st = os.lstat(self.object_path(digest))
        except FileNotFoundError:
            return None
        return st.st_size if stat.S_ISREG(st.st_mode) else None

    def images(self):
        """``{digest: {"size": bytes or None, "link_ok": bool}}`` of the images/ entries (refs/ left out).

        Entries that are not ``<digest> -> ../objects/XX/<rest>`` are in :meth:`bad_image_entries`.
        """
        out = {}
        for name, target in self._image_entries():
            digest = layout.digest_of_image_link(target, self.algorithm) if target else None
            if digest is not None and digest == name:
                out[name] = {"size": self.object_size(name), "link_ok": True}
        return out

    def bad_image_entries(self):
        """``[(name, problem)]`` for images/ entries composefs-rs would not accept."""
        bad = []
        for name, target in self._image_entries():
            if target is False:
                bad.append((name, "not a symlink"))
            elif not layout.is_digest(name, self.algorithm):
                bad.append((name, "name is not a %s digest" % self.algorithm))
            elif layout.digest_of_image_link(target, self.algorithm) != name:
                bad.append((name, "points to %r, not %r" % (target, layout.image_link_target(name))))
        return bad

    def _image_entries(self):
        try:
            names = sorted(os.listdir(self.images_path))
        except FileNotFoundError:
            return []
        return [(n, self._readlink(os.path.join(self.images_path, n))) for n in names
                if n != layout.REFS and not n.startswith(_TMP_LINK)]

    def refs(self):
        """``{name: target digest or None}`` of every link below images/refs/ (None: a target that names no digest)."""
        out = {}
        top = self.refs_path
        if not os.path.isdir(top) or os.path.islink(top):
            return out
        for root, dirs, files in os.walk(top, followlinks=False):
            dirs.sort()
            for name in sorted(files + [d for d in dirs if os.path.islink(os.path.join(root, d))]):
                if name.startswith(_TMP_LINK):
                    continue
                full = os.path.join(root, name)
                target = self._readlink(full)
                rel = os.path.relpath(full, top)
                out[rel] = layout.digest_of_ref_link(target, self.algorithm) if target else None
            dirs[:] = [d for d in dirs if not os.path.islink(os.path.join(root, d))]
        return out

    def ref_target_ok(self, name, digest):
        """Whether images/refs/<name> is exactly composefs-rs's link to images/<digest>."""
        return self._readlink(os.path.join(self.refs_path, name)) == layout.ref_link_target(name, digest)

    def image_objects(self, digest):
        """Object paths (``XX/<rest>``) the image ``digest`` references; RepositoryError when it cannot be read."""
        path = self.object_path(digest)
        try:
            payloads = reader.objects(path, strict=False)
        except (ComposefsError, OSError) as exc:
            raise RepositoryError("image %s (%s) cannot be read: %s" % (digest, path, exc))
        out = []
        for payload in payloads:
            rel = payload.lstrip("/")
            if not layout.is_digest(rel.replace("/", "", 1), self.algorithm) or rel[2:3] != "/":
                raise RepositoryError("image %s references %r, which is not an object of this %s repository"
                                      % (digest, payload[:200], self.algorithm))
            out.append(rel)
        return sorted(set(out))

    def missing_objects(self, digest):
        return [rel for rel in self.image_objects(digest) if not os.path.lexists(os.path.join(self.objects_path, rel))]

    def resolve(self, name_or_digest):
        """The image digest a ref name or a digest names; RepositoryError when there is none."""
        text = str(name_or_digest)
        try:
            return self.digest(text)
        except RepositoryError:
            pass
        refs = self.refs()
        if text in refs and refs[text]:
            return refs[text]
        raise RepositoryError("%s has no ref %r (refs: %s)" % (self.path, text, ", ".join(sorted(refs)) or "none"))

    # -- writing (callers hold the lock shared) ------------------------------------------

    def _symlink(self, directory, name, target):
        """Create or replace ``directory/name`` as a symlink to ``target`` atomically; False if already so."""
        full = os.path.join(directory, name)
        if self._readlink(full) == target:
            return False
        parent = os.path.dirname(full)
        os.makedirs(parent, 0o755, exist_ok=True)
        tmp = os.path.join(parent, "%s%d-%s" % (_TMP_LINK, os.getpid(), os.urandom(4).hex()))
        os.symlink(target, tmp)
        try:
            if os.path.isdir(full) and not os.path.islink(full):
                raise RepositoryError("%s is a directory; a ref cannot replace it" % full)
            os.rename(tmp, full)
            tmp = None
        finally:
            if tmp is not None:
                os.unlink(tmp)
        fsync_dir(parent)
        return True

    def add_image_file(self, src, check_mode=False):
        """Store the image file ``src`` as an object and link images/<digest>. Returns a result dict."""
        try:
            digest = file_digest(src, self.algorithm).hex()
        except OSError as exc:
            raise RepositoryError("cannot read the image %s: %s" % (src, exc.strerror or exc))
        store = self.store()
        from ansible_collections.composefs.fleet.plugins.module_utils.objectstore import ObjectStoreError  # loaded by store()
        state = store.check_object(digest)
        result = {"digest": digest, "object_added": state != "ok", "bytes_added": 0, "image_linked": False}
        link = os.path.join(self.images_path, digest)
        result["image_linked"] = self._readlink(link) != layout.image_link_target(digest)
        if check_mode:
            if state != "ok":
                result["bytes_added"] = os.stat(src).st_size
            return result
        self.require_writable()
        if state != "ok":
            try:
                _added, result["bytes_added"] = store.add_file(src, digest, checked=True)
            except ObjectStoreError as exc:
                raise RepositoryError(str(exc))
        self.link_image(digest)
        return result

    def image_linked(self, digest):
        """Whether images/<digest> is exactly composefs-rs's link to the image's object."""
        return self._readlink(os.path.join(self.images_path, digest)) == layout.image_link_target(digest)

    def link_image(self, digest, check_mode=False):
        """Link images/<digest> to the (present) object ``digest``; returns whether the link changed."""
        digest = self.digest(digest)
        if self.image_linked(digest):
            return False
        if self.object_size(digest) is None:
            raise RepositoryError("%s has no object %s: the image must be stored before it is linked" % (self.path, digest))
        if not check_mode:
            self.require_writable()
            self._symlink(self.images_path, digest, layout.image_link_target(digest))
        return True

    def set_ref(self, name, digest, check_mode=False):
        """Point images/refs/<name> at images/<digest>. Returns (changed, previous digest or None)."""
        layout.check_ref_name(name)
        digest = self.digest(digest)
        if not os.path.lexists(os.path.join(self.images_path, digest)):
            raise RepositoryError("%s has no image %s: commit the image before naming it" % (self.path, digest))
        previous = self.refs().get(name)
        if self.ref_target_ok(name, digest):
            return False, previous
        if not check_mode:
            self.require_writable()
            self._symlink(self.refs_path, name, layout.ref_link_target(name, digest))
        return True, previous

    def remove_ref(self, name, check_mode=False):
        """Remove images/refs/<name>. Returns (changed, previous digest or None). Empty parent dirs go too."""
        layout.check_ref_name(name)
        full = os.path.join(self.refs_path, name)
        target = self._readlink(full)
        if target is None:
            return False, None
        if target is False:
            raise RepositoryError("%s is not a symlink; refusing to remove it as a ref" % full)
        previous = layout.digest_of_ref_link(target, self.algorithm)
        if not check_mode:
            self.require_writable()
            os.unlink(full)
            parent = os.path.dirname(full)
            fsync_dir(parent)
            while parent != self.refs_path:
                try:
                    os.rmdir(parent)
                except OSError:
                    break
                parent = os.path.dirname(parent)
        return True, previous

    def commit(self, src, ref=None, check_mode=False, lock_timeout=None):
        """Add the image file ``src`` (and name it ``ref``) under the shared lock; returns a result dict.

        ``missing_objects`` lists the objects the image references that the
        repository lacks: committing does not need them, mounting does.
        """
        if ref is not None:
            layout.check_ref_name(ref)
        with self.lock(exclusive=False, timeout=lock_timeout):
            result = self.add_image_file(src, check_mode)
            result["ref"] = ref
            result["ref_changed"] = False
            result["ref_before"] = None
            if ref is not None:
                result["ref_before"] = self.refs().get(ref)
                if check_mode and result["image_linked"]:
                    result["ref_changed"] = not self.ref_target_ok(ref, result["digest"])
                else:
                    result["ref_changed"], _prev = self.set_ref(ref, result["digest"], check_mode)
            try:
                from_file = reader.objects(src, strict=False)
            except (ComposefsError, OSError) as exc:
                raise RepositoryError("%s is not a composefs image this collection can read: %s" % (src, exc))
            result["missing_objects"] = sorted(p.lstrip("/") for p in from_file
                                               if not os.path.lexists(os.path.join(self.objects_path, p.lstrip("/"))))
        result["changed"] = result["object_added"] or result["image_linked"] or result["ref_changed"]
        return result
