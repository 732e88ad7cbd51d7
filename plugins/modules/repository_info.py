#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: composefs.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: repository_info
short_description: Report on a composefs repository (refs, images, sizes, missing objects) and check it (fsck)
version_added: 0.2.0
description:
  - Reads a repository in composefs-rs's layout (see M(composefs.fleet.repository)) and returns its refs, its
    images with their sizes, and the objects an image references that the repository lacks.
  - With O(fsck=true) it also checks that every object's name is its fs-verity digest in the repository's algorithm,
    that fs-verity is enabled on every object where the repository requires it or the filesystem supports it, that
    every image's objects are present, that every ref names an image, and that nothing stray is in C(objects/).
    The findings are returned as data; the module does not fail because of them.
  - It changes nothing, unless O(quarantine=true) is given, which moves the corrupt objects fsck finds into
    C(quarantine/) in the repository (then C(changed) says whether any were moved).
  - Holds the repository lock shared while it reads, so a garbage collection never runs under it.
  - Needs only the Python standard library on the managed node.
author:
  - composefs.fleet developers (@composefs-fleet)
options:
  path:
    description:
      - The repository directory. Absolute.
    type: path
    required: true
  images:
    description:
      - Refs or image digests whose missing objects are reported in RV(missing_objects). Defaults to every ref.
    type: list
    elements: str
  fsck:
    description:
      - Check every object and image (reads every object, so it takes as long as reading the repository).
    type: bool
    default: false
  quarantine:
    description:
      - Move the corrupt objects O(fsck) finds to C(quarantine/<digest>.<unix time>) in the repository, so that a
        later transfer can bring good copies. Implies O(fsck=true). This is the only option that changes anything.
    type: bool
    default: false
  workers:
    description:
      - Worker processes hashing objects for O(fsck). Defaults to the number of CPUs.
    type: int
  lock_timeout:
    description:
      - Seconds to wait for the repository lock while a garbage collection runs.
    type: float
    default: 300
attributes:
  check_mode:
    description: Can run in check mode; with O(quarantine=true) it reports what would be moved and moves nothing.
    support: full
  diff_mode:
    description: With O(quarantine=true), the corrupt objects before and after.
    support: full
notes:
  - A repository with split streams (C(streams/)) is read too; the objects only streams reference are not checked
    against them.
seealso:
  - module: composefs.fleet.repository
"""

EXAMPLES = r"""
- name: Refs, images and what the current image still lacks
  composefs.fleet.repository_info:
    path: /var/lib/composefs/repo
    images: [app/current]
  register: repo

- name: Check the repository and set corrupt objects aside
  composefs.fleet.repository_info:
    path: /var/lib/composefs/repo
    quarantine: true
  register: checked

- name: Fail when the repository is not sound
  ansible.builtin.assert:
    that: checked.fsck.ok
    fail_msg: "{{ checked.fsck }}"
"""

RETURN = r"""
repository:
  description: The repository's C(meta.json) (algorithm, EROFS version, format version), as in M(composefs.fleet.repository).
  returned: always
  type: dict
  sample: {"algorithm": "sha512", "algorithm_id": "fsverity-sha512-12", "erofs_version": 1, "extra_erofs_versions": [],
           "read_only_features": [], "version": 1}
secure:
  description: Whether C(meta.json) has fs-verity, so that composefs-rs requires it on every object.
  returned: always
  type: bool
  sample: true
refs:
  description: Each ref name and the image digest it names (null when its target names no digest).
  returned: always
  type: dict
  sample: {"app/current": "85d600d462f5c3738b55c3ebf570c31263353dc6aa35448c6a8f9aa519429c8a"}
images:
  description: Each image digest with its size in bytes (null when its object is missing) and the refs naming it.
  returned: always
  type: dict
  sample: {"85d600d462f5c3738b55c3ebf570c31263353dc6aa35448c6a8f9aa519429c8a": {"size": 40960, "refs": ["app/current"]}}
missing_objects:
  description: For each of O(images) (default every ref), the objects (C(XX/<rest>)) it references that C(objects/) lacks.
  returned: always
  type: dict
  sample: {"app/current": []}
