# -*- coding: utf-8 -*-
# Copyright: composefs.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Pulling an image and the objects a host lacks from a plain HTTP(S) server (composefs-http's layout).

The server serves a repository directory as static files::

    <url>/meta.json                 optional: the algorithm of the served repository
    <url>/objects/XX/<rest>         every object, the images included (an image is an object)
    <url>/images/refs/<name>        a ref: the server follows the symlink and sends the image's bytes,
                                    or sends the link's target with Content-Type text/x-symlink-target
                                    (as composefs-http expects of a server that keeps symlinks)

Objects are downloaded with bounded concurrency (a thread pool) into a staging
file beside their final name (``objects/XX/.tmp-pull-<rest>``), their
fs-verity digest is computed, and only a file whose digest is its name is
renamed into place. A failed transfer is retried; what arrived is kept and the
retry asks for the rest with ``Range: bytes=<n>-``. A staging file left by a
run that was killed is continued the same way by the next run. A file whose
digest differs (corrupt or truncated on the server) is removed and the pull
fails naming the object and its URL.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import concurrent.futures
import http.client
import os
import shutil
import socket
import ssl
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

from ansible_collections.composefs.fleet.plugins.module_utils.composefs.errors import ComposefsError
from ansible_collections.composefs.fleet.plugins.module_utils.erofs import reader
from ansible_collections.composefs.fleet.plugins.module_utils.fsverity.digest import file_digest
from ansible_collections.composefs.fleet.plugins.module_utils.objectstore import ObjectStoreError
from ansible_collections.composefs.fleet.plugins.module_utils.repository import layout, meta as metafile
from ansible_collections.composefs.fleet.plugins.module_utils.repository import repo as repository
from ansible_collections.composefs.fleet.plugins.module_utils.repository.errors import RepositoryError

SYMLINK_TYPE = "text/x-symlink-target"
STAGING_PREFIX = ".tmp-pull-"
CHUNK = 1 << 20
MAX_META = 1 << 20
BACKOFF = 0.5
BACKOFF_MAX = 5.0


class PullError(RepositoryError):
    """A download failed for good, or a downloaded object is not what its name says."""


class NotFound(PullError):
    """The server answered 404."""


class _Retry(Exception):
    """A transient failure: the attempt may be repeated (continuing what arrived)."""


class _StartOver(_Retry):
    """The server cannot continue the partial file: the next attempt downloads it whole."""


class _Cancelled(Exception):
    """Another download failed: this one stops."""


def staging_name(digest):
    """The staging file of an object being pulled, in its fan-out directory (stable, so a later run continues it)."""
    return STAGING_PREFIX + digest[2:]


