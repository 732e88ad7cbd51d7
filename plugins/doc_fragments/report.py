# -*- coding: utf-8 -*-
# Copyright: composefs.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Shared documentation of the controller-side report modules (verity_report, drift_report)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):

    # composefs.fleet.report: where and how the report files are written, which hosts, the attributes.
    DOCUMENTATION = r"""
options:
  dest:
    description:
      - Directory on the controller for the report files; created (mode 0755) if missing.
      - A relative path is relative to the controller's current directory (where C(ansible-playbook) runs).
    type: path
    required: true
  formats:
    description: Which files to write - V(json) (C(report.json)), V(md) (C(report.md)), V(html) (C(report.html)).
    type: list
    elements: str
    choices: [html, json, md]
    default: [json, md, html]
  mode:
    description:
      - File mode of the report files, as a quoted octal string (V("0644"), V("600")).
      - A number is refused - YAML reads an unquoted C(644) as the decimal number 644 and C(0644) as 420 - as
        M(ansible.builtin.file) advises quoting modes.
    type: raw
    default: "0644"
  hosts:
    description: The hosts of the report, in order. Defaults to C(ansible_play_hosts_all).
    type: list
    elements: str
  active_hosts:
    description: The hosts still in the play; the others are reported as having failed before. Defaults to C(ansible_play_hosts).
    type: list
    elements: str
notes:
  - The report has no timestamps, so a run over an unchanged fleet changes nothing.
attributes:
  action:
    description: Indicates this has a corresponding action plugin so some parts of the options can be executed on the controller.
    support: full
  check_mode:
    description: Can run in check mode and return changed status prediction without modifying target.
    support: full
    details: In check mode nothing is written; C(changed) says whether a file would change.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check mode), when in diff mode.
    support: none
  platform:
    description: Target OS/families that can be operated against.
    support: N/A
    platforms: posix
"""
