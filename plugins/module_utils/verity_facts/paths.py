# -*- coding: utf-8 -*-
# Copyright: composefs.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Whether fs-verity can be enforced on the filesystem under a path: supported, unsupported or unknown.

:func:`classify` and :func:`path_entry` are pure: they take the mount (a MountInfo),
the ``kernel`` facts and what was read from the block device, and say why. The
functions below them read this host.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import errno
import os
import stat

from ansible_collections.composefs.fleet.plugins.module_utils.verity_facts.superblock import (
    SuperblockError,
    parse_ext4_superblock,
    read_ext4_superblock,
)

SUPPORTED = "supported"
UNSUPPORTED = "unsupported"
UNKNOWN = "unknown"
VERDICTS = (SUPPORTED, UNSUPPORTED, UNKNOWN)

KERNEL_WITHOUT_VERITY = "kernel built without CONFIG_FS_VERITY"
# composefs enables and measures fs-verity with 4096-byte Merkle tree blocks; the kernel
# refuses blocks larger than the filesystem block (EINVAL).
COMPOSEFS_VERITY_BLOCK = 4096

NETWORK_FILESYSTEMS = frozenset((
    "nfs", "nfs4", "cifs", "smb3", "smbfs", "9p", "ceph", "glusterfs", "afs", "lustre", "gpfs",
    "virtiofs", "davfs", "ncpfs", "coda", "orangefs", "beegfs", "sshfs",
))
# Filesystems without fs-verity in Linux 6.x, with what to say about them.
NO_VERITY = {
    "xfs": "xfs has no fs-verity",
    "tmpfs": "tmpfs has no fs-verity",
    "ramfs": "ramfs has no fs-verity",
    "overlay": "overlay has no fs-verity of its own (composefs checks the digests of the files in its data layers)",
    "erofs": "erofs is read-only and has no fs-verity",
    "squashfs": "squashfs is read-only and has no fs-verity",
    "iso9660": "iso9660 has no fs-verity",
    "vfat": "vfat has no fs-verity",
    "msdos": "msdos has no fs-verity",
    "exfat": "exfat has no fs-verity",
    "ntfs": "ntfs has no fs-verity",
    "ntfs3": "ntfs3 has no fs-verity",
    "zfs": "zfs has no fs-verity",
    "bcachefs": "bcachefs has no fs-verity",
    "nilfs2": "nilfs2 has no fs-verity",
    "jfs": "jfs has no fs-verity",
    "reiserfs": "reiserfs has no fs-verity",
    "hfsplus": "hfsplus has no fs-verity",
    "udf": "udf has no fs-verity",
    "ext2": "ext2 has no fs-verity: the filesystem must be mounted as ext4, with the verity feature",
    "ext3": "ext3 has no fs-verity: the filesystem must be mounted as ext4, with the verity feature",
    "proc": "proc has no fs-verity",
    "sysfs": "sysfs has no fs-verity",
    "devtmpfs": "devtmpfs has no fs-verity",
}


def is_network(fstype):
    """Network and FUSE filesystems: fs-verity there is up to the server or daemon."""
    return fstype in NETWORK_FILESYSTEMS or fstype in ("fuse", "fuseblk") or fstype.startswith("fuse.")


