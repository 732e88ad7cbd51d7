# -*- coding: utf-8 -*-
# Copyright: composefs.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The error type of the mount logic: one message, in plain words, that says what to do."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class MountError(Exception):
    """Mounting, unmounting or persisting a composefs mount failed; ``str()`` is the message for the user.

    ``kind`` names the class of failure for callers and tests (``image-missing``,
    ``digest-mismatch``, ``no-verity``, ``objects-missing``, ``kernel-feature``,
    ``not-root``, ``busy``, ``foreign-mount``, ``invalid``, ``helper``, ``system``).
    """

    def __init__(self, message, kind="system"):
        super(MountError, self).__init__(message)
        self.kind = kind
