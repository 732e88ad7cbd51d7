#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: composefs.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: storage_conf_write
short_description: Write a configuration file atomically, only if it still has the content it was read with
version_added: 0.1.0
description:
  - Writes O(content) to O(path) through a temporary file in the same directory that is fsynced and then
    renamed over the target, so readers see the old file or the new one, never a mix.
  - An existing file keeps its permission bits, owner, group and SELinux context. A new file gets O(mode),
    the module user's owner and group, and the default SELinux context for its path.
  - With O(expected_sha256) the write happens only if the file on disk still has the content it was read
    with, so an edit computed on the controller never overwrites a concurrent change.
  - M(composefs.fleet.storage_conf) uses this module to write the C(storage.conf) it computed on the
    controller. It works for any text file. Needs only the Python standard library on the managed node.
author:
  - composefs.fleet developers (@composefs-fleet)
options:
  path:
    description:
      - The file to write.
    type: path
    required: true
  content:
    description:
      - The complete new text of the file.
    type: str
    required: true
  expected_sha256:
    description:
      - SHA-256 (hex) the current file must have, or V(absent) when the file must not exist yet.
      - On a mismatch the module fails and writes nothing.
      - Omit it to write whatever the file holds now.
    type: str
  mode:
    description:
      - Permission bits of a file that does not exist yet, as an octal string. An existing file keeps its own.
    type: str
    default: "0644"
  create_dirs:
    description:
      - Create missing parent directories (mode C(0755)).
    type: bool
    default: false
  backup:
    description:
      - Before replacing an existing file whose content changes, copy it next to itself with a timestamp suffix.
    type: bool
    default: false
notes:
  - Supports check mode, in which it reports whether the content would change and writes nothing.
seealso:
  - module: composefs.fleet.storage_conf
"""

EXAMPLES = r"""
- name: Write a drop-in file atomically
  composefs.fleet.storage_conf_write:
    path: /etc/containers/storage.rootful.conf.d/50-composefs-fleet.conf
    content: |
      [storage.options.overlay]
      use_composefs = "true"
    expected_sha256: absent
    create_dirs: true
"""

RETURN = r"""
path:
  description: The file written.
  returned: always
  type: str
  sample: /etc/containers/storage.conf
sha256:
  description: SHA-256 of the file's content after the module ran.
  returned: always
  type: str
backup_file:
  description: The backup copy, when one was made.
  returned: changed and O(backup=true) and the file existed
  type: str
  sample: /etc/containers/storage.conf.12345.2026-01-01@00:00:00~
created:
  description: Whether the file did not exist before.
  returned: always
  type: bool
"""

import hashlib
import os

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.common.text.converters import to_bytes

from ansible_collections.composefs.fleet.plugins.module_utils.common.atomic import atomic_write


def _sha256_of(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(65536), b""):
            h.update(chunk)
    return h.hexdigest()


def write_atomic(module, path, data, new_mode):
    """Write ``data`` to ``path`` atomically, keeping an existing file's mode, owner and SELinux context."""
    context = None
    if module.selinux_enabled():
        context = module.selinux_context(path) if os.path.exists(path) else module.selinux_default_context(path)

    def label(tmp):
        if context:
            module.set_context_if_different(tmp, context, False)

    atomic_write(path, data, new_mode, before_rename=label)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            path=dict(type="path", required=True),
            content=dict(type="str", required=True),
            expected_sha256=dict(type="str"),
            mode=dict(type="str", default="0644"),
            create_dirs=dict(type="bool", default=False),
            backup=dict(type="bool", default=False),
        ),
        supports_check_mode=True,
    )
    path = module.params["path"]
    data = to_bytes(module.params["content"], errors="surrogate_or_strict")
    new_sha = hashlib.sha256(data).hexdigest()
    try:
        new_mode = int(module.params["mode"], 8)
    except ValueError:
        module.fail_json(msg="mode must be an octal string such as 0644, not %r" % module.params["mode"])

    exists = os.path.lexists(path)
    if exists and not os.path.isfile(path):
        module.fail_json(msg="%s exists and is not a regular file" % path)
    current = _sha256_of(path) if exists else None
    expected = module.params["expected_sha256"]
    if expected is not None:
        if expected == "absent" and exists:
            module.fail_json(msg="%s appeared since it was read; nothing was written" % path, sha256=current)
        if expected != "absent" and current != expected.lower():
            module.fail_json(msg="%s changed since it was read (sha256 %s, expected %s); nothing was written"
                             % (path, current, expected), sha256=current)

    result = dict(changed=current != new_sha, path=path, sha256=new_sha, created=not exists)
    if not result["changed"] or module.check_mode:
        if module.check_mode:
            result["sha256"] = current
        module.exit_json(**result)

    directory = os.path.dirname(path) or "."
    if not os.path.isdir(directory):
        if not module.params["create_dirs"]:
            module.fail_json(msg="directory %s does not exist (set create_dirs)" % directory)
        try:
            os.makedirs(directory, 0o755)
        except OSError as exc:
            module.fail_json(msg="cannot create %s: %s" % (directory, exc))
    if exists and module.params["backup"]:
        result["backup_file"] = module.backup_local(path)
    try:
        write_atomic(module, path, data, new_mode)
    except OSError as exc:
        module.fail_json(msg="cannot write %s: %s" % (path, exc))
    module.exit_json(**result)


if __name__ == "__main__":
    main()