def _filesystem_verdict(fstype, kernel, block):
    """``(verdict, reason)`` for the filesystem alone, given the kernel facts (fs_verity True or None)."""
    block = block or {}
    device = block.get("device") or block.get("source") or "<device>"
    kernel_unknown = kernel.get("fs_verity") is None
    unknown_kernel = "whether the kernel has CONFIG_FS_VERITY is unknown"
    if fstype == "ext4":
        ext4 = block.get("ext4")
        if ext4 is None:
            why = block.get("ext4_error") or "the superblock was not read"
            return UNKNOWN, "ext4, but its verity feature is unknown (%s): run as root, or set probe" % why
        if not ext4["verity"]:
            return UNSUPPORTED, "ext4 without the verity feature: tune2fs -O verity %s while unmounted (e2fsprogs >= 1.45)" % device
        if ext4.get("block_size") and ext4["block_size"] < COMPOSEFS_VERITY_BLOCK:
            return UNSUPPORTED, ("ext4 block size %d is below the %d-byte fs-verity blocks composefs uses: make the filesystem with "
                                 "mkfs.ext4 -b %d -O verity" % (ext4["block_size"], COMPOSEFS_VERITY_BLOCK, COMPOSEFS_VERITY_BLOCK))
        if kernel_unknown:
            return UNKNOWN, "ext4 with the verity feature, but %s" % unknown_kernel
        return SUPPORTED, "ext4 with the verity feature"
    if fstype == "btrfs":
        if kernel_unknown:
            return UNKNOWN, "btrfs, but %s" % unknown_kernel
        return SUPPORTED, "btrfs (fs-verity needs no feature flag)"
    if fstype == "f2fs":
        features = block.get("f2fs_features")
        if features is None:
            return UNKNOWN, "f2fs, but its verity feature is unknown (/sys/fs/f2fs/<device>/features was not read): set probe"
        if "verity" not in features:
            return UNSUPPORTED, "f2fs without the verity feature: fsck.f2fs -O verity %s while unmounted" % device
        if kernel_unknown:
            return UNKNOWN, "f2fs with the verity feature, but %s" % unknown_kernel
        return SUPPORTED, "f2fs with the verity feature"
    if is_network(fstype):
        kind = "a FUSE" if fstype.startswith("fuse") else "a network"
        return UNKNOWN, "%s is %s filesystem: fs-verity there depends on the server or daemon; set probe to try it" % (fstype, kind)
    if fstype in (kernel.get("verity_filesystems") or ()):
        return UNKNOWN, "the kernel lists fs-verity for %s, whose per-filesystem state this module cannot read: set probe" % fstype
    if fstype == "overlay" and block.get("source") == "composefs":
        return UNSUPPORTED, ("a composefs mount: fs-verity is enforced on the files of its data directory, not here; "
                             "examine the object store (for example /sysroot/ostree/repo)")
    if fstype in NO_VERITY:
        return UNSUPPORTED, NO_VERITY[fstype]
    return UNKNOWN, "unknown filesystem type %s: set probe to find out" % (fstype or "(none)")


def classify(fstype, kernel, block=None):
    """``(verdict, [reasons])``: can fs-verity be enforced on this filesystem under this kernel?

    ``kernel`` is the kernel facts (``fs_verity`` True, False or None, ``verity_filesystems``);
    ``block`` what was read from the device: ``device``, ``ext4`` (parsed superblock) or
    ``ext4_error``, ``f2fs_features``. A kernel without fs-verity decides alone; the
    filesystem's own reason follows when it would be unsupported anyway.
    """
    verdict, reason = _filesystem_verdict(fstype, kernel, block)
    if kernel.get("fs_verity") is False:
        reasons = [KERNEL_WITHOUT_VERITY]
        if verdict == UNSUPPORTED:
            reasons.append(reason)
        return UNSUPPORTED, reasons
    return verdict, [reason]


UNSUPPORTED_ERRNOS = (errno.EOPNOTSUPP, errno.ENOTTY, errno.ENOSYS)


def apply_probe(verdict, reasons, probe):
    """Fold a probe result (see probe.py) into the verdict: the kernel's own answer beats inference.

    Success means supported; EOPNOTSUPP, ENOTTY or ENOSYS mean unsupported; any other
    outcome (no write access, read-only mount...) leaves the verdict as it was.
    The probe's reason comes first, then the reasons inferred without it.
    """
    if not probe or probe.get("result") == "not_run":
        return verdict, reasons
    if not probe.get("performed"):
        return verdict, reasons + ["probe could not run: %s" % probe.get("message")]
    if probe.get("result") == "enabled":
        return SUPPORTED, ["probe: FS_IOC_ENABLE_VERITY succeeded on a scratch file"] + reasons
    if probe.get("result") == "refused" and probe.get("errno") in UNSUPPORTED_ERRNOS:
        return UNSUPPORTED, ["probe: %s" % probe.get("message")] + reasons
    return verdict, reasons + ["probe inconclusive: %s" % probe.get("message")]


