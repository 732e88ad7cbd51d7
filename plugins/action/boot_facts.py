# -*- coding: utf-8 -*-
# Copyright: composefs.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin behind composefs.fleet.boot_facts: the module, or raw commands on hosts without Python.

CoreOS nodes have no Python. When the module fails for that reason (and
``raw_fallback`` is on), the raw script prints the files the facts need and the
same gather code decides the facts here, on the controller.
"""

from __future__ import annotations

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase

from ansible_collections.composefs.fleet.plugins.module_utils.boot.gather import gather
from ansible_collections.composefs.fleet.plugins.module_utils.boot.raw import parse_raw, raw_script
from ansible_collections.composefs.fleet.plugins.plugin_utils.verity_report import python_missing

MODULE = "composefs.fleet.boot_facts"
ARGS = frozenset(("sysroot", "root", "bootc_status", "digests", "raw_fallback"))


def _boolean(value):
    if isinstance(value, str):
        return value.lower() in ("1", "true", "yes", "on")
    return bool(value)


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _VALID_ARGS = ARGS

    def run(self, tmp=None, task_vars=None):
        task_vars = task_vars or {}
        result = super().run(tmp, task_vars)
        del tmp
        args = dict(self._task.args)
        fallback = _boolean(args.get("raw_fallback", True))
        module_result = self._execute_module(module_name=MODULE, module_args=args, task_vars=task_vars)
        if not module_result.get("failed") or not fallback or not python_missing(module_result):
            result.update(module_result)
            return result
        sysroot = args.get("sysroot") or "/sysroot"
        try:
            script = raw_script(sysroot, digests=_boolean(args.get("digests", True)))
        except ValueError as exc:
            raise AnsibleActionFail(str(exc))
        raw = self._low_level_execute_command(script, sudoable=True)
        if raw.get("rc") not in (0, None) and not raw.get("stdout"):
            raise AnsibleActionFail("boot_facts: no Python on the host, and the raw commands failed: %s"
                                    % (raw.get("stderr") or raw.get("rc")))
        src, cmdline, mountinfo, status, complete = parse_raw(raw.get("stdout") or "")
        facts = gather(src, cmdline, mountinfo, sysroot=sysroot, bootc_status_text=status)
        if not complete:
            facts["errors"].append("raw: the output ended early; the facts may be incomplete")
        result.update(changed=False, ansible_facts=dict(composefs_boot=facts))
        return result
