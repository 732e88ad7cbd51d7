# -*- coding: utf-8 -*-
# Copyright: composefs.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Building a composefs image and filling its object store: the logic of the image module.

source (directory or dumpfile) -> Tree -> object store -> image bytes -> dest (atomically).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import gzip
import os
import stat

from ansible_collections.composefs.fleet.plugins.module_utils.common.atomic import atomic_write
from ansible_collections.composefs.fleet.plugins.module_utils.composefs.errors import ComposefsError
from ansible_collections.composefs.fleet.plugins.module_utils.composefs.tree import Tree
from ansible_collections.composefs.fleet.plugins.module_utils.erofs import writer
from ansible_collections.composefs.fleet.plugins.module_utils.fsverity import ioctl
from ansible_collections.composefs.fleet.plugins.module_utils.fsverity.digest import file_digest
from ansible_collections.composefs.fleet.plugins.module_utils.objectstore import ObjectStore, ObjectStoreError, digest_of_relpath


class ImageBuildError(Exception):
    """The image could not be built; the message names the cause (and the path where there is one)."""


def load_tree(src=None, src_dumpfile=None, use_epoch=False, skip_xattrs=False, user_xattrs=False, skip_devices=False,
              hardlinks=False, workers=None):
    """The Tree of a directory (digests computed) or of a dumpfile (plain or gzip-compressed)."""
    try:
        if src is not None:
            if not os.path.isdir(src):
                raise ImageBuildError("src %s is not a directory" % src)
            return Tree.from_directory(src, use_epoch=use_epoch, skip_xattrs=skip_xattrs, user_xattrs=user_xattrs,
                                       skip_devices=skip_devices, hardlinks=hardlinks, workers=workers)
        if not os.path.isfile(src_dumpfile):
            raise ImageBuildError("src_dumpfile %s does not exist or is not a file" % src_dumpfile)
        with open(src_dumpfile, "rb") as raw:
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


def tree_objects(tree, src=None):
    """Map object name (digest hex) -> source path (None for dumpfile trees) of every external file; plus the inlined count.

    A payload that would lead out of the object store (absolute, or with '..')
    is refused: the image would make overlayfs read files outside the store.
    """
    objects = {}
    inlined = 0
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
        if payload:
            if payload.startswith("/") or ".." in payload.split("/"):
                raise ImageBuildError("%s: payload %r would lead out of the object store" % (os.fsdecode(path), payload))
            digest = digest_of_relpath(payload)
        else:
            digest = None
        if digest is None and node.digest is not None:
            digest = node.digest.hex() if isinstance(node.digest, (bytes, bytearray)) else node.digest
        if digest is not None and digest not in objects:
            objects[digest] = os.path.join(base, path.lstrip(b"/")) if base is not None else None
    return objects, inlined


def _fill_chunk(job):
    root, enable_verity, pairs = job
    store = ObjectStore(root, enable_verity, sync_dirs=False)
    added, nbytes = store.add_files(pairs)
    # Each object was fsynced before it was linked; the links become durable here,
    # before any image that names them is written.
    store.sync_pending_dirs()
    return added, nbytes


def fill_store(store, objects, workers=None):
    """Add every object with a source to ``store``; returns (added, bytes_added). Missing objects of dumpfile trees are listed."""
    pairs = [(src, digest) for digest, src in sorted(objects.items()) if src is not None]
    store.ensure_root()
    workers = workers or os.cpu_count() or 1
    chunk = 128
    jobs = [(store.root, store.enable_verity, pairs[i:i + chunk]) for i in range(0, len(pairs), chunk)]
    if workers <= 1 or len(jobs) <= 1:
        results = [_fill_chunk(job) for job in jobs]
    else:
        import multiprocessing
        with multiprocessing.get_context("fork").Pool(workers) as pool:
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
        fd = os.open(dest, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except FileNotFoundError:
        return "absent", False
    except OSError as exc:
        raise ImageBuildError("cannot read dest %s: %s" % (dest, exc.strerror))
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ImageBuildError("dest %s exists and is not a regular file" % dest)
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


def write_dest(dest, data, enable_verity, mode=0o644):
    """Write ``data`` to ``dest`` atomically, with fs-verity enabled on the temp file before the rename."""
    directory = os.path.dirname(os.path.abspath(dest)) or "."
    if not os.path.isdir(directory):
        raise ImageBuildError("the directory of dest %s does not exist" % dest)
    verity = []
    try:
        # The standard file attributes are applied afterwards by the module.
        atomic_write(dest, data, mode, keep_attributes=False, before_rename=lambda tmp: verity.append(enable_image_verity(tmp, enable_verity)))
    except OSError as exc:
        raise ImageBuildError("cannot write dest %s: %s" % (dest, exc.strerror or exc))
    return verity[0]


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
          skip_devices=False, min_version=0, max_version=1, hardlinks=False, enable_verity="auto", threads=None,
          check_mode=False):
    """Build the image (and fill the store); returns a result dict for the module.

    Nothing is written before the image is known to build; on failure there is
    no new dest, and the store holds only complete, verified objects.
    """
    enable_verity = normalize_enable_verity(enable_verity)
    tree = load_tree(src, src_dumpfile, use_epoch, skip_xattrs, user_xattrs, skip_devices, hardlinks, threads)
    objects, inlined = tree_objects(tree, src)
    data = image_bytes(tree, min_version, max_version, src or src_dumpfile)
    digest = writer.image_digest(data).hex()
    result = {"digest": digest, "size": len(data), "inlined": inlined, "dest": dest, "changed": False,
              "objects": {"count": len(objects), "added": 0, "bytes_added": 0, "missing": 0}, "warnings": []}

    if digest_store:
        store = ObjectStore(digest_store, enable_verity)
        try:
            to_add, missing = store_status(store, objects)
            if missing:
                result["objects"]["missing"] = len(missing)
                result["warnings"].append("%d object(s) the image references are not in %s and no source provides them, e.g. %s"
                                          % (len(missing), digest_store, ", ".join(missing[:3])))
            if to_add:
                result["changed"] = True
                if check_mode:
                    result["objects"]["added"] = len(to_add)
                    result["objects"]["bytes_added"] = sum(os.path.getsize(objects[d]) for d in to_add)
                else:
                    added, nbytes = fill_store(store, dict((d, objects[d]) for d in to_add), threads)
                    result["objects"]["added"] = added
                    result["objects"]["bytes_added"] = nbytes
        except ObjectStoreError as exc:
            raise ImageBuildError(str(exc))

    if dest:
        state, verity = dest_state(dest, data)
        refusal = None if enable_verity is False else ioctl.predict_enable_failure(dest)
        if enable_verity is True and refusal:
            raise ImageBuildError("enable_verity=true but fs-verity cannot be enabled on %s: %s" % (dest, refusal))
        need_write = state != "same"
        need_verity = not verity and enable_verity is not False and refusal is None
        result["before"] = {"digest": {"absent": None, "same": digest}.get(state) or _digest_or_none(dest), "verity": verity}
        result["verity"] = verity
        if need_write or need_verity:
            result["changed"] = True
            if check_mode:
                result["verity"] = need_verity or (verity and not need_write)
            elif need_write:
                result["verity"] = write_dest(dest, data, enable_verity)
            else:
                result["verity"] = enable_image_verity(dest, enable_verity)
        result["after"] = {"digest": digest, "verity": result["verity"]}
    return result


def _digest_or_none(path):
    try:
        return file_digest(path).hex()
    except OSError:
        return None
