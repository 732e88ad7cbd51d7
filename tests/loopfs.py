"""Real filesystems on loop files, for tests that need ext4/xfs/btrfs/tmpfs mounts.

Used as a context manager; everything it mounted or attached is undone on exit,
even when the test fails.
"""
import contextlib
import os
import shutil
import subprocess
import tempfile

MKFS = {
    "ext4": ["mkfs.ext4", "-q", "-F"],
    "ext4-verity": ["mkfs.ext4", "-q", "-F", "-O", "verity"],
    "xfs": ["mkfs.xfs", "-q", "-f"],
    "btrfs": ["mkfs.btrfs", "-q", "-f"],
}
SIZES = {"btrfs": 128 << 20, "xfs": 320 << 20}


def _need(tool):
    if shutil.which(tool) is None:
        raise RuntimeError("%s is needed for this test: run scripts/setup-host.sh (requirements/apt.txt)" % tool)


@contextlib.contextmanager
def loop_filesystem(kind, size=None, workdir=None):
    """Yield ``(mountpoint, device)`` of a fresh filesystem of ``kind``.

    ``kind`` is one of ext4, ext4-verity, xfs, btrfs, or tmpfs (device is None).
    """
    base = tempfile.mkdtemp(prefix="cfsf-loopfs-", dir=workdir)
    mnt = os.path.join(base, "mnt")
    os.mkdir(mnt)
    device = None
    mounted = False
    try:
        if kind == "tmpfs":
            subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", mnt], check=True)
            mounted = True
            yield mnt, None
            return
        _need(MKFS[kind][0])
        image = os.path.join(base, "disk.img")
        with open(image, "wb") as f:
            f.truncate(size or SIZES.get(kind, 64 << 20))
        subprocess.run(MKFS[kind] + [image], check=True, stdout=subprocess.DEVNULL)
        device = subprocess.run(["losetup", "--find", "--show", image], check=True, stdout=subprocess.PIPE,
                                universal_newlines=True).stdout.strip()
        subprocess.run(["mount", "-t", kind.split("-")[0], device, mnt], check=True)
        mounted = True
        yield mnt, device
    finally:
        if mounted:
            subprocess.run(["umount", mnt], check=False)
        if device:
            subprocess.run(["losetup", "-d", device], check=False)
        shutil.rmtree(base, ignore_errors=True)
