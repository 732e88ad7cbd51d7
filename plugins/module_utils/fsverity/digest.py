# -*- coding: utf-8 -*-
# Copyright: composefs.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""fs-verity file digests computed in userspace.

The digest is defined by the kernel (Documentation/filesystems/fsverity.rst) and
fsverity-utils: a Merkle tree over ``block_size`` blocks of the file, each block
zero-padded and hashed (salted if a salt is given); each level's hashes are packed
into blocks and hashed again until one block remains, whose hash is the root. The
file digest is the hash of the 256-byte ``fsverity_descriptor`` holding the root.

Memory use is constant: every tree level keeps at most one partial block.
Speed comes from hashing straight out of the read buffer through memoryview
slices (no copies), a short path for files of one block, threads for the blocks
of one large file (hashlib releases the GIL), and worker processes for many
files (see :func:`digest_files`).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import errno
import hashlib
import itertools
import os
import stat
import struct

from ansible_collections.composefs.fleet.plugins.module_utils.common.regular_file import open_regular
from ansible_collections.composefs.fleet.plugins.module_utils.common.workers import fork_pool, split_among_forks

# Kernel FS_VERITY_HASH_ALG_* numbers and digest sizes.
HASH_ALGORITHMS = {"sha256": (1, 32, 64), "sha512": (2, 64, 128)}  # name: (number, digest size, hash block size)
DEFAULT_BLOCK_SIZE = 4096
MAX_SALT_SIZE = 32
_READ_SIZE = 1 << 20
# Files at least this large are hashed by several threads when allowed.
_PARALLEL_MIN_SIZE = 64 << 20


class FsverityParamsError(ValueError):
    """Invalid digest parameters (algorithm, block size or salt)."""


def check_params(hash_algorithm, block_size, salt):
    if hash_algorithm not in HASH_ALGORITHMS:
        raise FsverityParamsError("unsupported hash algorithm %r: use one of %s" % (hash_algorithm, ", ".join(sorted(HASH_ALGORITHMS))))
    if block_size < 1024 or block_size > 65536 or block_size & (block_size - 1):
        raise FsverityParamsError("block size %r is not a power of two between 1024 and 65536" % (block_size,))
    if len(salt) > MAX_SALT_SIZE:
        raise FsverityParamsError("salt of %d bytes is longer than the %d bytes fs-verity allows" % (len(salt), MAX_SALT_SIZE))


class FsverityHasher:
    """Incremental fs-verity digest: ``update()`` with the file's bytes, then ``digest()``."""

    def __init__(self, hash_algorithm="sha256", block_size=DEFAULT_BLOCK_SIZE, salt=b""):
        salt = bytes(salt or b"")
        check_params(hash_algorithm, block_size, salt)
        self.hash_algorithm = hash_algorithm
        self.block_size = block_size
        self.salt = salt
        self._alg_number, self._digest_size, hash_block = HASH_ALGORITHMS[hash_algorithm]
        self._new = getattr(hashlib, hash_algorithm)
        if salt:
            # The salt is zero-padded to the hash's block size and prepended to every block.
            padded = salt + b"\0" * (-len(salt) % hash_block)
            base = self._new(padded)
            self._hash_block = lambda data: self._salted(base, data)
        else:
            new = self._new
            self._hash_block = lambda data: new(data).digest()
        self._zero_block = b"\0" * block_size
        self._size = 0
        self._pending = bytearray()  # partial data block
        self._levels = []  # per tree level: bytearray of hashes not yet packed into a full block
        self._blocks_per_level = []
        self._root = None

    @staticmethod
    def _salted(base, data):
        h = base.copy()
        h.update(data)
        return h.digest()

    def _push_hashes(self, level, hashes):
        """Append packed hashes to ``level``, hashing every full block into the level above."""
        while True:
            if level == len(self._levels):
                self._levels.append(bytearray())
                self._blocks_per_level.append(0)
            buf = self._levels[level]
            buf += hashes
            bs = self.block_size
            if len(buf) < bs:
                return
            full = len(buf) - len(buf) % bs
            view = memoryview(buf)
            hb = self._hash_block
            hashes = b"".join([hb(view[i:i + bs]) for i in range(0, full, bs)])
            view.release()
            self._blocks_per_level[level] += full // bs
            del buf[:full]
            level += 1

    def update(self, data):
        """Feed the next bytes of the file (bytes, bytearray or memoryview)."""
        if self._root is not None:
            raise ValueError("update() after digest()")
        view = memoryview(data).cast("B")
        n = len(view)
        if not n:
            return
        self._size += n
        bs = self.block_size
        start = 0
        if self._pending:
            take = min(bs - len(self._pending), n)
            self._pending += view[:take]
            start = take
            if len(self._pending) < bs:
                return
            self._push_hashes(0, self._hash_block(self._pending))
            self._pending = bytearray()
        end = start + (n - start) - (n - start) % bs
        if end > start:
            hb = self._hash_block
            self._push_hashes(0, b"".join([hb(view[i:i + bs]) for i in range(start, end, bs)]))
        if end < n:
            self._pending += view[end:]

    @property
    def size(self):
        """Bytes fed so far."""
        return self._size

    def add_block_hashes(self, nbytes, hashes):
        """Feed precomputed hashes of whole data blocks covering ``nbytes`` bytes."""
        if self._pending or nbytes % self.block_size:
            raise ValueError("block hashes must start and end on a block boundary")
        self._size += nbytes
        if hashes:
            self._push_hashes(0, hashes)

    def root_hash(self):
        """The Merkle tree root (all zeros for an empty file). Ends the input."""
        if self._root is None:
            self._root = self._finish()
        return self._root

    def _finish(self):
        if self._size == 0:
            return b"\0" * self._digest_size
        bs = self.block_size
        ds = self._digest_size
        if self._pending:
            self._push_hashes(0, self._hash_block(bytes(self._pending) + self._zero_block[len(self._pending):]))
            self._pending = bytearray()
        level = 0
        while True:
            buf = self._levels[level]
            if self._blocks_per_level[level] == 0 and len(buf) == ds:
                return bytes(buf)  # the one hash left is the root
            if buf:
                # Zero-pad the level's last, partial block and hash it into the level above.
                block = bytes(buf) + self._zero_block[len(buf):]
                del buf[:]
                self._blocks_per_level[level] += 1
                self._push_hashes(level + 1, self._hash_block(block))
            level += 1

    def descriptor(self):
        """The 256-byte struct fsverity_descriptor whose hash is the file digest."""
        root = self.root_hash()
        return struct.pack(
            "<BBBBIQ64s32s144s",
            1,  # version
            self._alg_number,
            self.block_size.bit_length() - 1,  # log2(block size)
            len(self.salt),
            0,  # sig_size: reserved, always 0 in the digest
            self._size,
            root,
            self.salt,
            b"",
        )

    def digest(self):
        """The fs-verity file digest (raw bytes)."""
        return self._new(self.descriptor()).digest()

    def hexdigest(self):
        return self.digest().hex()


