#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: composefs.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: boot_facts
short_description: How an ostree, bootc or CoreOS host boots composefs, and whether fs-verity is enforced or signed
version_added: 0.2.0
description:
  - Sets C(ansible_facts.composefs_boot) with how the host boots - V(ostree), V(bootc) (its composefs backend) or V(none).
  - For ostree hosts, composefs on or off and its mode (V(no), V(maybe), V(yes), V(verity), V(signed)) as the running boot
    recorded it in C(/run/ostree-booted) (a GVariant C(a{sv}) read with the standard library), and as
    C(prepare-root.conf) (C(/etc/ostree/) over C(/usr/lib/ostree/)) and the karg C(ostree.prepare-root.composefs=) configure
    it, with which of them decided.
  - Each deployment with its commit, origin and C(.ostree.cfs), whose fs-verity digest (measured by the kernel when the file has
    fs-verity, computed otherwise) is checked against the commit's C(ostree.composefs.digest.v0).
  - The repository's C([ex-integrity] composefs) and C(fsverity) settings, and whether its filesystem can enforce fs-verity
    (the same verdict as M(composefs.fleet.verity_facts)).
  - For bootc's composefs backend, the C(composefs=[?]DIGEST) karg (C(?) makes verity optional), the deployments under
    C(/sysroot/state/deploy) with their C(.origin), the image's digest against the karg, and C(bootc status --json).
  - On hosts without Python the action plugin reads the same files with M(ansible.builtin.raw) and decides the facts on the
    controller with the same code; C(source) is then V(raw).
author:
  - composefs.fleet developers (@composefs-fleet)
options:
  sysroot:
    description: The physical root of the ostree or bootc host.
    type: path
    default: /sysroot
  root:
    description:
      - Read the host's files below this directory instead of C(/) (a mounted disk image or a chroot). The kernel command
        line and mounts are still this host's.
    type: path
    default: /
  bootc_status:
    description: Run C(bootc status --json) on bootc hosts (only with O(root=/)).
    type: bool
    default: true
  digests:
    description:
      - Compute the fs-verity digest of each C(.ostree.cfs) that has no fs-verity (reads the image; a few MiB per deployment).
    type: bool
    default: true
  raw_fallback:
    description: When the host has no Python, read the facts with M(ansible.builtin.raw) and decide them on the controller.
    type: bool
    default: true
notes:
  - Supports check mode; the module changes nothing.
  - C(ostree-prepare-root) reads the copy of C(prepare-root.conf) inside the initramfs. C(composefs.pending) is V(true)
    when the file and the running boot disagree (the initramfs was not regenerated, or the host was not rebooted).
extends_documentation_fragment:
  - composefs.fleet.attributes.read_only
attributes:
  facts:
    description: Action returns an C(ansible_facts) dictionary that will update existing host facts.
    support: full
seealso:
  - module: composefs.fleet.verity_facts
  - module: composefs.fleet.prepare_root
  - name: ostree composefs
    description: How ostree boots a composefs root.
    link: https://ostreedev.github.io/ostree/composefs/
"""

EXAMPLES = r"""
- name: How does each node boot composefs
  composefs.fleet.boot_facts:
  become: true

- name: Show the mode and who decided it
  ansible.builtin.debug:
    msg: "{{ ansible_facts.composefs_boot.summary }} (mode {{ ansible_facts.composefs_boot.composefs.mode }},
      decided by {{ ansible_facts.composefs_boot.composefs.decided_by }})"

- name: Nodes whose booted image does not match its commit
  ansible.builtin.debug:
    msg: "{{ inventory_hostname }}: {{ ansible_facts.composefs_boot.composefs.image_note }}"
  when: ansible_facts.composefs_boot.composefs.image_matches_commit is false
"""

RETURN = r"""
ansible_facts:
  description: Facts added to the host.
  returned: always
  type: dict
  contains:
    composefs_boot:
      description: How the host boots composefs.
      returned: always
      type: dict
      contains:
        facts_version:
          description: Version of this structure.
          type: int
          sample: 1
        source:
          description: V(module), or V(raw) for a host without Python.
          type: str
          sample: module
        kind:
          description: V(ostree), V(bootc) (the composefs backend) or V(none).
          type: str
          sample: ostree
        summary:
          description: "One line for reports: V(none), or the kind and V(off), V(best-effort), V(enforced) or V(signed), as in C(ostree: enforced)."
          type: str
          sample: "ostree: best-effort"
        booted:
          description: Whether C(/run/ostree-booted) exists or a C(composefs=) karg is set.
          type: bool
        cmdline:
          description: The kernel command line.
          type: str
        root:
          description: The root mount as M(composefs.fleet.verity_facts) reports it (composefs, C(verity=)).
          type: dict
        composefs:
          description:
            - C(enabled), C(mode), C(decided_by) (C(/run/ostree-booted), V(karg), the config file or V(default)),
              C(verity_enforced), C(signed), C(signed_with).
            - For ostree C(configured_mode), C(configured_by), C(pending) (config and running boot disagree) with
              C(pending_note), C(image_digest), C(image_digest_expected), C(image_matches_commit) and C(image_note).
            - For bootc C(image_digest) (the karg), C(image_digest_actual) and C(image_matches_karg).
          type: dict
          sample: {enabled: true, mode: "yes", decided_by: /run/ostree-booted, verity_enforced: false, signed: false}
        prepare_root:
          description:
            - What ostree-prepare-root makes of C(prepare-root.conf) and the karg (ostree hosts). C(errors) lists each
              reason the next boot would fail.
          type: dict
          returned: when kind is ostree
        run_ostree_booted:
          description: C(/run/ostree-booted) decoded (C(composefs), C(composefs.verity), C(composefs.signed), C(sysroot-ro), ...).
          type: dict
          returned: when kind is ostree
        deployments:
          description: The deployments, the booted one first, each with C(booted), C(staged), C(origin), C(commit) and C(composefs_image).
          type: list
          elements: dict
        booted_deployment:
          description: C(CHECKSUM.SERIAL) (ostree) or the image digest (bootc) of the booted deployment, or V(null).
          type: str
        repository:
          description:
            - C(path); for ostree C(config) (C(composefs), C(fsverity), C(fsverity_effective), C(mode)); C(filesystem), the
              verity_facts verdict of its filesystem (C(verity) is V(supported), V(unsupported) or V(unknown)).
          type: dict
        bootc_status:
          description: C(bootc status --json) reduced to each entry's composefs view.
          type: dict
          returned: when kind is bootc and bootc ran
        errors:
          description: What could not be read or would fail the boot.
          type: list
          elements: str
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.composefs.fleet.plugins.module_utils.boot.gather import gather_local

ARGUMENT_SPEC = dict(
    sysroot=dict(type="path", default="/sysroot"),
    root=dict(type="path", default="/"),
    bootc_status=dict(type="bool", default=True),
    digests=dict(type="bool", default=True),
    raw_fallback=dict(type="bool", default=True),
)


def main():
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    params = module.params
    facts = gather_local(root=params["root"], sysroot=params["sysroot"], run_bootc=params["bootc_status"],
                         compute_digests=params["digests"])
    module.exit_json(changed=False, ansible_facts=dict(composefs_boot=facts))


if __name__ == "__main__":
    main()
