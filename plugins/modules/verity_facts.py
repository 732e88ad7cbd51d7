#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: composefs.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: verity_facts
short_description: Which filesystems on a host can enforce fs-verity, and what the kernel offers composefs
version_added: 0.1.0
description:
  - Sets C(ansible_facts.composefs) with what a host offers composefs with fs-verity, before it is turned on.
  - C(kernel) has the kernel release, whether it was built with C(CONFIG_FS_VERITY) (with the evidence, from
    C(/proc/config.gz), C(/boot/config-RELEASE) or C(/usr/lib/modules/RELEASE/config), and from
    C(/sys/fs/{ext4,btrfs,f2fs}/features/verity), which only a kernel with fs-verity has), the overlayfs features composefs
    uses (data-only lower layers since 6.5, C(verity=) since 6.6, C(lowerdir+)/C(datadir+) since 6.7, by kernel version),
    EROFS (and file-backed EROFS mounts, 6.12) and loop devices.
  - C(paths) has one entry for each existing path in O(paths) with its mount point, device, filesystem type and a
    C(verity) verdict (V(supported), V(unsupported) or V(unknown)) with the reason. For ext4 the feature flags are read
    from the superblock on the device directly; e2fsprogs is not needed.
  - C(tools) has the versions of C(mkcomposefs), C(mount.composefs), C(fsverity), C(podman), C(ostree) and C(bootc) where present.
  - C(root) says whether C(/) is a composefs mount (source C(composefs) in C(/proc/self/mountinfo)) and whether it has C(verity=require).
  - Read-only unless O(probe=true). Needs only the Python standard library on the managed node.
    Reading a block device's superblock needs root (become); without it ext4 paths are V(unknown).
author:
  - composefs.fleet developers (@composefs-fleet)
options:
  paths:
    description:
      - Paths to report on. Paths that do not exist are left out of RV(ansible_facts.composefs.paths) and listed in
        RV(ansible_facts.composefs.missing_paths).
      - The default covers the composefs object store, containers-storage, the ostree repository and the root filesystem.
      - Absolute paths; a relative path is refused (the module runs on the managed node).
    type: list
    elements: path
    default: [/var/lib/composefs, /var/lib/containers/storage, /sysroot/ostree/repo, /]
  probe:
    description:
      - In each path (or the directory of a file path), create a scratch file, try C(FS_IOC_ENABLE_VERITY) on it,
        remove it, and report the errno. The kernel's answer then decides the verdict.
      - This writes to the filesystems. On btrfs the first file that ever gets fs-verity sets the C(VERITY) compat_ro
        flag in the superblock, so kernels older than 5.15 can then mount that filesystem only read-only.
      - Not run in check mode; RV(ansible_facts.composefs.probe.note) says so.
    type: bool
    default: false
notes:
  - Supports check mode (nothing is written; the probe is not run).
  - A verdict of V(supported) means the kernel and the filesystem can enforce fs-verity there. V(unsupported) names what
    is missing (a kernel without C(CONFIG_FS_VERITY), ext4 without the C(verity) feature, xfs, tmpfs, overlay...).
    V(unknown) means it cannot be told without trying (network and FUSE filesystems, unreadable superblocks, a kernel
    whose configuration cannot be found); O(probe=true) tries.
  - The overlayfs features are inferred from the kernel version; distribution kernels with backports (RHEL 9) are not detected.
attributes:
  check_mode:
    description: Can run in check mode and return changed status prediction without modifying target.
    support: full
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check mode), when in diff mode.
    support: none
  facts:
    description: Action returns an C(ansible_facts) dictionary that will update existing host facts.
    support: full
seealso:
  - module: composefs.fleet.fsverity
  - name: fs-verity in the kernel documentation
    description: Which filesystems support fs-verity and what they need.
    link: https://docs.kernel.org/filesystems/fsverity.html
"""

EXAMPLES = r"""
- name: Gather composefs facts for the default paths
  composefs.fleet.verity_facts:
  become: true

- name: Which filesystems under the container store can enforce fs-verity
  composefs.fleet.verity_facts:
    paths:
      - /var/lib/containers/storage
      - /srv/composefs
  become: true