def data_digest(data, hash_algorithm="sha256", block_size=DEFAULT_BLOCK_SIZE, salt=b""):
    """fs-verity digest of a bytes-like object (raw bytes)."""
    hasher = FsverityHasher(hash_algorithm, block_size, salt)
    hasher.update(data)
    return hasher.digest()


_DESCRIPTOR = struct.Struct("<BBBBIQ64s32s144x")


def _descriptor_digest(new, number, block_size, size, root, salt=b""):
    return new(_DESCRIPTOR.pack(1, number, block_size.bit_length() - 1, len(salt), 0, size, root, salt)).digest()


def _small_digest(data, hash_algorithm, block_size, salt):
    """Digest of a file of at most one block: its root hash is the hash of that one padded block."""
    number, digest_size, _hb = HASH_ALGORITHMS[hash_algorithm]
    new = getattr(hashlib, hash_algorithm)
    if salt:
        return data_digest(data, hash_algorithm, block_size, salt)
    if not data:
        root = b"\0" * digest_size
    else:
        root = new(data + b"\0" * (block_size - len(data))).digest()
    return _descriptor_digest(new, number, block_size, len(data), root)


def _buffer_root(view, nbytes, block_size, digest_size, new):
    """Merkle root of the ``nbytes`` (> 0) bytes at the start of ``view``, unsalted.

    ``view`` must hold zeros from ``nbytes`` up to the next block boundary: every
    block, the last one too, is hashed straight out of it. Each level's hashes are
    packed into zero-padded blocks and hashed again until one hash is left.
    """
    end = nbytes + (-nbytes % block_size)
    level = b"".join([new(view[i:i + block_size]).digest() for i in range(0, end, block_size)])
    while len(level) > digest_size:
        pad = -len(level) % block_size
        if pad:
            level += bytes(pad)
        lview = memoryview(level)
        level = b"".join([new(lview[i:i + block_size]).digest() for i in range(0, len(level), block_size)])
    return level


