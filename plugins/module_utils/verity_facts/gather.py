# -*- coding: utf-8 -*-
# Copyright: composefs.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Reading this host and putting the ``composefs`` facts together."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os

from ansible_collections.composefs.fleet.plugins.module_utils.common.mountinfo import mount_of, parse_mountinfo, read_mountinfo
from ansible_collections.composefs.fleet.plugins.module_utils.verity_facts.kernel import kernel_facts, read_sources
from ansible_collections.composefs.fleet.plugins.module_utils.verity_facts.paths import path_entry, read_block
from ansible_collections.composefs.fleet.plugins.module_utils.verity_facts.probe import not_run, probe_directory
from ansible_collections.composefs.fleet.plugins.module_utils.verity_facts.rootfs import root_facts
from ansible_collections.composefs.fleet.plugins.module_utils.verity_facts.tools import TOOLS, tool_versions

FACTS_VERSION = 1
# The composefs object store, containers-storage, the ostree repository and the root filesystem.
DEFAULT_PATHS = ("/var/lib/composefs", "/var/lib/containers/storage", "/sysroot/ostree/repo", "/")
CHECK_MODE_NOTE = "check mode: the probe was not run (it writes a scratch file)"


def unique(paths):
    seen = set()
    out = []
    for path in paths:
        if path not in seen:
            seen.add(path)
            out.append(path)
    return out


def probe_facts(requested, check_mode):
    if not requested:
        return dict(requested=False, performed=False, note="probe not requested: verdicts are inferred from the kernel and the filesystems")
    if check_mode:
        return dict(requested=True, performed=False, note=CHECK_MODE_NOTE)
    return dict(requested=True, performed=True,
                note="a scratch file was made and removed in each path; on btrfs the first success sets the verity compat_ro flag")


def gather(paths=DEFAULT_PATHS, probe=False, check_mode=False, tools=TOOLS, mountinfo_text=None):
    """The ``composefs`` facts of this host.

    ``mountinfo_text`` replaces /proc/self/mountinfo (tests inject mounts this way);
    paths are still resolved and stat'ed on this host.
    """
    kernel = kernel_facts(read_sources())
    if mountinfo_text is None:
        mounts = read_mountinfo()
    else:
        mounts = parse_mountinfo(mountinfo_text)
    entries = []
    missing = []
    blocks = {}
    for path in unique(paths):
        if not os.path.exists(path):
            missing.append(path)
            continue
        real = os.path.realpath(path)
        try:
            dev = os.stat(real).st_dev
        except OSError:
            dev = None
        mount = mount_of(real, dev, mounts)
        key = mount.mount_id if mount is not None else None
        if key not in blocks:
            blocks[key] = read_block(mount)
        result = None
        if probe:
            directory = real if os.path.isdir(real) else os.path.dirname(real)
            result = not_run(directory, CHECK_MODE_NOTE) if check_mode else probe_directory(directory)
        entries.append(path_entry(path, mount, kernel, blocks[key], result, real))
    root = root_facts(mounts)
    root["ostree_booted"] = os.path.exists("/run/ostree-booted")
    return dict(
        facts_version=FACTS_VERSION,
        source="module",
        kernel=kernel,
        paths=entries,
        missing_paths=missing,
        tools=tool_versions(tools),
        root=root,
        probe=probe_facts(probe, check_mode),
    )
