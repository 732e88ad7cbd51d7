# -*- coding: utf-8 -*-
# Copyright: composefs.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filters of the verity_check role: jmespath queries into the report.

The report logic lives in plugins/plugin_utils/verity_report.py (the report itself is the
composefs.fleet.verity_report action; hosts without Python are read by the
composefs.fleet.verity_facts action). Each filter is documented in the .yml file of the
same name.
"""

from __future__ import annotations

from ansible.errors import AnsibleFilterError

try:
    import jmespath
except ImportError:  # json_query says so when it is used
    jmespath = None

from ansible_collections.composefs.fleet.plugins.plugin_utils.verity_report import plain


def json_query(data, expr):
    """jmespath.search(expr, data), like community.general.json_query."""
    if jmespath is None:
        raise AnsibleFilterError("json_query needs the jmespath Python library on the controller (pip install jmespath)")
    try:
        return jmespath.search(expr, plain(data))
    except jmespath.exceptions.JMESPathError as exc:
        raise AnsibleFilterError("json_query: %s" % exc) from exc


class FilterModule:
    """composefs.fleet verity_check filters."""

    def filters(self):
        return {
            "json_query": json_query,
        }
