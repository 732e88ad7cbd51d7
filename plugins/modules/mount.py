#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: composefs.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: mount
short_description: Mount a composefs image with a pinned digest
version_added: 0.1.0
description:
  - Mounts a composefs image (an EROFS metadata image plus object stores) at a path, as libcomposefs does it, and only
    if the image has the pinned fs-verity digest; persists the mount as an fstab line of type C(composefs).
  - O(state) means what it means in M(ansible.posix.mount). V(mounted) mounts and persists, V(present) only persists,
    V(ephemeral) only mounts, V(unmounted) unmounts and keeps the persisted line, V(absent) unmounts and removes it.
  - The image is mounted as EROFS (file-backed on Linux 6.12 and later, else on a loop device set up with
    C(LOOP_CONFIGURE), read-only, direct I/O, autoclear) at a private temporary mount point; then an overlay with source
    C(composefs), C(metacopy=on), C(redirect_dir=on), the EROFS as its lower layer and the object stores as data-only
    layers (C(lowerdir+)/C(datadir+) through the new mount API, or the legacy C(lowerdir=IMAGE::STORE) string on
    Linux 6.5 and 6.6) is mounted at O(path), and the temporary EROFS mount is detached.
  - Idempotent from the real state. C(/proc/self/mountinfo) must show, at O(path), the very composefs overlay this
    module mounted (its mount id and private EROFS mount point, recorded under C(/run/composefs-fleet/mounts)) with
    the requested options; the digest comes from that record. The same digest and options give C(changed=false); a
    different digest or different options replace the mount in place, the new one first, so that any failure leaves
    the old mount as it was.
  - Mounts this module did not make are never unmounted, replaced or mounted over, and fstab lines it did not write are
    never changed.
  - Needs root, Linux 6.5 or later (overlayfs data-only lower layers), and only the Python standard library on the
    managed node. C(mount.composefs) is used when installed (O(helper)).
extends_documentation_fragment:
  - composefs.fleet.attributes
author:
  - composefs.fleet developers (@composefs-fleet)
