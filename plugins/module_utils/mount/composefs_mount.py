# -*- coding: utf-8 -*-
# Copyright: composefs.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Mounting a checked composefs image, as libcomposefs (``lcfs_mount_fd``) does it, and unmounting it.

1. The image, already open and checked (:mod:`.verify`), is mounted as EROFS,
   read-only: file-backed (``source=/proc/self/fd/N``, Linux 6.12 with
   ``CONFIG_EROFS_FS_BACKED_BY_FILE``), else (``ENOTBLK``) through a loop device
   bound to the same file descriptor with ``LOOP_CONFIGURE`` (read-only, direct
   I/O, autoclear). ``noacl`` unless the image carries ACLs.
2. That EROFS mount is attached at a private temporary mount point, a fresh
   ``mkdtemp`` directory below ``/run/composefs-fleet/tmp`` (mode 0700).
3. The overlay is created with the new mount API: ``source=composefs``,
   ``metacopy=on``, ``redirect_dir=on``, ``verity=require`` when the kernel is
   to enforce fs-verity, ``lowerdir+`` = the temporary mount point, one
   ``datadir+`` per basedir, ``upperdir``/``workdir`` if given (Linux 6.7).
   Kernels 6.5 and 6.6 get the legacy ``lowerdir=TMP::BASEDIR1::BASEDIR2``
   string instead. ``fsmount`` makes it a detached mount, read-only unless it
   has an upper directory and ``ro`` is off.
4. The temporary EROFS mount is detached and its directory removed: the
   overlay holds its own reference to the EROFS (and so the loop device).
5. The detached overlay is attached at the path (``move_mount``). To replace a
   mount of ours, it is attached *beneath* it (``MOVE_MOUNT_BENEATH``, Linux 6.5),
   then the old one, now on top, is detached: until that last step the old
   mount stays in place, and any failure before it leaves it untouched.

With the ``mount.composefs`` helper, steps 1-4 are the helper's: it mounts at a
private staging directory, from ``/proc/self/fd/N`` of the checked image (so it
opens the very file that was checked), and a detached clone of that mount
(``open_tree``) goes through step 5.

Every failure leaves nothing behind: the temporary directory and mount, the
loop device (autoclear) and the detached overlay (a closed file descriptor)
all go away on the error path.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import errno
import os
import re
import shutil
import subprocess
import tempfile

from ansible_collections.composefs.fleet.plugins.module_utils.mount import syscalls
from ansible_collections.composefs.fleet.plugins.module_utils.mount.errors import MountError
from ansible_collections.composefs.fleet.plugins.module_utils.mount.syscalls import SyscallError
from ansible_collections.composefs.fleet.plugins.module_utils.mount.state import MOUNT_SOURCE, TMP_DIR

HELPER = "mount.composefs"
# Where mount(8) looks for helpers, then the usual binary directories.
HELPER_DIRS = ("/sbin", "/usr/sbin", "/usr/local/sbin", "/usr/local/bin", "/usr/bin", "/bin")

# The kernel features composefs mounts use, with the first mainline release that has each.
FEATURES = {
    "new-mount-api": ((5, 2), "the new mount API (fsopen/fsconfig/fsmount)"),
    "loop-configure": ((5, 8), "loop devices configured with LOOP_CONFIGURE"),
    "data-only-lowers": ((6, 5), "overlayfs data-only lower layers (lowerdir=...::..., datadir+), which composefs needs"),
    "move-beneath": ((6, 5), "move_mount(MOVE_MOUNT_BENEATH), which replacing a mounted image in place needs"),
    "overlay-verity": ((6, 6), "overlayfs verity=require, which verity: require needs (use verity: userspace instead)"),
    "lowerdir-plus": ((6, 7), "overlayfs lowerdir+/datadir+"),
    "erofs-file": ((6, 12), "file-backed EROFS (CONFIG_EROFS_FS_BACKED_BY_FILE)"),
}
_RELEASE = re.compile(r"^(\d+)\.(\d+)")


def kernel_release():
    return os.uname()[2]


def kernel_version(release=None):
    match = _RELEASE.match(release or kernel_release())
    return (int(match.group(1)), int(match.group(2))) if match else None


def feature_error(feature, detail=None):
    minimum, what = FEATURES[feature]
    message = "this kernel (%s) lacks %s: it needs Linux %d.%d or later" % (kernel_release(), what, minimum[0], minimum[1])
    if detail:
        message += " (%s)" % detail
    return MountError(message, "kernel-feature")


