"""Tampering with a file's data behind the filesystem's back (guest tier helpers)."""
import fcntl
import os
import struct

FS_IOC_FIEMAP = 0xC020660B  # _IOWR('f', 11, struct fiemap)
FIEMAP_FLAG_SYNC = 0x1
FIEMAP_EXTENT_SIZE = 56
# Extent flags under which fe_physical is not a plain byte offset of the data:
# UNKNOWN DELALLOC ENCODED ENCRYPTED NOT_ALIGNED DATA_INLINE DATA_TAIL.
FIEMAP_EXTENT_UNUSABLE = 0x2 | 0x4 | 0x8 | 0x80 | 0x100 | 0x200 | 0x400


def physical_offset(path, logical):
    """Byte offset on the block device of the file's byte ``logical`` (FIEMAP)."""
    count = 32
    buf = bytearray(struct.pack("<QQIIII", 0, 0xFFFFFFFFFFFFFFFF, FIEMAP_FLAG_SYNC, 0, count, 0) + bytes(count * FIEMAP_EXTENT_SIZE))
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.ioctl(fd, FS_IOC_FIEMAP, buf, True)
    finally:
        os.close(fd)
    mapped = struct.unpack_from("<I", buf, 20)[0]
    for i in range(mapped):
        fe_logical, fe_physical, fe_length = struct.unpack_from("<QQQ", buf, 32 + i * FIEMAP_EXTENT_SIZE)
        fe_flags = struct.unpack_from("<I", buf, 32 + i * FIEMAP_EXTENT_SIZE + 40)[0]
        if fe_logical <= logical < fe_logical + fe_length:
            if fe_flags & FIEMAP_EXTENT_UNUSABLE:
                raise AssertionError("extent of %s has flags %#x" % (path, fe_flags))
            return fe_physical + logical - fe_logical
    raise AssertionError("FIEMAP maps no extent at byte %d of %s (%d extents)" % (logical, path, mapped))


def drop_caches():
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")


def corrupt_file_block(path, device, logical):
    """Flip the first bytes of the file's block at ``logical`` directly on ``device``, then drop the page cache."""
    offset = physical_offset(path, logical)
    drop_caches()
    fd = os.open(device, os.O_RDWR)
    try:
        old = os.pread(fd, 16, offset)
        os.pwrite(fd, bytes(b ^ 0xFF for b in old), offset)
        os.fsync(fd)
    finally:
        os.close(fd)
    drop_caches()
