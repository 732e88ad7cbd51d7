# -*- coding: utf-8 -*-
# Copyright: composefs.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filters of the deploy role: the refs a host's repository gets for a deployment.

The logic lives in plugins/plugin_utils/deploy.py. Each filter is documented in the
.yml file of the same name.
"""

from __future__ import annotations

from ansible.errors import AnsibleFilterError

from ansible_collections.composefs.fleet.plugins.plugin_utils.deploy import DeployPlanError, deploy_plan, rollback_plan
from ansible_collections.composefs.fleet.plugins.plugin_utils.verity_report import plain


def _deploy_plan(refs, name, digest, version=None, keep=1):
    try:
        return deploy_plan(plain(refs), name, digest, version or None, int(keep) if isinstance(keep, str) and keep.isdigit() else keep)
    except DeployPlanError as exc:
        raise AnsibleFilterError(str(exc)) from exc


def _rollback_plan(refs, name, version=None, keep=1):
    try:
        return rollback_plan(plain(refs), name, version or None, int(keep) if isinstance(keep, str) and keep.isdigit() else keep)
    except DeployPlanError as exc:
        raise AnsibleFilterError(str(exc)) from exc


class FilterModule:
    """composefs.fleet deploy filters."""

    def filters(self):
        return {
            "deploy_plan": _deploy_plan,
            "rollback_plan": _rollback_plan,
        }
