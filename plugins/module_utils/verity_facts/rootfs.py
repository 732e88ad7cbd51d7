# -*- coding: utf-8 -*-
# Copyright: composefs.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Is ``/`` a composefs mount, and does it require fs-verity?"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type


def _option(options, name):
    for option in options.split(","):
        key, sep, value = option.partition("=")
        if key == name:
            return value if sep else ""
    return None


def root_facts(mounts):
    """The ``root`` facts from parsed mountinfo. Pure.

    composefs mounts ``/`` as overlayfs with the source ``composefs`` (bootc, ostree);
    the ``verity=`` mount option (``require``, ``on``, ``off``) says how fs-verity
    digests of the data files are checked.
    """
    top = None
    for entry in mounts:
        if entry.mountpoint == "/":
            top = entry  # a later mount on / shadows an earlier one
    if top is None:
        return dict(composefs=False, fstype=None, source=None, verity=None, verity_required=False, options=None)
    options = ",".join(o for o in (top.options, top.super_options) if o)
    composefs = top.source == "composefs"
    verity = _option(options, "verity")
    return dict(
        composefs=composefs,
        fstype=top.fstype,
        source=top.source,
        verity=verity,
        verity_required=composefs and verity == "require",
        options=options,
    )
