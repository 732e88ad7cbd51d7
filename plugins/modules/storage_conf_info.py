#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: composefs.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: storage_conf_info
short_description: Read containers-storage configuration files and the facts composefs in Podman depends on
version_added: 0.1.0
description:
  - Reads C(storage.conf) files and drop-in directories as text, and reports the Podman version,
    C(mkcomposefs), the kernel features composefs needs, rootless Podman users, and the filesystem under
    the container storage.
  - It never changes anything. It does not parse TOML (the managed node has no TOML writer, and
    C(tomllib) only exists from Python 3.11); M(composefs.fleet.storage_conf) runs it and parses the text
    on the controller.
  - B(What it reads.) A symlink is followed only when root or the user the module runs as owns it (a link
    planted by another user is refused), and a dangling link is an error. The file at the end must be a
    regular file owned by root or by that user, at most O(max_size) bytes, UTF-8, free of NUL and control
    characters, and TOML-like (every line a comment, a C([table]) header or C(key = value), strings and
    brackets closed). Anything else (a FIFO, a device, a link to C(/etc/shadow), a binary) is reported in
    RV(files[].error) with no content and no checksum, and the message quotes nothing of the file.
  - Needs only the Python standard library on the managed node.
author:
  - composefs.fleet developers (@composefs-fleet)
options:
  paths:
    description:
      - Files to read. A leading C(~) is the home of the user the module runs as (root with become).
      - Missing files are reported with RV(files[].exists=false); they are not an error.
    type: list
    elements: str
    default: []
  dropin_dirs:
    description:
      - Directories whose C(*.conf) regular files are read, the way containers-storage lists drop-ins
        (symlinks and other file types are skipped, like Podman does).
    type: list
    elements: str
    default: []
  fs_paths:
    description:
      - Paths whose filesystem is reported, with whether it could support fs-verity. A missing path is
        looked up through its nearest existing parent.
    type: list
    elements: str
    default: [/var/lib/containers/storage]
  max_size:
    description:
      - Files larger than this many bytes are not read; their entry carries an error instead.
    type: int
    default: 1048576
notes:
  - Supports check mode; it changes nothing in either mode.
seealso:
  - module: composefs.fleet.storage_conf
"""

EXAMPLES = r"""
- name: Read the system storage.conf and report Podman and mkcomposefs
  composefs.fleet.storage_conf_info:
    paths:
      - /etc/containers/storage.conf
      - /usr/share/containers/storage.conf
  register: storage_info

- name: Show the Podman version
  ansible.builtin.debug:
    msg: "{{ storage_info.podman.version | default('podman not installed') }}"
"""

RETURN = r"""
files:
  description: One entry per O(paths) item, in order.
  returned: always
  type: list
  elements: dict
  contains:
    requested:
      description: The path as given.
      type: str
      sample: ~/.config/containers/storage.conf
    path:
      description: The path with C(~) expanded.
      type: str
      sample: /root/.config/containers/storage.conf
    exists:
      description: Whether something exists at the path (a dangling symlink counts).
      type: bool
    link:
      description: Whether the path itself is a symlink (followed to RV(files[].target)).
      type: bool
    target:
      description: The path with every symlink resolved; the file that was read, or would be created.
      type: str
    content:
      description:
        - The file's text, or null when it is missing or was not read (see RV(files[].error)).
      type: str
    sha256:
      description: SHA-256 of the file's bytes, or null when its content is not returned.
      type: str
    mode:
      description: Permission bits of RV(files[].target) as an octal string, for example C(0644).
      type: str
    uid:
      description: Owner uid of RV(files[].target).
      type: int
    gid:
      description: Group gid of RV(files[].target).
      type: int
    error:
      description: Why the content was not read or not returned, or null.
      type: str
dropin_dirs:
  description: One entry per O(dropin_dirs) item, in order.
  returned: always
  type: list
  elements: dict
  contains:
    requested:
      description: The directory as given.
      type: str
    path:
      description: The directory with C(~) expanded.
      type: str
    exists:
      description: Whether the directory exists.
      type: bool
    files:
      description: Its C(*.conf) regular files sorted by name, each shaped like an RV(files) entry plus C(name).
      type: list
      elements: dict
