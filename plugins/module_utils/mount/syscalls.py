# -*- coding: utf-8 -*-
# Copyright: composefs.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The kernel's mount interfaces through ctypes: the new mount API, umount2, and loop devices.

The new mount API (Linux 5.2): ``fsopen`` gives a filesystem context,
``fsconfig`` sets its parameters one by one (so paths need no escaping, and a
refused parameter is refused by name, with the kernel's reason readable from
the context), ``fsmount`` makes a *detached* mount of it, and ``move_mount``
attaches a detached mount somewhere (or, with ``MOVE_MOUNT_BENEATH``, Linux 6.5,
beneath the mount on top of a path). ``open_tree`` gives a mount by path as a
file descriptor, optionally as a detached clone.

Since Linux 5.1 new system calls carry the same number on every architecture
(the asm-generic table; alpha excepted), so the numbers below hold for x86_64,
aarch64, ppc64le, s390x and riscv64 alike.

Loop devices: a free one from ``/dev/loop-control`` (``LOOP_CTL_GET_FREE``),
bound to an open file with ``LOOP_CONFIGURE`` (Linux 5.8) read-only, with
direct I/O and autoclear: the device detaches itself when its last user (the
EROFS superblock) goes away, so nothing needs cleaning up later.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import ctypes
import errno
import fcntl
import os
import struct
import time

NR_OPEN_TREE = 428
NR_MOVE_MOUNT = 429
NR_FSOPEN = 430
NR_FSCONFIG = 431
NR_FSMOUNT = 432
NR_OPENAT2 = 437

FSOPEN_CLOEXEC = 0x1
FSCONFIG_SET_FLAG = 0
FSCONFIG_SET_STRING = 1
FSCONFIG_CMD_CREATE = 6
FSMOUNT_CLOEXEC = 0x1
MOUNT_ATTR_RDONLY = 0x1
MOVE_MOUNT_F_EMPTY_PATH = 0x4
MOVE_MOUNT_T_EMPTY_PATH = 0x40
MOVE_MOUNT_BENEATH = 0x200
OPEN_TREE_CLONE = 0x1
OPEN_TREE_CLOEXEC = os.O_CLOEXEC
AT_FDCWD = -100
AT_EMPTY_PATH = 0x1000
MNT_DETACH = 0x2
UMOUNT_NOFOLLOW = 0x8
RESOLVE_NO_SYMLINKS = 0x04

LOOP_CONTROL = "/dev/loop-control"
LOOP_CTL_GET_FREE = 0x4C82
LOOP_CONFIGURE = 0x4C0A
LO_FLAGS_READ_ONLY = 1
LO_FLAGS_AUTOCLEAR = 4
LO_FLAGS_DIRECT_IO = 16
LO_NAME_SIZE = 64
# struct loop_config { __u32 fd; __u32 block_size; struct loop_info64 info; __u64 __reserved[8]; }
# struct loop_info64: lo_device, lo_inode, lo_rdevice, lo_offset, lo_sizelimit (u64), lo_number,
# lo_encrypt_type, lo_encrypt_key_size, lo_flags (u32), lo_file_name[64], lo_crypt_name[64],
# lo_encrypt_key[32], lo_init[2] (u64)
LOOP_CONFIG = struct.Struct("=II QQQQQ IIII 64s64s32s 2Q 8Q")  # 304 bytes

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
_libc.umount2.restype = ctypes.c_int


class SyscallError(OSError):
    """A mount system call failed. ``call`` names it; ``log`` holds what the kernel said (fs context messages)."""

    def __init__(self, err, call, log=None):
        super(SyscallError, self).__init__(err, os.strerror(err))
        self.call = call
        self.log = list(log or [])

    def __str__(self):
        text = "%s: %s" % (self.call, self.strerror)
        if self.log:
            text += " (kernel: %s)" % "; ".join(self.log)
        return text


def _arg(value):
    if value is None:
        return None
    if isinstance(value, bytes):
        return ctypes.c_char_p(value)
    if isinstance(value, str):
        return ctypes.c_char_p(os.fsencode(value))
    return ctypes.c_long(value)


