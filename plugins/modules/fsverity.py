#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: composefs.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: fsverity
short_description: Measure and enable fs-verity on files
version_added: 0.1.0
description:
  - Reads the fs-verity digests of files, and enables fs-verity on them.
  - Where a file has fs-verity, its digest is the one the kernel measures (C(FS_IOC_MEASURE_VERITY)).
    Elsewhere the digest is computed in userspace exactly as the kernel and fsverity-utils define it,
    so it equals the digest the file will have once fs-verity is enabled with the same parameters.
  - Enabling fs-verity makes a file read-only for good; it cannot be turned off again.
    A batch of files is therefore checked as a whole first (every path exists and is a regular file,
    every O(expected_digest) matches) before any file is enabled. If the kernel refuses a file midway,
    the files enabled before it keep fs-verity, the module fails, and the message names them.
  - Needs only the Python standard library on the managed node.
extends_documentation_fragment:
  - composefs.fleet.attributes
author:
  - composefs.fleet developers (@composefs-fleet)
options:
  paths:
    description:
      - Files to measure or enable, or directories when O(recurse=true). Absolute paths.
      - The same name as M(composefs.fleet.verity_facts)' list of paths. Called O(path) in 0.1.0; that name remains an alias.
    type: list
    elements: path
    required: true
    aliases: [path]
  recurse:
    description:
      - Take every regular file below each directory in O(path). Symlinks and special files below it are skipped.
    type: bool
    default: false
  follow:
    description:
      - Follow a symlink given in O(paths). Without it a symlink is an error. Symlinks met while recursing are never followed.
    type: bool
    default: false
  state:
    description:
      - V(measured) reads digests and never changes anything.
      - V(enabled) enables fs-verity on every file that does not have it yet.
    type: str
    choices: [measured, enabled]
    default: measured
  expected_digest:
    description:
      - The digest the file must have, as hex, optionally prefixed with C(sha256:) or C(sha512:).
        A value that is not 64 (SHA-256) or 128 (SHA-512) hex digits is refused before any file is read.
      - Needs O(paths) to name exactly one file. On a mismatch the module fails, naming the file, and enables nothing.
      - The digest is checked again after enabling, through the same file descriptor, on the digest the kernel sealed.
        If the file was rewritten between the check and the enable, the module fails naming both digests; the file
        keeps fs-verity (it cannot be removed), with the other digest.
    type: str
  hash_algorithm:
    description:
      - Hash algorithm of the Merkle tree. V(sha512) gives 64-byte digests (128 hex digits); it is what
        composefs-rs repositories (C(fsverity-sha512-12)) and bootc use by default.
      - The alias O(algorithm) is the name the repository modules use.
    type: str
    choices: [sha256, sha512]
    default: sha256
    aliases: [algorithm]
  block_size:
    description:
      - Merkle tree block size in bytes, a power of two. The kernel accepts sizes up to the page size and the filesystem block size.
    type: int
    default: 4096
  salt:
    description:
      - Salt for the Merkle tree, as hex (at most 32 bytes).
    type: str
  allow_unsupported:
    description:
      - Where the kernel or filesystem cannot enable fs-verity (a kernel without C(CONFIG_FS_VERITY), ext4 without the
        C(verity) feature, xfs, tmpfs, overlay, network filesystems), return the userspace digest with RV(files[].verity=false)
        and a warning instead of failing.
    type: bool
    default: false
  workers:
    description:
      - How many worker processes hash files at once. Defaults to the number of CPUs. V(0) and negative values are refused.
      - Workers die with the module process.
    type: int
notes:
  - Supports check mode. With O(state=enabled) it reports which files would be enabled, with their userspace digests.
  - Supports diff mode, as a before/after map of each file's fs-verity state.
  - Only ext4 (with the C(verity) feature, see C(tune2fs -O verity)), btrfs and f2fs implement fs-verity.
    On btrfs, the first file enabled sets a compat_ro flag on the filesystem, which older kernels refuse to mount read-write.
  - Opening a file for writing while fs-verity is enabled on it fails with C(ETXTBSY); the module says so.
  - Each file is opened once, without following a symlink and without blocking (a FIFO or device is refused),
    and enabled and measured through that one descriptor.
seealso:
  - name: fs-verity in the kernel documentation
    description: How the digest is defined and what the kernel enforces.
    link: https://docs.kernel.org/filesystems/fsverity.html
"""

EXAMPLES = r"""
- name: Measure the digests of two files (never changes anything)
  composefs.fleet.fsverity:
    paths:
      - /srv/images/app.cfs
      - /srv/images/base.cfs
  register: measured

- name: Enable fs-verity on every object of a composefs store
  composefs.fleet.fsverity:
    paths: /var/lib/composefs/objects
    recurse: true
    state: enabled

