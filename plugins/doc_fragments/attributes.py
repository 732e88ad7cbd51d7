# -*- coding: utf-8 -*-
# Copyright: composefs.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Shared documentation of module attributes (check mode, diff mode)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):

    # composefs.fleet.attributes: full check and diff mode (modules that change things).
    DOCUMENTATION = r"""
options: {}
attributes:
  check_mode:
    description: Can run in check mode and return changed status prediction without modifying target.
    support: full
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check mode), when in diff mode.
    support: full
"""

    # composefs.fleet.attributes.read_only: modules that only report.
    READ_ONLY = r"""
options: {}
attributes:
  check_mode:
    description: Can run in check mode; the module changes nothing either way.
    support: full
  diff_mode:
    description: The module changes nothing, so there is never a diff.
    support: none
"""
