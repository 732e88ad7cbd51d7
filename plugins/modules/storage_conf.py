#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: composefs.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: storage_conf
short_description: Configure containers-storage (storage.conf) for composefs and zstd:chunked partial pulls
version_added: 0.1.0
description:
  - Sets C([storage.options.overlay] use_composefs), C(pull_options) and other overlay options in the
    C(storage.conf) that Podman reads, editing the file in place and keeping its comments, ordering and
    every unrelated key.
  - Values are written the way containers-storage needs them, as strings. C(use_composefs = "true") is a
    string; a TOML boolean there (or in C(pull_options)) makes Podman fail to parse the whole file. The module
    compares parsed values, not text, so a file that already says what is asked is left alone.
  - B(Which file.) Podman 5 and older read exactly one file (C(CONTAINERS_STORAGE_CONF), else
    C(/etc/containers/storage.conf) if it exists, else C(/usr/share/containers/storage.conf)) and no
    drop-ins. With O(layout=file) the module edits C(/etc/containers/storage.conf), creating it from the vendor
    file when it is missing. Podman 6 and newer also read drop-ins; with O(layout=dropin) the module writes
    C(/etc/containers/storage.rootful.conf.d/)O(dropin_name), which rootful Podman reads and rootless users
    never do. O(layout=auto) picks C(file) for Podman 5 and older and C(dropin) for Podman 6 and newer.
  - B(Where the work runs.) This module is implemented by an action plugin of the same name. The TOML parsing
    and editing run on the controller with tomlkit, because the managed node's standard library cannot write
    TOML (and C(tomllib) only reads, from Python 3.11). On the host the plugin runs
    M(composefs.fleet.storage_conf_info) to read the files and facts and M(composefs.fleet.storage_conf_write)
    to replace the file atomically (a temporary file in the same directory, fsync, rename; mode, owner and
    SELinux context kept unless O(mode), O(owner) or O(group) ask otherwise), only if the file still has the
    content it was read with. Managed nodes need only Python 3.9 or later and its standard library.
  - B(Symlinks.) A symlinked file is followed, as M(community.general.ini_file) does with C(follow). By
    default (O(follow=true)) the link's target is edited and the link stays; O(follow=false) replaces the
    link itself with a regular file and leaves the old target alone. Links are followed only when root or
    the module's user owns them, a dangling link is an error, and only regular, TOML-like text files owned
    by root or the module's user are read (see M(composefs.fleet.storage_conf_info)).
  - B(Safety.) A file that is not valid TOML is never rewritten; the module fails naming the file and the TOML
    error, and leaves the file untouched. Unknown C(pull_options) and overlay keys are an error, since
    containers-storage ignores them silently.
  - B(Podman version.) Turning composefs on fails on Podman older than 5.0.0, with a message saying why,
    and so does O(layout=dropin) on Podman older than 6.0.0; O(podman_version_check=false) writes anyway
    and warns.
    containers-storage reads C(use_composefs) since v1.52.0 (containers/storage pull request 1769) and Podman
    5.0.0 is the first release built on it (Podman 4.9.x stays on storage v1.51.0). Debian bookworm's Podman 4.3
    is too old; Debian trixie's 5.4 is fine.
  - B(Host checks.) When composefs is on, the module warns about rootless Podman users who would read the
    setting (C(composefs is not supported in user namespaces)), a missing or too old C(mkcomposefs) (it needs
    C(--from-file), composefs 1.0.1 or later), kernel features composefs mounts need (erofs, overlay, loop) and
    a graphroot filesystem that cannot do fs-verity. Podman's use of fs-verity is best effort, it never mounts
    with C(verity=require).
  - Changing C(use_composefs) or C(pull_options) needs no C(podman system reset); layers already pulled keep
    their format until their images are pulled again. Changing O(driver), O(graphroot) or O(runroot) does, and
    the module reports it in RV(reset_required); it never resets anything itself.
author:
  - composefs.fleet developers (@composefs-fleet)
