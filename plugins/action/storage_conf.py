# -*- coding: utf-8 -*-
# Copyright: composefs.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin behind composefs.fleet.storage_conf: the TOML work happens here, on the controller.

The flow, in the spirit of community.crypto's ``*_pipe`` action plugins (the
module file documents the options; this plugin does the work):

1. run ``composefs.fleet.storage_conf_info`` on the host: read storage.conf,
   the vendor file and the drop-in directories as text, plus the Podman and
   mkcomposefs versions, kernel features and the graphroot filesystem;
2. parse and edit with tomlkit here (``plugin_utils.storage_conf.plan``),
   comparing parsed values to decide ``changed``;
3. run ``composefs.fleet.storage_conf_write`` on the host to replace the file
   atomically, only if it still has the content read in 1, and to set mode, owner
   and group. In check mode it runs too, in check mode: its preflight (a missing
   directory, a file that is not regular, an unknown owner) fails the check run
   the same way it would fail the real run.

The managed node needs nothing but the Python standard library.
"""

from __future__ import annotations

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase

from ansible_collections.composefs.fleet.plugins.module_utils.storage_conf import ARGUMENT_SPEC, REQUIRED_IF
from ansible_collections.composefs.fleet.plugins.plugin_utils.storage_conf import (
    StorageConfError,
    find_filesystem,
    host_checks,
    plan,
    probe_request,
)

INFO_MODULE = "composefs.fleet.storage_conf_info"
WRITE_MODULE = "composefs.fleet.storage_conf_write"


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _VALID_ARGS = frozenset(ARGUMENT_SPEC)

    def _run_module(self, name, args, task_vars):
        res = self._execute_module(module_name=name, module_args=args, task_vars=task_vars)
        if res.get("failed"):
            msg = res.get("msg") or res.get("module_stderr") or "unknown error"
            detail = dict((k, res[k]) for k in ("module_stderr", "module_stdout", "rc", "exception") if k in res)
            raise AnsibleActionFail("%s failed on the host: %s" % (name, msg), result=detail)
        return res

    def run(self, tmp=None, task_vars=None):
        task_vars = task_vars or {}
        result = super().run(tmp, task_vars)
        del tmp
        dummy, params = self.validate_argument_spec(argument_spec=ARGUMENT_SPEC, required_if=REQUIRED_IF)
        if params["mode"] is not None and not isinstance(params["mode"], str):
            raise AnsibleActionFail("mode must be a quoted string such as '0644' or 'u=rw,g=r,o=r', not the number %r: "
                                    "an unquoted YAML number is ambiguous (0644 arrives as 420, 644 is not octal)"
                                    % (params["mode"],))
        if params["mode"] in ("auto", "file", "dropin"):
            raise AnsibleActionFail("mode is the file's permission bits now (as in ansible.builtin.file); the option that "
                                    "chooses the full file or a drop-in is called layout: use layout: %s" % params["mode"])
        try:
            probe = self._run_module(INFO_MODULE, probe_request(params), task_vars)
            try:
                planned = plan(params, probe)
            except StorageConfError as exc:
                result.update(failed=True, msg=str(exc), changed=False,
                              podman_version=(probe.get("podman") or {}).get("version"))
                return result
            graphroot = planned["graphroot"]["path"]
            fs_record = find_filesystem(probe, graphroot)
            if fs_record is None:
                fs_probe = self._run_module(INFO_MODULE, dict(paths=[], dropin_dirs=[], fs_paths=[graphroot]), task_vars)
                fs_record = find_filesystem(fs_probe, graphroot)
            host_checks(planned, probe, fs_record)

            attrs = dict((key, params[key]) for key in ("mode", "owner", "group") if params[key] is not None)
            # The write module runs in check mode too: its preflight (directory, file type, users, groups)
            # fails a check run exactly where the real run would, and it reports attribute changes.
            if planned["changed"] or (attrs and not planned["created"]):
                write_args = dict(
                    path=planned["path"],
                    content=planned["content"],
                    expected_sha256=planned["expected_sha256"],
                    create_dirs=planned["scope"] == "rootful",
                    backup=params["backup"],
                    follow=params["follow"],
                )
                write_args.update(attrs)
                written = self._run_module(WRITE_MODULE, write_args, task_vars)
                planned["changed"] = bool(written.get("changed"))
                if written.get("backup_file"):
                    planned["backup_file"] = written["backup_file"]
                if written.get("attributes"):
                    planned["attributes"] = written["attributes"]
                    if written["attributes"]["before"] != written["attributes"]["after"]:
                        planned["diff"].append(dict(
                            before=written["attributes"]["before"], after=written["attributes"]["after"],
                            before_header="%s (attributes)" % planned["path"],
                            after_header="%s (attributes)" % planned["path"]))
        finally:
            self._remove_tmp_path(self._connection._shell.tmpdir)

        planned.pop("content", None)
        planned.pop("expected_sha256", None)
        result.update(planned)
        return result