fsck:
  description: The findings of O(fsck).
  returned: when O(fsck) or O(quarantine)
  type: dict
  contains:
    ok:
      description: Whether nothing was found.
      type: bool
    objects_checked:
      description: Objects checked.
      type: int
    corrupt:
      description: Objects whose content does not match their name.
      type: list
      elements: dict
      contains:
        path:
          description: The object file.
          type: str
        digest:
          description: The digest its name says.
          type: str
        actual:
          description: The digest found, as C(algorithm:hex) (null when it could not be read).
          type: str
        problem:
          description: What is wrong, in words.
          type: str
    without_verity:
      description: Objects without fs-verity where the repository requires it or the filesystem supports it.
      type: list
      elements: str
    stray:
      description: Files in C(objects/) that are not objects.
      type: list
      elements: str
    temporary:
      description: Temporary files of writers (in use, or left by one that was killed).
      type: list
      elements: str
    images_checked:
      description: Images checked.
      type: int
    bad_images:
      description: Image links that are wrong or whose object is missing or corrupt.
      type: list
      elements: dict
      contains:
        image:
          description: The C(images/) entry.
          type: str
        problem:
          description: What is wrong, in words.
          type: str
    missing_objects:
      description: For each image digest, the objects it references that are missing.
      type: dict
    broken_refs:
      description: Refs that name no image of the repository.
      type: list
      elements: str
quarantined:
  description: Corrupt objects moved (in check mode, to be moved).
  returned: when O(quarantine=true)
  type: list
  elements: dict
  contains:
    path:
      description: Where the object was.
      type: str
    quarantined_to:
      description: Where it is now.
      type: str
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.composefs.fleet.plugins.module_utils.common.params import ParameterError, check_workers, require_absolute
from ansible_collections.composefs.fleet.plugins.module_utils.repository import fsck as repo_fsck
from ansible_collections.composefs.fleet.plugins.module_utils.repository import repo as repository
from ansible_collections.composefs.fleet.plugins.module_utils.repository.errors import RepositoryError


def run(module):
    p = module.params
    require_absolute(p["path"], "path")
    check_workers(p["workers"])
    out = {"changed": False}
    with repository.Repository(p["path"]) as repo, repo.lock(exclusive=False, timeout=p["lock_timeout"]):
        out["repository"] = repo.meta.as_dict()
        out["secure"] = repo.secure
        refs = repo.refs()
        out["refs"] = refs
        images = {}
        for digest, info in repo.images().items():
            images[digest] = {"size": info["size"], "refs": sorted(n for n, d in refs.items() if d == digest)}
        out["images"] = images
        wanted = p["images"] if p["images"] is not None else sorted(refs)
        missing = {}
        for name in wanted:
            digest = repo.resolve(name)
            if digest not in images or images[digest]["size"] is None:
                raise RepositoryError("%s: the image %s (%s) is not in the repository" % (p["path"], digest, name))
            missing[name] = repo.missing_objects(digest)
        out["missing_objects"] = missing
        if p["fsck"] or p["quarantine"]:
            found = repo_fsck.fsck(repo, p["workers"])
            out["fsck"] = found
            if p["quarantine"]:
                moved = repo_fsck.quarantine(repo, found["corrupt"], module.check_mode)
                out["quarantined"] = moved
                out["changed"] = bool(moved)
                if module._diff:
                    out["diff"] = {"before": {"corrupt": [m["path"] for m in moved]}, "after": {"corrupt": []}}
    return out


def main():
    module = AnsibleModule(
        argument_spec=dict(
            path=dict(type="path", required=True),
            images=dict(type="list", elements="str"),
            fsck=dict(type="bool", default=False),
            quarantine=dict(type="bool", default=False),
            workers=dict(type="int"),
            lock_timeout=dict(type="float", default=300),
        ),
        supports_check_mode=True,
    )
    try:
        out = run(module)
    except (RepositoryError, ParameterError) as exc:
        module.fail_json(msg=str(exc))
    module.exit_json(**out)


if __name__ == "__main__":
    main()
