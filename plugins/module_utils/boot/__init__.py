# -*- coding: utf-8 -*-
# Copyright: composefs.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""How a CoreOS, ostree or bootc host boots composefs: GVariant, GLib keyfiles, prepare-root.conf, deployments."""
