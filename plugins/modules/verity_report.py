#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: composefs.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: verity_report
short_description: Write the composefs fs-verity fleet report on the controller
version_added: 0.1.0
description:
  - Builds the fleet report of the C(composefs.fleet.verity_check) role from every host's
    registered results, applies the policy, and writes C(report.json), C(report.md) and C(report.html) into O(dest) on the controller.
  - Runs entirely on the controller (an action plugin); call it once for the play (C(run_once)). It reads, for each host in O(hosts),
    the variables named by O(module_var) (the registered M(composefs.fleet.verity_facts) result, which for a host without Python
    holds the facts its raw fallback read) and O(policy_var) (the host's own policy).
  - Each host also gets a C(boot) entry, the report's "boot" column, from its registered M(composefs.fleet.boot_facts) result
    (O(boot_var)) - V(ostree), V(bootc) or V(none), composefs on or off, its mode and who decided it, fs-verity enforced or not,
    signed or not, and the booted image's digest. A host whose boot facts could not be read (unreachable, failed, skipped, not
    gathered, malformed) says so in that column; the column never changes the verdict.
  - Each host gets a verdict - V(pass), V(fail), V(unknown), V(unreachable) or V(error). Hosts without Python read through the raw
    fallback are marked "no python - raw facts only". The grouping and counts are jmespath queries.
  - Host data is untrusted. A host whose result, facts or own policy the report cannot use (a wrong type, a path entry without
    C(path)...) is reported as V(error) with the reason, and every other host is still reported. Host strings are escaped in
    C(report.md) (HTML, links, code spans, emphasis, table pipes and control characters) and in C(report.html).
  - A file is written only when its content (or mode) changes. Needs the C(jmespath) Python library on the controller.
author:
  - composefs.fleet developers (@composefs-fleet)
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
  title:
    description: The report's title.
    type: str
    default: composefs fs-verity fleet report
  policy:
    description:
      - The policy for hosts without their own (see O(policy_var)).
      - Its keys are checked; an unknown key fails the task, naming the closest known one.
      - C(required_paths) (list) - paths that must be V(supported); empty means every path examined.
      - C(required_kernel_features) (list) - of V(fs_verity), V(overlay), V(overlay_data_only_lowers), V(overlay_verity),
        V(overlay_lowerdir_plus), V(erofs), V(erofs_file_backed), V(loop). Default V(fs_verity), V(overlay_data_only_lowers),
        V(overlay_verity), V(erofs).
    type: dict
    default: {}
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
  module_var:
    description: The variable holding each host's registered M(composefs.fleet.verity_facts) result.
    type: str
    default: verity_check_module
  policy_var:
    description: The variable holding each host's own policy (same keys as O(policy)).
    type: str
    default: verity_check_host_policy
  boot_var:
    description:
      - The variable holding each host's registered M(composefs.fleet.boot_facts) result, for the "boot" column.
      - Hosts without it are shown as "not gathered".
    type: str
    default: verity_check_boot
notes:
  - The report has no timestamps, so a run over an unchanged fleet changes nothing.
  - See docs/verity_check.md in the collection for the report format.
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
seealso:
  - module: composefs.fleet.verity_facts
"""

EXAMPLES = r"""
- name: Gather the facts on every host, keeping unreachable and failed hosts in the play
  composefs.fleet.verity_facts:
  register: verity_check_module
  ignore_errors: true
  ignore_unreachable: true

- name: How each host boots composefs, for the report's "boot" column
  composefs.fleet.boot_facts:
  register: verity_check_boot
  ignore_errors: true
  ignore_unreachable: true
  when: not (verity_check_module.unreachable | default(false))

- name: Write the report once for the play
  composefs.fleet.verity_report:
    dest: /srv/reports/verity
    policy:
      required_paths: [/var/lib/containers/storage]
  run_once: true
  register: verity_report

- name: Hosts that fall short
  ansible.builtin.debug:
    msg: "{{ verity_report.report | composefs.fleet.json_query('hosts[?verdict!=`pass`].host') }}"
  run_once: true
"""

RETURN = r"""
dest:
  description: The report directory (absolute).
  returned: always
  type: str
  sample: /srv/reports/verity
files:
  description: The report files.
  returned: always
  type: list
  elements: str
  sample: [/srv/reports/verity/report.json, /srv/reports/verity/report.md, /srv/reports/verity/report.html]
written:
  description: The files this run wrote (would write, in check mode).
  returned: always
  type: list
  elements: str
  sample: [/srv/reports/verity/report.html]
counts:
  description: Hosts per verdict, and C(total).
  returned: always
  type: dict
  sample: {total: 4, pass: 1, fail: 1, unknown: 0, unreachable: 1, error: 1}
groups:
  description: Host names per verdict.
  returned: always
  type: dict
  sample: {pass: [node-1], fail: [coreos-1], unknown: [], unreachable: [node-2], error: [node-3]}
verdicts:
  description:
    - For each host, its C(verdict), C(problems) (messages), C(message), and C(boot) (the boot facts' C(summary), or V(null)
      when they could not be read).
  returned: always
  type: dict
  sample: {coreos-1: {verdict: fail, problems: ["/sysroot/ostree/repo (xfs): xfs has no fs-verity"], message: "no python: raw facts only",
                      boot: "ostree: best-effort"}}
report:
  description: The report as written to C(report.json) (see docs/verity_check.md).
  returned: always
  type: dict
"""
