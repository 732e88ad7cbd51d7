# -*- coding: utf-8 -*-
# Copyright: composefs.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filters of the verity_check role: the raw fallback for hosts without Python, and jmespath queries.

The logic lives in plugins/plugin_utils/verity_report.py (the report itself is the
composefs.fleet.verity_report action). Each filter is documented in the .yml file of
the same name.
"""

from __future__ import annotations

from ansible.errors import AnsibleFilterError

try:
    import jmespath
except ImportError:  # json_query says so when it is used
    jmespath = None

from ansible_collections.composefs.fleet.plugins.plugin_utils.verity_report import (
    VerityReportError,
    plain,
    python_missing,
    raw_script,
)


def verity_raw_script(paths):
    """The POSIX sh script the role runs with ansible.builtin.raw on hosts without Python."""
    try:
        return raw_script([str(p) for p in paths])
    except VerityReportError as exc:
        raise AnsibleFilterError(str(exc)) from exc


def verity_python_missing(result):
    """Whether a registered module result failed because the host has no Python."""
    return python_missing(plain(result))


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
            "verity_raw_script": verity_raw_script,
            "verity_python_missing": verity_python_missing,
            "json_query": json_query,
        }