class HttpSource:
    """A repository served over HTTP(S) at ``url``; ``timeout`` is per socket operation, ``retries`` per file."""

    def __init__(self, url, timeout=30, retries=3, validate_certs=True, ca_path=None, backoff=BACKOFF):
        parsed = urllib.parse.urlsplit(url or "")
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise PullError("url %r must be an http:// or https:// URL of a served repository" % (url,))
        if parsed.query or parsed.fragment:
            raise PullError("url %r must not have a query or a fragment: it is the base of objects/ and images/" % (url,))
        self.base = url if url.endswith("/") else url + "/"
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        handlers = []
        if parsed.scheme == "https":
            context = ssl.create_default_context(cafile=ca_path) if ca_path else ssl.create_default_context()
            if not validate_certs:
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
            handlers.append(urllib.request.HTTPSHandler(context=context))
        self.opener = urllib.request.build_opener(*handlers)
        self.cancelled = threading.Event()

    def url_of(self, relpath):
        return self.base + urllib.parse.quote(relpath)

    def _pause(self, attempt):
        time.sleep(min(self.backoff * (2 ** attempt), BACKOFF_MAX))

    def _open(self, url, offset):
        headers = {"User-Agent": "composefs.fleet", "Accept-Encoding": "identity"}
        if offset:
            headers["Range"] = "bytes=%d-" % offset
        try:
            return self.opener.open(urllib.request.Request(url, headers=headers), timeout=self.timeout)
        except urllib.error.HTTPError as exc:
            exc.close()
            if exc.code == 416 and offset:
                raise _StartOver("the server has no bytes after %d (416): starting over" % offset)
            if exc.code in (408, 425, 429) or exc.code >= 500:
                raise _Retry("HTTP %d %s" % (exc.code, exc.reason))
            if exc.code == 404:
                raise NotFound("%s: not found (HTTP 404); the server does not serve it (is url the repository's "
                               "top directory?)" % url)
            raise PullError("%s: HTTP %d %s" % (url, exc.code, exc.reason))
        except (urllib.error.URLError, http.client.HTTPException, socket.timeout, OSError) as exc:
            raise _Retry(str(getattr(exc, "reason", None) or exc))

    def _attempt(self, url, fd, offset, counter):
        """One GET into ``fd`` from ``offset``; returns ``(content type, continued)``. _Retry keeps what arrived.

        ``continued``: the server sent only the bytes after ``offset`` (206).
        """
        resp = self._open(url, offset)
        with resp:
            status = resp.status
            continued = bool(offset) and status == 206
            if continued:
                rng = resp.headers.get("Content-Range") or ""
                if not rng.startswith("bytes %d-" % offset):
                    raise _StartOver("the server answered the Range request with %r: starting over" % rng)
            elif offset:
                offset = 0  # a 200 to a Range request: the whole file again
                os.ftruncate(fd, 0)
            length = resp.headers.get("Content-Length")
            expected = int(length) if length and length.isdigit() else None
            got = 0
            try:
                while True:
                    if self.cancelled.is_set():
                        raise _Cancelled()
                    chunk = resp.read(CHUNK)
                    if not chunk:
                        break
                    view = memoryview(chunk)
                    while view:
                        n = os.pwrite(fd, view, offset + got)
                        got += n
                        view = view[n:]
                    counter.add(len(chunk))
            except (http.client.HTTPException, socket.timeout, OSError) as exc:
                raise _Retry("the transfer broke after %d bytes: %s" % (offset + got, exc))
            if expected is not None and got != expected:
                raise _Retry("the connection closed after %d of %d bytes" % (offset + got, offset + expected))
            return (resp.headers.get("Content-Type") or "").split(";")[0].strip().lower(), continued

    def download(self, relpath, fd, offset, counter):
        """GET ``relpath`` into ``fd`` (continuing at ``offset``), retrying; returns ``(content type, resumed)``.

        ``resumed`` says whether earlier bytes were kept: an attempt continued them (206 to a Range request).
        """
        url = self.url_of(relpath)
        attempt = 0
        resumed = False
        while True:
            try:
                ctype, continued = self._attempt(url, fd, offset, counter)
                return ctype, resumed or continued
            except _Retry as exc:
                if isinstance(exc, _StartOver):
                    os.ftruncate(fd, 0)
                if attempt >= self.retries:
                    raise PullError("%s: %s (%d attempt%s; raise retries or timeout, or check the server)"
                                    % (url, exc, attempt + 1, "" if attempt == 0 else "s"))
                self._pause(attempt)
                attempt += 1
                offset = os.fstat(fd).st_size

    def get_small(self, relpath, limit):
        """The body of a small file (meta.json), or None when the server has none (404)."""
        fd, tmp = tempfile.mkstemp(prefix="composefs-pull-")
        try:
            try:
                self.download(relpath, fd, 0, _Counter())
            except NotFound:
                return None
            if os.fstat(fd).st_size > limit:
                raise PullError("%s is larger than %d bytes" % (self.url_of(relpath), limit))
            return os.pread(fd, limit, 0)
        finally:
            os.close(fd)
            os.unlink(tmp)


class _Counter:
    def __init__(self):
        self.value = 0
        self._lock = threading.Lock()

    def add(self, n):
        with self._lock:
            self.value += n


def server_algorithm(source):
    """The algorithm in the server's meta.json, or None when it serves none."""
    data = source.get_small(layout.META_FILENAME, MAX_META)
    if data is None:
        return None
    return metafile.parse(data, source.url_of(layout.META_FILENAME)).algorithm