def _fsopen(fstype):
    try:
        return syscalls.FsContext(fstype)
    except SyscallError as exc:
        if exc.errno == errno.ENOSYS:
            raise feature_error("new-mount-api")
        if exc.errno == errno.ENODEV:
            config = {"erofs": "CONFIG_EROFS_FS", "overlay": "CONFIG_OVERLAY_FS"}.get(fstype, fstype)
            raise MountError("this kernel (%s) has no %s filesystem (%s, and the module is not loadable); composefs "
                             "needs it" % (kernel_release(), fstype, config), "kernel-feature")
        if exc.errno == errno.EPERM:
            raise not_root_error()
        raise MountError("cannot create a %s filesystem context: %s" % (fstype, exc))


def not_root_error():
    return MountError("mounting composefs needs root (CAP_SYS_ADMIN in the initial user namespace): rootless "
                      "composefs mounts are not supported; run the task with become: true", "not-root")


def probe_overlay(kernel_verity):
    """Fail early, with the feature and the kernel it needs, where overlayfs cannot mount composefs.

    Nothing is created: only parameters are tried on a filesystem context.
    Overlayfs before 6.5 has no mount-API parser of its own, so it accepts any
    parameter, even ``unsupported``: such kernels lack data-only lower layers.
    """
    with _fsopen("overlay") as ctx:
        try:
            ctx.set_string("unsupported", "unsupported")
        except SyscallError:
            pass
        else:
            raise feature_error("data-only-lowers")
        if kernel_verity:
            try:
                ctx.set_string("verity", "require")
            except SyscallError as exc:
                raise feature_error("overlay-verity", "; ".join(exc.log) or str(exc))


class Detached:
    """A composefs overlay mount not attached anywhere yet; closing it lets the kernel free it."""

    def __init__(self, fd, backing, api):
        self.fd = fd
        self.backing = backing  # file | loop | helper
        self.api = api  # lowerdir+ | lowerdir | helper

    def close(self):
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def _erofs_from(source, has_acl):
    with _fsopen("erofs") as ctx:
        ctx.set_string("source", source)
        ctx.set_flag("ro")
        if not has_acl:
            try:
                ctx.set_flag("noacl")
            except SyscallError:
                pass  # kernels without EROFS ACL support have no such option, and no ACLs to hide
        ctx.create()
        return ctx.mount(syscalls.MOUNT_ATTR_RDONLY)


def _mount_erofs(check, backing):
    """A detached read-only EROFS mount of the checked image; returns ``(fd, 'file' | 'loop')``."""
    if backing in ("auto", "file"):
        try:
            return _erofs_from("/proc/self/fd/%d" % check.fd, check.has_acl), "file"
        except SyscallError as exc:
            if exc.errno != errno.ENOTBLK or backing == "file":
                if exc.errno == errno.ENOTBLK:
                    raise feature_error("erofs-file")
                raise MountError("cannot mount image %s as EROFS: %s" % (check.path, exc))
    try:
        loop_fd, device = syscalls.attach_loop(check.fd, check.path)
    except SyscallError as exc:
        if exc.errno == errno.ENOENT:
            raise MountError("this kernel (%s) can mount the image neither file-backed (%s, Linux 6.12) nor on a loop "
                             "device (%s is missing: CONFIG_BLK_DEV_LOOP)"
                             % (kernel_release(), FEATURES["erofs-file"][1], syscalls.LOOP_CONTROL), "kernel-feature")
        if exc.errno in (errno.EINVAL, errno.ENOTTY):
            raise feature_error("loop-configure", str(exc))
        raise MountError("cannot set up a loop device for image %s: %s" % (check.path, exc))
    try:
        return _erofs_from(device, check.has_acl), "loop"
    except SyscallError as exc:
        raise MountError("cannot mount image %s (on %s) as EROFS: %s" % (check.path, device, exc))
    finally:
        os.close(loop_fd)  # autoclear: the device now lives exactly as long as the EROFS superblock


def escape_lowerdir(path):
    """A path inside a legacy ``lowerdir=`` string: ``\\`` escapes ``:`` and ``\\``."""
    return path.replace("\\", "\\\\").replace(":", "\\:")


def _overlay_common(ctx, kernel_verity):
    ctx.set_string("source", MOUNT_SOURCE)
    ctx.set_string("metacopy", "on")
    ctx.set_string("redirect_dir", "on")
    if kernel_verity:
        try:
            ctx.set_string("verity", "require")
        except SyscallError as exc:
            raise feature_error("overlay-verity", "; ".join(exc.log) or str(exc))


def _overlay_finish(ctx, upperdir, workdir, readonly):
    if upperdir:
        ctx.set_string("upperdir", upperdir)
        ctx.set_string("workdir", workdir)
    ctx.create()
    return ctx.mount(syscalls.MOUNT_ATTR_RDONLY if readonly else 0)


