# -*- coding: utf-8 -*-
# Copyright: composefs.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""deployment_info's options, apart from the reading code.

The action plugin validates with this on the controller; it imports nothing else of the
collection, because the collection loader compiles every module it imports afresh in each
worker process (no bytecode cache), once per host and task.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type


def argument_spec():
    """deployment_info's options; ``plan`` is used by its action plugin on the controller only."""
    return dict(
        path=dict(type="path", required=True),
        name=dict(type="str", required=True),
        digest=dict(type="str"),
        mount_point=dict(type="path", required=True),
        verity=dict(type="str", choices=["require", "userspace", "off"], default="require"),
        verify_objects=dict(type="str", choices=["exists", "digest"], default="exists"),
        helper=dict(type="str", choices=["auto", "always", "never"], default="auto"),
        fstab=dict(type="path", default="/etc/fstab"),
        lock_timeout=dict(type="float", default=300),
        plan=dict(type="dict", options=dict(
            version=dict(type="str", default=""),
            keep=dict(type="int", default=1),
            gc=dict(type="bool", default=True),
            rollback=dict(type="bool", default=False),
            rollback_version=dict(type="str", default=""),
        )),
    )
