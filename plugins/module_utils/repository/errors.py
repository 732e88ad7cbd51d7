# -*- coding: utf-8 -*-
# Copyright: composefs.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The one error type of the repository package."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class RepositoryError(Exception):
    """A repository operation was refused or failed; the message names the path, the cause and the fix."""


class RepositoryLocked(RepositoryError):
    """The repository lock could not be taken in time."""