def _mount_overlay(lower, basedirs, upperdir, workdir, kernel_verity, readonly, api):
    """A detached composefs overlay over the EROFS at ``lower``; returns ``(fd, api used)``."""
    try:
        if api in ("auto", "lowerdir+"):
            with _fsopen("overlay") as ctx:
                _overlay_common(ctx, kernel_verity)
                try:
                    ctx.set_string("lowerdir+", lower)
                    for base in basedirs:
                        ctx.set_string("datadir+", base)
                except SyscallError as exc:
                    if exc.errno != errno.EINVAL or api != "auto":
                        raise
                else:
                    return _overlay_finish(ctx, upperdir, workdir, readonly), "lowerdir+"
        # Linux 6.5 and 6.6: the legacy string, through the same API (no comma escaping needed).
        with _fsopen("overlay") as ctx:
            _overlay_common(ctx, kernel_verity)
            ctx.set_string("lowerdir", escape_lowerdir(lower) + "".join("::" + escape_lowerdir(b) for b in basedirs))
            return _overlay_finish(ctx, upperdir, workdir, readonly), "lowerdir"
    except SyscallError as exc:
        raise MountError("overlayfs refused the composefs mount: %s" % exc)


def _tmpdir(tmp_root, prefix):
    os.makedirs(tmp_root, 0o700, exist_ok=True)
    os.chmod(tmp_root, 0o700)
    return tempfile.mkdtemp(prefix=prefix, dir=tmp_root)


def detach_quietly(path):
    try:
        syscalls.umount2(path, syscalls.MNT_DETACH)
    except SyscallError:
        pass


def _rmdir_quietly(path):
    try:
        os.rmdir(path)
    except OSError:
        pass


def build_overlay(check, basedirs, upperdir=None, workdir=None, readonly=True, tmp_root=TMP_DIR, backing="auto",
                  api="auto"):
    """Our own code: the checked image as a detached composefs overlay (:class:`Detached`).

    ``backing`` (auto, file, loop) and ``api`` (auto, lowerdir+, lowerdir) force
    a path for tests; ``auto`` is what the kernel supports.
    """
    kernel_verity = check.verity == "kernel"
    tmp = _tmpdir(tmp_root, "%s." % (check.digest or "image")[:16])
    attached = False
    erofs_fd = None
    try:
        erofs_fd, used_backing = _mount_erofs(check, backing)
        try:
            syscalls.move_mount(erofs_fd, tmp)
        except SyscallError as exc:
            raise MountError("cannot attach the EROFS at the temporary mount point %s: %s" % (tmp, exc))
        attached = True
        os.close(erofs_fd)
        erofs_fd = None
        fd, used_api = _mount_overlay(tmp, basedirs, upperdir, workdir, kernel_verity, readonly, api)
        return Detached(fd, used_backing, used_api)
    finally:
        if erofs_fd is not None:
            os.close(erofs_fd)
        if attached:
            detach_quietly(tmp)  # the overlay keeps its own reference to the EROFS
        _rmdir_quietly(tmp)


def find_helper(path_env=None):
    """The ``mount.composefs`` to use, from PATH and the usual sbin directories, or None."""
    dirs = [d for d in (path_env if path_env is not None else os.environ.get("PATH", "")).split(os.pathsep) if d]
    for d in list(HELPER_DIRS):
        if d not in dirs:
            dirs.append(d)
    return shutil.which(HELPER, path=os.pathsep.join(dirs))


def escape_helper_option(value):
    """mount.composefs reads ``\\`` as an escape inside option values: protect ``\\`` and ``,``."""
    return value.replace("\\", "\\\\").replace(",", "\\,")


def helper_options(check, basedirs, upperdir, workdir, readonly):
    for base in basedirs:
        if ":" in base:
            raise MountError("basedir %s contains ':', which mount.composefs takes as a separator; use helper: never"
                             % base, "invalid")
    options = ["basedir=" + escape_helper_option(":".join(basedirs))]
    if check.verity == "kernel":
        # digest= makes the helper measure the image itself and mount with verity=require.
        options.append("digest=" + check.digest if check.digest else "verity")
    if upperdir:
        options.append("upperdir=" + escape_helper_option(upperdir))
        options.append("workdir=" + escape_helper_option(workdir))
    if readonly:
        options.append("ro")
    return options


