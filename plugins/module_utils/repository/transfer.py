# -*- coding: utf-8 -*-
# Copyright: composefs.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Shipping an image and only the objects a host lacks: the bundle stream, the host's plan and the import.

The controller (composefs.fleet.repository_push's action plugin) asks the host
which of the image's objects it lacks (:func:`host_plan`), writes exactly those
(and the image, when the host lacks it) into one bundle file
(:func:`write_bundle`), copies it to the host, and the host imports it
(:func:`import_bundle`).

The bundle is a plain, length-prefixed stream::

    MAGIC                         b"composefs.fleet bundle\\n"
    header length                 4 bytes, big endian
    header                        UTF-8 JSON: {"version": 1, "algorithm": "sha512",
                                  "image": "<digest>", "entries": [["<digest>", size], ...]}
    payloads                      the entries' bytes, in order, nothing between them
    TRAILER                       b"end\\n"

Every entry is an object named by its fs-verity digest in the repository's
algorithm (the image, when shipped, is one of them). The host writes each to a
staging file beside its final name while computing its digest, and publishes
nothing until every entry was received and matched its name: a corrupt or
truncated bundle leaves the repository as it was.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os
import struct

from ansible_collections.composefs.fleet.plugins.module_utils.common.regular_file import NotRegularFile, open_regular
from ansible_collections.composefs.fleet.plugins.module_utils.fsverity.digest import FsverityHasher
from ansible_collections.composefs.fleet.plugins.module_utils.objectstore import ObjectStoreError
from ansible_collections.composefs.fleet.plugins.module_utils.repository import layout
from ansible_collections.composefs.fleet.plugins.module_utils.repository import repo as repository
from ansible_collections.composefs.fleet.plugins.module_utils.repository.errors import RepositoryError

MAGIC = b"composefs.fleet bundle\n"
TRAILER = b"end\n"
VERSION = 1
MAX_HEADER = 64 << 20
CHUNK = 1 << 20


class BundleError(RepositoryError):
    """The bundle stream is malformed, truncated, or carries an object that does not match its name."""


# -- the stream -------------------------------------------------------------------------


def encode_header(algorithm, image, entries):
    """The bytes before the payloads: magic, length, JSON header. ``entries`` is ``[(digest, size)]``."""
    if algorithm not in layout.HEX_LENGTHS:
        raise BundleError("unknown algorithm %r" % (algorithm,))
    header = {"version": VERSION, "algorithm": algorithm, "image": layout.check_digest(image, algorithm),
              "entries": [[layout.check_digest(d, algorithm), int(size)] for d, size in entries]}
    data = json.dumps(header, separators=(",", ":"), sort_keys=True).encode("utf-8")
    return MAGIC + struct.pack(">I", len(data)) + data


def write_bundle(out, algorithm, image, entries):
    """Write a bundle to the binary file ``out``; ``entries`` is ``[(digest, source path)]``.

    Returns the payload bytes written (the objects' sizes, not the framing).
    A source that changes size while it is read is an error (the header
    promised its size).
    """
    opened = []
    try:
        sized = []
        for digest, path in entries:
            try:
                fd = open_regular(path, follow=False, what="object")
            except (OSError, NotRegularFile) as exc:
                raise BundleError("cannot read the object %s (%s): %s" % (digest, path, getattr(exc, "strerror", exc)))
            opened.append(fd)
            sized.append((digest, os.fstat(fd).st_size))
        out.write(encode_header(algorithm, image, sized))
        total = 0
        for fd, (digest, size) in zip(opened, sized):
            done = 0
            while done < size:
                chunk = os.read(fd, min(CHUNK, size - done))
                if not chunk:
                    break
                out.write(chunk)
                done += len(chunk)
            if done != size or os.read(fd, 1):
                raise BundleError("the object %s changed size while it was read" % digest)
            total += size
        out.write(TRAILER)
        return total
    finally:
        for fd in opened:
            os.close(fd)


def _read_exact(f, n, what):
    data = f.read(n)
    if len(data) != n:
        raise BundleError("the bundle is truncated: %s (got %d of %d bytes)" % (what, len(data), n))
    return data


def read_header(f, algorithm):
    """Read and check the header from the binary file ``f``; returns ``(image digest, [(digest, size)])``."""
    if f.read(len(MAGIC)) != MAGIC:
        raise BundleError("not a composefs.fleet bundle (bad magic)")
    (length,) = struct.unpack(">I", _read_exact(f, 4, "header length"))
    if length > MAX_HEADER:
        raise BundleError("bundle header of %d bytes is larger than %d" % (length, MAX_HEADER))
    try:
        header = json.loads(_read_exact(f, length, "header").decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise BundleError("the bundle header is not JSON: %s" % exc)
    if not isinstance(header, dict) or header.get("version") != VERSION:
        raise BundleError("bundle version %r; this collection reads version %d" % (
            header.get("version") if isinstance(header, dict) else None, VERSION))
    if header.get("algorithm") != algorithm:
        raise BundleError("the bundle carries %s objects, but the repository uses %s" % (header.get("algorithm"), algorithm))
    image = layout.check_digest(header.get("image"), algorithm)
    entries = []
    seen = set()
    for item in header.get("entries") or []:
        if (not isinstance(item, list) or len(item) != 2 or isinstance(item[1], bool) or not isinstance(item[1], int)
                or item[1] < 0):
            raise BundleError("bad bundle entry %r" % (item,))
        digest = layout.check_digest(item[0], algorithm)
        if digest in seen:
            raise BundleError("the bundle lists the object %s twice" % digest)
        seen.add(digest)
        entries.append((digest, item[1]))
    return image, entries


# -- the host's side ----------------------------------------------------------------------


def host_plan(path, digest, objects, algorithm):
    """What the host has of the image ``digest`` and its ``objects`` (``XX/<rest>``). Read-only.

    Returns ``exists`` (a repository is there), ``image_object`` (the image's
    object is present and intact), ``image_linked``, ``missing`` (the objects
    it lacks) and ``refs``.
    """
    digest = layout.check_digest(digest, algorithm)
    for rel in objects:
        if not layout.is_digest(rel.replace("/", "", 1), algorithm) or rel[2:3] != "/":
            raise RepositoryError("%r is not an object path (XX/<rest>) of a %s repository" % (rel, algorithm))
    if not os.path.exists(os.path.join(path, layout.META_FILENAME)):
        if os.path.lexists(path) and (not os.path.isdir(path) or os.listdir(path)):
            # init would refuse it: say so now, before anything is sent.
            repository.init(path, algorithm, 1, insecure=True, check_mode=True)
        return {"exists": False, "image_object": False, "image_linked": False, "missing": sorted(set(objects)),
                "refs": {}, "repository": None}
    with repository.Repository(path) as repo:
        if repo.algorithm != algorithm:
            raise RepositoryError("%s is a %s repository; the image is a %s one (its objects are named by %s digests): "
                                  "push into a %s repository" % (path, repo.algorithm, algorithm, algorithm, algorithm))
        store = repo.store()
        return {
            "exists": True,
            "image_object": store.check_object(digest) == "ok",
            "image_linked": repo.image_linked(digest),
            "missing": sorted(rel for rel in set(objects) if not os.path.lexists(os.path.join(repo.objects_path, rel))),
            "refs": repo.refs(),
            "repository": repo.meta.as_dict(),
        }


def _stage_entries(store, f, entries, origin):
    """Write every entry to a staging file, checking its digest as it is written; returns the staged list."""
    staged = []
    try:
        for digest, size in entries:
            tmp, fd, _size = store.open_staging(digest)
            staged.append((tmp, digest))
            hasher = FsverityHasher(store.hash_algorithm)
            try:
                left = size
                while left:
                    chunk = f.read(min(CHUNK, left))
                    if not chunk:
                        raise BundleError("the bundle %s is truncated in the object %s (%d of %d bytes); nothing of it "
                                          "was published" % (origin, digest, size - left, size))
                    hasher.update(chunk)
                    view = memoryview(chunk)
                    while view:
                        view = view[os.write(fd, view):]
                    left -= len(chunk)
            finally:
                os.close(fd)
            got = hasher.hexdigest()
            if got != digest:
                raise BundleError("the object %s in the bundle %s is corrupt: its fs-verity %s digest is %s; it was "
                                  "refused and nothing of the bundle was published" % (digest, origin, store.hash_algorithm, got))
        if f.read(len(TRAILER) + 1) != TRAILER:
            raise BundleError("the bundle %s does not end after its last object (truncated, or extra bytes); nothing of it "
                              "was published" % origin)
        return staged
    except BaseException:
        for tmp, _digest in staged:
            store.discard_staged(tmp)
        raise


def import_bundle(repo, bundle, digest, check_mode=False):
    """Import the bundle file ``bundle`` into ``repo`` (the caller holds the lock shared).

    Every entry is staged and verified before any is renamed into place, then
    all are published (the image last). Returns ``(objects added, bytes)``.
    ``digest`` is the image the caller expects the bundle to carry.
    """
    try:
        f = open(bundle, "rb")
    except OSError as exc:
        raise BundleError("cannot open the bundle %s: %s" % (bundle, exc.strerror))
    with f:
        image, entries = read_header(f, repo.algorithm)
        if image != digest:
            raise BundleError("the bundle %s is for the image %s, not %s" % (bundle, image, digest))
        if check_mode or not entries:
            return 0, 0
        repo.require_writable()
        store = repo.store()
        staged = []
        try:
            store.clean_stale_temp_files()  # staging files of killed runs, once no other writer is active
            staged = _stage_entries(store, f, entries, bundle)
            store.sync_staged([tmp for tmp, _d in staged])
            # The image last: an image whose objects are all in place before it appears.
            staged.sort(key=lambda item: item[1] == image)
            nbytes = 0
            sizes = dict(entries)
            while staged:
                tmp, obj = staged[0]
                store.publish_staged(tmp, obj, "the object %s of the bundle" % obj, hashed=True)
                staged.pop(0)
                nbytes += sizes[obj]
        except ObjectStoreError as exc:
            raise RepositoryError(str(exc))
        finally:
            for tmp, _obj in staged:  # what was not published (an error on the way)
                store.discard_staged(tmp)
        return len(entries), nbytes


def receive(path, digest, objects, bundle, dest_ref, algorithm, erofs_version=1, insecure=False, lock_timeout=None,
            check_mode=False):
    """The host's whole import: init if absent, import the bundle, link the image, set ``dest_ref``.

    ``objects`` are the image's objects; they must all be present afterwards
    (from before, or from the bundle) before the image is linked and named.
    Returns a result dict (``initialized``, ``objects_added``, ``bytes_added``,
    ``image_linked``, ``ref_changed``, ``ref_before``, ``refs_before``, ``refs_after``).
    """
    digest = layout.check_digest(digest, algorithm)
    if dest_ref is not None:
        layout.check_ref_name(dest_ref)
    created, _info = repository.init(path, algorithm, erofs_version, insecure, check_mode)
    out = {"initialized": created, "objects_added": 0, "bytes_added": 0, "image_linked": False, "ref_changed": False,
           "ref_before": None, "refs_before": {}, "refs_after": {}}
    if created and check_mode:
        out.update(image_linked=True, ref_changed=dest_ref is not None)
        out["refs_after"] = {dest_ref: digest} if dest_ref else {}
        return out
    with repository.Repository(path) as repo:
        if repo.algorithm != algorithm:
            raise RepositoryError("%s is a %s repository; the image is a %s one: push into a %s repository"
                                  % (path, repo.algorithm, algorithm, algorithm))
        with repo.lock(exclusive=False, timeout=lock_timeout):
            out["refs_before"] = repo.refs()
            out["ref_before"] = out["refs_before"].get(dest_ref) if dest_ref else None
            if bundle:
                out["objects_added"], out["bytes_added"] = import_bundle(repo, bundle, digest, check_mode)
            if not check_mode:
                lacking = [rel for rel in objects if not os.path.lexists(os.path.join(repo.objects_path, rel))]
                if repo.object_size(digest) is None:
                    lacking.append(layout.object_relpath(digest) + " (the image)")
                if lacking:
                    raise RepositoryError("%s still lacks %d object(s) of the image %s after the import (%s%s): the host's "
                                          "repository changed while the bundle was built; run again"
                                          % (path, len(lacking), digest, ", ".join(lacking[:3]), "..." if len(lacking) > 3 else ""))
            out["image_linked"] = repo.link_image(digest, check_mode) if not check_mode else not repo.image_linked(digest)
            refs_after = dict(out["refs_before"])
            if dest_ref:
                if check_mode:
                    out["ref_changed"] = not repo.ref_target_ok(dest_ref, digest)
                else:
                    out["ref_changed"], _prev = repo.set_ref(dest_ref, digest)
                refs_after[dest_ref] = digest
            out["refs_after"] = repo.refs() if not check_mode else refs_after
    return out


# -- the controller's side -------------------------------------------------------------------


def _cached_image_objects(repo, digest, cache_dir):
    """``repo.image_objects(digest)``, kept in ``cache_dir`` (an image's objects follow from its digest).

    The action plugin runs once per host; with the run's local temporary
    directory as ``cache_dir`` the image is read once per run, not once per host.
    """
    if not cache_dir:
        return repo.image_objects(digest)
    path = os.path.join(cache_dir, "composefs-image-objects-%s-%s.json" % (repo.algorithm, digest))
    try:
        with open(path) as f:
            cached = json.load(f)
        if isinstance(cached, list) and all(isinstance(rel, str) for rel in cached):
            return cached
    except (OSError, ValueError):
        pass
    objects = repo.image_objects(digest)
    tmp = "%s.tmp-%d-%s" % (path, os.getpid(), os.urandom(4).hex())
    try:
        with open(tmp, "w") as f:
            json.dump(objects, f)
        os.rename(tmp, path)
    except OSError:
        try:
            os.unlink(tmp)
        except OSError:
            pass
    return objects


def source_plan(src, ref, cache_dir=None):
    """What to push from the controller's repository ``src``: a dict with ``digest``, ``algorithm``,
    ``erofs_version``, ``objects`` (``XX/<rest>``) and ``name`` (``ref`` when it is a ref name, else None).

    Refuses an image whose objects ``src`` lacks: the host would get an image it cannot mount.
    ``cache_dir``: see :func:`_cached_image_objects`.
    """
    with repository.Repository(src) as repo:
        digest = repo.resolve(ref)
        if repo.object_size(digest) is None:
            raise RepositoryError("%s names the image %s, but %s has no such object" % (ref, digest, src))
        objects = _cached_image_objects(repo, digest, cache_dir)
        lacking = [rel for rel in objects if repo.object_size(rel.replace("/", "")) is None]
        if lacking:
            raise RepositoryError("%s lacks %d object(s) of the image %s (%s...): it cannot push what it does not have; "
                                  "complete it first (repository_info lists missing objects)" % (src, len(lacking), digest, lacking[0]))
        name = None
        try:
            layout.check_digest(ref, repo.algorithm)
        except RepositoryError:
            name = ref
        return {"digest": digest, "algorithm": repo.algorithm, "erofs_version": repo.meta.erofs_version,
                "objects": objects, "name": name}


def build_bundle(src, digest, objects, include_image, out):
    """Write the bundle of ``objects`` (``XX/<rest>``) and, when ``include_image``, the image, from ``src``
    into the binary file ``out``. Returns the payload bytes. Holds ``src``'s lock shared while reading."""
    with repository.Repository(src) as repo:
        with repo.lock(exclusive=False):
            entries = [(rel.replace("/", ""), os.path.join(repo.objects_path, rel)) for rel in objects]
            if include_image:
                entries.append((digest, repo.object_path(digest)))
            return write_bundle(out, repo.algorithm, digest, entries)


def payload_size(src, digest, objects, include_image):
    """Bytes a bundle of these entries would carry (check mode)."""
    with repository.Repository(src) as repo:
        total = sum(repo.object_size(rel.replace("/", "")) or 0 for rel in objects)
        if include_image:
            total += repo.object_size(digest) or 0
        return total


def push_argument_spec():
    """The options a user gives composefs.fleet.repository_push (the action plugin validates them)."""
    return dict(
        src=dict(type="path", required=True),
        ref=dict(type="str", required=True),
        path=dict(type="path", required=True),
        dest_ref=dict(type="str"),
        insecure=dict(type="bool", default=False),
        lock_timeout=dict(type="float", default=300),
    )


def push_module_argument_spec():
    """The module's options: the user's, plus those the action plugin sets for each of its two runs."""
    spec = push_argument_spec()
    spec.update(
        step=dict(type="str", choices=["probe", "receive"]),
        digest=dict(type="str"),
        objects=dict(type="list", elements="str", default=[]),
        bundle=dict(type="path"),
        algorithm=dict(type="str", choices=sorted(layout.HEX_LENGTHS)),
        erofs_version=dict(type="int", choices=[0, 1, 2], default=1),
    )
    return spec
