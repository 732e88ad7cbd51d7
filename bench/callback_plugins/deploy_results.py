# -*- coding: utf-8 -*-
# Copyright: composefs.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""bench/deploy.py's recorder: each host's deploy_result (the deploy role's last set_fact), written as JSON.

Enabled only by the benchmark (ANSIBLE_CALLBACKS_ENABLED=deploy_results, the file in
COMPOSEFS_FLEET_BENCH_RESULTS), so the timed run is playbooks/deploy.yml with no extra play.
"""

from __future__ import annotations

import json
import os

from ansible.plugins.callback import CallbackBase

DOCUMENTATION = r"""
name: deploy_results
type: aggregate
short_description: Write each host's deploy_result to the file named by COMPOSEFS_FLEET_BENCH_RESULTS
description:
  - Benchmark helper of composefs.fleet (bench/deploy.py); not part of the collection.
requirements:
  - enable in configuration
"""


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "deploy_results"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self):
        super().__init__()
        self.results = {}

    def v2_runner_on_ok(self, result):
        facts = result._result.get("ansible_facts") or {}  # pylint: disable=protected-access
        if "deploy_result" in facts:
            self.results[result._host.get_name()] = facts["deploy_result"]  # pylint: disable=protected-access

    def v2_playbook_on_stats(self, stats):
        with open(os.environ["COMPOSEFS_FLEET_BENCH_RESULTS"], "w", encoding="utf-8") as f:
            json.dump(self.results, f)
