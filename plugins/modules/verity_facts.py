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
  - On a host without Python (Fedora CoreOS, minimal images) the action plugin reads the same facts through POSIX sh commands
    (as M(ansible.builtin.raw) would, with become when the task has it) and parses them on the controller
    (O(raw_fallback)). The task then succeeds with RV(ansible_facts.composefs.source=raw); it is not reported as failed.
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
  boot:
    description:
      - Also read how the host boots composefs (ostree, bootc or neither, the mode, whether verity is enforced, the booted
        digest) into RV(ansible_facts.composefs_boot), as M(composefs.fleet.boot_facts) does with its defaults - one module
        run for both, as the C(composefs.fleet.verity_check) role's survey does.
      - A problem reading them does not fail the task or lose the verity facts; RV(ansible_facts.composefs_boot) is then
        absent and RV(boot_error) says why. On a host without Python the action plugin reads them with raw commands too.
    type: bool
    default: false
    version_added: 0.2.0
  boot_sysroot:
    description: The physical root of the ostree or bootc host, for O(boot).
    type: path
    default: /sysroot
    version_added: 0.2.0
  raw_fallback:
    description:
      - When the module cannot run because the host has no Python interpreter, read the facts with POSIX sh commands -
        C(uname), the kernel config, C(/sys/fs/*/features), C(/proc/filesystems), C(/proc/self/mountinfo), the ext4 superblocks
        (C(dd) and C(od)), C(readlink -f) and C(stat) of each path, the tools' C(--version) - and parse them on the controller.
        Every command only reads, so this also runs in check mode. O(probe) is not possible there.
      - V(false) leaves the module's failure as it is.
    type: bool
    default: true
notes:
  - Supports check mode (nothing is written; the probe is not run). The raw reads of a host without Python run in check mode too.
  - A verdict of V(supported) means the kernel and the filesystem can enforce fs-verity there. V(unsupported) names what
    is missing (a kernel without C(CONFIG_FS_VERITY), ext4 without the C(verity) feature, xfs, tmpfs, overlay...).
    V(unknown) means it cannot be told without trying (network and FUSE filesystems, unreadable superblocks, a kernel
    whose configuration cannot be found); O(probe=true) tries.
  - The overlayfs features are inferred from the kernel version; distribution kernels with backports (RHEL 9) are not detected.
attributes:
  action:
    description: Indicates this has a corresponding action plugin so some parts of the options can be executed on the controller.
    support: full
    details: The action plugin runs the raw fallback for hosts without Python and parses its output on the controller.
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

- name: Survey hosts that may lack Python (Fedora CoreOS); their facts come from raw commands, marked source=raw
  composefs.fleet.verity_facts:
  become: true
  register: verity

- name: The verity facts and how the host boots composefs, in one module run
  composefs.fleet.verity_facts:
    boot: true
  become: true

- name: Ask the kernel rather than infer (writes and removes a scratch file in each path)
  composefs.fleet.verity_facts:
    paths: [/srv/composefs]
    probe: true
  become: true
"""

RETURN = r"""
boot_error:
  description: Why RV(ansible_facts.composefs_boot) is missing although O(boot) asked for it.
  returned: when O(boot=true) and the boot facts could not be read
  type: str
  sample: "PermissionError: [Errno 13] Permission denied: '/sysroot/ostree/deploy'"
ansible_facts:
  description: Facts added to the host.
  returned: always
  type: dict
  contains:
    composefs_boot:
      description:
        - How the host boots composefs, with O(boot=true); the same structure as M(composefs.fleet.boot_facts)'s
          RV(composefs.fleet.boot_facts#module:ansible_facts.composefs_boot).
      returned: when O(boot=true) and they could be read
      type: dict
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
          description: V(module) when the module ran; V(raw) when the host has no Python and the facts were read with raw commands (O(raw_fallback)).
          type: str
          choices: [module, raw]
          sample: module
        note:
          description: With RV(ansible_facts.composefs.source=raw), says so in plain words.
          type: str
          returned: when the facts come from raw commands
          sample: "no python: raw facts only"
        warning:
          description: With RV(ansible_facts.composefs.source=raw), set when the raw output ended early, so that some facts may be missing.
          type: str
          returned: when the raw output was incomplete
          sample: "the raw output ended early: the facts may be incomplete"
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
              description: overlayfs. C(available) and the features are V(true), V(false) or V(null) (unknown).
              type: dict
              contains:
                available:
                  description: Whether overlayfs is built in, loaded or loadable; V(null) when unknown.
                  type: bool
                  sample: true
                basis:
                  description: What C(available) is based on.
                  type: str
                  sample: overlay is in /proc/filesystems
                data_only_lowers:
                  description: Data-only lower layers (C(lowerdir=a::b), 6.5), by kernel version.
                  type: bool
                  sample: true
                verity:
                  description: The C(verity=) mount option (6.6), by kernel version.
                  type: bool
                  sample: true
                lowerdir_plus:
                  description: C(lowerdir+)/C(datadir+) (6.7), by kernel version.
                  type: bool
                  sample: true
                features_basis:
                  description: What the three features above are based on (the kernel version; backports are not detected).
                  type: str
                  sample: "kernel version (data-only lower layers 6.5, verity= 6.6, lowerdir+/datadir+ 6.7; distribution backports are not detected)"
                parameters:
                  description: C(/sys/module/overlay/parameters), or V(null) when overlay is not loaded.
                  type: dict
                  sample: {metacopy: "N", redirect_dir: "N"}
            erofs:
              description: EROFS.
              type: dict
              contains:
                available:
                  description: Whether EROFS is built in, loaded or loadable; V(null) when unknown.
                  type: bool
                  sample: true
                basis:
                  description: What C(available) is based on.
                  type: str
                  sample: erofs is in /proc/filesystems
                file_backed:
                  description: Whether EROFS mounts image files without a loop device (6.12, C(CONFIG_EROFS_FS_BACKED_BY_FILE)).
                  type: bool
                  sample: true
                file_backed_basis:
                  description: What C(file_backed) is based on.
                  type: str
                  sample: "/proc/config.gz: CONFIG_EROFS_FS_BACKED_BY_FILE=y"
                features:
                  description: C(/sys/fs/erofs/features), or V(null).
                  type: list
                  elements: str
                  sample: [chunked_file, sb_chksum]
            loop:
              description: Loop devices.
              type: dict
              contains:
                available:
                  description: Whether loop devices exist or can be made; V(null) when unknown.
                  type: bool
                  sample: true
                basis:
                  description: What C(available) is based on.
                  type: str
                  sample: /dev/loop-control exists
                devices:
                  description: How many loop devices exist, or V(null).
                  type: int
                  sample: 8
                control:
                  description: Whether C(/dev/loop-control) exists (it makes more devices on demand).
                  type: bool
                  sample: true
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
            major_minor:
              description: The device number of the filesystem (C(MAJOR:MINOR) in C(/proc/self/mountinfo)).
              type: str
              returned: when a mount holds the path
              sample: "254:3"
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
              description: The probe, with O(probe=true).
              type: dict
              returned: when O(probe=true)
              contains:
                performed:
                  description: Whether the probe ran (not in check mode).
                  type: bool
                  sample: true
                result:
                  description: V(enabled), V(refused) (see C(errno) and C(errno_name)), V(error) (no scratch file could be made) or V(not_run) (check mode).
                  type: str
                  sample: refused
                errno:
                  description: The errno of C(FS_IOC_ENABLE_VERITY), or V(null).
                  type: int
                  sample: 95
                errno_name:
                  description: Its name, or V(null).
                  type: str
                  sample: EOPNOTSUPP
                directory:
                  description: The directory the scratch file was made in.
                  type: str
                  sample: /srv
                message:
                  description: What happened, in plain words.
                  type: str
                  sample: "FS_IOC_ENABLE_VERITY failed with EOPNOTSUPP: xfs has no fs-verity"
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
            boot=dict(type="bool", default=False),
            boot_sysroot=dict(type="path", default="/sysroot"),
            # read by the action plugin (plugins/action/verity_facts.py): the module runs only where Python does
            raw_fallback=dict(type="bool", default=True),
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
    result = dict(changed=False, ansible_facts=dict(composefs=facts))
    if module.params["boot"]:
        # Imported only when asked: a module compiles everything it imports on every run.
        from ansible_collections.composefs.fleet.plugins.module_utils.boot.gather import gather_local
        try:
            result["ansible_facts"]["composefs_boot"] = gather_local(sysroot=module.params["boot_sysroot"])
        except Exception as exc:  # pylint: disable=broad-exception-caught  # the verity facts stand without them
            result["boot_error"] = "%s: %s" % (type(exc).__name__, exc)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
