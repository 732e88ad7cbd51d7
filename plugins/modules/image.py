#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: composefs.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: image
short_description: Build a composefs image and fill its object store, byte-identical to mkcomposefs
version_added: 0.1.0
description:
  - Turns a directory tree (a rootfs, an application tree, an unpacked container layer) or a composefs dumpfile
    into a composefs EROFS metadata image, and copies the tree's larger files into a content-addressed object store.
  - The image bytes, and so its digest, are those C(mkcomposefs) 1.0.x writes for the same input and options, so a
    digest computed on one machine can be pinned on every other. No composefs tools are needed; the managed node
    needs only the Python standard library.
  - Files of 1 to 64 bytes are stored inline in the image; larger files become objects named by their fs-verity
    SHA-256 digest, at C(XX/<62 hex>) below O(digest_store) (the layout of C(mkcomposefs --digest-store)).
  - An object already in the store is verified (by the kernel's fs-verity measurement, or by hashing it) before
    it is trusted; a damaged one is replaced. New objects are copied (reflink where the filesystem can, else
    C(copy_file_range), else a plain copy) under a temporary name, fsynced, given fs-verity where possible, checked,
    and renamed into place, so concurrent builds into one store are safe and no reader ever sees a partial object.
  - O(dest) is written atomically (temporary file, fsync, rename). On failure there is no new O(dest).
  - Every destination is checked before anything is written. The temporary file of O(dest) is created first, so a
    missing, read-only or immutable directory fails the task before the object store is touched. If writing fails
    after objects were added to the store, the task fails with C(changed=true) and RV(objects) says what was added.
  - Paths must be absolute. A FIFO, device or symlink at O(dest), or a FIFO or device at O(src_dumpfile), is refused
    (never opened for a blocking read).
  - Symlinks inside O(digest_store) are never followed; a fan-out directory that is a symlink fails the task.
    Temporary files a killed build left in the store (C(.tmp-*), older than 15 minutes) are removed by the next build,
    when no other build is writing to the store (a shared C(flock) on the store directory marks writers).
  - With O(src_dumpfile), a file whose payload is not C(XX/<digest>) of its own digest is kept as C(mkcomposefs) keeps
    it (the image stays byte-identical) and the module warns, because the object store cannot vouch for what such a file reads,
    and M(composefs.fleet.mount) with a digest pin refuses the image.
author:
  - composefs.fleet developers (@composefs-fleet)
options:
  src:
    description:
      - The directory to turn into an image. Mutually exclusive with O(src_dumpfile).
    type: path
  src_dumpfile:
    description:
      - A composefs-dump(5) file to turn into an image, plain or gzip-compressed (C(mkcomposefs --from-file)).
      - A dumpfile carries digests, not contents, so with O(digest_store) the module can only report objects the store lacks.
    type: path
  dest:
    description:
      - Where to write the image. Without it the module only computes the digest (C(mkcomposefs --print-digest-only))
        and fills O(digest_store) if given.
    type: path
  digest_store:
    description:
      - The object store directory (C(mkcomposefs --digest-store)). Created if missing.
      - Mutually exclusive with O(repository), whose C(objects/) is the store.
    type: path
  repository:
    description:
      - A composefs repository (see M(composefs.fleet.repository)) to build into. The objects go into its C(objects/)
        (the same fan-out as O(digest_store)), and the image is committed as an object and linked as C(images/<digest>),
        named O(ref) if given. O(dest) is then optional (without it the image is only in the repository).
      - The repository must exist, with algorithm C(sha256) and EROFS format 0 or 1; its format sets O(min_version).
        Where its C(meta.json) has fs-verity, every object gets fs-verity (O(enable_verity=true)).
      - The build holds the repository lock shared, so a garbage collection waits and never takes the new objects.
    type: path
    version_added: 0.2.0
  ref:
    description:
      - With O(repository), the ref (below C(images/refs/)) that names the committed image, e.g. C(app/current).
    type: str
    version_added: 0.2.0
  lock_timeout:
    description:
      - With O(repository), seconds to wait for its lock while a garbage collection runs.
    type: float
    default: 300
    version_added: 0.2.0
  use_epoch:
    description:
      - Set every mtime to 0 (C(--use-epoch)).
    type: bool
    default: false
  skip_xattrs:
    description:
      - Store no extended attributes (C(--skip-xattrs)).
    type: bool
    default: false
  user_xattrs:
    description:
      - Store only C(user.*) extended attributes (C(--user-xattrs)).
    type: bool
    default: false
  skip_devices:
    description:
      - Leave out block and character devices (C(--skip-devices)).
    type: bool
    default: false
  min_version:
    description:
      - The lowest image format version to use (C(--min-version)). The writer uses the lowest version from
        O(min_version) to O(max_version) that can represent the tree.
    type: int
    default: 0
    choices: [0, 1]
  max_version:
    description:
      - The highest image format version to use (C(--max-version)). A value below O(min_version) is raised to it.
    type: int
    default: 1
    choices: [0, 1]
  hardlinks:
    description:
      - Keep hardlinks as hardlinks in the image.
      - C(mkcomposefs) 1.0.x loses them (every path becomes its own inode; composefs issue 444). With the default
        V(false) the image is byte-identical to C(mkcomposefs)'s; with V(true) it is not, and its digest differs.
    type: bool
    default: false
  enable_verity:
    description:
      - fs-verity on the objects and on the image. V(auto) enables it where the filesystem and kernel can,
        V(true) fails where they cannot, V(false) never enables it.
    type: str
    choices: [auto, 'true', 'false']
    default: auto
  workers:
    description:
      - How many worker processes hash and copy files. Defaults to the number of CPUs. V(0) and negative values are refused.
      - Workers die with the module process (a C(kill -9) of the module leaves none running).
      - Called O(threads) in 0.1.0; that name remains an alias.
    type: int
    aliases: [threads]
extends_documentation_fragment:
  - composefs.fleet.attributes
  - ansible.builtin.files
notes:
  - Idempotent. When O(dest) already holds the same bytes and the store holds every object, C(changed=false).
  - Supports check mode (the digest is computed; nothing is written) and diff mode (the image digest before and after).
  - The same module runs on the controller with C(delegate_to=localhost).
seealso:
  - module: composefs.fleet.fsverity
"""

EXAMPLES = r"""
- name: Build straight into a composefs repository and name the image
  composefs.fleet.image:
    src: /srv/trees/app-v2
    repository: /var/lib/composefs/repo
    ref: app/current
  register: built

- name: Build an image of an application tree and fill the shared object store
  composefs.fleet.image:
    src: /srv/build/app-rootfs
    dest: /var/lib/composefs/images/app.cfs
    digest_store: /var/lib/composefs/objects
  register: app_image

- name: Pin the digest for the mount
  ansible.builtin.debug:
    msg: "mount with digest={{ app_image.digest }}"

- name: Compute only the digest, on the controller
  composefs.fleet.image:
    src: "{{ playbook_dir }}/files/tree"
  delegate_to: localhost

- name: Build from a dumpfile, format version 1 only
  composefs.fleet.image:
    src_dumpfile: /srv/build/rootfs.dump.gz
    dest: /srv/images/rootfs.cfs
    min_version: 1
    max_version: 1
"""

RETURN = r"""
digest:
  description: The image's fs-verity SHA-256 digest, as C(mkcomposefs --print-digest) prints it.
  returned: always
  type: str
  sample: 2b1dfb9ffe6938cb3134c339059572e38cbd8cc515d54758fdff55cad5a37427
size:
  description: The image size in bytes.
  returned: always
  type: int
  sample: 4096
dest:
  description: The image path, if O(dest) was given.
  returned: always
  type: str
  sample: /var/lib/composefs/images/app.cfs
verity:
  description: Whether the image file has fs-verity (after this run; in check mode, whether it would).
  returned: when O(dest) is given
  type: bool
  sample: false
inlined:
  description: How many regular files are stored inline in the image (1 to 64 bytes).
  returned: always
  type: int
  sample: 12
repository:
  description: What was committed to O(repository).
  returned: when O(repository) is given
  type: dict
  version_added: 0.2.0
  contains:
    path:
      description: The repository.
      type: str
    digest:
      description: The image's digest (its object name and C(images/) entry).
      type: str
    ref:
      description: O(ref).
      type: str
    ref_before:
      description: The digest O(ref) named before (null when new).
      type: str
    ref_changed:
      description: Whether O(ref) was set or moved.
      type: bool
    image_added:
      description: Whether the image object was added.
      type: bool
    image_linked:
      description: Whether C(images/<digest>) was created.
      type: bool
    missing_objects:
      description: Objects the image references that the repository lacks (dumpfile input).
      type: list
      elements: str
objects:
  description: The external files the image references.
  returned: always
  type: dict
  contains:
    count:
      description: Distinct objects the image references.
      type: int
      sample: 230
    added:
      description: Objects this run added to O(digest_store) (would add, in check mode).
      type: int
      sample: 3
    bytes_added:
      description: Bytes of the objects added.
      type: int
      sample: 123456
    missing:
      description: Objects the store lacks that no source provides (dumpfile input).
      type: int
      sample: 0
    stale_removed:
      description: Temporary files of killed builds removed from O(digest_store) (older than 15 minutes).
      type: int
      sample: 0
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.composefs.fleet.plugins.module_utils.common.params import ParameterError, check_workers, require_absolute
from ansible_collections.composefs.fleet.plugins.module_utils.composefs.build import ImageBuildError, build
from ansible_collections.composefs.fleet.plugins.module_utils.repository.build import build_into
from ansible_collections.composefs.fleet.plugins.module_utils.repository.errors import RepositoryError


def main():
    module = AnsibleModule(
        argument_spec=dict(
            src=dict(type="path"),
            src_dumpfile=dict(type="path"),
            dest=dict(type="path"),
            digest_store=dict(type="path"),
            use_epoch=dict(type="bool", default=False),
            skip_xattrs=dict(type="bool", default=False),
            user_xattrs=dict(type="bool", default=False),
            skip_devices=dict(type="bool", default=False),
            min_version=dict(type="int", default=0, choices=[0, 1]),
            max_version=dict(type="int", default=1, choices=[0, 1]),
            hardlinks=dict(type="bool", default=False),
            enable_verity=dict(type="str", default="auto", choices=["auto", "true", "false"]),
            workers=dict(type="int", aliases=["threads"]),
            repository=dict(type="path"),
            ref=dict(type="str"),
            lock_timeout=dict(type="float", default=300),
        ),
        required_one_of=[("src", "src_dumpfile")],
        mutually_exclusive=[("src", "src_dumpfile"), ("skip_xattrs", "user_xattrs"), ("digest_store", "repository")],
        required_by={"ref": "repository"},
        add_file_common_args=True,
        supports_check_mode=True,
    )
    p = module.params
    try:
        check_workers(p["workers"])
        for option in ("src", "src_dumpfile", "dest", "digest_store", "repository"):
            require_absolute(p[option], option)
    except ParameterError as exc:
        module.fail_json(msg=str(exc))
    options = dict(
        src=p["src"], src_dumpfile=p["src_dumpfile"], dest=p["dest"],
        use_epoch=p["use_epoch"], skip_xattrs=p["skip_xattrs"], user_xattrs=p["user_xattrs"],
        skip_devices=p["skip_devices"], min_version=p["min_version"], max_version=p["max_version"],
        hardlinks=p["hardlinks"], enable_verity=p["enable_verity"], workers=p["workers"],
        check_mode=module.check_mode,
    )
    try:
        if p["repository"]:
            result = build_into(p["repository"], ref=p["ref"], lock_timeout=p["lock_timeout"], **options)
        else:
            result = build(digest_store=p["digest_store"], **options)
    except ImageBuildError as exc:
        module.fail_json(msg=str(exc), **(exc.result or {}))
    except RepositoryError as exc:
        module.fail_json(msg=str(exc))
    for warning in result.pop("warnings"):
        module.warn(warning)
    before, after = result.pop("before", None), result.pop("after", None)
    if p["dest"] and (not module.check_mode or before["digest"] is not None):
        # Owner, group, mode, SELinux context of dest: the standard file attributes.
        file_args = module.load_file_common_arguments(p, path=p["dest"])
        result["changed"] = module.set_fs_attributes_if_different(file_args, result["changed"])
    if module._diff and before is not None:
        result["diff"] = {"before": before, "after": after}
    module.exit_json(**result)


if __name__ == "__main__":
    main()
