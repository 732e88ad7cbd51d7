#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: composefs.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: prepare_root
short_description: Write ostree's prepare-root.conf (composefs, fs-verity, signatures), refusing values that break boot
version_added: 0.2.0
description:
  - Sets keys of C(/etc/ostree/prepare-root.conf) with GLib key file semantics, keeping comments and other keys.
    ostree-prepare-root reads C(/etc/ostree/prepare-root.conf) instead of (not on top of) C(/usr/lib/ostree/prepare-root.conf).
  - Refuses, naming every reason and writing nothing, a configuration that would stop the host from booting -
    V(verity) or V(signed) while objects of the booted or staged deployment lack fs-verity, while the repository's
    C([ex-integrity] fsverity) is off, or while its filesystem cannot enforce fs-verity;
    V(signed) without a readable Ed25519 public key at O(keypath), or with a commit that carries no signature;
    C(transient) together with C(transient-ro); an existing file GLib cannot parse.
  - ostree-prepare-root reads the copy inside the initramfs. The result says how to regenerate it on this kind of host
    (C(rpm-ostree initramfs-etc --track), or a rebuild of the bootc image). The module never reboots.
author:
  - composefs.fleet developers (@composefs-fleet)
options:
  path:
    description: The file to write.
    type: path
    default: /etc/ostree/prepare-root.conf
  root:
    description: Work on the host's files below this directory (a chroot or mounted image) instead of C(/).
    type: path
    default: /
  sysroot:
    description: The physical root holding C(ostree/repo) and the deployments, for the fs-verity checks.
    type: path
    default: /sysroot
  composefs:
    description:
      - C([composefs] enabled). V(yes) mounts the composefs image, fs-verity best-effort. V(verity) requires fs-verity on
        the image and every object. V(signed) also requires the commit's Ed25519 signature. V(maybe) falls back to no
        composefs only when the image is missing. V(no) turns it off. Unset leaves the key as it is.
    type: str
    choices: ["yes", "no", maybe, verity, signed]
  keypath:
    description: C([composefs] keypath), the public key file for V(signed) (default in ostree C(/etc/ostree/initramfs-root-binding.key)).
    type: path
  root_transient:
    description: C([root] transient), a writable overlay on C(/) discarded at reboot.
    type: bool
  root_transient_ro:
    description: C([root] transient-ro), the same overlay mounted read-only. Not together with O(root_transient).
    type: bool
  etc_transient:
    description: C([etc] transient), C(/etc) as an overlay discarded at reboot.
    type: bool
  sysroot_readonly:
    description: C([sysroot] readonly); ostree defaults it to on when composefs is V(yes).
    type: bool
  check_objects:
    description:
      - For V(verity) and V(signed), check that every object referenced by the booted and staged deployments'
        C(.ostree.cfs) has fs-verity. Turn off only when building an image offline.
    type: bool
    default: true
  backup:
    description: Keep a timestamped copy of the previous file.
    type: bool
    default: false
extends_documentation_fragment:
  - composefs.fleet.attributes
seealso:
  - module: composefs.fleet.boot_facts
  - name: ostree-prepare-root(1)
    description: The configuration file and its keys.
    link: https://ostreedev.github.io/ostree/man/ostree-prepare-root.html
notes:
  - Writes atomically; nothing is written when a check fails.
"""

EXAMPLES = r"""
- name: Enforce fs-verity on the composefs root (refused while objects lack fs-verity)
  composefs.fleet.prepare_root:
    composefs: verity
  become: true
  register: prepare_root

- name: Say what to do next
  ansible.builtin.debug:
    msg: "{{ prepare_root.initramfs.commands }}"
  when: prepare_root is changed

- name: Signed composefs with a key shipped in the initramfs
  composefs.fleet.prepare_root:
    composefs: signed
    keypath: /etc/ostree/initramfs-root-binding.key
  become: true
"""

RETURN = r"""
path:
  description: The file.
  returned: always
  type: str
  sample: /etc/ostree/prepare-root.conf
content:
  description: The file's content after the task (in check mode, what it would be).
  returned: always
  type: str
  sample: "[composefs]\nenabled=verity\n"
effective:
  description: What ostree-prepare-root makes of that content (mode, require_verity, signed, keypath, transient settings).
  returned: always
  type: dict
  sample: {mode: verity, require_verity: true, signed: false, sysroot_readonly: true}
initramfs:
  description: How to get the file into the initramfs on this host; C(needed) is whether the file changed.
  returned: always
  type: dict
  sample: {needed: true, kind: rpm-ostree, commands: ["rpm-ostree initramfs-etc --track=/etc/ostree/prepare-root.conf"]}
reasons:
  description: Each reason the configuration was refused.
  returned: failure
  type: list
  elements: str
backup_file:
  description: The copy of the previous file.
  returned: when O(backup=true) and the file changed
  type: str
"""

import os

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.composefs.fleet.plugins.module_utils.boot.prepare_root_plan import PrepareRootRefused, plan, regeneration
from ansible_collections.composefs.fleet.plugins.module_utils.common.atomic import atomic_write
from ansible_collections.composefs.fleet.plugins.module_utils.verity_facts.gather import gather as verity_gather

ARGUMENT_SPEC = dict(
    path=dict(type="path", default="/etc/ostree/prepare-root.conf"),
    root=dict(type="path", default="/"),
    sysroot=dict(type="path", default="/sysroot"),
    composefs=dict(type="str", choices=["yes", "no", "maybe", "verity", "signed"]),
    keypath=dict(type="path", no_log=False),
    root_transient=dict(type="bool"),
    root_transient_ro=dict(type="bool"),
    etc_transient=dict(type="bool"),
    sysroot_readonly=dict(type="bool"),
    check_objects=dict(type="bool", default=True),
    backup=dict(type="bool", default=False),
)


def main():
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    params = module.params
    root = params["root"]
    full = os.path.join(root, params["path"].lstrip("/"))
    try:
        with open(full, "rb") as handle:
            current = handle.read().decode("utf-8")
    except FileNotFoundError:
        current = None
    except (OSError, UnicodeDecodeError) as exc:
        module.fail_json(msg="cannot read %s: %s" % (full, exc))
    repo = os.path.join(params["sysroot"], "ostree", "repo")
    verity_paths = {}
    if params["composefs"] in ("verity", "signed") and os.path.isdir(os.path.join(root, repo.lstrip("/"))):
        full_repo = os.path.join(root, repo.lstrip("/"))
        for entry in verity_gather([full_repo], tools=())["paths"]:
            verity_paths[repo] = entry
    try:
        new_text, effective, warnings = plan(params, current or "", root=root, verity_paths=verity_paths)
    except PrepareRootRefused as exc:
        module.fail_json(msg=str(exc), reasons=exc.reasons, path=params["path"])
    for warning in warnings:
        module.warn(warning)
    changed = new_text != (current if current is not None else "")
    if current is None and not new_text:
        changed = False
    result = dict(changed=changed, path=params["path"], content=new_text, effective=effective,
                  initramfs=dict(regeneration(root, params["path"], effective["keypath"] if effective["signed"] else None),
                                 needed=changed))
    if changed and module._diff:
        result["diff"] = dict(before=current or "", after=new_text, before_header=params["path"], after_header=params["path"])
    if changed and not module.check_mode:
        if params["backup"] and current is not None:
            result["backup_file"] = module.backup_local(full)
        directory = os.path.dirname(full)
        if not os.path.isdir(directory):
            os.makedirs(directory, 0o755)
        atomic_write(full, new_text.encode("utf-8"), mode=0o644)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
