#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: composefs.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: repository_push
short_description: Push an image from a controller-side composefs repository, sending only the objects the host lacks
version_added: 0.2.0
description:
  - Copies the image O(ref) of the composefs repository O(src) on the controller into the repository O(path) on the
    host, with exactly the objects of the image the host does not have yet, and names it O(dest_ref) there.
  - One task makes two module runs and at most one file transfer per host. First the host reports which of the
    image's objects it lacks and whether it has the image. Then the controller writes those objects (and the image,
    when it is missing) into one bundle file, copies it to the host's remote temporary directory, and the host
    imports it. Nothing missing and the ref already right means no transfer and C(changed=false).
  - The host writes every object to a staging file beside its final name while computing its fs-verity digest (in
    the repository's algorithm), and renames nothing into place before every object of the bundle matched its name.
    A corrupt or truncated bundle is refused and leaves the repository as it was. The image is published last, then
    linked as C(images/<digest>), then the ref is set.
  - The host holds the repository lock shared while it imports (as every writer does), so a concurrent
    M(composefs.fleet.repository) O(composefs.fleet.repository#module:gc) never collects what is being added.
  - A repository missing on the host is created with the algorithm and EROFS format of O(src).
  - Needs only the Python standard library on the managed node.
extends_documentation_fragment:
  - composefs.fleet.attributes
author:
  - composefs.fleet developers (@composefs-fleet)
options:
  src:
    description:
      - The composefs repository (composefs-rs layout) on the controller that holds the image and all its objects.
      - A relative path is taken from the playbook's directory.
    type: path
    required: true
  ref:
    description:
      - The image to push, a ref name in O(src) (such as C(app/current)) or an image digest (hex, optionally prefixed
        C(sha256:)/C(sha512:)).
    type: str
    required: true
  path:
    description:
      - The repository on the host. Absolute. Created if absent (as M(composefs.fleet.repository) creates it) with the
        algorithm and EROFS format of O(src).
      - An existing repository must use the algorithm of O(src) (its objects are named by those digests).
    type: path
    required: true
  dest_ref:
    description:
      - The ref written on the host. Defaults to O(ref) when O(ref) is a name; with a digest and no O(dest_ref) the
        image is committed without a ref (and a later gc may collect it).
    type: str
  insecure:
    description:
      - When the host's repository is created, create it without fs-verity on C(meta.json), as C(cfsctl init --insecure)
        and M(composefs.fleet.repository) O(composefs.fleet.repository#module:insecure=true) do. Needed where the host's
        filesystem has no fs-verity; a secure repository is refused there.
      - Has no effect on an existing repository.
    type: bool
    default: false
  lock_timeout:
    description:
      - Seconds to wait for the host repository's lock (held exclusively by a running gc).
    type: float
    default: 300
  step:
    description:
      - Internal, set by the action plugin for each of its two runs (V(probe), V(receive)); do not set it.
    type: str
    choices: [probe, receive]
  digest:
    description:
      - Internal, set by the action plugin; do not set it.
    type: str
  objects:
    description:
      - Internal, set by the action plugin (the image's objects); do not set it.
    type: list
    elements: str
    default: []
  bundle:
    description:
      - Internal, set by the action plugin (the transferred bundle); do not set it.
    type: path
  algorithm:
    description:
      - Internal, set by the action plugin (the algorithm of O(src)); do not set it.
    type: str
    choices: [sha256, sha512]
  erofs_version:
    description:
      - Internal, set by the action plugin (the EROFS format of O(src)); do not set it.
    type: int
    choices: [0, 1, 2]
    default: 1
attributes:
  action:
    description: Indicates this has a corresponding action plugin so some parts of the options can be executed on the controller.
    support: full
    details: The action plugin reads O(src) on the controller, writes the bundle and transfers it.
  check_mode:
    description: Can run in check mode and return changed status prediction without modifying target.
    support: full
    details: Reports what would be sent (RV(objects_sent), RV(bytes_sent)); nothing is transferred or written.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check mode), when in diff mode.
    support: full
    details: The host repository's refs before and after.
notes:
  - The bundle is a length-prefixed stream of the objects' bytes after a JSON header naming each by digest and size;
    see the collection's docs/repository.md.
  - For hosts that fetch from a web server instead, see M(composefs.fleet.repository_pull).
seealso:
  - module: composefs.fleet.repository
  - module: composefs.fleet.repository_pull
  - module: composefs.fleet.repository_info
"""

EXAMPLES = r"""
- name: Push app/current from the controller's repository, with only the objects each host lacks
  composefs.fleet.repository_push:
    src: /srv/composefs/repo
    ref: app/current
    path: /var/lib/composefs/repo
  register: pushed

- name: Push a pinned image under another name, into a repository on a filesystem without fs-verity
  composefs.fleet.repository_push:
    src: "{{ playbook_dir }}/repo"
    ref: sha512:5b1c2e0f0d0e6c0ba7a1c8c1ad3d1b4a8a0a0b3d6c2f0bd0a4f3f95e1e2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4
    path: /var/lib/composefs/repo
    dest_ref: app/v2
    insecure: true

- name: What would be sent?
  composefs.fleet.repository_push:
    src: /srv/composefs/repo
    ref: app/current
    path: /var/lib/composefs/repo
  check_mode: true
  register: plan
"""

RETURN = r"""
digest:
  description: The fs-verity digest of the pushed image.
  returned: success
  type: str
  sample: 0c261e3b9fde9716d54e380d9232c2a6dc8583efb2dbcf261f42b48d6ffa046a746ce2a56f326542dd8d73d4202941fefb52564a380d43b3716aeba475d83d6d
objects_missing:
  description: How many of the image's objects the host lacked before this run (the image itself not counted).
  returned: success
  type: int
  sample: 3
objects_sent:
  description: Objects sent in the bundle (would be, in check mode), the image itself not counted.
  returned: success
  type: int
  sample: 3
image_sent:
  description: Whether the image itself was sent (the host lacked it).
  returned: success
  type: bool
  sample: true
bytes_sent:
  description: Payload bytes of the objects and the image sent (would be, in check mode); the bundle's framing not counted.
  returned: success
  type: int
  sample: 1073152
dest_ref:
  description: The ref set on the host (null when none is).
  returned: success
  type: str
  sample: app/current
ref_before:
  description: The digest O(dest_ref) named on the host before this run (null when it did not exist).
  returned: success
  type: str
  sample: null
initialized:
  description: Whether the host's repository was created by this run (would be, in check mode).
  returned: success
  type: bool
  sample: false
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.composefs.fleet.plugins.module_utils.common.params import ParameterError, require_absolute
from ansible_collections.composefs.fleet.plugins.module_utils.repository import transfer
from ansible_collections.composefs.fleet.plugins.module_utils.repository.errors import RepositoryError


def run(module):
    p = module.params
    if p["step"] is None or not p["digest"] or not p["algorithm"]:
        raise RepositoryError("composefs.fleet.repository_push runs through its action plugin (it reads src on the "
                              "controller); call it by that name, not as ansible.legacy or with a custom module path")
    require_absolute(p["path"], "path")
    if p["step"] == "probe":
        return dict(changed=False, **transfer.host_plan(p["path"], p["digest"], p["objects"], p["algorithm"]))
    require_absolute(p["bundle"], "bundle")
    out = transfer.receive(p["path"], p["digest"], p["objects"], p["bundle"], p["dest_ref"], p["algorithm"],
                           p["erofs_version"], p["insecure"], p["lock_timeout"], module.check_mode)
    out["changed"] = bool(out["initialized"] or out["objects_added"] or out["image_linked"] or out["ref_changed"])
    return out


def main():
    module = AnsibleModule(argument_spec=transfer.push_module_argument_spec(), supports_check_mode=True)
    try:
        out = run(module)
    except (RepositoryError, ParameterError) as exc:
        module.fail_json(msg=str(exc))
    module.exit_json(**out)


if __name__ == "__main__":
    main()
