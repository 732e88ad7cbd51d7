# -*- coding: utf-8 -*-
# Copyright: composefs.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin behind composefs.fleet.boot_facts: the module, or raw commands on hosts without Python.

CoreOS nodes have no Python. When the module fails for that reason (and
``raw_fallback`` is on), the raw script prints the files the facts need and the
same gather code decides the facts here, on the controller.
"""

from __future__ import annotations

from ansible.plugins.action import ActionBase

from ansible_collections.composefs.fleet.plugins.plugin_utils.host_python import python_missing

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
        # (imported here, for the hosts that need it: see plugin_utils/host_python.py)
        from ansible_collections.composefs.fleet.plugins.plugin_utils.boot_raw import read_boot_facts

        sysroot = args.get("sysroot") or "/sysroot"
        facts = read_boot_facts(self._low_level_execute_command, sysroot, digests=_boolean(args.get("digests", True)))
        result.update(changed=False, ansible_facts=dict(composefs_boot=facts))
        return result
