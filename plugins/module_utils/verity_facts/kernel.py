# -*- coding: utf-8 -*-
# Copyright: composefs.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What the running kernel offers composefs: fs-verity, overlayfs features, EROFS and loop devices.

:func:`read_sources` reads the host (kernel config, ``/sys``, ``/proc/filesystems``,
``/usr/lib/modules``) into a plain dict; :func:`kernel_facts` decides from that dict
alone, so the same decisions apply to what raw commands read on hosts without Python.

The sources dict (every key optional except ``release``):

``release``             ``uname -r``
``config_path``         the kernel config read (``/proc/config.gz``, ``/boot/config-R``, ...), or None
``config``              its ``CONFIG_*`` values (``y``, ``m``, ``n`` for "is not set", or the string)
``config_tried``        the config files looked for
``sysfs``               ``{fs: [entries of /sys/fs/<fs>/features] or None}`` for ext4, btrfs, f2fs, xfs, erofs
``filesystems``         filesystem names in ``/proc/filesystems``, or None
``modules_dir``         whether ``/usr/lib/modules/R`` (or ``/lib/modules/R``) exists
``modules_loaded``      names among overlay, erofs, loop with a ``/sys/module/<name>`` directory
``modules_builtin``     those listed in ``modules.builtin``
``module_files``        those present as ``.ko`` files below ``/usr/lib/modules/R/kernel``
``overlay_parameters``  ``{name: value}`` of ``/sys/module/overlay/parameters``, or None
``loop_devices``        how many ``/sys/block/loop*`` devices exist, or None
``loop_control``        whether ``/dev/loop-control`` exists
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import glob
import gzip
import os
import re

CONFIG_FILES = ("/proc/config.gz", "/boot/config-{release}", "/usr/lib/modules/{release}/config", "/lib/modules/{release}/config")
MODULE_DIRS = ("/usr/lib/modules/{release}", "/lib/modules/{release}")
CONFIG_KEYS = (
    "CONFIG_FS_VERITY",
    "CONFIG_FS_VERITY_BUILTIN_SIGNATURES",
    "CONFIG_OVERLAY_FS",
    "CONFIG_EROFS_FS",
    "CONFIG_EROFS_FS_BACKED_BY_FILE",
    "CONFIG_BLK_DEV_LOOP",
)
# Filesystems whose /sys/fs/<fs>/features directory has a ``verity`` entry exactly when
# the kernel was built with CONFIG_FS_VERITY (and the filesystem is built in or loaded).
VERITY_SYSFS = ("ext4", "btrfs", "f2fs")
SYSFS_FILESYSTEMS = ("ext4", "btrfs", "f2fs", "xfs", "erofs")
# Kernel modules that matter, and their path below /usr/lib/modules/R.
MODULES = {
    "overlay": "kernel/fs/overlayfs/overlay.ko",
    "erofs": "kernel/fs/erofs/erofs.ko",
    "loop": "kernel/drivers/block/loop.ko",
}
# The first mainline release with each feature.
OVERLAY_DATA_ONLY_LOWERS = (6, 5)
OVERLAY_VERITY = (6, 6)
OVERLAY_LOWERDIR_PLUS = (6, 7)
EROFS_FILE_BACKED = (6, 12)

_CONFIG_SET = re.compile(r"^(CONFIG_[A-Za-z0-9_]+)=(.*)$")
_CONFIG_UNSET = re.compile(r"^# (CONFIG_[A-Za-z0-9_]+) is not set$")
_RELEASE = re.compile(r"^(\d+)\.(\d+)(?:\.(\d+))?")


def parse_release(release):
    """``(major, minor, patch)`` of a ``uname -r`` string such as ``6.12.117+deb13-amd64``, or None."""
    match = _RELEASE.match(release or "")
    if not match:
        return None
    return (int(match.group(1)), int(match.group(2)), int(match.group(3) or 0))


def parse_config(text, keys=None):
    """``{CONFIG_X: value}`` from kernel config text; ``n`` for "is not set", quotes removed from strings."""
    values = {}
    for line in text.splitlines():
        line = line.strip()
        match = _CONFIG_SET.match(line)
        if match:
            key, value = match.group(1), match.group(2)
            if len(value) >= 2 and value[0] == value[-1] == '"':
                value = value[1:-1]
        else:
            match = _CONFIG_UNSET.match(line)
            if not match:
                continue
            key, value = match.group(1), "n"
        if keys is None or key in keys:
            values[key] = value
    return values