def helper_overlay(helper, check, basedirs, upperdir=None, workdir=None, readonly=True, tmp_root=TMP_DIR):
    """``mount.composefs`` mounts the checked image at a private staging directory; returns a detached clone."""
    staging = _tmpdir(tmp_root, "helper.")
    mounted = False
    try:
        argv = [helper, "-t", "composefs", "-o", ",".join(helper_options(check, basedirs, upperdir, workdir, readonly)),
                "/proc/self/fd/%d" % check.fd, staging]
        try:
            # No module here to call run_command (module_utils also runs in the tests/vm guest), and it has no timeout.
            # pylint: disable-next=ansible-bad-function
            proc = subprocess.run(argv, pass_fds=(check.fd,), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, universal_newlines=True, timeout=300, check=False)
        except (OSError, subprocess.SubprocessError) as exc:
            raise MountError("cannot run %s: %s" % (helper, exc), "helper")
        mounted = os.path.ismount(staging)
        if proc.returncode != 0:
            raise MountError("%s failed (exit %d): %s" % (helper, proc.returncode, proc.stdout.strip()), "helper")
        if not mounted:
            raise MountError("%s exited 0 but mounted nothing at %s" % (helper, staging), "helper")
        try:
            fd = syscalls.open_tree(staging, clone=True)
        except SyscallError as exc:
            raise MountError("cannot take the helper's mount at %s: %s" % (staging, exc))
        return Detached(fd, "helper", "helper")
    finally:
        if mounted:
            detach_quietly(staging)
        _rmdir_quietly(staging)


def open_mount_point(path):
    """The mount point as an ``O_PATH`` descriptor, reached without following any symlink (ELOOP otherwise).

    Mounting goes to this descriptor, not to the name, so a symlink planted at
    ``path`` (or above it) after the checks is refused, never followed.
    """
    try:
        return syscalls.open_no_symlinks(path, os.O_PATH | os.O_DIRECTORY)
    except SyscallError as exc:
        if exc.errno == errno.ELOOP:
            raise MountError("mount point %s is, or goes through, a symlink; refusing to mount over where it points "
                             "(give the real path: %s)" % (path, os.path.realpath(path)), "invalid")
        if exc.errno == errno.ENOTDIR:
            raise MountError("mount point %s exists and is not a directory" % path, "invalid")
        raise MountError("cannot open the mount point %s: %s" % (path, exc))


def attach(detached, path, replace=None):
    """Attach ``detached`` at ``path``; with ``replace`` (the MountInfo of our mount there), in its place.

    Replacing mounts the new overlay beneath the old one, then detaches the old
    one (lazily: processes still using files of the old image keep them until
    they close them; new lookups see the new image). A failure before the old
    mount is detached leaves it exactly as it was. The path is opened once,
    without following symlinks (:func:`open_mount_point`).
    """
    target = open_mount_point(path)
    try:
        if replace is None:
            try:
                syscalls.move_mount(detached.fd, path, target_fd=target)
            except SyscallError as exc:
                raise MountError("cannot attach the composefs mount at %s: %s" % (path, exc))
            return
        if syscalls.fd_mount_id(target) != replace.mount_id:
            raise MountError("the mount at %s changed while this module ran (mount id %s, expected %d); nothing was "
                             "replaced" % (path, syscalls.fd_mount_id(target), replace.mount_id), "system")
        try:
            syscalls.move_mount(detached.fd, path, beneath=True, target_fd=target)
        except SyscallError as exc:
            version = kernel_version()
            if exc.errno == errno.EINVAL and version is not None and version < FEATURES["move-beneath"][0]:
                raise feature_error("move-beneath", "unmount first (state: unmounted), then mount the new image")
            raise MountError("cannot mount the new image beneath the current one at %s: %s; the current mount is "
                             "unchanged" % (path, exc))
        try:
            syscalls.umount2("/proc/self/fd/%d" % target, syscalls.MNT_DETACH)
        except SyscallError as exc:
            raise MountError("the new image is mounted beneath the old one at %s, but the old one could not be "
                             "detached (%s): the old image is still what %s shows" % (path, exc, path))
    finally:
        os.close(target)


def unmount(path, inside=()):
    """Unmount the mount on top of ``path`` (the caller made sure it is ours); busy is an error, nothing forced."""
    try:
        syscalls.umount2(path, syscalls.UMOUNT_NOFOLLOW)
    except SyscallError as exc:
        if exc.errno == errno.EBUSY:
            why = "open files, working directories or mounts inside it"
            if inside:
                why = "mounts inside it: %s" % ", ".join(e.mountpoint for e in inside[:5])
            raise MountError("cannot unmount %s: it is busy (%s); find the processes with `fuser -vm %s`. Nothing "
                             "was changed" % (path, why, path), "busy")
        if exc.errno == errno.EPERM:
            raise not_root_error()
        raise MountError("cannot unmount %s: %s" % (path, exc))