options:
  path:
    description:
      - The mount point, an absolute path. Created (mode 0755) if missing when mounting.
      - It must be the real path. A O(path) that is a symlink, or that goes through one, is refused, as C(mount(8))
        refuses a target it did not expect. The module never mounts over where a symlink points. The mount is made
        on the directory opened without following symlinks, so a symlink planted after the checks is refused too.
    type: path
    required: true
  image:
    description:
      - The composefs image file. Required to mount.
    type: path
  basedir:
    description:
      - Object stores holding the files the image references (C(mkcomposefs --digest-store)), searched in this order.
        Required to mount.
    type: list
    elements: path
  digest:
    description:
      - The image's pinned fs-verity SHA-256 digest, as hex (optionally prefixed C(sha256:)), as
        M(composefs.fleet.image) returns it. Nothing is mounted unless the image has this digest.
      - Required to mount, unless O(insecure=true).
    type: str
  insecure:
    description:
      - Allow mounting without a pinned O(digest). The image's digest is then whatever the file holds, and a changed
        image file is remounted on the next run.
    type: bool
    default: false
  verity:
    description:
      - V(require) makes the kernel enforce fs-verity. The image must have fs-verity, and the kernel's measurement of
        it must equal O(digest). The overlay is mounted with C(verity=require), so every object must have fs-verity and
        the digest the image records for it, checked by the kernel at each open (reads of a tampered object fail with
        EIO). Where that is impossible (no fs-verity in the kernel, overlayfs before Linux 6.6, an image without
        fs-verity) the module refuses and says why.
      - V(userspace) is for kernels that cannot enforce fs-verity. The image is read once, its digest is computed in
        userspace and compared with O(digest), and those very bytes are copied to a root-only file,
        C(/run/composefs-fleet/images/<digest>), whose digest is checked again; that copy is what is mounted, so
        rewriting the image file after the check changes nothing. Every object the image references must exist in
        a O(basedir) (with O(verify_objects=digest), also have its digest). The overlay is mounted without kernel
        verity, and the module warns that tampering with the objects at runtime will not be detected.
      - V(off) checks no objects and uses no kernel verity. A pinned O(digest) is still compared, in userspace, and
        the checked bytes are mounted from a private copy as with V(userspace).
      - With a pinned O(digest), in every mode, the image may only reference digest-named objects
        (C(XX/<62 hex>), named after the digest the image records for the object). An image whose payloads escape
        the O(basedir) or are other files is refused.
    type: str
    choices: [require, userspace, 'off']
    default: require
  upperdir:
    description:
      - A writable upper directory, for a writable overlay. Needs O(workdir) on the same filesystem. Without it the
        mount is read-only.
    type: path
  workdir:
    description:
      - The overlay work directory that goes with O(upperdir).
    type: path
  verify_objects:
    description:
      - How O(verity=userspace) checks the objects the image references before mounting.
      - V(exists) checks that each one is in a O(basedir) (a C(stat) per object).
      - V(digest) also computes each object's fs-verity digest in userspace and compares it with the digest the image
        records for it (and its name). This reads every byte of every object the image references, on every run
        that mounts. That costs roughly the time to read and SHA-256 the image's whole content (see C(docs/mount.md)).
      - Only for O(verity=userspace). With V(require) the kernel checks each object at every open, and V(off) checks
        none.
    type: str
    choices: [exists, digest]
    default: exists
  ro:
    description:
      - Mount read-only even with an O(upperdir).
    type: bool
    default: false
  state:
    description:
      - As in M(ansible.posix.mount).
      - V(mounted) mounts the image now and persists it (an O(fstab) line of type C(composefs) that mounts it at boot).
      - V(present) only persists it (writes the O(fstab) line); the mount is not touched.
      - V(ephemeral) only mounts it now; O(fstab) is not touched.
      - V(unmounted) unmounts the mount this module made at O(path); the fstab line, if any, stays.
      - V(absent) unmounts it and removes the fstab line.
      - V(remounted) mounts it afresh even if the same image is mounted (the old mount is replaced in place); O(fstab)
        is not touched.
      - Required, as in M(ansible.posix.mount). In 0.1.0, V(mounted) meant what V(ephemeral) means now, and
        V(present) mounted as well.
    type: str
    choices: [mounted, present, ephemeral, unmounted, absent, remounted]
    required: true
  helper:
    description:
      - V(auto) uses C(mount.composefs) where it is installed (in PATH, C(/sbin) or C(/usr/sbin)), else the module's
        own code. V(always) requires the helper; V(never) always uses the module's own code.
      - Either way the module checks the image and objects first. The helper mounts the checked file itself, through
        C(/proc/self/fd), not the path again.
    type: str
    choices: [auto, always, never]
    default: auto
  fstab:
    description:
      - The fstab file for O(state=mounted), O(state=present) and O(state=absent).
      - Spaces, tabs, newlines and backslashes in paths are written as octal escapes (C(\\040), C(\\011),
        C(\\012), C(\\134)), as M(ansible.posix.mount) does, and read back. Only lines this module wrote (marked by a
        comment) are ever changed or removed.
      - Whether the file can be written is checked before anything is mounted. Should writing fail anyway, a mount
        made by the same run is taken back.
    type: path
    default: /etc/fstab
  backup:
    description:
      - Create a backup of O(fstab) (with a timestamp in its name) before changing it, as M(ansible.posix.mount) and
        M(community.general.ini_file) do.
    type: bool
    default: false
