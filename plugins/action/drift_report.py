# -*- coding: utf-8 -*-
# Copyright: composefs.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin behind composefs.fleet.drift_report: the deployment drift report, built and written on the controller.

Runs once for the play (the deploy role's ``drift`` entry point calls it with
``run_once``). It reads every host's registered composefs.fleet.deployment_info result
and its desired digest from ``hostvars``, builds
the report with plugins/plugin_utils/drift_report.py and writes the files with the
verity report's writer, each only when its content changed. Nothing runs on a managed node.
"""

from __future__ import annotations

import os

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase

from ansible_collections.composefs.fleet.plugins.plugin_utils import report_render
from ansible_collections.composefs.fleet.plugins.plugin_utils.drift_report import DriftReportError, drift_report, host_drift, render_all
from ansible_collections.composefs.fleet.plugins.plugin_utils.report_render import FILE_NAMES, write_report
from ansible_collections.composefs.fleet.plugins.plugin_utils.verity_report import report_hosts

ARGUMENT_SPEC = dict(
    dest=dict(type="path", required=True),
    name=dict(type="str", required=True),
    formats=dict(type="list", elements="str", choices=sorted(FILE_NAMES), default=["json", "md", "html"]),
    title=dict(type="str"),
    mode=dict(type="raw", default="0644"),
    hosts=dict(type="list", elements="str"),
    active_hosts=dict(type="list", elements="str"),
    desired=dict(type="str"),
    desired_var=dict(type="str", default="deploy_drift_desired"),
    result_var=dict(type="str", default="deploy_drift_host"),
)


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _VALID_ARGS = frozenset(ARGUMENT_SPEC)

    def run(self, tmp=None, task_vars=None):
        task_vars = task_vars or {}
        result = super().run(tmp, task_vars)
        del tmp
        dummy, params = self.validate_argument_spec(argument_spec=ARGUMENT_SPEC)
        hosts, active, hostvar = report_hosts(params, task_vars)

        entries = []
        for host in hosts:
            desired = params["desired"] or hostvar(host, params["desired_var"]) or None
            entries.append(host_drift(host, params["name"], desired, hostvar(host, params["result_var"]),
                                      active=host in active))
        try:
            report = drift_report(entries, params["name"], params["title"])
            rendered = render_all(report, params["formats"])
            mode = report_render.parse_mode(params["mode"])
        except (DriftReportError, report_render.ReportRenderError) as exc:
            raise AnsibleActionFail(str(exc)) from exc
        dest = os.path.abspath(params["dest"])
        try:
            changed, written = write_report(dest, rendered, mode, self._task.check_mode)
        except OSError as exc:
            raise AnsibleActionFail("cannot write the report in %s: %s" % (dest, exc)) from exc
        result.update(
            changed=changed,
            dest=dest,
            files=[os.path.join(dest, FILE_NAMES[fmt]) for fmt in params["formats"]],
            written=written,
            counts=report["counts"],
            differing=report["differing"],
            hosts=dict((h["host"], dict(status=h["status"], mounted=h["mounted"], desired=h["desired"],
                                        problems=h["problems"], message=h["message"])) for h in report["hosts"]),
            report=report,
        )
        return result
