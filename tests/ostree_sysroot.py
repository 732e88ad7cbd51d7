"""A real ostree sysroot, built with sid's ostree 2026.4 in a chroot over the cached sid root (never modified: an overlay).

``ostree admin init-fs``, ``os-init``, a repository with ``ex-integrity.composefs``,
two commits with ``--generate-composefs-metadata`` and two deployments, each with its
``.ostree.cfs``. Used by the boot_facts and prepare_root tests.
"""
import contextlib
import os
import subprocess

from support import TOP

SID_ROOT = os.path.join(TOP, ".cache", "sid-root", "rootfs")
SYSROOT = "/srv/sysroot"
OSNAME = "testos"

BUILD = r"""
set -eu
S=%(sysroot)s
T=/tmp/tree
mkdir -p $S $T/usr/lib/modules/6.1.0-test $T/usr/bin $T/usr/etc
printf 'ID=testos\nNAME="Test OS"\nVERSION_ID=1\n' > $T/usr/lib/os-release
echo kernel > $T/usr/lib/modules/6.1.0-test/vmlinuz
echo initramfs > $T/usr/lib/modules/6.1.0-test/initramfs.img
echo hello > $T/usr/bin/hello
ostree admin init-fs --modern $S
ostree admin os-init --sysroot=$S %(osname)s
R=$S/ostree/repo
ostree config --repo=$R set ex-integrity.composefs true
ostree config --repo=$R set sysroot.bootloader none
%(fsverity)s
ostree commit --repo=$R -b %(osname)s/stable --tree=dir=$T --generate-composefs-metadata -s one --add-metadata-string=version=1
ostree admin deploy --sysroot=$S --os=%(osname)s --karg=root=LABEL=root %(osname)s/stable
echo hello2 > $T/usr/bin/hello2
ostree commit --repo=$R -b %(osname)s/stable --tree=dir=$T --generate-composefs-metadata -s two --add-metadata-string=version=2
ostree admin deploy --sysroot=$S --os=%(osname)s %(osname)s/stable
"""


def require_sid_root():
    if not os.path.isfile(os.path.join(SID_ROOT, "usr", "bin", "ostree")):
        raise AssertionError("the cached sid root with ostree is missing: %s (run scripts/setup-sid-root.sh, make setup-sid-root)"
                             % SID_ROOT)


def chroot(root, script, check=True):
    proc = subprocess.run(["chroot", root, "/bin/sh", "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True, check=False)
    if check and proc.returncode:
        raise AssertionError("chroot script failed (rc=%d):\n%s\n%s" % (proc.returncode, proc.stdout, proc.stderr))
    return proc


@contextlib.contextmanager
def sid_overlay(base):
    """The sid root with a scratch upper layer, mounted at ``base/merged``, with /proc and /dev bound in."""
    require_sid_root()
    if os.environ.get("COMPOSEFS_FLEET_IN_GUEST") == "1":
        # The fs-verity guest's own root is already copy-on-write (host root over 9p, tmpfs upper):
        # writes to the sid root there stay in guest RAM, and overlayfs cannot stack on 9p again.
        merged = os.path.realpath(SID_ROOT)
        mounted = []
        try:
            for name in ("proc", "dev"):
                subprocess.run(["mount", "--bind", "/" + name, os.path.join(merged, name)], check=True)
                mounted.append(os.path.join(merged, name))
            yield merged
        finally:
            for path in reversed(mounted):
                subprocess.run(["umount", "-l", path], check=False)
        return
    merged = os.path.join(base, "merged")
    for name in ("upper", "work", "merged"):
        os.makedirs(os.path.join(base, name), exist_ok=True)
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o", "lowerdir=%s,upperdir=%s,workdir=%s"
                    % (SID_ROOT, os.path.join(base, "upper"), os.path.join(base, "work")), merged], check=True)
    mounted = [merged]
    try:
        for name in ("proc", "dev"):
            subprocess.run(["mount", "--bind", "/" + name, os.path.join(merged, name)], check=True)
            mounted.append(os.path.join(merged, name))
        yield merged
    finally:
        for path in reversed(mounted):
            subprocess.run(["umount", "-l", path], check=False)


def build_sysroot(merged, fsverity=None):
    """Build the sysroot in the chroot; returns the commits of the two deployments, newest first.

    ``fsverity`` sets the repository's ``ex-integrity.fsverity`` before the commits (None: ostree's default).
    """
    setting = "ostree config --repo=$R set ex-integrity.fsverity %s" % fsverity if fsverity else ""
    chroot(merged, BUILD % dict(sysroot=SYSROOT, osname=OSNAME, fsverity=setting))
    out = []
    for version in ("2", "1"):
        rev = chroot(merged, "ostree rev-parse --repo=%s/ostree/repo %s/stable%s"
                     % (SYSROOT, OSNAME, "" if version == "2" else "^")).stdout.strip()
        out.append(rev)
    return out


def commit_composefs_digest(merged, checksum):
    """``ostree show --print-metadata-key=ostree.composefs.digest.v0`` as hex."""
    text = chroot(merged, "ostree show --repo=%s/ostree/repo %s --print-metadata-key=ostree.composefs.digest.v0"
                  % (SYSROOT, checksum)).stdout
    # GVariant text: [byte 0xfa, 0x12, ...]
    return "".join("%02x" % int(tok.replace("byte", "").strip(" []\n"), 16) for tok in text.split(","))


def deployment_dir(merged, checksum, serial=0):
    return os.path.join(merged, SYSROOT.lstrip("/"), "ostree", "deploy", OSNAME, "deploy", "%s.%d" % (checksum, serial))