notes:
  - Supports check mode, which runs every check (mount point, upper and work directories, whether the fstab can be
    written, digest, fs-verity, objects, kernel features) without mounting or writing anything, and diff mode, which
    shows the mount (mounted, digest, verity, options) and the fstab line before and after.
  - C(changed) comes from the real state (C(/proc/self/mountinfo) and the fstab line), never from the requested
    options. A failure after the host changed reports C(changed=true).
  - Replacing a mount detaches the old one lazily. Processes that have files of the old image open keep reading the old
    image until they close them, and new opens see the new image. Plain unmounting is never lazy. A busy mount point is
    an error, and nothing changes.
  - Persistence is an fstab line, which C(mount.composefs) mounts at boot (directly, or through the unit
    systemd-fstab-generator makes of it). With O(verity=require) the line carries C(digest=), so the kernel checks the
    pin at boot too. C(mount.composefs) cannot check a digest without kernel fs-verity. With O(verity=userspace) or
    O(verity=off) the image is mounted at boot unchecked, and this module checks it on its next run.
  - The kernel features needed, by first mainline release. Data-only lower layers need 6.5, C(verity=require) 6.6, and
    C(lowerdir+)/C(datadir+) 6.7 (6.5 and 6.6 get the legacy string). File-backed EROFS needs 6.12 (older kernels get a
    loop device). Replacing a mount in place needs C(MOVE_MOUNT_BENEATH), 6.5. A missing feature is named, with the
    kernel that has it.
  - Rootless mounts are not supported.
seealso:
  - module: composefs.fleet.image
  - module: composefs.fleet.fsverity
  - name: composefs
    description: The composefs project, its mount helper and libcomposefs.
    link: https://github.com/composefs/composefs
"""

EXAMPLES = r"""
- name: Build the image and fill the object store
  composefs.fleet.image:
    src: /srv/build/app-rootfs
    dest: /var/lib/composefs/images/app.cfs
    digest_store: /var/lib/composefs/objects
  register: app_image

- name: Mount it with its digest pinned; the kernel enforces fs-verity
  composefs.fleet.mount:
    path: /srv/app
    image: /var/lib/composefs/images/app.cfs
    basedir:
      - /var/lib/composefs/objects
    digest: "{{ app_image.digest }}"
    state: mounted

- name: On a kernel without fs-verity, check the digest and objects in userspace (runtime tampering not detected)
  composefs.fleet.mount:
    path: /srv/app
    image: /var/lib/composefs/images/app.cfs
    basedir: [/var/lib/composefs/objects]
    digest: "sha256:2b1dfb9ffe6938cb3134c339059572e38cbd8cc515d54758fdff55cad5a37427"
    verity: userspace
    verify_objects: digest
    state: ephemeral

- name: Mount it now and at every boot (an fstab line for mount.composefs), keeping a backup of /etc/fstab
  composefs.fleet.mount:
    path: /srv/app
    image: /var/lib/composefs/images/app.cfs
    basedir: [/var/lib/composefs/objects]
    digest: "{{ app_image.digest }}"
    state: mounted
    backup: true

- name: Unmount it and remove the fstab line
  composefs.fleet.mount:
    path: /srv/app
    state: absent
"""

RETURN = r"""
path:
  description: The mount point.
  returned: always
  type: str
  sample: /srv/app
mounted:
  description: Whether this module's composefs mount is at O(path) after the run (in check mode, whether it would be).
  returned: always
  type: bool
  sample: true
digest:
  description: The fs-verity digest of the mounted image, or null when nothing of this module's is mounted.
  returned: always
  type: str
  sample: 2b1dfb9ffe6938cb3134c339059572e38cbd8cc515d54758fdff55cad5a37427
verity:
  description:
    - Who checks fs-verity for the mount. V(kernel) means the kernel, at every open (O(verity=require)). V(userspace)
      means the module, once before mounting. V(none) means nobody (O(verity=off)).
    - Null when nothing of this module's is mounted.
  returned: always
  type: str
  sample: kernel
options:
  description:
    - The overlay's options as C(/proc/self/mountinfo) shows them. Empty when nothing is mounted, and in check mode for
      a mount that would be made.
  returned: always
  type: list
  elements: str
  sample: [ro, "lowerdir+=/run/composefs-fleet/tmp/2b1dfb9ffe6938cb.k2j4x1", "datadir+=/var/lib/composefs/objects",
           redirect_dir=on, metacopy=on, verity=require]
image:
  description: The image file.
  returned: when O(state) is V(mounted), V(ephemeral) or V(remounted)
  type: str
  sample: /var/lib/composefs/images/app.cfs