def _syscall(call, number, *args):
    ret = _libc.syscall(ctypes.c_long(number), *[_arg(a) for a in args])
    if ret < 0:
        raise SyscallError(ctypes.get_errno(), call)
    return ret


class FsContext:
    """A filesystem context (``fsopen``): set parameters, create the superblock, make a detached mount.

    Every failure raises :class:`SyscallError` naming the parameter and carrying
    the messages the kernel logged into the context.
    """

    def __init__(self, fstype):
        self.fstype = fstype
        self.fd = _syscall("fsopen(%s)" % fstype, NR_FSOPEN, fstype, FSOPEN_CLOEXEC)

    def messages(self):
        """Drain the context's log: the kernel's own words (``e``rror, ``w``arning, ``i``nfo lines)."""
        out = []
        for _i in range(64):
            try:
                msg = os.read(self.fd, 4096)
            except OSError:
                break
            if not msg:
                break
            out.append(msg.decode("utf-8", "replace").strip())
        return out

    def _config(self, call, cmd, key, value):
        try:
            _syscall(call, NR_FSCONFIG, self.fd, cmd, key, value, 0)
        except SyscallError as exc:
            exc.log = self.messages()
            raise

    def set_flag(self, key):
        self._config("fsconfig(%s, %s)" % (self.fstype, key), FSCONFIG_SET_FLAG, key, None)

    def set_string(self, key, value):
        self._config("fsconfig(%s, %s=%s)" % (self.fstype, key, value), FSCONFIG_SET_STRING, key, value)

    def create(self):
        self._config("fsconfig(%s, FSCONFIG_CMD_CREATE)" % self.fstype, FSCONFIG_CMD_CREATE, None, None)

    def mount(self, attr_flags=0):
        """A detached mount of the created superblock, as a file descriptor (close it to let it go)."""
        try:
            return _syscall("fsmount(%s)" % self.fstype, NR_FSMOUNT, self.fd, FSMOUNT_CLOEXEC, attr_flags)
        except SyscallError as exc:
            exc.log = self.messages()
            raise

    def close(self):
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()


def move_mount(mount_fd, target, beneath=False, target_fd=None):
    """Attach the mount behind ``mount_fd`` at ``target`` (beneath the top mount there with ``beneath``).

    With ``target_fd`` (an ``O_PATH`` descriptor of the mount point) the mount
    goes exactly there, ``target`` only names it in messages: nothing is looked
    up by name again, so a path swapped for a symlink meanwhile changes nothing.
    """
    flags = MOVE_MOUNT_F_EMPTY_PATH | (MOVE_MOUNT_BENEATH if beneath else 0)
    call = "move_mount(%s%s)" % (target, ", MOVE_MOUNT_BENEATH" if beneath else "")
    if target_fd is not None:
        _syscall(call, NR_MOVE_MOUNT, mount_fd, b"", target_fd, b"", flags | MOVE_MOUNT_T_EMPTY_PATH)
    else:
        _syscall(call, NR_MOVE_MOUNT, mount_fd, b"", AT_FDCWD, target, flags)


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


def open_no_symlinks(path, flags):
    """``openat2(path, flags, RESOLVE_NO_SYMLINKS)``: ELOOP when any component of ``path`` is a symlink.

    Kernels before 5.6 (ENOSYS) get ``O_NOFOLLOW`` on the last component, and
    ELOOP when the path is not its own realpath (a symlink further up).
    """
    how = _OpenHow(flags | os.O_CLOEXEC, 0, RESOLVE_NO_SYMLINKS)
    ret = _libc.syscall(ctypes.c_long(NR_OPENAT2), ctypes.c_long(AT_FDCWD), ctypes.c_char_p(os.fsencode(path)),
                        ctypes.byref(how), ctypes.c_size_t(ctypes.sizeof(how)))
    if ret >= 0:
        return ret
    err = ctypes.get_errno()
    if err != errno.ENOSYS:
        raise SyscallError(err, "openat2(%s, RESOLVE_NO_SYMLINKS)" % path)
    if os.path.realpath(path) != os.path.normpath(path):
        raise SyscallError(errno.ELOOP, "open(%s)" % path)
    return os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC)


