# -*- coding: utf-8 -*-
# Copyright: composefs.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Building a composefs image and filling its object store: the logic of the image module.

source (directory or dumpfile) -> Tree -> object store -> image bytes -> dest (atomically).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import gzip
import itertools
import os
import re
import stat

from ansible_collections.composefs.fleet.plugins.module_utils.common.atomic import fsync_dir
from ansible_collections.composefs.fleet.plugins.module_utils.common.regular_file import NotRegularFile, open_regular
from ansible_collections.composefs.fleet.plugins.module_utils.common.text import excerpt
from ansible_collections.composefs.fleet.plugins.module_utils.common.workers import fork_pool
from ansible_collections.composefs.fleet.plugins.module_utils.composefs.errors import ComposefsError
from ansible_collections.composefs.fleet.plugins.module_utils.composefs.tree import S_IFDIR, S_IFMT, S_IFREG, Tree, paused_gc
from ansible_collections.composefs.fleet.plugins.module_utils.erofs import writer
from ansible_collections.composefs.fleet.plugins.module_utils.fsverity import ioctl
from ansible_collections.composefs.fleet.plugins.module_utils.fsverity.digest import file_digest
from ansible_collections.composefs.fleet.plugins.module_utils.objectstore import ObjectStore, ObjectStoreError, digest_of_relpath


# objectstore.digest_of_relpath()'s pattern for SHA-256 object paths, on bytes.
_OBJECT_PAYLOAD = re.compile(rb"^[0-9a-f]{2}/[0-9a-f]{62}$")


class ImageBuildError(Exception):
    """The image could not be built; the message names the cause (and the path where there is one).

    ``result``, when set, is what the run did change before it failed (objects
    added to the store): the module reports it with ``changed=true``.
    """

    def __init__(self, message, result=None):
        super(ImageBuildError, self).__init__(message)
        self.result = result


def load_tree(src=None, src_dumpfile=None, use_epoch=False, skip_xattrs=False, user_xattrs=False, skip_devices=False,
              hardlinks=False, workers=None):
    """The Tree of a directory (digests computed) or of a dumpfile (plain or gzip-compressed)."""
    try:
        if src is not None:
            if not os.path.isdir(src):
                raise ImageBuildError("src %s is not a directory" % src)
            return Tree.from_directory(src, use_epoch=use_epoch, skip_xattrs=skip_xattrs, user_xattrs=user_xattrs,
                                       skip_devices=skip_devices, hardlinks=hardlinks, workers=workers)
        try:
            # Non-blocking open and fstat: a FIFO or a device is refused, never waited on.
            fd = open_regular(src_dumpfile, what="src_dumpfile")
        except NotRegularFile as exc:
            raise ImageBuildError(exc.strerror)
        except FileNotFoundError:
            raise ImageBuildError("src_dumpfile %s does not exist" % src_dumpfile)
        with os.fdopen(fd, "rb") as raw:
            magic = raw.read(2)
            raw.seek(0)
            if magic == b"\x1f\x8b":
                with gzip.GzipFile(fileobj=raw) as unzipped:
                    return Tree.from_dumpfile(unzipped)
            return Tree.from_dumpfile(raw)
    except ComposefsError as exc:
        raise ImageBuildError("%s: %s" % (src or src_dumpfile, exc))
    except (OSError, EOFError) as exc:
        raise ImageBuildError("cannot read %s: %s" % (src or src_dumpfile, getattr(exc, "strerror", None) or exc))