def parse_proc_filesystems(text):
    """Filesystem names from ``/proc/filesystems`` text."""
    names = []
    for line in text.splitlines():
        fields = line.split()
        if fields:
            names.append(fields[-1])
    return names


def _config_words(key, value):
    return "# %s is not set" % key if value == "n" else "%s=%s" % (key, value)


def fs_verity_state(sources):
    """``(True | False | None, [evidence...])``: whether the kernel has CONFIG_FS_VERITY.

    /sys is the running kernel's own word and wins over a config file; None means
    nothing conclusive was found.
    """
    evidence = []
    sys_says = None
    for fs in VERITY_SYSFS:
        features = (sources.get("sysfs") or {}).get(fs)
        if features is None:
            continue
        if "verity" in features:
            evidence.append("/sys/fs/%s/features/verity exists" % fs)
            sys_says = True
        else:
            evidence.append("/sys/fs/%s/features has no verity entry" % fs)
            if sys_says is None:
                sys_says = False
    config = sources.get("config")
    config_says = None
    if config is not None:
        value = config.get("CONFIG_FS_VERITY")
        if value is None:
            evidence.append("%s does not mention CONFIG_FS_VERITY" % sources.get("config_path"))
        else:
            evidence.append("%s: %s" % (sources.get("config_path"), _config_words("CONFIG_FS_VERITY", value)))
            config_says = value == "y"
    elif sources.get("config_tried"):
        evidence.append("no kernel config found (%s)" % ", ".join(sources["config_tried"]))
    if sys_says is not None:
        return sys_says, evidence
    return config_says, evidence


def _available(sources, module, fsname, config_key):
    """``(True | False | None, basis)``: whether a kernel part is built in, loaded or loadable."""
    filesystems = sources.get("filesystems")
    if fsname and filesystems is not None and fsname in filesystems:
        return True, "%s is in /proc/filesystems" % fsname
    if module in (sources.get("modules_loaded") or ()):
        return True, "module %s is loaded" % module
    if module in (sources.get("modules_builtin") or ()):
        return True, "%s is built in (modules.builtin)" % module
    if module in (sources.get("module_files") or ()):
        return True, "module %s can be loaded" % module
    config = sources.get("config") or {}
    value = config.get(config_key)
    if value in ("y", "m"):
        return True, "%s: %s" % (sources.get("config_path"), _config_words(config_key, value))
    if value is not None:
        return False, "%s: %s" % (sources.get("config_path"), _config_words(config_key, value))
    if sources.get("modules_dir") and (filesystems is not None or not fsname):
        return False, "neither built in nor a module of this kernel"
    return None, "not found in /proc/filesystems, /sys/module or the kernel's modules"


def _by_version(available, version, first):
    if available is False:
        return False
    if version is None or available is None:
        return None
    return version[:2] >= first


def overlay_facts(sources, version):
    """overlayfs: available, and the composefs features by kernel version (backports are not detected)."""
    available, basis = _available(sources, "overlay", "overlay", "CONFIG_OVERLAY_FS")
    return dict(
        available=available,
        basis=basis,
        data_only_lowers=_by_version(available, version, OVERLAY_DATA_ONLY_LOWERS),
        verity=_by_version(available, version, OVERLAY_VERITY),
        lowerdir_plus=_by_version(available, version, OVERLAY_LOWERDIR_PLUS),
        features_basis="kernel version (data-only lower layers 6.5, verity= 6.6, lowerdir+/datadir+ 6.7; distribution backports are not detected)",
        parameters=sources.get("overlay_parameters"),
    )


def erofs_facts(sources, version):
    """EROFS: available, and whether it mounts image files directly (6.12, CONFIG_EROFS_FS_BACKED_BY_FILE)."""
    available, basis = _available(sources, "erofs", "erofs", "CONFIG_EROFS_FS")
    file_backed = _by_version(available, version, EROFS_FILE_BACKED)
    config = sources.get("config")
    if file_backed and config is not None:
        value = config.get("CONFIG_EROFS_FS_BACKED_BY_FILE", "n")
        file_backed = value == "y"
        file_basis = "%s: %s" % (sources.get("config_path"), _config_words("CONFIG_EROFS_FS_BACKED_BY_FILE", value))
    else:
        file_basis = "kernel version (file-backed mounts since 6.12)"
    return dict(available=available, basis=basis, file_backed=file_backed, file_backed_basis=file_basis,
                features=(sources.get("sysfs") or {}).get("erofs"))