image_copy:
  description:
    - The private copy of the image that is mounted under O(verity=userspace) and O(verity=off)
      (C(/run/composefs-fleet/images/<digest>)), removed with the last mount that uses it. Null with
      O(verity=require), which mounts the image itself, and when nothing of this module's is mounted.
  returned: when O(state) is V(mounted), V(ephemeral) or V(remounted)
  type: str
  sample: /run/composefs-fleet/images/2b1dfb9ffe6938cb3134c339059572e38cbd8cc515d54758fdff55cad5a37427
backing:
  description:
    - How the mount was made. V(file) means file-backed EROFS, V(loop) a loop device, V(helper) C(mount.composefs).
  returned: when O(state) is V(mounted), V(ephemeral) or V(remounted) and the image is mounted
  type: str
  sample: file
objects:
  description: How many objects the image references, all found in O(basedir). Null when this run did not check them.
  returned: when O(state) is V(mounted), V(ephemeral) or V(remounted)
  type: int
  sample: 230
fstab:
  description: The managed fstab line after the run (with its marker comment), or null when there is none.
  returned: when O(state) is V(mounted), V(present) or V(absent)
  type: str
  sample: "# composefs.fleet: /srv/app digest=2b1d... verity=require\n/var/lib/composefs/images/app.cfs /srv/app composefs ..."
backup_file:
  description: The backup of O(fstab) made before it was changed (O(backup=true)).
  returned: when O(backup=true) and O(fstab) was changed
  type: str
  sample: /etc/fstab.2842.2026-12-02@17:42:01~
error:
  description:
    - On failure, the class of the failure, for conditions in playbooks (C(failed_when), C(until)).
    - V(image-missing), V(digest-mismatch) (the image is not the pinned one), V(no-verity), V(objects-missing),
      V(objects-digest) (O(verify_objects=digest) found an object without its digest), V(kernel-feature),
      V(not-root), V(busy), V(foreign-mount) (a mount or fstab entry this module did not make), V(invalid) (parameters,
      the mount point, the image's content), V(helper), V(persist) (the fstab cannot be written), V(system).
  returned: failure
  type: str
  sample: digest-mismatch
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.composefs.fleet.plugins.module_utils.mount.errors import MountError
from ansible_collections.composefs.fleet.plugins.module_utils.mount.manager import MountRun, Request


def main():
    module = AnsibleModule(
        argument_spec=dict(
            path=dict(type="path", required=True),
            image=dict(type="path"),
            basedir=dict(type="list", elements="path"),
            digest=dict(type="str"),
            insecure=dict(type="bool", default=False),
            verity=dict(type="str", choices=["require", "userspace", "off"], default="require"),
            upperdir=dict(type="path"),
            workdir=dict(type="path"),
            verify_objects=dict(type="str", choices=["exists", "digest"], default="exists"),
            ro=dict(type="bool", default=False),
            state=dict(type="str", choices=["mounted", "present", "ephemeral", "unmounted", "absent", "remounted"],
                       required=True),
            helper=dict(type="str", choices=["auto", "always", "never"], default="auto"),
            fstab=dict(type="path", default="/etc/fstab"),
            backup=dict(type="bool", default=False),
        ),
        required_if=[
            ("state", "mounted", ("image", "basedir")),
            ("state", "present", ("image", "basedir")),
            ("state", "ephemeral", ("image", "basedir")),
            ("state", "remounted", ("image", "basedir")),
        ],
        required_together=[("upperdir", "workdir")],
        supports_check_mode=True,
    )
    p = module.params
    run = None
    try:
        request = Request(p["path"], p["image"], p["basedir"], p["digest"], p["insecure"], p["verity"], p["upperdir"],
                          p["workdir"], p["ro"], p["state"], p["helper"], p["fstab"], p["verify_objects"], p["backup"])
        run = MountRun(request, check_mode=module.check_mode, diff=module._diff)
        result = run.run()
    except MountError as exc:
        for warning in run.warnings if run else []:
            module.warn(warning)
        # changed reports what really happened to the host before the failure (normally nothing).
        module.fail_json(msg=str(exc), error=exc.kind, path=p["path"], changed=bool(run and run.host_changed))
    for warning in run.warnings:
        module.warn(warning)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
