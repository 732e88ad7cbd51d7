# -*- coding: utf-8 -*-
# Copyright: composefs.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Facts about containers-storage's storage.conf shared by the storage_conf modules and action plugin.

Standard library only: the modules import this on the managed node, the action
plugin and plugin_utils import it on the controller. Nothing here parses TOML.

Sources (containers/storage git history and containers/podman go.mod):

- ``[storage.options.overlay] use_composefs`` is read at run time since
  containers/storage v1.52.0 (commit "config: new option use_composefs",
  pull request containers/storage#1769). Podman 4.8 and 4.9.x pin storage
  v1.51.0, which only had composefs behind a build tag; Podman 5.0.0 is the
  first release on storage v1.53.0. So composefs needs Podman >= 5.0.0.
- ``pull_options`` is a ``map[string]string``; storage reads each boolean key as
  ``strings.ToLower(value) == "true"`` and ignores unknown keys.
  ``convert_images`` appears in storage v1.53.0 (Podman 5.0) and
  ``insecure_allow_unpredictable_image_contents`` in v1.57 (Podman 5.4).
- Every ``[storage.options.overlay]`` field is a Go string: a TOML boolean there
  (or in ``pull_options``) is a decode error for the whole file.
- storage writes composefs blobs with ``mkcomposefs --from-file``, which
  composefs added in 1.0.1.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import re

# The first Podman release whose containers/storage honours use_composefs.
MIN_PODMAN_COMPOSEFS = (5, 0, 0)
# The first Podman release that reads storage.conf drop-ins (container-libs' configfile package).
MIN_PODMAN_DROPINS = (6, 0, 0)
# mkcomposefs gained --from-file (used by containers/storage) in composefs 1.0.1.
MIN_MKCOMPOSEFS = (1, 0, 1)

MAIN_FILE = "/etc/containers/storage.conf"
VENDOR_FILE = "/usr/share/containers/storage.conf"
ROOTFUL_DROPIN_DIR = "/etc/containers/storage.rootful.conf.d"
USER_MAIN_FILE = "~/.config/containers/storage.conf"
# Drop-in directories a rootful Podman >= 6 reads, in the order containers-storage
# walks them; a later directory's file shadows an earlier one with the same name.
ROOTFUL_DROPIN_DIRS = (
    "/usr/share/containers/storage.conf.d",
    "/usr/share/containers/storage.rootful.conf.d",
    "/etc/containers/storage.conf.d",
    "/etc/containers/storage.rootful.conf.d",
    "~/.config/containers/storage.conf.d",
)
DEFAULT_GRAPHROOT = "/var/lib/containers/storage"
DEFAULT_DROPIN_NAME = "50-composefs-fleet.conf"

# pull_options keys containers/storage reads: kind and the first Podman that reads it
# (None: older than any Podman with composefs).
KNOWN_PULL_OPTIONS = {
    "enable_partial_images": ("bool", None),
    "use_hard_links": ("bool", None),
    "ostree_repos": ("str", None),
    "convert_images": ("bool", (5, 0, 0)),
    "insecure_allow_unpredictable_image_contents": ("bool", (5, 4, 0)),
}

# [storage.options.overlay] keys other than use_composefs (its own option), with their kind.
KNOWN_OVERLAY_OPTIONS = {
    "ignore_chown_errors": "bool",
    "mountopt": "str",
    "mount_program": "str",
    "size": "str",
    "inodes": "str",
    "skip_mount_home": "bool",
    "force_mask": "str",
}

# Keys of the [storage] table that need `podman system reset` when they change.
RESET_KEYS = ("driver", "graphroot", "runroot")

# The storage_conf module's options: the module (for ansible-doc and
# validate-modules) and the action plugin (which validates them) share this.
ARGUMENT_SPEC = dict(
    use_composefs=dict(type="bool"),
    pull_options=dict(type="dict"),
    overlay_options=dict(type="dict"),
    driver=dict(type="str"),
    graphroot=dict(type="path"),
    runroot=dict(type="path"),
    scope=dict(type="str", choices=["rootful", "path"], default="rootful"),
    path=dict(type="path"),
    mode=dict(type="str", choices=["auto", "file", "dropin"], default="auto"),
    dropin_name=dict(type="str", default=DEFAULT_DROPIN_NAME),
    backup=dict(type="bool", default=False),
)
REQUIRED_IF = [("scope", "path", ("path",))]


def parse_version(text):
    """The first dotted version in ``text`` as a tuple of three ints, or None."""
    if not text:
        return None
    match = re.search(r"(\d+)\.(\d+)(?:\.(\d+))?", text)
    if not match:
        return None
    return (int(match.group(1)), int(match.group(2)), int(match.group(3) or 0))


def version_string(version):
    return ".".join(str(part) for part in version) if version else None