options:
  use_composefs:
    description:
      - Whether overlay mounts image layers with composefs, written as C([storage.options.overlay] use_composefs)
        with the string V(true) or V(false).
      - Omit it to leave the key as it is.
      - With V(true), C(pull_options.enable_partial_images) is set to V(true) as well unless O(pull_options) sets
        it, because composefs layers come only from partial (zstd:chunked) pulls, which are off by default since
        containers-storage 1.56 (Podman 5.3), so without it composefs silently does nothing.
    type: bool
  pull_options:
    description:
      - Keys of C([storage.options] pull_options), written in whatever form the file already uses (an inline
        table or a C([storage.options.pull_options]) table; a new one is a table).
      - Known keys are C(enable_partial_images), C(use_hard_links), C(convert_images),
        C(insecure_allow_unpredictable_image_contents) (Podman 5.4 and later), which take booleans, and
        C(ostree_repos), a colon-separated list of paths. Booleans are written as the strings V(true) and V(false).
      - Any other key is an error.
    type: dict
  overlay_options:
    description:
      - Other keys of C([storage.options.overlay]) to set, for example C(mountopt) or C(mount_program).
      - Known keys are C(ignore_chown_errors) and C(skip_mount_home) (booleans, written as strings), C(mountopt),
        C(mount_program), C(size), C(inodes) and C(force_mask). C(use_composefs) belongs in O(use_composefs).
        Any other key is an error.
    type: dict
  driver:
    description:
      - C([storage] driver). Changing it needs C(podman system reset) first; see RV(reset_required).
    type: str
  graphroot:
    description:
      - C([storage] graphroot). Changing it needs C(podman system reset) first; see RV(reset_required).
    type: path
  runroot:
    description:
      - C([storage] runroot). Changing it needs C(podman system reset) first; see RV(reset_required).
    type: path
  scope:
    description:
      - V(rootful) configures the system-wide files that rootful Podman reads (see O(layout)).
      - V(path) edits the file named by O(path) and nothing else, for example a file used through
        C(CONTAINERS_STORAGE_CONF).
      - When omitted, V(path) if O(path) is given, else V(rootful). O(path) with V(rootful) is an error.
    type: str
    choices: [rootful, path]
  path:
    description:
      - The file to edit; it implies O(scope=path). When it does not exist it is created, from the vendor file
        with O(layout=file) (or O(layout=auto) on Podman 5 and older), and with only the managed keys with
        O(layout=dropin).
      - Its directory must exist (also in check mode, which fails the same way).
    type: path
  layout:
    description:
      - V(file) edits the full C(storage.conf) (C(/etc/containers/storage.conf) with O(scope=rootful)).
      - V(dropin) writes a drop-in with only the managed keys, in C(/etc/containers/storage.rootful.conf.d/) with
        O(scope=rootful). It needs Podman 6 or later; Podman 5 and older read no drop-ins, so asking for it there
        is an error unless O(podman_version_check=false).
      - V(auto) chooses by the installed Podman version, V(file) when Podman is not installed.
      - Earlier versions called this option C(mode); O(mode) is now the file's permission bits.
    type: str
    choices: [auto, file, dropin]
    default: auto
  dropin_name:
    description:
      - File name of the drop-in in C(/etc/containers/storage.rootful.conf.d/). It must end in C(.conf).
        Drop-ins are applied in the order of their names across all drop-in directories.
    type: str
    default: 50-composefs-fleet.conf
  mode:
    description:
      - Permission bits of the file, as a quoted octal string (V('0644')) or a symbolic mode (V(u=rw,g=r,o=r)), as in
        M(ansible.builtin.file). An unquoted YAML number is refused, since V(0644) arrives as 420.
      - Set on the new file before it replaces the old one, so it never appears with other permissions. Omit it to
        keep an existing file's mode; a new file gets C(0644).
    type: raw
  owner:
    description:
      - Name or uid of the file's owner, set like O(mode). Omit it to keep an existing file's owner.
    type: str
  group:
    description:
      - Name or gid of the file's group, set like O(mode). Omit it to keep an existing file's group.
    type: str
  follow:
    description:
      - V(true) edits the target of a symlinked file and keeps the link, as M(community.general.ini_file) does.
      - V(false) replaces the link with a regular file holding the edited content; the old target keeps its content.
      - Podman skips symlinked drop-ins, so a symlinked drop-in gets a warning with V(true).
    type: bool
    default: true
  podman_version_check:
    description:
      - V(true) refuses O(use_composefs=true) on Podman older than 5.0.0 and O(layout=dropin) on Podman older than
        6.0.0 (with O(scope=rootful)), since that Podman would ignore the setting.
      - V(false) writes anyway and warns, to prepare the configuration before a Podman upgrade or for a Podman the
        module cannot see.
    type: bool
    default: true
  backup:
    description:
      - Keep a timestamped copy of the file next to it before changing it.
    type: bool
    default: false