- name: Show the verdict for each path
  ansible.builtin.debug:
    msg: "{{ item.path }} on {{ item.fstype }}: {{ item.verity }} ({{ item.reason }})"
  loop: "{{ ansible_facts.composefs.paths }}"
  loop_control:
    label: "{{ item.path }}"

- name: Ask the kernel rather than infer (writes and removes a scratch file in each path)
  composefs.fleet.verity_facts:
    paths: [/srv/composefs]
    probe: true
  become: true
"""

RETURN = r"""
ansible_facts:
  description: Facts added to the host.
  returned: always
  type: dict
  contains:
    composefs:
      description: What the host offers composefs with fs-verity.
      returned: always
      type: dict
      contains:
        facts_version:
          description: Version of this structure.
          type: int
          sample: 1
        source:
          description: V(module) here; V(raw) when the verity_check role read a host without Python through raw commands.
          type: str
          sample: module
        kernel:
          description: The running kernel.
          type: dict
          contains:
            release:
              description: C(uname -r).
              type: str
              sample: 6.12.117+deb13-amd64
            version:
              description: The numeric part of the release, or V(null).
              type: str
              sample: 6.12.117
            fs_verity:
              description: Whether the kernel has C(CONFIG_FS_VERITY); V(null) when unknown.
              type: bool
              sample: true
            fs_verity_evidence:
              description: What C(fs_verity) is based on, in plain words.
              type: list
              elements: str
              sample: ["/sys/fs/ext4/features/verity exists", "/boot/config-6.12.117+deb13-amd64: CONFIG_FS_VERITY=y"]
            fs_verity_builtin_signatures:
              description: Whether C(CONFIG_FS_VERITY_BUILTIN_SIGNATURES) is set, when the kernel config was found.
              type: bool
              sample: false
            verity_filesystems:
              description: Filesystems whose C(/sys/fs/FS/features) lists C(verity).
              type: list
              elements: str
              sample: [btrfs, ext4]
            config_source:
              description: The kernel config file read, or V(null).
              type: str
              sample: /proc/config.gz
            overlay:
              description:
                - overlayfs. C(available) and the features are V(true), V(false) or V(null) (unknown).
                - C(data_only_lowers) (6.5), C(verity) (the C(verity=) option, 6.6) and C(lowerdir_plus) (C(lowerdir+)/C(datadir+), 6.7)
                  are inferred from the kernel version; C(parameters) are C(/sys/module/overlay/parameters).
              type: dict
              sample: {available: true, basis: overlay is in /proc/filesystems, data_only_lowers: true, verity: true, lowerdir_plus: true,
                       parameters: {metacopy: "N", redirect_dir: "N"}}
            erofs:
              description: EROFS; C(available), and C(file_backed) for mounting image files without a loop device (6.12).
              type: dict
              sample: {available: true, basis: erofs is in /proc/filesystems, file_backed: true,
                       file_backed_basis: "/proc/config.gz: CONFIG_EROFS_FS_BACKED_BY_FILE=y", features: [chunked_file, sb_chksum]}
            loop:
              description: Loop devices; C(devices) is how many exist, C(control) whether C(/dev/loop-control) can make more.
              type: dict
              sample: {available: true, basis: /dev/loop-control exists, devices: 8, control: true}
        paths:
          description: One entry per existing path in O(paths).
          type: list
          elements: dict
          contains:
            path:
              description: The path as given.
              type: str
              sample: /var/lib/containers/storage
            real_path:
              description: The path with symlinks resolved.
              type: str
              sample: /var/lib/containers/storage
            mountpoint:
              description: Where the filesystem holding the path is mounted.
              type: str
              sample: /var
            device:
              description: Its block device, or V(null) (tmpfs, overlay, network filesystems).
              type: str
              sample: /dev/sda3
            source:
              description: The mount source from C(/proc/self/mountinfo).
              type: str
              sample: /dev/sda3
            fstype:
              description: The filesystem type.
              type: str
              sample: ext4
            mount_options:
              description: The per-mount options.
              type: str
              sample: rw,relatime
            read_only:
              description: Whether the mount is read-only.
              type: bool
              sample: false
            verity:
              description: Whether fs-verity can be enforced there.
              type: str
              choices: [supported, unsupported, unknown]
              sample: unsupported
            reason:
              description: Why, in plain words, with the fix where there is one.
              type: str
              sample: "ext4 without the verity feature: tune2fs -O verity /dev/sda3 while unmounted (e2fsprogs >= 1.45)"
            reasons:
              description: Every reason that applies, the deciding one first.
              type: list
              elements: str
            ext4:
              description:
                - For ext4, from the superblock; V(null) when it could not be read (see C(ext4_error)).
                - C(features) are named as by C(dumpe2fs); C(verity_feature) is the C(verity) flag; C(compat), C(incompat), C(ro_compat) the raw masks.
              type: dict
              returned: when the filesystem is ext4
              sample: {block_size: 4096, features: [has_journal, ext_attr, extent, verity], verity_feature: true}
            ext4_error:
              description: Why the ext4 superblock could not be read.
              type: str
              returned: when the filesystem is ext4 and its superblock could not be read
              sample: "cannot read /dev/sda3: Permission denied"
            f2fs_features:
              description: For f2fs, C(/sys/fs/f2fs/DEVICE/features), or V(null).
              type: list
              elements: str
              returned: when the filesystem is f2fs
            probe:
              description:
                - The probe, with O(probe=true). C(result) is V(enabled), V(refused) (see C(errno) and C(errno_name)),
                  V(error) (no scratch file could be made) or V(not_run) (check mode).
              type: dict
              returned: when O(probe=true)
              sample: {performed: true, result: refused, errno: 95, errno_name: EOPNOTSUPP, directory: /srv,
                       message: "FS_IOC_ENABLE_VERITY failed with EOPNOTSUPP: xfs has no fs-verity"}
        missing_paths:
          description: Paths of O(paths) that do not exist.
          type: list
          elements: str
          sample: [/sysroot/ostree/repo]
        tools:
          description: The tools found on C(PATH) (or in the sbin directories), each with its path and version (V(null) when not parsed).
          type: dict
          sample: {podman: {path: /usr/bin/podman, version: 5.2.2}, mkcomposefs: {path: /usr/bin/mkcomposefs, version: 1.0.8}}
        root:
          description: The root filesystem.
          type: dict
          contains:
            composefs:
              description: Whether C(/) is a composefs mount (source C(composefs)).
              type: bool
              sample: false
            verity:
              description: The C(verity=) mount option of C(/) (V(require), V(on), V(off)), or V(null).
              type: str
              sample: require
            verity_required:
              description: Whether C(/) is composefs with C(verity=require).
              type: bool
              sample: false
            fstype:
              description: The filesystem type of C(/).
              type: str
              sample: overlay
            source:
              description: The mount source of C(/).
              type: str
              sample: composefs
            options:
              description: The mount and superblock options of C(/).
              type: str
            ostree_booted:
              description: Whether C(/run/ostree-booted) exists.
              type: bool
              sample: false
        probe:
          description: Whether the probe was asked for and run.
          type: dict
          contains:
            requested:
              description: O(probe).
              type: bool
              sample: true
            performed:
              description: Whether the probe ran (not in check mode).
              type: bool
              sample: false
            note:
              description: What was done, in plain words.
              type: str
              sample: "check mode: the probe was not run (it writes a scratch file)"
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.composefs.fleet.plugins.module_utils.common.params import ParameterError, require_absolute
from ansible_collections.composefs.fleet.plugins.module_utils.verity_facts.gather import CHECK_MODE_NOTE, DEFAULT_PATHS, gather


def main():
    module = AnsibleModule(
        argument_spec=dict(
            paths=dict(type="list", elements="path", default=list(DEFAULT_PATHS)),
            probe=dict(type="bool", default=False),
        ),
        supports_check_mode=True,
    )
    try:
        for path in module.params["paths"]:
            require_absolute(path, "paths")
    except ParameterError as exc:
        module.fail_json(msg=str(exc))
    probe = module.params["probe"]
    if probe and module.check_mode:
        module.warn(CHECK_MODE_NOTE)
    facts = gather(module.params["paths"], probe=probe, check_mode=module.check_mode)
    module.exit_json(changed=False, ansible_facts=dict(composefs=facts))


if __name__ == "__main__":
    main()