def path_entry(path, mount, kernel, block=None, probe=None, real=None):
    """The ``paths[]`` entry of an existing path. Pure.

    ``mount`` is its MountInfo (or None when no mount holds it), ``block`` what was
    read from the device (see :func:`classify`), ``probe`` the probe result or None.
    """
    block = block or {}
    entry = dict(path=path, real_path=real or path)
    if mount is None:
        entry.update(mountpoint=None, device=None, source=None, fstype=None, mount_options=None, read_only=None,
                     verity=UNKNOWN, reason="no mount in /proc/self/mountinfo holds this path", reasons=["no mount holds this path"])
        return entry
    options = mount.options.split(",")
    entry.update(
        mountpoint=mount.mountpoint,
        device=block.get("device"),
        source=mount.source,
        major_minor="%d:%d" % (mount.major, mount.minor),
        fstype=mount.fstype,
        mount_options=mount.options,
        read_only="ro" in options,
    )
    verdict, reasons = classify(mount.fstype, kernel, block)
    if mount.fstype == "ext4":
        ext4 = block.get("ext4")
        entry["ext4"] = dict(ext4, verity_feature=ext4["verity"]) if ext4 else None
        if ext4:
            del entry["ext4"]["verity"]
        else:
            entry["ext4_error"] = block.get("ext4_error")
    if mount.fstype == "f2fs":
        entry["f2fs_features"] = block.get("f2fs_features")
    if probe is not None:
        entry["probe"] = probe
        verdict, reasons = apply_probe(verdict, reasons, probe)
    entry.update(verity=verdict, reason=reasons[0], reasons=reasons)
    return entry


def block_facts(mount, superblock=None, superblock_error=None, device=None, f2fs_features=None):
    """The ``block`` dict for :func:`classify` from raw reads. Pure."""
    block = dict(device=device, source=mount.source if mount else None)
    if mount is not None and mount.fstype == "ext4":
        if superblock is None:
            block["ext4_error"] = superblock_error or "the superblock was not read"
        else:
            try:
                block["ext4"] = parse_ext4_superblock(superblock)
            except SuperblockError as exc:
                block["ext4_error"] = str(exc)
    if mount is not None and mount.fstype == "f2fs":
        block["f2fs_features"] = f2fs_features
    return block


# ---- reading this host ----

def block_device(mount):
    """The block device node of a mount: its source when that is one, else /dev/block/MAJ:MIN; None otherwise."""
    if mount is None:
        return None
    candidates = [mount.source, "/dev/block/%d:%d" % (mount.major, mount.minor)]
    for candidate in candidates:
        if not candidate.startswith("/dev/"):
            continue
        try:
            st = os.stat(candidate)
        except OSError:
            continue
        if stat.S_ISBLK(st.st_mode) and st.st_rdev == os.makedev(mount.major, mount.minor):
            return os.path.realpath(candidate)
    for candidate in candidates:
        # btrfs reports an anonymous device number; trust a block-device source
        try:
            if candidate.startswith("/dev/") and stat.S_ISBLK(os.stat(candidate).st_mode):
                return os.path.realpath(candidate)
        except OSError:
            continue
    return None


def read_f2fs_features(device):
    """The features of a mounted f2fs from /sys/fs/f2fs/<device name>/features, or None."""
    if not device:
        return None
    try:
        with open("/sys/fs/f2fs/%s/features" % os.path.basename(device), "r", encoding="utf-8") as f:
            text = f.read()
    except OSError:
        return None
    return sorted(name.strip() for name in text.replace("\n", ",").split(",") if name.strip())


def read_block(mount):
    """Read what :func:`classify` needs from the device under ``mount`` (the superblock for ext4)."""
    device = block_device(mount)
    superblock, error, f2fs = None, None, None
    if mount is not None and mount.fstype == "ext4":
        if device is None:
            error = "no block device node for %s (%d:%d)" % (mount.source, mount.major, mount.minor)
        else:
            superblock, error = read_ext4_superblock(device)
    if mount is not None and mount.fstype == "f2fs":
        f2fs = read_f2fs_features(device)
    return block_facts(mount, superblock, error, device, f2fs)
