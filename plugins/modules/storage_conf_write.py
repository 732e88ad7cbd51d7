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
  - O(mode), O(owner) and O(group) are set on the temporary file before the rename, so the file never
    appears with other attributes; when only they differ, they are changed in place. An attribute not given
    is kept from the existing file (a new file gets mode C(0644) and the module user's owner and group).
    The SELinux context of an existing file is kept, a new file gets the default one for its path.
  - B(Symlinks.) With O(follow=true) (the default) a symlink at O(path) is followed and its target is
    written, and the link stays. With O(follow=false) the link itself is replaced by a regular file holding
    O(content); its old target is left as it was. Either way a link is followed only when root or the module's
    user owns it, and a dangling link is an error.
  - With O(expected_sha256) the write happens only if the file on disk still has the content it was read
    with, so an edit computed on the controller never overwrites a concurrent change.
  - Check mode runs the same checks as a real run (the file type, O(expected_sha256), a missing or
    read-only directory, unknown users and groups) and fails the same way.
  - M(composefs.fleet.storage_conf) uses this module to write the C(storage.conf) it computed on the
    controller. It works for any text file. Needs only the Python standard library on the managed node.
author:
  - composefs.fleet developers (@composefs-fleet)
options:
  path:
    description:
      - The file to write, an absolute path.
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
      - Permission bits of the file, as a quoted octal string (V('0644')) or a symbolic mode (V(u=rw,g=r,o=r)), as
        in M(ansible.builtin.file). An unquoted YAML number is refused, since V(0644) arrives as 420.
      - Omit it to keep an existing file's mode; a new file gets C(0644).
    type: raw
  owner:
    description:
      - Name or uid of the file's owner. Omit it to keep an existing file's owner.
    type: str
  group:
    description:
      - Name or gid of the file's group. Omit it to keep an existing file's group.
    type: str
  follow:
    description:
      - Whether a symlink at O(path) is followed (its target is written) or replaced by a regular file.
    type: bool
    default: true
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
  - Supports check mode and diff mode. The diff shows the content and, when O(mode), O(owner) or O(group) are
    given, the attributes.
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
    mode: "0644"
    owner: root
    group: root
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
target:
  description: The file written, after following symlinks (equal to RV(path) when it is not a link, or with O(follow=false)).
  returned: always
  type: str
replaced_link:
  description: Whether a symlink at O(path) was replaced by a regular file (O(follow=false)).
  returned: always
  type: bool
attributes:
  description: The requested O(mode), O(owner) and O(group), before (empty for a new file) and after.
  returned: when any of O(mode), O(owner), O(group) is given
  type: dict
  sample: {before: {mode: "0644", owner: root}, after: {mode: "0640", owner: root}}
"""

import grp
import hashlib
import os
import pwd
import re
import stat

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.common.text.converters import to_bytes, to_text

from ansible_collections.composefs.fleet.plugins.module_utils.common.atomic import atomic_write
from ansible_collections.composefs.fleet.plugins.module_utils.storage_conf import UnsafeFile, resolve_path

NEW_FILE_MODE = 0o644


def _read_current(path):
    """The bytes of the regular file ``path`` (resolved), opened without following a link or blocking on a FIFO."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise UnsafeFile("%s exists and is not a regular file" % path)
        chunks = []
        for chunk in iter(lambda: os.read(fd, 65536), b""):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def parse_mode(value, current):
    """Permission bits from an octal string ("0644") or a symbolic mode ("u=rw,g=r"), applied to ``current``."""
    if isinstance(value, bool) or not isinstance(value, str):
        raise ValueError("mode must be a quoted string such as '0644' or 'u=rw,g=r,o=r', not the number %r: an unquoted "
                         "YAML number is ambiguous (0644 arrives as 420, 644 is not octal)" % (value,))
    if re.match(r"^0?[0-7]{3,4}$", value):
        return int(value, 8)
    if re.match(r"^[ugoa]*[-+=][rwxXst]*(,[ugoa]*[-+=][rwxXst]*)*$", value):
        fake = os.stat_result((stat.S_IFREG | current, 0, 0, 0, 0, 0, 0, 0, 0, 0))
        return stat.S_IMODE(AnsibleModule._symbolic_mode_to_octal(fake, value))  # pylint: disable=protected-access
    raise ValueError("mode %r is neither an octal mode such as '0644' nor a symbolic one such as 'u=rw,g=r,o=r'" % value)


def _uid_of(owner):
    if re.match(r"^[0-9]+$", owner):
        return int(owner)
    try:
        return pwd.getpwnam(owner).pw_uid
    except KeyError:
        raise ValueError("owner %r: no such user on the host" % owner)


def _gid_of(group):
    if re.match(r"^[0-9]+$", group):
        return int(group)
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        raise ValueError("group %r: no such group on the host" % group)


def _name_of_uid(uid):
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _name_of_gid(gid):
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def _shown(attrs, keys):
    named = (("mode", "%04o" % attrs[0]), ("owner", _name_of_uid(attrs[1])), ("group", _name_of_gid(attrs[2])))
    return dict((key, value) for key, value in named if key in keys)


def _writable_problem(directory, create_dirs):
    """Why a file cannot be created in ``directory``, or None: the same checks in check mode as in a real run."""
    probe = directory
    while not os.path.isdir(probe):
        if not create_dirs:
            return "directory %s does not exist: create it first; nothing was written" % directory
        if probe in ("/", ""):
            break
        probe = os.path.dirname(probe)
    if not os.access(probe, os.W_OK | os.X_OK):
        return "directory %s is not writable by uid %d; nothing was written" % (probe, os.geteuid())
    try:
        if os.statvfs(probe).f_flag & os.ST_RDONLY:
            return "directory %s is on a read-only filesystem; nothing was written" % probe
    except OSError:
        pass
    return None


def write_atomic(module, path, data, new_mode, attrs=None):
    """Write ``data`` to ``path`` atomically, keeping an existing file's mode, owner and SELinux context, or
    giving the new file ``attrs`` (mode, uid, gid) before it is renamed into place."""
    context = None
    if module.selinux_enabled():
        context = module.selinux_context(path) if os.path.exists(path) else module.selinux_default_context(path)

    def finish(tmp):
        if context:
            module.set_context_if_different(tmp, context, False)
        if attrs is not None:
            st = os.lstat(tmp)
            if (st.st_uid, st.st_gid) != (attrs[1], attrs[2]):
                os.lchown(tmp, attrs[1], attrs[2])
            os.chmod(tmp, attrs[0])  # after the chown, which may clear set-id bits

    atomic_write(path, data, new_mode, before_rename=finish)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            path=dict(type="path", required=True),
            content=dict(type="str", required=True),
            expected_sha256=dict(type="str"),
            mode=dict(type="raw"),
            owner=dict(type="str"),
            group=dict(type="str"),
            follow=dict(type="bool", default=True),
            create_dirs=dict(type="bool", default=False),
            backup=dict(type="bool", default=False),
        ),
        supports_check_mode=True,
    )
    params = module.params
    path = params["path"]
    data = to_bytes(params["content"], errors="surrogate_or_strict")
    new_sha = hashlib.sha256(data).hexdigest()
    if not path.startswith("/"):
        module.fail_json(msg="path must be absolute (the module runs on the host), not %r" % path)

    # What the file holds now is read through its links (safely); it is written to the link's target when
    # follow is true, and replaces the link itself when follow is false.
    try:
        read_from, is_link = resolve_path(path)
        if params["follow"]:
            write_to = read_from
        else:
            write_to = os.path.join(resolve_path(os.path.dirname(path))[0], os.path.basename(path))
        exists = os.path.lexists(read_from)
        current_bytes = _read_current(read_from) if exists else None
    except UnsafeFile as exc:
        module.fail_json(msg="%s; nothing was written" % exc)
    except OSError as exc:
        module.fail_json(msg="cannot read %s: %s; nothing was written" % (read_from, exc.strerror))
    current = hashlib.sha256(current_bytes).hexdigest() if exists else None
    expected = params["expected_sha256"]
    if expected is not None:
        if expected == "absent" and exists:
            module.fail_json(msg="%s appeared since it was read; nothing was written" % path, sha256=current)
        if expected != "absent" and current != expected.lower():
            module.fail_json(msg="%s changed since it was read (sha256 %s, expected %s); nothing was written"
                             % (path, current, expected), sha256=current)

    requested = [key for key in ("mode", "owner", "group") if params[key] is not None]
    st = os.stat(read_from) if exists else None
    before = (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) if exists else (NEW_FILE_MODE, os.geteuid(), os.getegid())
    try:
        after = (parse_mode(params["mode"], before[0]) if params["mode"] is not None else before[0],
                 _uid_of(params["owner"]) if params["owner"] is not None else before[1],
                 _gid_of(params["group"]) if params["group"] is not None else before[2])
    except ValueError as exc:
        module.fail_json(msg="%s; nothing was written" % exc)

    replaces_link = is_link and not params["follow"]
    content_changed = current != new_sha or replaces_link
    attrs_changed = exists and after != before
    result = dict(changed=content_changed or attrs_changed, path=path, target=write_to, sha256=new_sha,
                  created=not exists, replaced_link=replaces_link)
    if requested:
        result["attributes"] = dict(before=_shown(before, requested) if exists else {}, after=_shown(after, requested))
    if module._diff:
        diffs = []
        if content_changed:
            diffs.append(dict(before=to_text(current_bytes or b"", errors="surrogate_or_replace"), after=params["content"],
                              before_header=path if exists else "%s (absent)" % path, after_header=write_to))
        if requested and (attrs_changed or not exists):
            diffs.append(dict(before=result["attributes"]["before"], after=result["attributes"]["after"],
                              before_header="%s (attributes)" % path, after_header="%s (attributes)" % write_to))
        result["diff"] = diffs

    if content_changed:
        problem = _writable_problem(os.path.dirname(write_to) or "/", params["create_dirs"])
        if problem:
            module.fail_json(msg=problem)
    if not result["changed"] or module.check_mode:
        if module.check_mode:
            result["sha256"] = current
        module.exit_json(**result)

    if content_changed:
        directory = os.path.dirname(write_to) or "/"
        if not os.path.isdir(directory):
            try:
                os.makedirs(directory, 0o755)
            except OSError as exc:
                module.fail_json(msg="cannot create %s: %s" % (directory, exc))
        if exists and params["backup"]:
            result["backup_file"] = module.backup_local(read_from)
        try:
            write_atomic(module, write_to, data, NEW_FILE_MODE, after if requested else None)
        except OSError as exc:
            module.fail_json(msg="cannot write %s: %s" % (write_to, exc))
    else:
        try:
            if (after[1], after[2]) != (before[1], before[2]):
                os.chown(read_from, after[1], after[2])
            if after[0] != before[0] or (after[1], after[2]) != (before[1], before[2]):
                os.chmod(read_from, after[0])
        except OSError as exc:
            module.fail_json(msg="cannot set the attributes of %s: %s" % (read_from, exc))
    module.exit_json(**result)


if __name__ == "__main__":
    main()