def loop_facts(sources):
    """Loop devices: available, how many exist, and whether /dev/loop-control can make more."""
    devices = sources.get("loop_devices")
    control = bool(sources.get("loop_control"))
    if control or devices:
        available, basis = True, "/dev/loop-control exists" if control else "%d loop devices in /sys/block" % devices
    else:
        available, basis = _available(sources, "loop", None, "CONFIG_BLK_DEV_LOOP")
    return dict(available=available, basis=basis, devices=devices, control=control)


def kernel_facts(sources):
    """The ``kernel`` facts from a sources dict (see the module docstring). Pure."""
    release = sources.get("release") or ""
    version = parse_release(release)
    fs_verity, evidence = fs_verity_state(sources)
    config = sources.get("config")
    signatures = None
    if fs_verity and config is not None:
        signatures = config.get("CONFIG_FS_VERITY_BUILTIN_SIGNATURES", "n") == "y"
    return dict(
        release=release,
        version=".".join(str(part) for part in version) if version else None,
        fs_verity=fs_verity,
        fs_verity_evidence=evidence,
        fs_verity_builtin_signatures=signatures,
        verity_filesystems=sorted(fs for fs in SYSFS_FILESYSTEMS if "verity" in ((sources.get("sysfs") or {}).get(fs) or ())),
        config_source=sources.get("config_path"),
        overlay=overlay_facts(sources, version),
        erofs=erofs_facts(sources, version),
        loop=loop_facts(sources),
    )


# ---- reading the host ----

def _read_text(path):
    if path.endswith(".gz"):
        with gzip.open(path, "rt", encoding="utf-8", errors="replace") as f:
            return f.read()
    with open(path, "r", encoding="utf-8", errors="replace") as f:
        return f.read()


def _listdir(path):
    try:
        return sorted(os.listdir(path))
    except OSError:
        return None


def read_config(release):
    """``(path, {CONFIG_*: value}, [paths tried])`` of the first readable kernel config, or ``(None, None, tried)``."""
    tried = []
    for pattern in CONFIG_FILES:
        path = pattern.format(release=release)
        tried.append(path)
        try:
            text = _read_text(path)
        except (OSError, EOFError, ValueError):
            continue
        return path, parse_config(text, CONFIG_KEYS), tried
    return None, None, tried


def read_sources(release=None):
    """Read the running kernel's sources dict from this host (see the module docstring)."""
    release = release or os.uname()[2]
    sources = dict(release=release)
    sources["config_path"], sources["config"], sources["config_tried"] = read_config(release)
    sources["sysfs"] = dict((fs, _listdir("/sys/fs/%s/features" % fs)) for fs in SYSFS_FILESYSTEMS)
    try:
        sources["filesystems"] = parse_proc_filesystems(_read_text("/proc/filesystems"))
    except OSError:
        sources["filesystems"] = None
    sources["modules_loaded"] = sorted(m for m in MODULES if os.path.isdir("/sys/module/%s" % m))
    module_dirs = [d.format(release=release) for d in MODULE_DIRS if os.path.isdir(d.format(release=release))]
    sources["modules_dir"] = bool(module_dirs)
    builtin = set()
    files = set()
    for directory in module_dirs:
        try:
            text = _read_text(os.path.join(directory, "modules.builtin"))
        except OSError:
            text = ""
        lines = set(text.split())
        for name, rel in MODULES.items():
            if rel in lines:
                builtin.add(name)
            if glob.glob(os.path.join(directory, rel) + "*"):
                files.add(name)
    sources["modules_builtin"] = sorted(builtin)
    sources["module_files"] = sorted(files)
    params = None
    names = _listdir("/sys/module/overlay/parameters")
    if names is not None:
        params = {}
        for name in names:
            try:
                params[name] = _read_text("/sys/module/overlay/parameters/%s" % name).strip()
            except OSError:
                continue
    sources["overlay_parameters"] = params
    blocks = _listdir("/sys/block")
    sources["loop_devices"] = None if blocks is None else len([b for b in blocks if re.match(r"^loop\d+$", b)])
    sources["loop_control"] = os.path.exists("/dev/loop-control")
    return sources
