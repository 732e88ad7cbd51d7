#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: composefs.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: repository
short_description: Manage a composefs repository in composefs-rs's layout (init, commit, refs, gc)
version_added: 0.2.0
description:
  - Creates a composefs repository as C(cfsctl init) does, commits composefs images into it under a name (a ref),
    sets and removes refs, and collects garbage.
  - The layout is composefs-rs's, so C(cfsctl) and bootc can use a repository made here, and this module can use one
    they made. C(meta.json) records the format version, the fs-verity algorithm (C(fsverity-sha256-12) or
    C(fsverity-sha512-12)) and the EROFS format; C(objects/XX/<rest>) holds files named by their fs-verity digest;
    C(images/<digest>) links to each image's object; C(images/refs/<name>) links to C(images/<digest>).
  - Steps run in this order, each only when asked for; init, commit O(image), set or remove O(ref), then O(gc).
  - Writers hold the repository lock (C(flock) on the repository directory, as composefs-rs) shared; O(gc) holds it
    exclusively, so a concurrent commit (or C(cfsctl transaction)) is waited for and never collected from under.
  - Needs only the Python standard library on the managed node.
extends_documentation_fragment:
  - composefs.fleet.attributes
author:
  - composefs.fleet developers (@composefs-fleet)
options:
  path:
    description:
      - The repository directory (C(cfsctl --repo)). Absolute. Created (mode 0700) with its parents if missing.
      - An existing directory that is not empty and has no C(meta.json) is refused.
    type: path
    required: true
  algorithm:
    description:
      - fs-verity hash algorithm of a new repository (C(meta.json) C(fsverity-<algorithm>-12)). V(sha512) is
        composefs-rs's and bootc's default.
      - For an existing repository, leave it unset to take whatever it has; a value that differs is refused.
      - Images built by M(composefs.fleet.image) name SHA-256 objects, so committing them needs a V(sha256) repository.
    type: str
    choices: [sha256, sha512]
  erofs_version:
    description:
      - EROFS format version of a new repository (C(erofs_formats.default)). V(1) is C(mkcomposefs --min-version=1)'s
        format and composefs-rs's default; V(0) is plain C(mkcomposefs)'s; V(2) composefs-rs's legacy one.
      - For an existing repository, leave it unset to take whatever it has; a value that differs is refused.
    type: int
    choices: [0, 1, 2]
  insecure:
    description:
      - Create the repository without fs-verity on C(meta.json), as C(cfsctl init --insecure). Objects then get
        fs-verity only where the filesystem supports it. Without it, fs-verity is required on every object and
        C(init) fails on filesystems without fs-verity.
      - Has no effect on an existing repository.
    type: bool
    default: false
  image:
    description:
      - A composefs image file to commit. It is copied into C(objects/) (verified, then renamed into place) and
        linked as C(images/<digest>). Its own objects need not be present yet (RV(missing_objects) lists them).
    type: path
  ref:
    description:
      - A ref name below C(images/refs/), such as C(app/current). Relative, C(/)-separated, without C(.) or C(..)
        components.
      - With O(image), the committed image is named O(ref). With O(digest), O(ref) names that image. With
        O(ref_state=absent) the ref is removed.
    type: str
  digest:
    description:
      - The image (its fs-verity digest, optionally prefixed C(sha256:)/C(sha512:), or another ref's name) that O(ref) is
        to name. Mutually exclusive with O(image).
    type: str
  ref_state:
    description:
      - V(present) sets O(ref); V(absent) removes it (the image stays until O(gc) collects it).
    type: str
    choices: [present, absent]
    default: present
  gc:
    description:
      - Remove every object not reachable from a ref or O(keep), and the image links and refs left dangling.
      - In check mode, reports what would go, with the bytes, and removes nothing.
      - A repository with split streams (C(streams/), as C(cfsctl) OCI imports make) is refused; use C(cfsctl gc).
    type: bool
    default: false
  keep:
    description:
      - Images (digests or ref names) that O(gc) keeps besides those the refs name.
    type: list
    elements: str
    default: []
  lock_timeout:
    description:
      - Seconds to wait for the repository lock (a running gc, or writers when gc wants it) before failing.
    type: float
    default: 300
notes:
  - Supports check mode and diff mode (the refs and images before and after).
  - An image's objects are written into C(objects/) by M(composefs.fleet.image) with O(composefs.fleet.image#module:repository).
seealso:
  - module: composefs.fleet.repository_info
  - module: composefs.fleet.image
  - name: composefs-rs repository format
    description: The layout this module writes (crates/composefs/src/repository_format.rs).
    link: https://github.com/composefs/composefs-rs
"""

EXAMPLES = r"""
- name: A SHA-256 repository for images built by composefs.fleet.image
  composefs.fleet.repository:
    path: /var/lib/composefs/repo
    algorithm: sha256

- name: Commit an image under a ref
  composefs.fleet.repository:
    path: /var/lib/composefs/repo
    image: /var/tmp/app-v2.cfs
    ref: app/current
  register: committed

- name: Remove an old ref, then collect everything no ref names, keeping the previous version
  composefs.fleet.repository:
    path: /var/lib/composefs/repo
    ref: app/v1
    ref_state: absent
    gc: true
    keep:
      - app/previous

- name: What would gc remove?
  composefs.fleet.repository:
    path: /sysroot/composefs
    gc: true
  check_mode: true
  register: would
"""

RETURN = r"""
repository:
  description: The repository's C(meta.json), as read (or, when created in check mode, as it would be).
  returned: always
  type: dict
  contains:
    algorithm:
      description: fs-verity hash algorithm (V(sha256) or V(sha512)).
      type: str
      sample: sha512
    algorithm_id:
      description: The C(meta.json) identifier.
      type: str
      sample: fsverity-sha512-12
    erofs_version:
      description: The default EROFS format version.
      type: int
      sample: 1
    extra_erofs_versions:
      description: Further EROFS versions composefs-rs generates alongside (bootc dual-format repositories).
      type: list
      elements: int
      sample: []
    read_only_features:
      description: Read-only-compatible features this collection does not know (it will not write then).
      type: list
      elements: str
      sample: []
    version:
      description: Repository format version.
      type: int
      sample: 1
initialized:
  description: Whether this run created the repository (would, in check mode).
  returned: always
  type: bool
  sample: false
digest:
  description: The fs-verity digest of the committed image (O(image)), or of the image O(ref) names (O(digest)).
  returned: when O(image) or O(digest) is given
  type: str
  sample: 0c261e3b9fde9716d54e380d9232c2a6dc8583efb2dbcf261f42b48d6ffa046a746ce2a56f326542dd8d73d4202941fefb52564a380d43b3716aeba475d83d6d
bytes_added:
  description: Bytes of the image object added to C(objects/) (0 when it was there).
  returned: when O(image) is given
  type: int
  sample: 40960
missing_objects:
  description: Objects (C(XX/<rest>)) the committed image references that C(objects/) lacks.
  returned: when O(image) is given
  type: list
  elements: str
  sample: []
ref:
  description: The ref set or removed.
  returned: when O(ref) is given
  type: str
  sample: app/current
ref_before:
  description: The digest O(ref) named before this run (null when it did not exist).
  returned: when O(ref) is given
  type: str
  sample: null
gc:
  description: What garbage collection removed (in check mode, would remove).
  returned: when O(gc=true)
  type: dict
  contains:
    objects:
      description: Removed objects.
      type: list
      elements: dict
      contains:
        digest:
          description: The object's name (its fs-verity digest).
          type: str
        path:
          description: Where it was.
          type: str
        bytes:
          description: Its size.
          type: int
    images:
      description: Digests of the image links removed.
      type: list
      elements: str
    refs:
      description: Dangling refs removed.
      type: list
      elements: str
    bytes:
      description: Bytes of the removed objects.
      type: int
      sample: 1048576
    roots:
      description: The images kept (named by refs or O(keep)).
      type: list
      elements: str
"""

import os

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.composefs.fleet.plugins.module_utils.common.params import ParameterError, require_absolute
from ansible_collections.composefs.fleet.plugins.module_utils.fsverity.digest import file_digest
from ansible_collections.composefs.fleet.plugins.module_utils.repository import gc as repo_gc, layout, meta as repo_meta
from ansible_collections.composefs.fleet.plugins.module_utils.repository import repo as repository
from ansible_collections.composefs.fleet.plugins.module_utils.repository.errors import RepositoryError


def _state(repo):
    if repo is None:
        return {"refs": {}, "images": []}
    return {"refs": repo.refs(), "images": sorted(repo.images())}


def _planned_new(p, out):
    """Check mode on a repository that does not exist yet: what the steps would do."""
    algorithm = p["algorithm"] or "sha512"
    if p["image"]:
        try:
            out["digest"] = file_digest(p["image"], algorithm).hex()
            out["bytes_added"] = os.path.getsize(p["image"])
        except OSError as exc:
            raise RepositoryError("cannot read the image %s: %s" % (p["image"], exc.strerror or exc))
        out["missing_objects"] = []
    if p["digest"]:
        raise RepositoryError("%s does not exist yet, so it has no image %s to name" % (p["path"], p["digest"]))
    after = {"refs": {}, "images": [out["digest"]] if p["image"] else []}
    if p["ref"] and p["image"] and p["ref_state"] == "present":
        out["ref_before"] = None
        after["refs"][p["ref"]] = out["digest"]
    if p["gc"]:
        out["gc"] = {"objects": [], "images": [], "refs": [], "bytes": 0, "roots": []}
    return after


def run(module):
    p = module.params
    check = module.check_mode
    require_absolute(p["path"], "path")
    require_absolute(p["image"], "image")
    if p["ref"] is not None:
        layout.check_ref_name(p["ref"])
    if p["digest"] and not p["ref"]:
        raise RepositoryError("digest needs ref: it says which image the ref names")
    if p["ref_state"] == "absent" and (p["image"] or p["digest"]):
        raise RepositoryError("ref_state=absent removes a ref; it takes neither image nor digest")
    if p["ref_state"] == "absent" and not p["ref"]:
        raise RepositoryError("ref_state=absent needs ref: the ref to remove")
    out = {"changed": False}
    exists = os.path.exists(os.path.join(p["path"], layout.META_FILENAME))
    if exists and (p["algorithm"] is None or p["erofs_version"] is None):
        with repository.Repository(p["path"]) as existing:
            algorithm = p["algorithm"] or existing.algorithm
            erofs_version = p["erofs_version"] if p["erofs_version"] is not None else existing.meta.erofs_version
    else:
        algorithm = p["algorithm"] or "sha512"
        erofs_version = p["erofs_version"] if p["erofs_version"] is not None else 1
    created, info = repository.init(p["path"], algorithm, erofs_version, p["insecure"], check)
    out["initialized"] = created
    out["repository"] = info
    out["changed"] = created
    if created and check:
        before = _state(None)
        after = _planned_new(p, out)
        out["changed"] = True
        if p["ref"]:
            out["ref"] = p["ref"]
        return out, before, after
    with repository.Repository(p["path"]) as repo:
        out["repository"] = repo.meta.as_dict()
        before = _state(repo)
        planned_refs = dict(before["refs"])
        planned_images = set(before["images"])
        if p["image"]:
            res = repo.commit(p["image"], p["ref"] if p["ref_state"] == "present" else None, check, p["lock_timeout"])
            out["digest"] = res["digest"]
            out["bytes_added"] = res["bytes_added"]
            out["missing_objects"] = res["missing_objects"]
            out["changed"] = out["changed"] or res["changed"]
            planned_images.add(res["digest"])
            if p["ref"]:
                out["ref"], out["ref_before"] = p["ref"], res["ref_before"]
                planned_refs[p["ref"]] = res["digest"]
        elif p["ref"]:
            with repo.lock(exclusive=False, timeout=p["lock_timeout"]):
                out["ref"] = p["ref"]
                if p["ref_state"] == "present":
                    if not p["digest"]:
                        raise RepositoryError("ref needs image (to commit) or digest (an image already in the repository)")
                    digest = repo.resolve(p["digest"])
                    out["digest"] = digest
                    changed, out["ref_before"] = repo.set_ref(p["ref"], digest, check)
                    planned_refs[p["ref"]] = digest
                else:
                    changed, out["ref_before"] = repo.remove_ref(p["ref"], check)
                    planned_refs.pop(p["ref"], None)
                out["changed"] = out["changed"] or changed
        if p["gc"]:
            ignore, pending = (), ()
            if check:
                # Plan against the refs and images this run would leave, not those of now.
                ignore = [n for n in before["refs"] if n not in planned_refs or planned_refs[n] != before["refs"][n]]
                pending = [p["image"]] if p["image"] else []
            result = repo_gc.collect(repo, p["keep"], check, p["lock_timeout"], ignore, pending)
            out["gc"] = result
            if result["objects"] or result["images"] or result["refs"]:
                out["changed"] = True
                planned_images -= set(result["images"])
                for name in result["refs"]:
                    planned_refs.pop(name, None)
        after = _state(repo) if not check else {"refs": planned_refs, "images": sorted(planned_images)}
    return out, before, after


def main():
    module = AnsibleModule(
        argument_spec=dict(
            path=dict(type="path", required=True),
            algorithm=dict(type="str", choices=["sha256", "sha512"]),
            erofs_version=dict(type="int", choices=list(repo_meta.EROFS_VERSIONS)),
            insecure=dict(type="bool", default=False),
            image=dict(type="path"),
            ref=dict(type="str"),
            digest=dict(type="str"),
            ref_state=dict(type="str", choices=["present", "absent"], default="present"),
            gc=dict(type="bool", default=False),
            keep=dict(type="list", elements="str", default=[]),
            lock_timeout=dict(type="float", default=300),
        ),
        mutually_exclusive=[["image", "digest"]],
        supports_check_mode=True,
    )
    try:
        out, before, after = run(module)
    except (RepositoryError, ParameterError) as exc:
        module.fail_json(msg=str(exc))
    if module._diff:
        out["diff"] = {"before": before, "after": after}
    module.exit_json(**out)


if __name__ == "__main__":
    main()
