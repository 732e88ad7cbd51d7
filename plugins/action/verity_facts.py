# -*- coding: utf-8 -*-
# Copyright: composefs.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin behind composefs.fleet.verity_facts: the module, or raw reads where the host has no Python.

Runs the verity_facts module. When it cannot run because the host has no Python
interpreter (Fedora CoreOS, minimal images), and ``raw_fallback`` is on, it runs the
POSIX sh script of plugins/plugin_utils/verity_report.py through the connection itself
(as ansible.builtin.raw does, with become when the task has it) and parses the output
here on the controller into the same ``composefs`` facts, marked ``source: raw``. One
task, one result: the host is neither failed nor "ignored". The script only reads, so
it runs in check mode too. With ``boot: true`` the boot facts are read the same way
(plugin_utils/boot_raw.py, as boot_facts does).
"""

from __future__ import annotations

from ansible.errors import AnsibleActionFail
from ansible.module_utils.parsing.convert_bool import boolean
from ansible.plugins.action import ActionBase

from ansible_collections.composefs.fleet.plugins.plugin_utils.host_python import python_missing

# Only python_missing is imported for every host: the raw fallback's code is imported when a host
# needs it (the collection loader compiles what an action plugin imports, in every worker).

MODULE = "composefs.fleet.verity_facts"
# The option list of the module; the action needs only these of them.
PATHS_OPTION = "paths"
RAW_FALLBACK_OPTION = "raw_fallback"
BOOT_OPTION = "boot"
BOOT_SYSROOT_OPTION = "boot_sysroot"


def _excerpt(text, limit=300):
    """A short, printable quote of what the host printed (it may be binary garbage)."""
    text = " ".join(str(text or "").split())
    text = "".join(ch if ch.isprintable() else "\\x%02x" % ord(ch) if ord(ch) < 256 else "\\u%04x" % ord(ch) for ch in text[:limit])
    return text[:limit] + ("..." if len(text) > limit else "")


def raw_result(run, paths):
    """The action's result from one run of the raw script: ``run`` is the _low_level_execute_command result."""
    from ansible_collections.composefs.fleet.plugins.plugin_utils.verity_report import RawOutputError, parse_raw

    stdout = run.get("stdout") or ""
    if "@@release" not in stdout:
        return dict(failed=True, changed=False, rc=run.get("rc"),
                    msg="the host has no Python, and the raw commands failed (exit %s): %s"
                        % (run.get("rc"), _excerpt(run.get("stderr") or stdout) or "no output"))
    try:
        facts = parse_raw(stdout, paths)
    except RawOutputError as exc:
        return dict(failed=True, changed=False, msg="the host has no Python, and its raw output cannot be read: %s" % exc)
    return dict(changed=False, ansible_facts=dict(composefs=facts))


class ActionModule(ActionBase):
    TRANSFERS_FILES = False

    def run(self, tmp=None, task_vars=None):
        task_vars = task_vars or {}
        result = super().run(tmp, task_vars)
        del tmp
        module_args = dict(self._task.args)
        try:
            raw_fallback = boolean(module_args.get(RAW_FALLBACK_OPTION, True), strict=True)
        except TypeError as exc:
            raise AnsibleActionFail("%s: %s" % (RAW_FALLBACK_OPTION, exc)) from exc

        module_result = self._execute_module(module_name=MODULE, module_args=module_args, task_vars=task_vars)
        self._remove_tmp_path(self._connection._shell.tmpdir)
        if not (raw_fallback and python_missing(module_result)):
            result.update(module_result)
            return result

        from ansible_collections.composefs.fleet.plugins.module_utils.verity_facts.gather import DEFAULT_PATHS
        from ansible_collections.composefs.fleet.plugins.plugin_utils.verity_report import VerityReportError, raw_script

        paths = module_args.get(PATHS_OPTION)
        paths = list(DEFAULT_PATHS) if paths is None else paths
        if isinstance(paths, str):
            paths = [p.strip() for p in paths.split(",") if p.strip()]
        if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
            raise AnsibleActionFail("%s must be a list of paths" % PATHS_OPTION)
        try:
            script = raw_script(paths)
        except VerityReportError as exc:
            raise AnsibleActionFail(str(exc)) from exc
        # Read-only commands: run in check mode as well, so that check mode sees the same facts.
        run = self._low_level_execute_command(script, sudoable=True)
        result.update(raw_result(run, paths))
        if not result.get("failed") and boolean(module_args.get(BOOT_OPTION, False), strict=False):
            from ansible_collections.composefs.fleet.plugins.plugin_utils.boot_raw import read_boot_facts

            try:
                result["ansible_facts"]["composefs_boot"] = read_boot_facts(
                    self._low_level_execute_command, module_args.get(BOOT_SYSROOT_OPTION) or "/sysroot")
            except AnsibleActionFail as exc:
                result["boot_error"] = str(exc)  # as the module does: the verity facts stand without them
        return result
