# -*- coding: utf-8 -*-
# Copyright: composefs.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin behind composefs.fleet.deployment_info: read the host once, plan its refs here.

The module reads the host (plugins/module_utils/deployment/status.py). With ``plan``, the
deploy role's plan (plugins/plugin_utils/deploy.py, the deploy_plan / rollback_plan
filters' logic) is computed from the refs it returned, on the controller, in the
same task: the role's no-op rerun is one task per host, not a read and a set_fact.
"""

from __future__ import annotations

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase

from ansible_collections.composefs.fleet.plugins.module_utils.deployment.spec import argument_spec
from ansible_collections.composefs.fleet.plugins.plugin_utils.deploy import DeployPlanError, deploy_plan, rollback_plan

MODULE = "composefs.fleet.deployment_info"


def plan_result(result, name, digest, plan, mount_point):
    """``result`` (the module's) with ``plan`` and ``deployment`` added and ``in_place`` / ``differences`` updated by it."""
    refs = result.get("refs") or {}
    if plan["rollback"]:
        planned = rollback_plan(refs, name, plan["rollback_version"] or None, plan["keep"])
    else:
        planned = deploy_plan(refs, name, digest, plan["version"] or None, plan["keep"])
    differences = list(result.get("differences") or [])
    if not plan["rollback"]:
        if planned["new_release"]:
            differences.append("the image gets the new release ref %s" % planned["release_ref"])
        if plan["gc"] and planned["remove_refs"]:
            differences.append("release refs to remove: %s" % ", ".join(planned["remove_refs"]))
    # what the host runs once the plan is carried out: the deploy role's deploy_result, less what was sent
    deployment = dict((key, planned[key]) for key in ("name", "version", "digest", "release_ref", "previous"))
    deployment["mount_point"] = mount_point
    out = dict(result, plan=planned, deployment=deployment, differences=differences)
    if out.get("in_place") is True and differences:
        out["in_place"] = False
    return out


class ActionModule(ActionBase):
    TRANSFERS_FILES = False

    def run(self, tmp=None, task_vars=None):
        task_vars = task_vars or {}
        result = super().run(tmp, task_vars)
        del tmp
        _validation, args = self.validate_argument_spec(argument_spec=argument_spec())
        plan = args.pop("plan")
        if plan is not None and not plan["rollback"] and not args["digest"]:
            raise AnsibleActionFail("plan needs digest (the image to deploy), or plan.rollback=true")
        module_args = dict((k, v) for k, v in args.items() if v is not None)
        read = self._execute_module(module_name=MODULE, module_args=module_args, task_vars=task_vars)
        result.update(read)
        if read.get("failed") or read.get("unreachable") or plan is None:
            return result
        try:
            return plan_result(result, args["name"], args["digest"], plan, args["mount_point"])
        except DeployPlanError as exc:
            raise AnsibleActionFail(str(exc)) from exc