class _FileReader:
    """Digests of whole files for one process, reading every file into one reused buffer.

    Most files of a tree are small: what counts is the syscalls and the Python work
    per file. A file is opened (never following a final symlink, never blocking on a
    FIFO), read with one ``pread`` when it fits in a block (no ``fstat``: a short read
    is the whole file), else checked to be a regular file and read whole into the
    buffer when it fits (up to ``_READ_SIZE``), so that its Merkle tree is hashed
    straight out of the buffer; larger files stream through :class:`FsverityHasher`.
    """

    def __init__(self, hash_algorithm="sha256", block_size=DEFAULT_BLOCK_SIZE, salt=b""):
        salt = bytes(salt or b"")
        check_params(hash_algorithm, block_size, salt)
        self.params = (hash_algorithm, block_size, salt)
        self._number, self._digest_size, _hb = HASH_ALGORITHMS[hash_algorithm]
        self._new = getattr(hashlib, hash_algorithm)
        self._block_size = block_size
        self._buffer = None
        self._flags = os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | getattr(os, "O_NONBLOCK", 0)

    def digest_path(self, path):
        fd = os.open(path, self._flags)
        try:
            return self.digest_fd(fd)
        finally:
            os.close(fd)

    def digest_paths(self, paths):
        """``[digest or OSError]`` for ``paths``: :meth:`digest_path` with the one-block case inlined."""
        out = []
        append = out.append
        if self.params[2]:  # salted: the general path
            for path in paths:
                try:
                    append(self.digest_path(path))
                except OSError as exc:
                    append(exc)
            return out
        new = self._new
        bs = self._block_size
        zeros = bytes(bs)
        empty_root = bytes(self._digest_size)
        pack = _DESCRIPTOR.pack
        number = self._number
        log_bs = bs.bit_length() - 1
        flags = self._flags
        digest_fd = self.digest_fd
        open_, pread, close = os.open, os.pread, os.close
        for path in paths:
            try:
                fd = open_(path, flags)
                try:
                    data = pread(fd, bs + 1, 0)
                    n = len(data)
                    if n > bs:
                        append(digest_fd(fd, data))
                        continue
                finally:
                    close(fd)
            except OSError as exc:
                append(exc)
                continue
            root = new(data + zeros[n:]).digest() if n else empty_root
            append(new(pack(1, number, log_bs, 0, 0, n, root, b"")).digest())
        return out

    def digest_fd(self, fd, head=None):
        """Digest of the file open at ``fd``; ``head``: what ``pread(fd, block_size + 1, 0)`` already gave."""
        hash_algorithm, bs, salt = self.params
        if salt:
            return _digest_fd(fd, hash_algorithm, bs, salt)
        new = self._new
        data = os.pread(fd, bs + 1, 0) if head is None else head
        n = len(data)
        if n <= bs:
            root = new(data + bytes(bs - n)).digest() if n else bytes(self._digest_size)
            return _descriptor_digest(new, self._number, bs, n, root)
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(errno.EINVAL, "not a regular file")
        if st.st_size >= _READ_SIZE:
            return _digest_fd(fd, hash_algorithm, bs, salt)
        buf = self._buffer
        if buf is None:
            buf = self._buffer = bytearray(_READ_SIZE + bs)
        view = memoryview(buf)
        try:
            # Read to the end of the buffer: more than _READ_SIZE bytes means the file grew.
            n = os.preadv(fd, [view[:_READ_SIZE + 1]], 0)
            if n > _READ_SIZE:
                return _digest_fd(fd, hash_algorithm, bs, salt)
            pad = -n % bs
            if pad:
                view[n:n + pad] = bytes(pad)
            return _descriptor_digest(new, self._number, bs, n, _buffer_root(view, n, bs, self._digest_size, new))
        finally:
            view.release()


def _digest_fd(fd, hash_algorithm, block_size, salt, threads=1):
    size = os.fstat(fd).st_size
    if size <= block_size:
        data = os.pread(fd, block_size + 1, 0)
        if len(data) <= block_size:
            check_params(hash_algorithm, block_size, salt)
            return _small_digest(data, hash_algorithm, block_size, salt)
    hasher = FsverityHasher(hash_algorithm, block_size, salt)
    if threads > 1 and size >= _PARALLEL_MIN_SIZE:
        _hash_fd_parallel(hasher, fd, size, threads)
        return hasher.digest()
    if size < _READ_SIZE:
        # Small enough to read whole; a size change since fstat just means more reads.
        buf = bytearray(size + block_size)
    else:
        buf = bytearray(_READ_SIZE)
    view = memoryview(buf)
    offset = 0
    while True:
        n = os.preadv(fd, [buf], offset)
        if not n:
            break
        offset += n
        hasher.update(view[:n])
    view.release()
    return hasher.digest()


