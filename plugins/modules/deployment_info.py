#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: composefs.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: deployment_info
short_description: Whether a host already runs a deployment's image, from its repository, refs, objects and mount
version_added: 0.2.0
description:
  - Reads, in one pass and without changing anything, what the C(composefs.fleet.deploy) role
    builds on a host - the repository in composefs-rs's layout at O(path) (its format and refs), the image O(digest)
    (stored, linked under C(images/), the objects it lacks), the ref C(NAME/current), and the mount at O(mount_point)
    with its managed fstab line.
  - RV(in_place) is true when a deploy of O(digest) would change none of these - the image and all its objects are
    there, C(NAME/current) names it, and M(composefs.fleet.mount) with
    O(composefs.fleet.mount#module:state=mounted) and the given mount options would report no change (it is asked
    in check mode, so the image is checked against its pin as that module checks it). RV(differences) says what is
    not in place.
  - The deploy role runs it first on every host and skips a host that is in place, so a rerun costs one module run per
    host. With O(plan), its release refs and garbage collection are planned from RV(refs) too, and a release ref to
    add or drop makes the host out of place.
  - Holds the repository lock shared while it reads it.
  - Needs only the Python standard library on the managed node, and root (it reads the mount records). An action plugin
    runs it and computes O(plan) on the controller.
extends_documentation_fragment:
  - composefs.fleet.attributes.read_only
author:
  - composefs.fleet developers (@composefs-fleet)
