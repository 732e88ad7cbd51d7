"""Real filesystems on loop files, for every test tier (needs root, losetup, mkfs.*).

``loop_filesystem(kind, workdir)`` is a context manager that makes, mounts and yields
a :class:`Mounted`; everything (mount, loop device, image) goes away on exit, also
when the test fails. ``KINDS`` lists what it can make: ext4 with and without the
verity feature, ext4 with 1 KiB blocks, xfs, btrfs, tmpfs and an overlay.

``fleet_filesystems`` is a pytest fixture (module scope) with all of them at once,
as a dict kind -> Mounted; import it into a test module to use it.
"""
import contextlib
import dataclasses
import os
import shutil
import subprocess
import tempfile
from typing import Optional

import pytest

SBIN = ("/usr/sbin", "/sbin", "/usr/bin", "/bin")

# kind -> (fstype, mkfs argv before the image path, size in MiB)
KINDS = {
    "ext4-verity": ("ext4", ("mkfs.ext4", "-q", "-F", "-b", "4096", "-O", "verity"), 64),
    "ext4-plain": ("ext4", ("mkfs.ext4", "-q", "-F", "-b", "4096", "-O", "^verity"), 64),
    "ext4-1k": ("ext4", ("mkfs.ext4", "-q", "-F", "-b", "1024", "-O", "verity"), 64),
    "xfs": ("xfs", ("mkfs.xfs", "-q", "-f"), 320),
    "btrfs": ("btrfs", ("mkfs.btrfs", "-q", "-f"), 128),
    "tmpfs": ("tmpfs", (), 0),
    "overlay": ("overlay", (), 0),
}


class LoopFsError(RuntimeError):
    pass


@dataclasses.dataclass
class Mounted:
    kind: str
    fstype: str
    mountpoint: str
    device: Optional[str] = None  # the loop device, for block filesystems
    image: Optional[str] = None


def which(cmd):
    found = shutil.which(cmd) or shutil.which(cmd, path=os.pathsep.join(SBIN))
    if not found:
        raise LoopFsError("%s is missing: run scripts/setup-host.sh (requirements/apt.txt)" % cmd)
    return found


def run(*argv):
    argv = [which(argv[0])] + list(argv[1:])
    proc = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise LoopFsError("%s failed (exit %d): %s%s" % (" ".join(argv), proc.returncode, proc.stdout, proc.stderr))
    return proc.stdout


def _umount(path):
    subprocess.run([which("umount"), path], stdin=subprocess.DEVNULL, capture_output=True, check=False)
    if os.path.ismount(path):
        subprocess.run([which("umount"), "-l", path], stdin=subprocess.DEVNULL, capture_output=True, check=False)


@contextlib.contextmanager
def loop_filesystem(kind, workdir):
    """Make and mount a ``kind`` filesystem below ``workdir``; unmount and detach on exit."""
    if os.geteuid() != 0:
        raise LoopFsError("making loop filesystems needs root")
    fstype, mkfs, size = KINDS[kind]
    base = tempfile.mkdtemp(prefix="%s-" % kind, dir=workdir)
    mnt = os.path.join(base, "mnt")
    os.mkdir(mnt)
    device = None
    image = None
    mounted = False
    try:
        if kind == "tmpfs":
            run("mount", "-t", "tmpfs", "-o", "size=64m", "verity-facts-tmpfs", mnt)
        elif kind == "overlay":
            for sub in ("lower", "upper", "work"):
                os.mkdir(os.path.join(base, sub))
            run("mount", "-t", "overlay", "verity-facts-overlay", "-o",
                "lowerdir=%s,upperdir=%s,workdir=%s" % tuple(os.path.join(base, s) for s in ("lower", "upper", "work")), mnt)
        else:
            image = os.path.join(base, "fs.img")
            with open(image, "wb") as f:
                f.truncate(size * 1024 * 1024)
            run(*(list(mkfs) + [image]))
            device = run("losetup", "--find", "--show", image).strip()
            run("mount", "-t", fstype, device, mnt)
        mounted = True
        yield Mounted(kind=kind, fstype=fstype, mountpoint=mnt, device=device, image=image)
    finally:
        try:
            if mounted or os.path.ismount(mnt):
                _umount(mnt)
        finally:
            if device:
                subprocess.run([which("losetup"), "-d", device], stdin=subprocess.DEVNULL, capture_output=True, check=False)
            shutil.rmtree(base, ignore_errors=True)


@contextlib.contextmanager
def all_filesystems(workdir, kinds=tuple(KINDS)):
    with contextlib.ExitStack() as stack:
        yield dict((kind, stack.enter_context(loop_filesystem(kind, workdir))) for kind in kinds)


@pytest.fixture(scope="module")
def fleet_filesystems(tmp_path_factory):
    """Every kind of KINDS mounted at once (module scope): dict kind -> Mounted."""
    try:
        with all_filesystems(str(tmp_path_factory.mktemp("loopfs"))) as mounted:
            yield mounted
    except LoopFsError as exc:
        pytest.fail(str(exc), pytrace=False)