def tree_objects(tree, src=None, warnings=None):
    """Map object name (digest hex) -> source path (None for dumpfile trees) of every external file; plus the inlined count.

    A payload that would lead out of the object store (absolute, or with '..')
    is refused: the image would make overlayfs read files outside the store.
    A payload that is not ``XX/<62 hex>`` of the file's own digest is kept, as
    mkcomposefs keeps it (the image stays byte-identical), but appended to
    ``warnings``: a mount with a digest pin refuses such an image, and the store
    check cannot vouch for the file the payload names.

    A dumpfile tree is scanned in any order, without building paths; only the
    first three files of the warning are then looked for in the tree's order. A
    directory tree (whose objects come from the first path found) and a payload
    that leads out go file by file in the tree's order
    (:func:`_tree_objects_in_order`), so that every message names the same file.
    """
    if src is not None:
        return _tree_objects_in_order(tree, src, warnings)
    objects = {}
    inlined = 0
    odd = 0
    payloads = []  # checked all at once at the end: none may lead out of the store
    is_object_path = _OBJECT_PAYLOAD.match
    stack = [tree.root]
    while stack:
        for node in stack.pop().children.values():
            mode = node.mode & S_IFMT
            if mode != S_IFREG:
                if mode == S_IFDIR and node.children:
                    stack.append(node)
                continue
            if node.link_to is not None:
                continue
            if node.content:
                inlined += 1
                continue
            payload = node.payload
            digest = node.digest
            if digest is None:
                own = None
            elif isinstance(digest, bytes):
                own = digest.hex()
            else:
                return _tree_objects_in_order(tree, src, warnings)
            if payload:
                payloads.append(payload)
                # (65 bytes, or 66 with the newline the pattern's $ lets through)
                name = None
                if 65 <= len(payload) <= 66:
                    if not isinstance(payload, bytes):
                        return _tree_objects_in_order(tree, src, warnings)
                    if is_object_path(payload):
                        name = payload.decode("ascii").replace("/", "")
                if name is None or (own is not None and name != own):
                    odd += 1
                if name is None:
                    name = own
            else:
                name = own
            if name is not None:
                objects[name] = None
    if payloads and not _stay_in_store(payloads):
        return _tree_objects_in_order(tree, src, warnings)  # it says which file
    if odd and warnings is not None:
        warnings.append(_odd_warning(odd, itertools.islice(_odd_payloads(tree), 3)))
    return objects, inlined


def _stay_in_store(payloads):
    """True when no payload can lead out of the store: none absolute, no '..' anywhere (one search over them all).

    False sends the tree to :func:`_tree_objects_in_order`, which checks file by file (a '..' inside a
    name is harmless) and names the file that leads out.
    """
    try:
        joined = b"\0".join(payloads)
    except TypeError:
        return False  # not all bytes
    return joined[:1] != b"/" and joined.find(b"\0/") < 0 and joined.find(b"..") < 0


def _odd_payloads(tree):
    """``(path, payload, own digest)`` of every external file whose payload is not its digest's ``XX/<62 hex>``, in order."""
    for path, node in tree.walk():
        if node.link_to is not None or not stat.S_ISREG(node.mode) or node.content or not node.payload:
            continue
        payload = node.payload
        if isinstance(payload, bytes):
            payload = payload.decode("utf-8", "surrogateescape")
        own = node.digest.hex() if isinstance(node.digest, (bytes, bytearray)) else node.digest
        digest = digest_of_relpath(payload)
        if digest is None or (own is not None and digest != own):
            yield path, payload, own


def _odd_warning(count, examples):
    shown = "; ".join("%s -> %r (digest %s)" % (excerpt(path, 60), excerpt(payload, 80), own or "none")
                      for path, payload, own in examples)
    return ("%d file(s) have a payload that is not XX/<digest> of their own digest, so the object store "
            "cannot vouch for what they read (a mount with a digest pin refuses such an image), e.g. %s"
            % (count, shown))


