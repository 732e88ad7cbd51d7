# -*- coding: utf-8 -*-
# Copyright: composefs.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin behind composefs.fleet.verity_report: the fleet report, built and written on the controller.

Runs once for the play (the verity_check role calls it with ``run_once``). It reads
every host's registered composefs.fleet.verity_facts result (whose own action plugin
reads hosts without Python through raw commands), its composefs.fleet.boot_facts result
(the "boot" column) and the host's own policy from ``hostvars``, classifies the hosts with the logic in plugins/plugin_utils/verity_report.py,
and writes the report files into a directory on the controller, each only when its
content changed. Nothing runs on a managed node, so there is no module execution and no
delegation.
"""

from __future__ import annotations

import os

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase

from ansible_collections.composefs.fleet.plugins.plugin_utils import report_render
from ansible_collections.composefs.fleet.plugins.plugin_utils.report_render import FILE_NAMES, write_if_changed, write_report
from ansible_collections.composefs.fleet.plugins.plugin_utils.verity_report import (
    VerityReportError,
    fleet_report,
    host_record,
    plain,
    report_hosts,
    render_all,
)

ARGUMENT_SPEC = dict(
    dest=dict(type="path", required=True),
    formats=dict(type="list", elements="str", choices=sorted(FILE_NAMES), default=["json", "md", "html"]),
    title=dict(type="str", default="composefs fs-verity fleet report"),
    policy=dict(type="dict", default={}),
    mode=dict(type="raw", default="0644"),
    hosts=dict(type="list", elements="str"),
    active_hosts=dict(type="list", elements="str"),
    module_var=dict(type="str", default="verity_check_module"),
    policy_var=dict(type="str", default="verity_check_host_policy"),
    boot_var=dict(type="str", default="verity_check_boot"),
)


__all__ = ["ActionModule", "parse_mode", "write_if_changed"]


def parse_mode(mode):
    """The file mode from a quoted octal string (see report_render.parse_mode); a task failure otherwise."""
    try:
        return report_render.parse_mode(mode)
    except report_render.ReportRenderError as exc:
        raise AnsibleActionFail(str(exc)) from exc


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _VALID_ARGS = frozenset(ARGUMENT_SPEC)

    def run(self, tmp=None, task_vars=None):
        task_vars = task_vars or {}
        result = super().run(tmp, task_vars)
        del tmp
        dummy, params = self.validate_argument_spec(argument_spec=ARGUMENT_SPEC)
        hosts, active, hostvar = report_hosts(params, task_vars)

        records = [host_record(host, hostvar(host, params["module_var"]), active=host in active,
                               policy=hostvar(host, params["policy_var"]), boot_result=hostvar(host, params["boot_var"]))
                   for host in hosts]
        try:
            report = fleet_report(records, plain(params["policy"]), params["title"])
            rendered = render_all(report, params["formats"])
        except VerityReportError as exc:
            raise AnsibleActionFail(str(exc)) from exc

        # a relative dest is relative to the controller's current directory, as on the command line
        dest = os.path.abspath(params["dest"])
        mode = parse_mode(params["mode"])
        check_mode = self._task.check_mode
        try:
            changed, written = write_report(dest, dict((fmt, rendered[fmt]) for fmt in params["formats"]), mode, check_mode)
        except OSError as exc:
            raise AnsibleActionFail("cannot write the report in %s: %s" % (dest, exc)) from exc

        verdicts = dict((h["host"], dict(verdict=h["verdict"], problems=[p["message"] for p in h["problems"]], message=h.get("message"),
                                         boot=h["boot"].get("summary") if h["boot"]["status"] in ("ok", "raw") else None))
                        for h in report["hosts"])
        result.update(
            changed=changed,
            dest=dest,
            files=[os.path.join(dest, FILE_NAMES[fmt]) for fmt in params["formats"]],
            written=written,
            counts=report["counts"],
            groups=report["groups"],
            verdicts=verdicts,
            report=report,
        )
        return result