def _hash_fd_parallel(hasher, fd, size, threads):
    """Hash the data blocks of a large file in several threads, in order.

    Each task reads one chunk with pread and returns its level-0 hashes; at most
    2 x threads chunks are in flight, so memory stays bounded.
    """
    from concurrent.futures import ThreadPoolExecutor

    bs = hasher.block_size
    chunk = _READ_SIZE * 4
    hb = hasher._hash_block

    def hash_chunk(offset):
        data = os.pread(fd, chunk, offset)
        view = memoryview(data)
        full = len(data) - len(data) % bs
        hashes = b"".join([hb(view[i:i + bs]) for i in range(0, full, bs)])
        return len(data), hashes, bytes(view[full:])

    offsets = iter(range(0, size, chunk))
    with ThreadPoolExecutor(max_workers=threads) as pool:
        inflight = [pool.submit(hash_chunk, off) for off in itertools.islice(offsets, 2 * threads)]
        while inflight:
            n, hashes, tail = inflight.pop(0).result()
            nxt = next(offsets, None)
            if nxt is not None:
                inflight.append(pool.submit(hash_chunk, nxt))
            hasher.add_block_hashes(n - len(tail), hashes)
            if tail:
                hasher.update(tail)
            if n < chunk:
                break  # the file shrank while we read it; the size check below catches it
    if hasher.size != size:
        raise OSError("file changed size while its digest was computed (%d bytes, then %d)" % (size, hasher.size))


def file_digest(path_or_fileobj, hash_algorithm="sha256", block_size=DEFAULT_BLOCK_SIZE, salt=b"", threads=1):
    """fs-verity digest (raw bytes) of a whole file given by path, file descriptor or binary file object.

    A path is opened without following a final symlink, and must be a regular file
    (:class:`NotRegularFile`, an OSError, otherwise). ``threads`` > 1 hashes
    large files in parallel (same result, more cores).
    """
    if isinstance(path_or_fileobj, int):
        return _digest_fd(path_or_fileobj, hash_algorithm, block_size, salt, threads)
    if hasattr(path_or_fileobj, "fileno"):
        return _digest_fd(path_or_fileobj.fileno(), hash_algorithm, block_size, salt, threads)
    # Non-blocking open and fstat first: a FIFO swapped in at the path is refused, not waited on.
    fd = open_regular(path_or_fileobj, follow=False)
    try:
        return _digest_fd(fd, hash_algorithm, block_size, salt, threads)
    finally:
        os.close(fd)


_READERS = {}  # per process: digest parameters -> _FileReader (and its buffer)


def _digest_chunk(job):
    paths = job[0]
    params = job[1:]
    reader = _READERS.get(params)
    if reader is None:
        reader = _READERS[params] = _FileReader(*params)
    return reader.digest_paths(paths)


class DigestPool:
    """Hash files in forked worker processes while the caller is still finding them.

    ``add()`` paths as they turn up; ``results()`` yields ``(path, digest_bytes_or_OSError)``
    in the order they were added. Workers are forked when the pool is entered, before
    the caller builds up a large heap. With one worker everything is hashed in
    ``results()``, in this process.
    """

    CHUNK = 256

    def __init__(self, workers=None, hash_algorithm="sha256", block_size=DEFAULT_BLOCK_SIZE, salt=b""):
        check_params(hash_algorithm, block_size, bytes(salt or b""))
        self.workers = workers or os.cpu_count() or 1
        self._params = (hash_algorithm, block_size, bytes(salt or b""))
        self._pool = None
        self._pending = []
        self._submitted = []  # (paths, AsyncResult or None)

    def __enter__(self):
        if self.workers > 1:
            self._pool = fork_pool(self.workers)
        return self

    def __exit__(self, *exc_info):
        if self._pool is not None:
            self._pool.terminate()
            self._pool.join()
            self._pool = None

    def _submit(self):
        paths, self._pending = self._pending, []
        job = (paths,) + self._params
        self._submitted.append((paths, self._pool.apply_async(_digest_chunk, (job,)) if self._pool is not None else None))

    def add(self, path):
        self._pending.append(path)
        if len(self._pending) >= self.CHUNK:
            self._submit()

    def results(self):
        if self._pending:
            self._submit()
        for paths, async_result in self._submitted:
            out = async_result.get() if async_result is not None else _digest_chunk((paths,) + self._params)
            for path, result in zip(paths, out):
                yield path, result
        self._submitted = []


def digest_files(paths, hash_algorithm="sha256", block_size=DEFAULT_BLOCK_SIZE, salt=b"", workers=None):
    """Digest many files; yields ``(path, digest_bytes_or_OSError)`` in input order.

    With ``workers`` > 1 (default: the number of CPUs) this process and ``workers - 1``
    forked children share the files, interleaved in chunks
    (:func:`~..common.workers.split_among_forks`): most files are small, so the time goes
    to per-file Python work that threads could not run in parallel, and the list is known,
    so no pool has to be fed (:class:`DigestPool` is for files still being found).
    """
    paths = list(paths)
    workers = workers or os.cpu_count() or 1
    reader = _FileReader(hash_algorithm, block_size, salt)  # checks the parameters
    if workers == 1 or len(paths) <= DigestPool.CHUNK:
        results = reader.digest_paths(paths)
    else:
        results = split_among_forks(lambda start, stop: reader.digest_paths(paths[start:stop]), len(paths), workers)
    yield from zip(paths, results)