def open_tree(path, clone=False):
    """The mount at ``path`` as a file descriptor; with ``clone`` a detached copy of it."""
    flags = OPEN_TREE_CLOEXEC | (OPEN_TREE_CLONE if clone else 0)
    return _syscall("open_tree(%s)" % path, NR_OPEN_TREE, AT_FDCWD, path, flags)


def umount2(path, flags=0):
    if _libc.umount2(os.fsencode(path), flags) != 0:
        raise SyscallError(ctypes.get_errno(), "umount2(%s%s)" % (path, ", MNT_DETACH" if flags & MNT_DETACH else ""))


def fd_mount_id(fd):
    """The mount id of the mount ``fd`` is on (``mnt_id`` of /proc/self/fdinfo), or None."""
    try:
        with open("/proc/self/fdinfo/%d" % fd) as f:
            for line in f:
                if line.startswith("mnt_id:"):
                    return int(line.split(":", 1)[1])
    except (OSError, ValueError):
        pass
    return None


def attach_loop(backing_fd, name="", direct_io=True, attempts=20):
    """Bind ``backing_fd`` to a free loop device: read-only, direct I/O, autoclear, 4096-byte blocks.

    Returns ``(loop_fd, device_path)``. Keep ``loop_fd`` open until the device
    is in use (mounted), then close it: autoclear detaches the device once its
    last user goes, and closing it unused frees it at once.
    """
    try:
        ctl = os.open(LOOP_CONTROL, os.O_RDWR | os.O_CLOEXEC)
    except OSError as exc:
        raise SyscallError(exc.errno, "open(%s)" % LOOP_CONTROL)
    try:
        for _attempt in range(attempts):
            try:
                number = fcntl.ioctl(ctl, LOOP_CTL_GET_FREE)
            except OSError as exc:
                raise SyscallError(exc.errno, "ioctl(%s, LOOP_CTL_GET_FREE)" % LOOP_CONTROL)
            device = "/dev/loop%d" % number
            try:
                fd = os.open(device, os.O_RDWR | os.O_CLOEXEC)
            except FileNotFoundError:
                time.sleep(0.05)  # the device node is on its way
                continue
            except OSError as exc:
                raise SyscallError(exc.errno, "open(%s)" % device)
            flags = LO_FLAGS_READ_ONLY | LO_FLAGS_AUTOCLEAR | (LO_FLAGS_DIRECT_IO if direct_io else 0)
            try:
                _configure_loop(fd, backing_fd, flags, name)
            except OSError as exc:
                os.close(fd)
                if exc.errno == errno.EBUSY:
                    continue  # another process took this device first
                if exc.errno == errno.EINVAL and flags & LO_FLAGS_DIRECT_IO:
                    # Kernels that refuse direct I/O on this backing file: try once without it.
                    return attach_loop(backing_fd, name, direct_io=False, attempts=attempts)
                raise SyscallError(exc.errno, "ioctl(%s, LOOP_CONFIGURE)" % device)
            return fd, device
        raise SyscallError(errno.EBUSY, "ioctl(LOOP_CONFIGURE): no free loop device after %d attempts" % attempts)
    finally:
        os.close(ctl)


def _configure_loop(fd, backing_fd, flags, name):
    file_name = os.fsencode(name)[:LO_NAME_SIZE - 1]
    config = LOOP_CONFIG.pack(backing_fd, 4096, 0, 0, 0, 0, 0, 0, 0, 0, flags, file_name, b"", b"", 0, 0,
                              *([0] * 8))
    fcntl.ioctl(fd, LOOP_CONFIGURE, config)


def loop_backing_files():
    """``{'/dev/loopN': backing file}`` of every bound loop device, from sysfs."""
    out = {}
    try:
        names = os.listdir("/sys/block")
    except OSError:
        return out
    for name in names:
        if not name.startswith("loop"):
            continue
        try:
            with open("/sys/block/%s/loop/backing_file" % name) as f:
                out["/dev/" + name] = f.read().rstrip("\n")
        except OSError:
            continue
    return out