def fetch_image(source, ref, digest, algorithm, into, counter):
    """Download the image (by ``digest``, or the ref ``ref``) into the file ``into``; returns its digest.

    A ref the server sends as a symlink target names the digest, which is then
    downloaded from objects/. A ref the server follows arrives as the image's
    bytes: their fs-verity digest is the image's name.
    """
    fd = os.open(into, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        if ref is not None:
            ctype, _resumed = source.download(layout.IMAGES + "/" + layout.REFS + "/" + ref, fd, 0, counter)
            if ctype != SYMLINK_TYPE:
                return file_digest(fd, algorithm).hex()
            target = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip()
            digest = layout.digest_of_ref_link(target, algorithm)
            if digest is None:
                raise PullError("%s is a link to %r, which names no %s image" % (
                    source.url_of("images/refs/" + ref), target[:200], algorithm))
            os.ftruncate(fd, 0)
        relpath = layout.OBJECTS + "/" + layout.object_relpath(digest)
        source.download(relpath, fd, 0, counter)
        got = file_digest(fd, algorithm).hex()
        if got != digest:
            raise PullError("the image %s at %s is corrupt or truncated: %d bytes with the fs-verity digest %s; refused"
                            % (digest, source.url_of(relpath), os.fstat(fd).st_size, got))
        return digest
    finally:
        os.close(fd)


def image_objects_of_file(path, algorithm, digest):
    """Object paths (``XX/<rest>``) the image file references (the repository's rule for what is an object)."""
    try:
        payloads = reader.objects(path, strict=False)
    except (ComposefsError, OSError) as exc:
        raise PullError("the image %s is not a composefs image this collection can read: %s" % (digest, exc))
    out = set()
    for payload in payloads:
        rel = payload.lstrip("/")
        if not layout.is_digest(rel.replace("/", "", 1), algorithm) or rel[2:3] != "/":
            raise PullError("the image %s references %r, which is not an object of a %s repository"
                            % (digest, payload[:200], algorithm))
        out.add(rel)
    return sorted(out)


class _ObjectFetcher:
    """Downloads objects into the store's staging files, verifies and publishes them."""

    def __init__(self, source, store, counter):
        self.source = source
        self.store = store
        self.counter = counter
        self.store_lock = threading.Lock()  # the store's descriptor cache is not shared between threads
        self.resumed = 0
        self._resumed_lock = threading.Lock()

    def fetch(self, rel):
        digest = rel.replace("/", "")
        relpath = layout.OBJECTS + "/" + rel
        url = self.source.url_of(relpath)
        for fresh in (False, True):
            with self.store_lock:
                tmp, fd, have = self.store.open_staging(digest, staging_name(digest))
            # The staging file stays open (and flocked) until it is renamed to a name of this run or removed:
            # a concurrent pull of the same object cannot take it over in between.
            try:
                if fresh and have:
                    os.ftruncate(fd, 0)
                    have = 0
                _ctype, resumed = self.source.download(relpath, fd, have, self.counter)
                os.fsync(fd)
                got = file_digest(fd, self.store.hash_algorithm).hex()
                size = os.fstat(fd).st_size
                with self.store_lock:
                    if got == digest:
                        tmp = self.store.claim_staged(tmp)
                    else:
                        self.store.discard_staged(tmp)
                        tmp = None
            except BaseException:
                with self.store_lock:
                    self.store.discard_staged(tmp)
                raise
            finally:
                os.close(fd)  # fs-verity can be enabled only once no writable descriptor is open
            if tmp is not None:
                with self.store_lock:
                    self.store.publish_staged(tmp, digest, "the object %s from %s" % (digest, url), hashed=True)
                if resumed:
                    with self._resumed_lock:
                        self.resumed += 1
                return size
            if not resumed or fresh:
                raise PullError("the object %s at %s is corrupt or truncated on the server: %d bytes with the fs-verity "
                                "%s digest %s; it was refused and not stored" % (digest, url, size, self.store.hash_algorithm, got))
            # What an earlier attempt left may have been the bad part: once more, from the start.
        raise PullError("the object %s at %s could not be fetched" % (digest, url))  # not reached


def fetch_objects(source, store, missing, workers, counter):
    """Download, verify and publish ``missing`` (``XX/<rest>``) with ``workers`` threads; returns objects resumed.

    The first failure stops the others (their staging files are removed) and is raised.
    """
    fetcher = _ObjectFetcher(source, store, counter)
    store.lock_for_writing()
    errors = []
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(fetcher.fetch, rel) for rel in missing]
        for future in concurrent.futures.as_completed(futures):
            try:
                future.result()
            except _Cancelled:
                pass
            except (PullError, ObjectStoreError, OSError) as exc:
                if not errors:
                    errors.append(exc)
                    source.cancelled.set()
                    for other in futures:
                        other.cancel()
    if errors:
        exc = errors[0]
        if isinstance(exc, PullError):
            raise exc
        raise PullError(str(exc))
    return fetcher.resumed