- name: Enable fs-verity on an image, but only if it is the image we expect
  composefs.fleet.fsverity:
    paths: /srv/images/app.cfs
    state: enabled
    expected_digest: "sha256:85d600d462f5c3738b55c3ebf570c31263353dc6aa35448c6a8f9aa519429c8a"

- name: Seal the objects of a composefs-rs repository with SHA-512 fs-verity, as composefs-rs does
  composefs.fleet.fsverity:
    paths: /sysroot/composefs/objects
    recurse: true
    state: enabled
    algorithm: sha512

- name: Digests on any filesystem, with fs-verity where the filesystem has it
  composefs.fleet.fsverity:
    paths: /data/blob
    state: enabled
    allow_unsupported: true
"""

RETURN = r"""
files:
  description: One entry per file, in the order the files were resolved (sorted within a directory).
  returned: always
  type: list
  elements: dict
  contains:
    path:
      description: The file.
      type: str
      sample: /srv/images/app.cfs
    digest:
      description: The fs-verity digest as hex, from the kernel where the file has fs-verity, else computed in userspace.
      type: str
      sample: 85d600d462f5c3738b55c3ebf570c31263353dc6aa35448c6a8f9aa519429c8a
    verity:
      description: Whether the kernel enforces fs-verity on this file (after this run; in check mode, whether it would).
      type: bool
      sample: true
    changed:
      description: Whether this run enabled fs-verity on the file.
      type: bool
      sample: false
digest:
  description: The digest, when O(paths) resolved to exactly one file.
  returned: when exactly one file was processed
  type: str
  sample: 85d600d462f5c3738b55c3ebf570c31263353dc6aa35448c6a8f9aa519429c8a
hash_algorithm:
  description:
    - The hash algorithm of the digests computed in userspace (O(hash_algorithm)).
    - V(sha256) digests are 64 hex digits, V(sha512) digests 128.
  returned: always
  type: str
  sample: sha256
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.composefs.fleet.plugins.module_utils.common.params import ParameterError, check_workers, require_absolute

from ansible_collections.composefs.fleet.plugins.module_utils.fsverity.digest import FsverityParamsError
from ansible_collections.composefs.fleet.plugins.module_utils.fsverity.files import (
    FsverityFilesError,
    FsverityRun,
    collect_files,
    normalize_digest,
)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            paths=dict(type="list", elements="path", required=True, aliases=["path"]),
            recurse=dict(type="bool", default=False),
            follow=dict(type="bool", default=False),
            state=dict(type="str", choices=["measured", "enabled"], default="measured"),
            expected_digest=dict(type="str"),
            hash_algorithm=dict(type="str", choices=["sha256", "sha512"], default="sha256", aliases=["algorithm"]),
            block_size=dict(type="int", default=4096),
            salt=dict(type="str"),
            allow_unsupported=dict(type="bool", default=False),
            workers=dict(type="int"),
        ),
        supports_check_mode=True,
    )
    p = module.params
    try:
        check_workers(p["workers"])
        for path in p["paths"]:
            require_absolute(path, "paths")
    except ParameterError as exc:
        module.fail_json(msg=str(exc))
    try:
        salt = bytes.fromhex(p["salt"]) if p["salt"] else b""
    except ValueError:
        module.fail_json(msg="salt %r is not hex" % p["salt"])
    try:
        run = FsverityRun(p["hash_algorithm"], p["block_size"], salt, p["workers"])
        expected = {}
        alg, hexdigest = normalize_digest(p["expected_digest"], p["hash_algorithm"])
        files = collect_files(p["paths"], p["recurse"], p["follow"])
        if hexdigest:
            if alg and alg != p["hash_algorithm"]:
                module.fail_json(msg="expected_digest is a %s digest but hash_algorithm is %s" % (alg, p["hash_algorithm"]))
            if len(files) != 1:
                module.fail_json(msg="expected_digest needs paths to name exactly one file; it resolved to %d" % len(files))
            expected[files[0]] = hexdigest
        results = run.run(files, p["state"], expected, module.check_mode, p["allow_unsupported"])
    except (FsverityFilesError, FsverityParamsError) as exc:
        module.fail_json(msg=str(exc), files=getattr(exc, "results", []))
    for warning in run.warnings:
        module.warn(warning)
    changed = any(r["changed"] for r in results)
    out = dict(changed=changed, files=results, hash_algorithm=p["hash_algorithm"])
    if len(results) == 1:
        out["digest"] = results[0]["digest"]
    if module._diff:
        out["diff"] = dict(
            before=dict(verity=dict((r["path"], r["verity"] and not r["changed"]) for r in results)),
            after=dict(verity=dict((r["path"], r["verity"]) for r in results)),
        )
    module.exit_json(**out)


if __name__ == "__main__":
    main()
