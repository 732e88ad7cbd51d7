#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: composefs.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: drift_report
short_description: Write a deployment's drift report (which host runs which digest) on the controller
version_added: 0.2.0
description:
  - Builds the drift report of a C(composefs.fleet.deploy) deployment from every host's registered results and writes
    C(report.json), C(report.md) and C(report.html) into O(dest) on the controller.
  - For each host - the desired digest, the digest mounted at the mount point, whether (and with which digest) it is
    persisted in fstab, the verity mode, C(NAME/current), and the objects of the desired image the host repository
    lacks. A host where any of these differ, or that a deploy would change otherwise (another verity mode, an image that
    lost its pin), is V(drift); hosts are V(in_sync), V(drift), V(unreachable) or V(error). Hosts that differ come
    first.
  - Runs entirely on the controller (an action plugin); call it once for the play (C(run_once)). It reads, for each host in
    O(hosts), the variables named by O(result_var) (a registered M(composefs.fleet.deployment_info) result, asked with the
    desired digest) and O(desired_var) (the desired digest, unless O(desired)).
  - Host data is untrusted - it is escaped in C(report.md) and C(report.html) exactly as in the verity report (the same
    renderer), and a host whose results have the wrong shape is reported as V(error).
  - A file is written only when its content (or mode) changes.
extends_documentation_fragment:
  - composefs.fleet.report
author:
  - composefs.fleet developers (@composefs-fleet)
options:
  name:
    description: The deployment's name (the refs' prefix, C(NAME/current)).
    type: str
    required: true
  title:
    description: The report's title. Default C(composefs deployment drift report - NAME).
    type: str
  desired:
    description:
      - The digest every host should run. Without it, each host's O(desired_var); without that, the host's own
        C(NAME/current) (then only the mount and fstab are compared with it).
    type: str
  desired_var:
    description: The variable holding a host's desired digest.
    type: str
    default: deploy_drift_desired
  result_var:
    description: The variable holding a host's registered M(composefs.fleet.deployment_info) result.
    type: str
    default: deploy_drift_host
notes:
  - See docs/deploy.md in the collection for the report format.
seealso:
  - module: composefs.fleet.deployment_info
"""

EXAMPLES = r"""
- name: What each host runs, against the wanted digest
  composefs.fleet.deployment_info:
    path: /var/lib/composefs/repo
    name: app
    digest: "{{ wanted_digest }}"
    mount_point: /srv/app
  register: deploy_drift_host
  ignore_errors: true
  ignore_unreachable: true

- name: Write the report once for the play
  composefs.fleet.drift_report:
    dest: /srv/reports/app-drift
    name: app
    desired: "{{ wanted_digest }}"
  run_once: true
  register: drift
"""

RETURN = r"""
dest:
  description: The report directory (absolute).
  returned: always
  type: str
  sample: /srv/reports/app-drift
files:
  description: The report files.
  returned: always
  type: list
  elements: str
  sample: [/srv/reports/app-drift/report.json, /srv/reports/app-drift/report.md, /srv/reports/app-drift/report.html]
written:
  description: The files this run wrote (would write, in check mode).
  returned: always
  type: list
  elements: str
  sample: [/srv/reports/app-drift/report.html]
counts:
  description: Hosts per status, and C(total).
  returned: always
  type: dict
  sample: {total: 3, drift: 1, in_sync: 1, unreachable: 1, error: 0}
differing:
  description: The hosts that are not V(in_sync), differing first as in the report.
  returned: always
  type: list
  elements: str
  sample: [web01, web03]
hosts:
  description: For each host, its C(status), C(mounted) and C(desired) digests, C(problems) and C(message).
  returned: always
  type: dict
  sample: {web01: {status: drift, mounted: "c67f...", desired: "3e06...", problems: ["mounts c67fff3f8a2b (v2), not the desired 3e06..."], message: null}}
report:
  description: The report as written to C(report.json) (see docs/deploy.md).
  returned: always
  type: dict
"""