def _tree_objects_in_order(tree, src=None, warnings=None):
    """:func:`tree_objects`, file by file in the tree's order (depth-first, names in byte order)."""
    objects = {}
    inlined = 0
    odd = []
    base = os.fsencode(src) if src is not None else None
    for path, node in tree.walk():
        if getattr(node, "link_to", None) is not None or not stat.S_ISREG(node.mode):
            continue
        if node.content:
            inlined += 1
            continue
        payload = node.payload
        if isinstance(payload, bytes):
            payload = payload.decode("utf-8", "surrogateescape")
        own = node.digest.hex() if isinstance(node.digest, (bytes, bytearray)) else node.digest
        if payload:
            if payload.startswith("/") or ".." in payload.split("/"):
                raise ImageBuildError("%s: payload %r would lead out of the object store" % (excerpt(path), excerpt(payload)))
            digest = digest_of_relpath(payload)
            if digest is None or (own is not None and digest != own):
                odd.append((path, payload, own))
        else:
            digest = None
        if digest is None and own is not None:
            digest = own
        if digest is not None and digest not in objects:
            objects[digest] = os.path.join(base, path.lstrip(b"/")) if base is not None else None
    if odd and warnings is not None:
        warnings.append(_odd_warning(len(odd), odd[:3]))
    return objects, inlined


def _fill_chunk(job):
    root, enable_verity, pairs = job
    with ObjectStore(root, enable_verity, sync_dirs=False) as store:
        added, nbytes = store.add_files(pairs)
        # Each object was fsynced before it was linked; the links become durable here,
        # before any image that names them is written.
        store.sync_pending_dirs()
    return added, nbytes


def fill_store(store, objects, workers=None):
    """Add every object with a source to ``store``; returns (added, bytes_added). Missing objects of dumpfile trees are listed.

    ``store`` must hold the writer lock (:meth:`ObjectStore.lock_for_writing`).
    Workers die with this process (common.workers).
    """
    pairs = [(src, digest) for digest, src in sorted(objects.items()) if src is not None]
    store.lock_for_writing()
    workers = workers or os.cpu_count() or 1
    chunk = 128
    jobs = [(store.root, store.enable_verity, pairs[i:i + chunk]) for i in range(0, len(pairs), chunk)]
    if workers <= 1 or len(jobs) <= 1:
        results = [_fill_chunk(job) for job in jobs]
    else:
        with fork_pool(workers) as pool:
            results = pool.map(_fill_chunk, jobs)
    return sum(r[0] for r in results), sum(r[1] for r in results)


def store_status(store, objects):
    """(to_add, missing): digests the store lacks (or has damaged) that we could add, and ones nobody can supply."""
    to_add, missing = [], []
    for digest, src in sorted(objects.items()):
        if store.check_object(digest) != "ok":
            (to_add if src is not None else missing).append(digest)
    return to_add, missing


def image_bytes(tree, min_version, max_version, source="the tree"):
    try:
        return writer.build_image(tree, min_version, max_version)
    except ComposefsError as exc:
        raise ImageBuildError("cannot build the image of %s: %s" % (source, exc))


def dest_state(dest, data):
    """('absent' | 'same' | 'different', has_verity) for the file at ``dest`` against ``data``."""
    try:
        # Non-blocking, no symlink: a FIFO, device or symlink at dest is refused, never waited on.
        fd = open_regular(dest, follow=False, what="dest")
    except NotRegularFile as exc:
        raise ImageBuildError("%s; refusing to replace it with the image" % exc.strerror)
    except FileNotFoundError:
        return "absent", False
    except OSError as exc:
        raise ImageBuildError("cannot read dest %s: %s" % (dest, exc.strerror))
    try:
        st = os.fstat(fd)
        verity = ioctl.verity_enabled(fd, dest)
        if st.st_size != len(data):
            return "different", verity
        offset = 0
        while offset < len(data):
            chunk = os.pread(fd, 1 << 20, offset)
            if not chunk or chunk != data[offset:offset + len(chunk)]:
                return "different", verity
            offset += len(chunk)
        return "same", verity
    finally:
        os.close(fd)


def enable_image_verity(path, enable_verity):
    """fs-verity on the image per ``enable_verity`` ('auto', True, False); returns whether it has it."""
    if enable_verity is False:
        return False
    try:
        return ioctl.enable_path(path) or True
    except ioctl.VerityError as exc:
        if exc.unsupported and enable_verity == "auto":
            return False
        raise ImageBuildError("cannot enable fs-verity on the image: %s" % exc)