def pull(path, url, ref=None, digest=None, dest_ref=None, algorithm=None, insecure=False, workers=4, timeout=30,
         retries=3, validate_certs=True, ca_path=None, lock_timeout=None, check_mode=False, tmpdir=None, backoff=BACKOFF):
    """Make the repository ``path`` hold the image (``digest`` or the server's ref ``ref``) and all its objects.

    Returns a result dict: ``digest``, ``objects_missing``, ``objects_fetched``,
    ``objects_resumed``, ``bytes_fetched``, ``image_fetched``, ``initialized``,
    ``dest_ref``, ``ref_before``, ``refs_before``, ``refs_after``, ``changed``.
    """
    if (ref is None) == (digest is None):
        raise PullError("give one of ref (a ref name the server serves under images/refs/) and digest")
    if ref is not None:
        layout.check_ref_name(ref)
    if dest_ref is None:
        dest_ref = ref
    if dest_ref is not None:
        layout.check_ref_name(dest_ref)
    source = HttpSource(url, timeout, retries, validate_certs, ca_path, backoff)
    served = server_algorithm(source)
    exists = os.path.exists(os.path.join(path, layout.META_FILENAME))
    local = None
    erofs_version = 1
    if exists:
        with repository.Repository(path) as repo:
            local, erofs_version = repo.algorithm, repo.meta.erofs_version
    for name, value in (("the server's meta.json", served), ("algorithm", algorithm)):
        if value is not None and local is not None and value != local:
            raise PullError("%s is a %s repository, but %s says %s: objects are named by their digests, so they cannot "
                            "be mixed; pull into a %s repository" % (path, local, name, value, value))
    if served is not None and algorithm is not None and served != algorithm:
        raise PullError("algorithm is %s, but the server's meta.json says %s" % (algorithm, served))
    algorithm = local or served or algorithm or "sha512"
    if digest is not None:
        digest = layout.check_digest(digest, algorithm)
    counter = _Counter()
    out = {"digest": digest, "objects_missing": 0, "objects_fetched": 0, "objects_resumed": 0, "bytes_fetched": 0,
           "image_fetched": False, "initialized": False, "dest_ref": dest_ref, "ref_before": None,
           "refs_before": {}, "refs_after": {}, "changed": False}
    work = tempfile.mkdtemp(prefix="composefs-pull-", dir=tmpdir)
    try:
        image_file = os.path.join(work, "image")
        prefetched = None
        if not exists:
            # The image first: a ref the server lacks, or an image that is not one, creates nothing.
            prefetched = out["digest"] = fetch_image(source, ref, digest, algorithm, image_file, counter)
            out["image_fetched"] = True
            objects = image_objects_of_file(image_file, algorithm, prefetched)
        out["initialized"], _info = repository.init(path, algorithm, erofs_version, insecure, check_mode)
        if out["initialized"] and check_mode:
            out.update(objects_missing=len(objects), objects_fetched=len(objects), changed=True,
                       refs_after={dest_ref: out["digest"]} if dest_ref else {}, bytes_fetched=counter.value)
            return out
        with repository.Repository(path) as repo:
            with repo.lock(exclusive=False, timeout=lock_timeout):
                _pull_into(repo, source, ref, digest, dest_ref, image_file, workers, counter, check_mode, out, prefetched)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    out["bytes_fetched"] = counter.value
    out["changed"] = bool(out["initialized"] or out["objects_fetched"] or out["image_linked"] or out["ref_changed"])
    del out["image_linked"], out["ref_changed"]
    return out


def _pull_into(repo, source, ref, digest, dest_ref, image_file, workers, counter, check_mode, out, prefetched=None):
    store = repo.store()
    out["refs_before"] = repo.refs()
    out["ref_before"] = out["refs_before"].get(dest_ref) if dest_ref else None
    have_image = prefetched is None and digest is not None and store.check_object(digest) == "ok"
    if have_image:
        objects = repo.image_objects(digest)
    else:
        if prefetched is None:
            digest = fetch_image(source, ref, digest, repo.algorithm, image_file, counter)
            out["image_fetched"] = True
        else:
            digest = prefetched
        have_image = store.check_object(digest) == "ok"
        objects = image_objects_of_file(image_file, repo.algorithm, digest)
    out["digest"] = digest
    missing = [rel for rel in objects if not os.path.lexists(os.path.join(repo.objects_path, rel))]
    out["objects_missing"] = len(missing)
    if check_mode:
        out["objects_fetched"] = len(missing)
        out["image_linked"] = not have_image or not repo.image_linked(digest)
        out["ref_changed"] = bool(dest_ref) and not repo.ref_target_ok(dest_ref, digest)
        out["refs_after"] = dict(out["refs_before"], **({dest_ref: digest} if dest_ref else {}))
        return
    repo.require_writable()
    if missing:
        try:
            # Staging files of long-dead runs go (not those of a run killed within STALE_TEMP_GRACE: they are resumed).
            store.clean_stale_temp_files()
            out["objects_resumed"] = fetch_objects(source, store, missing, workers, counter)
        except ObjectStoreError as exc:
            raise PullError(str(exc))
        out["objects_fetched"] = len(missing)
    if have_image:
        out["image_linked"] = repo.link_image(digest)
    else:
        added = repo.add_image_file(image_file)
        out["image_linked"] = added["image_linked"] or added["object_added"]
    out["ref_changed"] = False
    if dest_ref:
        out["ref_changed"], _prev = repo.set_ref(dest_ref, digest)
    out["refs_after"] = repo.refs()