options:
  path:
    description: The host's repository directory. Absolute. A missing one is reported, not an error.
    type: path
    required: true
  name:
    description: The deployment's name; its refs are C(NAME/current) and C(NAME/releases/...).
    type: str
    required: true
  digest:
    description:
      - The fs-verity digest of the image that should run. Without it only the facts are read, RV(image) is the image
        C(NAME/current) names, and RV(in_place) is null.
    type: str
  mount_point:
    description: Where the image is mounted. Absolute.
    type: path
    required: true
  verity:
    description: The M(composefs.fleet.mount) O(composefs.fleet.mount#module:verity) the image should be mounted with.
    type: str
    choices: [require, userspace, "off"]
    default: require
  verify_objects:
    description: The M(composefs.fleet.mount) O(composefs.fleet.mount#module:verify_objects) of the mount.
    type: str
    choices: [exists, digest]
    default: exists
  helper:
    description: The M(composefs.fleet.mount) O(composefs.fleet.mount#module:helper) of the mount.
    type: str
    choices: [auto, always, never]
    default: auto
  fstab:
    description: The fstab file holding the mount's managed line.
    type: path
    default: /etc/fstab
  lock_timeout:
    description: Seconds to wait for the repository lock while a garbage collection runs.
    type: float
    default: 300
  plan:
    description:
      - Plan the deploy role's refs from RV(refs) as well, on the controller (the action plugin; the host is read
        once either way) - which release ref the image gets, what was current, which release refs gc drops - and
        return it as RV(plan). A new release ref, or release refs to drop, make RV(in_place) false.
      - With O(plan.rollback=true) the plan puts O(plan.rollback_version) back (O(digest) is then not given, and
        RV(in_place) stays null).
    type: dict
    suboptions:
      version:
        description: The version label of the image (empty - its digest's first 12 hex digits).
        type: str
        default: ""
      keep:
        description: How many previous releases are kept besides the current one.
        type: int
        default: 1
      gc:
        description: Whether release refs beyond O(plan.keep) are dropped (then they make the host out of place).
        type: bool
        default: true
      rollback:
        description: Plan a rollback instead of a deploy.
        type: bool
        default: false
      rollback_version:
        description: The release to roll back to (a version label, release ref or digest; empty - the one before current).
        type: str
        default: ""
seealso:
  - module: composefs.fleet.mount_info
  - module: composefs.fleet.repository_info
  - module: composefs.fleet.mount
"""

EXAMPLES = r"""
- name: Does this host run the release already?
  composefs.fleet.deployment_info:
    path: /var/lib/composefs-fleet/app
    name: app
    digest: "{{ app_digest }}"
    mount_point: /srv/app
  register: app

- name: Say what differs
  ansible.builtin.debug:
    msg: "{{ app.differences }}"
  when: not app.in_place
"""

RETURN = r"""
path:
  description: The repository directory.
  returned: always
  type: str
  sample: /var/lib/composefs-fleet/app
repository:
  description: The repository's C(meta.json) (as M(composefs.fleet.repository_info) returns it), or null when O(path) is
    not a repository.
  returned: always
  type: dict
  sample: {version: 1, algorithm: sha256, algorithm_id: fsverity-sha256-12, erofs_version: 1}
refs:
  description: Every ref of the repository (name to image digest); empty when it is not a repository.
  returned: always
  type: dict
  sample: {app/current: 2b1dfb9ffe6938cb3134c339059572e38cbd8cc515d54758fdff55cad5a37427}
current:
  description: The digest C(NAME/current) names, or null.
  returned: always
  type: str
image:
  description: The image O(digest) (without it, the one C(NAME/current) names) in the repository; null when there is
    none or no repository.
  returned: always
  type: dict
  contains:
    digest:
      description: The digest asked for.
      type: str
    stored:
      description: Whether the image's object is in C(objects/).
      type: bool
    linked:
      description: Whether C(images/DIGEST) links it.
      type: bool
    missing_count:
      description: How many objects the image references are missing (null when the image could not be read).
      type: int
    missing_objects:
      description: The first 20 missing objects (C(XX/rest) below C(objects/)).
      type: list
      elements: str
mount:
  description: What is mounted at O(mount_point) and persisted, as M(composefs.fleet.mount_info) returns it.
  returned: always
  type: dict
in_place:
  description: Whether a deploy of O(digest) would change nothing here (see the description); null without O(digest).
  returned: always
  type: bool
  sample: true
plan:
  description:
    - With O(plan), the deploy role's plan (the C(composefs.fleet.deploy_plan) filter's result) - C(digest),
      C(version), C(current_ref), C(release_ref), C(new_release), C(previous), C(changes_current), C(remove_refs),
      C(releases).
  returned: when O(plan) is given
  type: dict
deployment:
  description:
    - With O(plan), what the host runs once the plan is carried out - C(name), C(version), C(digest), C(release_ref),
      C(previous) (from RV(plan)) and C(mount_point). The deploy role's C(deploy_result) is this plus what the run sent.
  returned: when O(plan) is given
  type: dict
  sample: {"name": "app", "version": "v2", "digest": "649a63...", "release_ref": "app/releases/000002-v2", "previous": null,
           "mount_point": "/srv/app"}
differences:
  description: What is not in place, one sentence each.
  returned: always
  type: list
  elements: str
  sample: ["app/current names 4c1f...", "3 objects of the image are missing (0a/12..., 7f/9c..., c3/01...)"]
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.composefs.fleet.plugins.module_utils.common.params import ParameterError, require_absolute
from ansible_collections.composefs.fleet.plugins.module_utils.deployment.spec import argument_spec
from ansible_collections.composefs.fleet.plugins.module_utils.deployment.status import deployment_status
from ansible_collections.composefs.fleet.plugins.module_utils.mount.errors import MountError
from ansible_collections.composefs.fleet.plugins.module_utils.repository.errors import RepositoryError


def main():
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    p = module.params
    options = dict((k, p[k]) for k in ("verity", "verify_objects", "helper", "fstab"))
    try:
        require_absolute(p["path"], "path")
        require_absolute(p["mount_point"], "mount_point")
        result = deployment_status(p["path"], p["name"], p["mount_point"], p["digest"] or None, options, p["lock_timeout"])
    except (ParameterError, RepositoryError) as exc:
        module.fail_json(msg=str(exc))
    except MountError as exc:
        module.fail_json(msg=str(exc), error=getattr(exc, "kind", None))
    except OSError as exc:
        module.fail_json(msg="cannot read the deployment at %s: %s" % (p["path"], exc))
    module.exit_json(changed=False, **result)


if __name__ == "__main__":
    main()