podman:
  description: The Podman binary and its version, or null when Podman is not installed.
  returned: always
  type: dict
  sample: {path: /usr/bin/podman, version: 4.3.1, output: podman version 4.3.1, rc: 0}
mkcomposefs:
  description:
    - The C(mkcomposefs) binary, or null when it is not on PATH.
    - C(from_file) tells whether it understands C(--from-file) (composefs 1.0.1 and later), which
      containers-storage uses. mkcomposefs has no C(--version); C(version) comes from the package that owns
      the binary (rpm or dpkg) and is null when no package does.
  returned: always
  type: dict
  sample: {path: /usr/bin/mkcomposefs, from_file: true, package: composefs, version: 1.0.8}
kernel:
  description:
    - C(release), and for each of C(erofs), C(overlay) and C(loop) one of C(available) (registered or
      built in), C(module) (a loadable module exists), C(missing) or C(unknown).
    - C(fs_verity) is true when C(/sys/fs/{ext4,btrfs,f2fs}/features/verity) exists, false when one of those
      feature directories exists without it, and null when there is no evidence.
  returned: always
  type: dict
  sample: {release: 6.1.0-28-amd64, erofs: module, overlay: available, loop: available, fs_verity: false}
filesystems:
  description: One entry per O(fs_paths) item.
  returned: always
  type: list
  elements: dict
  contains:
    path:
      description: The path as given.
      type: str
    looked_up:
      description: The nearest existing path that was looked up.
      type: str
    mountpoint:
      description: Mount point of the filesystem holding it.
      type: str
    fstype:
      description: Filesystem type from C(/proc/self/mountinfo).
      type: str
    source:
      description: Mount source (the device for block filesystems).
      type: str
    verity:
      description: C(supported), C(unsupported) or C(unknown).
      type: str
    reason:
      description: Why, in plain words.
      type: str
rootless_users:
  description: Users with subordinate uid ranges in C(/etc/subuid), that is users set up for rootless Podman.
  returned: always
  type: list
  elements: str
  sample: [alice]
euid:
  description: Effective uid the module ran as.
  returned: always
  type: int
env:
  description: C(CONTAINERS_STORAGE_CONF), C(XDG_CONFIG_HOME) and C(HOME) as the module saw them (null when unset).
  returned: always
  type: dict
