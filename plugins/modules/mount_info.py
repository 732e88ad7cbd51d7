#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: composefs.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: mount_info
short_description: What is mounted at a path, with which image digest, and whether it is persisted
version_added: 0.2.0
description:
  - Reads, without changing anything, what M(composefs.fleet.mount) reads before it acts - C(/proc/self/mountinfo), the
    record of the composefs mounts it made (C(/run/composefs-fleet/mounts/)), and the line it manages in O(fstab) -
    and reports the mount at O(path), the fs-verity digest of the image mounted there, its verity mode, and the
    persisted line's digest.
  - A mount made at boot from the managed fstab line (by C(mount.composefs)) is recognised when its options match the
    line, as M(composefs.fleet.mount) does; its digest is the line's pin (with C(verity=require) the kernel checked it;
    otherwise the image is hashed now and must still have it).
  - The digest is known only for this collection's mounts; for someone else's mount RV(kind) is V(other) and RV(digest)
    is null.
  - Needs only the Python standard library on the managed node.
extends_documentation_fragment:
  - composefs.fleet.attributes.read_only
author:
  - composefs.fleet developers (@composefs-fleet)
options:
  path:
    description: The mount point. Absolute.
    type: path
    required: true
  fstab:
    description: The fstab file whose managed line for O(path) is reported.
    type: path
    default: /etc/fstab
seealso:
  - module: composefs.fleet.mount
  - module: composefs.fleet.repository_info
"""

EXAMPLES = r"""
- name: Which image runs at /srv/app?
  composefs.fleet.mount_info:
    path: /srv/app
  register: app_mount

- name: Fail when it is not the pinned one, or would not come back after a reboot
  ansible.builtin.assert:
    that:
      - app_mount.digest == wanted_digest
      - app_mount.fstab.digest | default(none) == wanted_digest
"""

RETURN = r"""
path:
  description: The mount point.
  returned: always
  type: str
  sample: /srv/app
kind:
  description:
    - V(none) - nothing is mounted there. V(ours) - a composefs mount this collection made (or a boot-time mount of its
      fstab line). V(covered) - ours, with another mount stacked on it. V(other) - someone else's mount.
  returned: always
  type: str
  sample: ours
mounted:
  description: Whether this collection's composefs mount is at O(path) (RV(kind) is V(ours)).
  returned: always
  type: bool
  sample: true
digest:
  description: The fs-verity digest of the mounted image, or null when RV(mounted) is false or the mount has no pin.
  returned: always
  type: str
  sample: 2b1dfb9ffe6938cb3134c339059572e38cbd8cc515d54758fdff55cad5a37427
verity:
  description: How fs-verity is enforced on the mount - V(kernel), V(userspace) (checked once, before mounting) or V(none); null when not mounted.
  returned: always
  type: str
  sample: kernel
verity_mode:
  description: The M(composefs.fleet.mount) O(composefs.fleet.mount#module:verity) value it was mounted with; null when not mounted.
  returned: always
  type: str
  sample: require
image:
  description: The image file mounted; null when not mounted.
  returned: always
  type: str
  sample: /var/lib/composefs/repo/objects/2b/1dfb9ffe6938cb3134c339059572e38cbd8cc515d54758fdff55cad5a37427
basedir:
  description: The object stores of the mount.
  returned: always
  type: list
  elements: str
  sample: [/var/lib/composefs/repo/objects]
adopted:
  description: Whether the mount was made at boot from the managed fstab line (no record of this collection's).
  returned: always
  type: bool
  sample: false
kernel_verity:
  description: Whether the overlay at O(path) has C(verity=require), as mountinfo shows it; null without a composefs mount.
  returned: always
  type: bool
  sample: true
readonly:
  description: Whether the composefs mount is read-only; null without one.
  returned: always
  type: bool
  sample: true
top:
  description: The mount on top at O(path) (filesystem type, source, mount id), or null.
  returned: always
  type: str
  sample: overlay composefs (mount id 512)
persisted:
  description: Whether O(fstab) has the managed line for O(path) (mounted at boot).
  returned: always
  type: bool
  sample: true
fstab:
  description: The managed fstab line for O(path), or null.
  returned: always
  type: dict
  contains:
    path:
      description: The fstab file.
      type: str
    digest:
      description: The digest pinned in the line (null for a line without a pin).
      type: str
    verity:
      description: The verity mode of the line.
      type: str
    image:
      description: The image file the line mounts.
      type: str
    basedir:
      description: The object stores of the line.
      type: list
      elements: str
fstab_others:
  description: Other (unmanaged) lines of O(fstab) for O(path).
  returned: always
  type: list
  elements: str
  sample: []
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.composefs.fleet.plugins.module_utils.mount.errors import MountError
from ansible_collections.composefs.fleet.plugins.module_utils.mount.info import mount_status


def main():
    module = AnsibleModule(
        argument_spec=dict(
            path=dict(type="path", required=True),
            fstab=dict(type="path", default="/etc/fstab"),
        ),
        supports_check_mode=True,
    )
    try:
        result = mount_status(module.params["path"], module.params["fstab"])
    except MountError as exc:
        module.fail_json(msg=str(exc), error=getattr(exc, "kind", None))
    except OSError as exc:
        module.fail_json(msg="cannot read the mount state of %s: %s" % (module.params["path"], exc))
    module.exit_json(changed=False, **result)


if __name__ == "__main__":
    main()