class DestFile:
    """The image's temporary file beside ``dest``, made before anything else is written.

    Creating it proves the directory exists and takes a new file (not read-only,
    not immutable, not full of inodes) before the object store is touched.
    :meth:`commit` writes the bytes, fsyncs, enables fs-verity through a read-only
    fd of the same file and renames it over ``dest``; :meth:`abort` removes it.
    """

    def __init__(self, dest):
        self.dest = dest
        self.directory = os.path.dirname(os.path.abspath(dest)) or "."
        if not os.path.isdir(self.directory):
            raise ImageBuildError("the directory of dest %s does not exist" % dest)
        self.tmp = os.path.join(self.directory, ".%s.tmp-%d-%s" % (os.path.basename(dest), os.getpid(), os.urandom(4).hex()))
        try:
            self.fd = os.open(self.tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise ImageBuildError("cannot write dest %s: %s (nothing was changed)" % (dest, exc.strerror or exc))

    def commit(self, data, enable_verity, mode=0o644):
        """Write ``data`` and rename it over dest; returns whether the image has fs-verity."""
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(self.fd, view):]
            os.fchmod(self.fd, mode)
            os.fsync(self.fd)
            os.close(self.fd)
            self.fd = None
            rfd = os.open(self.tmp, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            try:
                verity = _enable_image_verity_fd(rfd, self.tmp, enable_verity)
            finally:
                os.close(rfd)
            os.rename(self.tmp, self.dest)
            self.tmp = None
            fsync_dir(self.directory)
        except OSError as exc:
            raise ImageBuildError("cannot write dest %s: %s" % (self.dest, exc.strerror or exc))
        finally:
            self.abort()
        return verity

    def abort(self):
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
        if self.tmp is not None:
            try:
                os.unlink(self.tmp)
            except OSError:
                pass
            self.tmp = None


def _enable_image_verity_fd(fd, path, enable_verity):
    if enable_verity is False:
        return False
    try:
        ioctl.enable(fd, path)
        return True
    except ioctl.VerityError as exc:
        if exc.unsupported and enable_verity == "auto":
            return False
        raise ImageBuildError("cannot enable fs-verity on the image: %s" % exc)


def check_dest_directory(dest):
    """Check mode's stand-in for :class:`DestFile`: the directory exists and this user may write it."""
    directory = os.path.dirname(os.path.abspath(dest)) or "."
    if not os.path.isdir(directory):
        raise ImageBuildError("the directory of dest %s does not exist" % dest)
    if not os.access(directory, os.W_OK):
        raise ImageBuildError("cannot write dest %s: %s is not writable" % (dest, directory))


def normalize_enable_verity(value):
    text = str(value).lower()
    if text in ("auto",):
        return "auto"
    if text in ("true", "yes", "on", "1"):
        return True
    if text in ("false", "no", "off", "0"):
        return False
    raise ImageBuildError("enable_verity must be auto, true or false, not %r" % (value,))


def build(src=None, src_dumpfile=None, dest=None, digest_store=None, use_epoch=False, skip_xattrs=False, user_xattrs=False,
          skip_devices=False, min_version=0, max_version=1, hardlinks=False, enable_verity="auto", workers=None,
          check_mode=False):
    """Build the image (and fill the store); returns a result dict for the module.

    Nothing is written before the image is known to build and dest is known to
    be writable (its temporary file is made first); on failure there is no new
    dest, and the store holds only complete, verified objects. A failure after
    objects were added raises ImageBuildError with ``result`` saying so.
    """
    enable_verity = normalize_enable_verity(enable_verity)
    warnings = []
    # The cyclic garbage collector would walk the whole tree again and again while it
    # grows (tens of thousands of nodes); released below, the tree needs no collection.
    with paused_gc():
        tree = load_tree(src, src_dumpfile, use_epoch, skip_xattrs, user_xattrs, skip_devices, hardlinks, workers)
        try:
            objects, inlined = tree_objects(tree, src, warnings)
            data = image_bytes(tree, min_version, max_version, src or src_dumpfile)
        finally:
            tree.release()
        del tree
    digest = writer.image_digest(data).hex()
    result = {"digest": digest, "size": len(data), "inlined": inlined, "dest": dest, "changed": False,
              "objects": {"count": len(objects), "added": 0, "bytes_added": 0, "missing": 0, "stale_removed": 0},
              "warnings": warnings}

    # Every destination is validated before anything is written.
    dest_file = None
    need_write = need_verity = False
    if dest:
        state, verity = dest_state(dest, data)
        refusal = None if enable_verity is False else ioctl.predict_enable_failure(dest)
        if enable_verity is True and refusal:
            raise ImageBuildError("enable_verity=true but fs-verity cannot be enabled on %s: %s" % (dest, refusal))
        need_write = state != "same"
        need_verity = not verity and enable_verity is not False and refusal is None
        result["before"] = {"digest": {"absent": None, "same": digest}.get(state) or _digest_or_none(dest), "verity": verity}
        result["verity"] = verity
        if need_write:
            if check_mode:
                check_dest_directory(dest)
            else:
                dest_file = DestFile(dest)

    try:
        if digest_store:
            _fill(result, digest_store, enable_verity, objects, workers, check_mode)
        if dest:
            if need_write or need_verity:
                if check_mode:
                    result["verity"] = need_verity or (verity and not need_write)
                elif need_write:
                    result["verity"] = dest_file.commit(data, enable_verity)
                else:
                    result["verity"] = enable_image_verity(dest, enable_verity)
                result["changed"] = True
            result["after"] = {"digest": digest, "verity": result["verity"]}
    except ImageBuildError as exc:
        # Only the store can have been changed before a failure: dest is replaced last, atomically.
        if result["changed"] and not check_mode:
            exc.result = {"changed": True, "objects": result["objects"]}
            exc.args = ("%s (the object store was changed: %d object(s) added, %d stale temporary file(s) removed)"
                        % (exc, result["objects"]["added"], result["objects"]["stale_removed"]),)
        raise
    finally:
        if dest_file is not None:
            dest_file.abort()
    return result


def _fill(result, digest_store, enable_verity, objects, workers, check_mode):
    """Bring the store up to date with ``objects``; records what was added (also when it fails midway)."""
    with ObjectStore(digest_store, enable_verity) as store:
        try:
            if not check_mode and os.path.isdir(digest_store):
                # A killed build's temporary files, if no other build is writing.
                removed = store.clean_stale_temp_files()
                if removed:
                    result["objects"]["stale_removed"] = len(removed)
                    result["changed"] = True
            to_add, missing = store_status(store, objects)
            if missing:
                result["objects"]["missing"] = len(missing)
                result["warnings"].append("%d object(s) the image references are not in %s and no source provides them, e.g. %s"
                                          % (len(missing), digest_store, ", ".join(missing[:3])))
            if not to_add:
                return
            if check_mode:
                result["changed"] = True
                result["objects"]["added"] = len(to_add)
                result["objects"]["bytes_added"] = sum(os.path.getsize(objects[d]) for d in to_add)
                return
            try:
                added, nbytes = fill_store(store, dict((d, objects[d]) for d in to_add), workers)
            except ObjectStoreError:
                # Which objects did get in before the failure: they are complete and verified.
                done = [d for d in to_add if store.check_object(d) == "ok"]
                if done:
                    result["changed"] = True
                    result["objects"]["added"] = len(done)
                    result["objects"]["bytes_added"] = sum(os.path.getsize(objects[d]) for d in done)
                raise
            result["changed"] = True
            result["objects"]["added"] = added
            result["objects"]["bytes_added"] = nbytes
        except ObjectStoreError as exc:
            raise ImageBuildError(str(exc))


def _digest_or_none(path):
    try:
        return file_digest(path).hex()
    except OSError:
        return None