"""

import hashlib
import os
import pwd
import re
import shutil
import stat
import subprocess

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.composefs.fleet.plugins.module_utils.common.mountinfo import filesystem_of, read_mountinfo
from ansible_collections.composefs.fleet.plugins.module_utils.fsverity.ioctl import kernel_has_fs_verity
from ansible_collections.composefs.fleet.plugins.module_utils.storage_conf import (
    DEFAULT_GRAPHROOT,
    UnsafeFile,
    read_config_text,
    resolve_path,
)
from ansible_collections.composefs.fleet.plugins.module_utils.verity_facts.superblock import ext4_has_verity

_EXTRA_PATH = ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin")
_NO_VERITY = {
    "xfs": "xfs has no fs-verity",
    "tmpfs": "tmpfs has no fs-verity",
    "overlay": "overlayfs files have no fs-verity of their own",
    "nfs": "network filesystems have no fs-verity",
    "nfs4": "network filesystems have no fs-verity",
    "cifs": "network filesystems have no fs-verity",
    "fuse.sshfs": "network filesystems have no fs-verity",
    "zfs": "zfs has no fs-verity",
    "vfat": "vfat has no fs-verity",
}


def _which(name):
    path = os.environ.get("PATH", "")
    return shutil.which(name, path=os.pathsep.join([path] + list(_EXTRA_PATH)))


def _run(argv, timeout=30):
    try:
        # A hard timeout, which run_command does not have (a hung podman must not hang the play).
        # pylint: disable-next=ansible-bad-function
        proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout, check=False)
    except (OSError, subprocess.SubprocessError) as exc:
        return None, "", str(exc)
    return proc.returncode, proc.stdout.decode("utf-8", "replace"), proc.stderr.decode("utf-8", "replace")


def _home_relative(path):
    """``~/x`` as the path below this user's home; the paths are taken as given (not type=path)
    so that the controller can tell the per-user files (``~/...``) from the system ones."""
    if path == "~" or path.startswith("~/"):
        home = os.environ.get("HOME") or pwd.getpwuid(os.geteuid()).pw_dir
        return home + path[1:]
    return path


def read_file_record(requested, max_size, name=None):
    """What storage_conf needs of one file: its text and sha256, or why it was not read.

    Symlinks are followed only when root or the module's user owns them; the file read must be a regular
    file owned by root or the module's user, UTF-8 and TOML-like. Anything else is an ``error`` without
    content, so a link to another file (/etc/shadow) never puts that file into the result."""
    path = _home_relative(requested)
    rec = dict(requested=requested, path=path, exists=False, link=False, target=path, content=None, sha256=None,
               mode=None, uid=None, gid=None, error=None)
    if name is not None:
        rec["name"] = name
    rec["exists"] = os.path.lexists(path)
    try:
        target, is_link = resolve_path(path)
    except UnsafeFile as exc:
        rec["error"] = str(exc)
        return rec
    rec.update(link=is_link, target=target)
    try:
        st = os.lstat(target)
    except FileNotFoundError:
        return rec
    except OSError as exc:
        rec["error"] = "cannot stat %s: %s" % (target, exc.strerror)
        return rec
    rec.update(mode="%04o" % stat.S_IMODE(st.st_mode), uid=st.st_uid, gid=st.st_gid)
    if not stat.S_ISREG(st.st_mode):
        rec["error"] = "%s is not a regular file" % target
        return rec
    try:
        data, text = read_config_text(target, max_size)
    except UnsafeFile as exc:
        rec["error"] = str(exc)
        return rec
    rec.update(content=text, sha256=hashlib.sha256(data).hexdigest())
    return rec


def read_dropin_dir(requested, max_size):
    path = _home_relative(requested)
    rec = dict(requested=requested, path=path, exists=False, files=[], error=None)
    try:
        resolved, dummy = resolve_path(path)
    except UnsafeFile as exc:
        rec.update(exists=os.path.lexists(path), error=str(exc))
        return rec
    rec["exists"] = os.path.isdir(resolved)
    if not rec["exists"]:
        return rec
    try:
        with os.scandir(resolved) as it:
            entries = sorted(it, key=lambda e: e.name)
    except OSError as exc:
        rec["error"] = "cannot list %s: %s" % (path, exc.strerror)
        return rec
    for entry in entries:
        # containers-storage takes regular files ending in .conf; a symlink is not a regular dirent.
        if entry.name.endswith(".conf") and entry.is_file(follow_symlinks=False):
            rec["files"].append(read_file_record(os.path.join(requested, entry.name), max_size, name=entry.name))
    return rec


def probe_podman():
    path = _which("podman")
    if not path:
        return None
    rc, out, err = _run([path, "--version"])
    text = (out or err).strip()
    match = re.search(r"(\d+\.\d+(?:\.\d+)?(?:[-+~][0-9A-Za-z.\-+~]*)?)", text)
    return dict(path=path, version=match.group(1) if match else None, output=text, rc=rc)


def _package_of(path):
    """(package, version) owning ``path`` through rpm or dpkg, or (None, None)."""
    if _which("rpm"):
        rc, out, dummy = _run(["rpm", "-qf", "--qf", "%{NAME}\t%{VERSION}\n", path])
        if rc == 0 and "\t" in out:
            name, version = out.splitlines()[0].split("\t", 1)
            return name, version
    if _which("dpkg-query"):
        rc, out, dummy = _run(["dpkg-query", "-S", path])
        if rc == 0 and ":" in out:
            package = out.splitlines()[0].split(":", 1)[0].strip()
            rc, version, dummy = _run(["dpkg-query", "-W", "-f", "${Version}", package])
            if rc == 0:
                return package, version.strip() or None
            return package, None
    return None, None


def probe_mkcomposefs():
    path = _which("mkcomposefs")
    if not path:
        return None
    # No arguments: mkcomposefs prints its usage (with --from-file since 1.0.1) and exits non-zero.
    dummy, out, err = _run([path])
    package, version = _package_of(os.path.realpath(path))
    return dict(path=path, from_file="--from-file" in (out + err), package=package, version=version)


def _read_text(path):
    try:
        with open(path, "r", encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return None


def probe_kernel():
    release = os.uname().release
    filesystems = _read_text("/proc/filesystems") or ""
    registered = set(line.split()[-1] for line in filesystems.splitlines() if line.strip())
    moddir = "/lib/modules/%s" % release
    builtin = _read_text(os.path.join(moddir, "modules.builtin"))
    dep = _read_text(os.path.join(moddir, "modules.dep"))

    def module_state(fs_name, module_name):
        if fs_name and fs_name in registered:
            return "available"
        if os.path.isdir("/sys/module/%s" % module_name):
            return "available"
        if builtin is None and dep is None:
            return "unknown"
        pattern = re.compile(r"(^|/)%s\.ko(\.[a-z]+)?(:|$)" % re.escape(module_name), re.M)
        if builtin and pattern.search(builtin):
            return "available"
        if dep and pattern.search(dep):
            return "module"
        return "missing"

    loop = "available" if os.path.exists("/dev/loop-control") else module_state(None, "loop")
    fs_verity = kernel_has_fs_verity()
    return dict(release=release, erofs=module_state("erofs", "erofs"), overlay=module_state("overlay", "overlay"),
                loop=loop, fs_verity=fs_verity)


def probe_filesystem(path, mounts, kernel_verity):
    looked_up = _home_relative(path)
    while not os.path.lexists(looked_up) and looked_up not in ("/", ""):
        looked_up = os.path.dirname(looked_up)
    rec = dict(path=path, looked_up=looked_up, mountpoint=None, fstype=None, source=None,
               verity="unknown", reason="no mount found")
    entry = filesystem_of(looked_up, mounts) if mounts is not None else None
    if entry is None:
        return rec
    rec.update(mountpoint=entry.mountpoint, fstype=entry.fstype, source=entry.source)
    fstype = entry.fstype
    if fstype in _NO_VERITY:
        rec.update(verity="unsupported", reason=_NO_VERITY[fstype])
    elif kernel_verity is False and fstype in ("ext4", "btrfs", "f2fs"):
        rec.update(verity="unsupported", reason="kernel built without CONFIG_FS_VERITY")
    elif fstype == "ext4":
        has = ext4_has_verity(entry.source) if entry.source.startswith("/dev/") else None
        if has is True:
            rec.update(verity="supported", reason="ext4 with the verity feature")
        elif has is False:
            rec.update(verity="unsupported",
                       reason="ext4 without the verity feature: tune2fs -O verity %s while unmounted" % entry.source)
        else:
            rec.update(reason="ext4: could not read the superblock of %s to see the verity feature" % entry.source)
    elif fstype == "btrfs":
        rec.update(verity="supported" if kernel_verity else "unknown",
                   reason="btrfs supports fs-verity" + ("" if kernel_verity else " if the kernel has CONFIG_FS_VERITY"))
    elif fstype == "f2fs":
        rec.update(reason="f2fs supports fs-verity only when made with -O verity")
    else:
        rec.update(reason="%s: fs-verity support is not known" % fstype)
    return rec


def rootless_users(path="/etc/subuid"):
    text = _read_text(path) or ""
    users = []
    for line in text.splitlines():
        name = line.split(":", 1)[0].strip()
        if name and not name.startswith("#") and name not in users:
            users.append(name)
    return users


def main():
    module = AnsibleModule(
        argument_spec=dict(
            paths=dict(type="list", elements="str", default=[]),
            dropin_dirs=dict(type="list", elements="str", default=[]),
            fs_paths=dict(type="list", elements="str", default=[DEFAULT_GRAPHROOT]),
            max_size=dict(type="int", default=1048576),
        ),
        supports_check_mode=True,
    )
    max_size = module.params["max_size"]
    kernel = probe_kernel()
    try:
        mounts = read_mountinfo()
    except (OSError, ValueError):
        mounts = None
    module.exit_json(
        changed=False,
        files=[read_file_record(p, max_size) for p in module.params["paths"]],
        dropin_dirs=[read_dropin_dir(d, max_size) for d in module.params["dropin_dirs"]],
        podman=probe_podman(),
        mkcomposefs=probe_mkcomposefs(),
        kernel=kernel,
        filesystems=[probe_filesystem(p, mounts, kernel["fs_verity"]) for p in module.params["fs_paths"]],
        rootless_users=rootless_users(),
        euid=os.geteuid(),
        env=dict((name, os.environ.get(name)) for name in ("CONTAINERS_STORAGE_CONF", "XDG_CONFIG_HOME", "HOME")),
    )


if __name__ == "__main__":
    main()