notes:
  - Check mode and diff mode are supported. In check mode nothing is written on the host; the result says what
    would change.
  - C(podman info --format json) shows the outcome in C(store.graphOptions["overlay.use_composefs"]) and which file
    Podman read in C(store.configFile). The collection's C(docs/storage_conf.md) shows how to verify a host.
requirements:
  - On the controller, the Python library tomlkit.
seealso:
  - module: composefs.fleet.storage_conf_info
  - module: composefs.fleet.storage_conf_write
  - name: containers-storage.conf(5)
    description: The storage.conf format.
    link: https://github.com/containers/storage/blob/main/docs/containers-storage.conf.5.md
"""

EXAMPLES = r"""
- name: Turn composefs on for rootful Podman (file on Podman 5, drop-in on Podman 6)
  composefs.fleet.storage_conf:
    use_composefs: true
  become: true

- name: Also hard-link identical files and convert non-zstd:chunked images
  composefs.fleet.storage_conf:
    use_composefs: true
    pull_options:
      enable_partial_images: true
      use_hard_links: true
      convert_images: true
    backup: true
  become: true

- name: Edit a storage.conf used through CONTAINERS_STORAGE_CONF
  composefs.fleet.storage_conf:
    path: /srv/ci/storage.conf
    layout: file
    use_composefs: true
    mode: "0640"
    owner: root
    group: ci

- name: Prepare composefs before upgrading bookworm's Podman 4.3 to 5
  composefs.fleet.storage_conf:
    use_composefs: true
    podman_version_check: false
  become: true

- name: See what would change, without touching the host
  composefs.fleet.storage_conf:
    use_composefs: true
  check_mode: true
  diff: true
  register: plan

- name: Move the graphroot only when a reset is allowed
  composefs.fleet.storage_conf:
    graphroot: /srv/containers/storage
  check_mode: true
  register: storage_plan
"""

RETURN = r"""
path:
  description: The file the module manages (written unless in check mode or unchanged).
  returned: success
  type: str
  sample: /etc/containers/storage.conf
layout:
  description: The layout used, V(file) or V(dropin), after resolving V(auto).
  returned: success
  type: str
  sample: file
target:
  description: The file written, after following a symlink at RV(path) (equal to RV(path) otherwise, or with O(follow=false)).
  returned: success
  type: str
  sample: /usr/share/containers/storage.conf
attributes:
  description: The requested O(mode), O(owner) and O(group), before (empty for a new file) and after.
  returned: when any of O(mode), O(owner), O(group) is given and the file exists or is written
  type: dict
  sample: {before: {mode: "0644"}, after: {mode: "0640"}}
scope:
  description: The scope used.
  returned: success
  type: str
  sample: rootful
created:
  description: Whether the file did not exist before.
  returned: success
  type: bool
podman_version:
  description: Podman version on the host, or null when Podman is not installed.
  returned: always
  type: str
  sample: 5.4.2
podman_supports_composefs:
  description: Whether that Podman honours C(use_composefs) (5.0.0 or later); null when Podman is not installed.
  returned: success
  type: bool
