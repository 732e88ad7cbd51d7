# -*- coding: utf-8 -*-
# Copyright: composefs.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filters for provisioning CoreOS and bootc nodes: Ignition, Butane, Containerfile lines.

The logic lives in plugins/plugin_utils/coreos_provision.py. Each filter is documented in the .yml file of the same name.
"""

from __future__ import annotations

from ansible.errors import AnsibleFilterError

from ansible_collections.composefs.fleet.plugins.plugin_utils import coreos_provision
from ansible_collections.composefs.fleet.plugins.plugin_utils.verity_report import plain


def _call(function, options):
    try:
        return function(plain(options) if options is not None else None)
    except coreos_provision.ProvisionError as exc:
        raise AnsibleFilterError(str(exc)) from exc


def coreos_ignition(options=None):
    """The Ignition config (spec 3.4.0) as a dict; pipe it to to_json."""
    return _call(coreos_provision.ignition, options)


def coreos_butane(options=None):
    """The Butane source (fcos 1.5.0) as YAML text."""
    return _call(coreos_provision.butane, options)


def coreos_containerfile(options=None):
    """The Containerfile lines for a bootc image, as a list."""
    return _call(coreos_provision.containerfile, options)


class FilterModule:
    """composefs.fleet CoreOS provisioning filters."""

    def filters(self):
        return {
            "coreos_ignition": coreos_ignition,
            "coreos_butane": coreos_butane,
            "coreos_containerfile": coreos_containerfile,
        }
