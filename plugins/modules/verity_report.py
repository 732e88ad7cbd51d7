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
extends_documentation_fragment:
  - composefs.fleet.report
author:
  - composefs.fleet developers (@composefs-fleet)
options:
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
      - The variable holding each host's registered M(composefs.fleet.boot_facts) result, for the "boot" column; or its
        M(composefs.fleet.verity_facts) result when that read the boot facts too (O(composefs.fleet.verity_facts#module:boot=true)),
        as the C(composefs.fleet.verity_check) role does.
      - Hosts without it are shown as "not gathered".
    type: str
    default: verity_check_boot
notes:
  - See docs/verity_check.md in the collection for the report format.
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