podman_reads_dropins:
  description: Whether that Podman reads storage.conf drop-ins (6.0.0 or later); null when Podman is not installed.
  returned: success
  type: bool
changes:
  description: The keys whose parsed value changes, with the value before (null when absent) and after.
  returned: success
  type: list
  elements: dict
  sample: [{key: storage.options.overlay.use_composefs, before: null, after: "true"}]
diff:
  description:
    - The diffs Ansible shows with C(--diff), as a list. The first is the file's text before (empty when it did not
      exist) and after; a second, when O(mode), O(owner) or O(group) change, has the attributes before and after.
  returned: success
  type: list
  elements: dict
  contains:
    before:
      description: Text before (a dict of attributes in the second diff).
      type: raw
    after:
      description: Text after (a dict of attributes in the second diff).
      type: raw
    before_header:
      description: The path, with C((absent)) when the file did not exist.
      type: str
    after_header:
      description: The path.
      type: str
settings:
  description: The managed keys and the string values the module wants them to have.
  returned: success
  type: dict
  sample: {storage.options.overlay.use_composefs: "true", storage.options.pull_options.enable_partial_images: "true"}
effective:
  description:
    - For each managed key, the value Podman will use after the change and the file it comes from, worked out
      from the files Podman reads (for Podman 6, the main file and every drop-in in order). With O(scope=path)
      the file alone.
  returned: success
  type: dict
  sample: {storage.options.overlay.use_composefs: {value: "true", source: /etc/containers/storage.conf}}
composefs_enabled:
  description: Whether the effective configuration has C(use_composefs = "true").
  returned: success
  type: bool
backup_file:
  description: The backup copy made before the change.
  returned: changed and O(backup=true) and the file existed
  type: str
  sample: /etc/containers/storage.conf.2061.2026-01-01@00:00:00~
reset_required:
  description: Whether the change moves O(driver), O(graphroot) or O(runroot), which needs C(podman system reset) first.
  returned: success
  type: bool
reset_reasons:
  description: What changes that needs the reset.
  returned: success
  type: list
  elements: str
  sample: ["storage.graphroot changes from '/var/lib/containers/storage' to '/srv/containers/storage'"]
rootless_users:
  description: Users with entries in C(/etc/subuid), that is rootless Podman users.
  returned: success
  type: list
  elements: str
mkcomposefs:
  description: The C(mkcomposefs) found on the host (see M(composefs.fleet.storage_conf_info)), or null.
  returned: success
  type: dict
  sample: {path: /usr/bin/mkcomposefs, from_file: true, package: composefs, version: 1.0.8}
kernel:
  description: Kernel release and the state of erofs, overlay, loop and fs-verity (see M(composefs.fleet.storage_conf_info)).
  returned: success
  type: dict
graphroot:
  description: The effective graphroot and its filesystem, with C(verity) (V(supported), V(unsupported) or V(unknown)) and C(reason).
  returned: success
  type: dict
  sample: {path: /var/lib/containers/storage, fstype: xfs, mountpoint: /, verity: unsupported, reason: xfs has no fs-verity}
notes:
  description: Things worth knowing that need no action, for example that a missing file was created from the vendor file.
  returned: success
  type: list
  elements: str
warnings:
  description: Problems found (also shown as Ansible warnings), for example rootless users, a missing mkcomposefs or a graphroot without fs-verity.
  returned: when there are any
  type: list
  elements: str
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.composefs.fleet.plugins.module_utils.storage_conf import ARGUMENT_SPEC, REQUIRED_IF


def main():
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, required_if=REQUIRED_IF, supports_check_mode=True)
    module.fail_json(msg="composefs.fleet.storage_conf runs through its action plugin, which does the TOML work on the "
                         "controller; this module file only documents it. Call it from a playbook task as "
                         "composefs.fleet.storage_conf (not with ansible.builtin.raw, async, or a copied module path), "
                         "with the composefs.fleet collection installed on the controller.")


if __name__ == "__main__":
    main()
