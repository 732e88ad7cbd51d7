# -*- coding: utf-8 -*-
# Copyright: composefs.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The one error type of the composefs code (dumpfile parsing, tree building, image writing)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.composefs.fleet.plugins.module_utils.common.text import excerpt


class ComposefsError(Exception):
    """A composefs input or tree was rejected.

    ``problem`` is the bare description, ``lineno`` the 1-based dumpfile line it
    comes from (or None) and ``path`` the file path in the image (or None).
    ``str(error)`` names both when known, e.g.
    ``line 2: /link: Invalid symlink (target longer than 4095 bytes)``.
    """

    def __init__(self, problem, lineno=None, path=None):
        self.problem = problem
        self.lineno = lineno
        self.path = path
        Exception.__init__(self, self._format())

    def _format(self):
        parts = []
        if self.lineno is not None:
            parts.append("line %d" % self.lineno)
        if self.path is not None:
            # A hostile dumpfile's "path" may be a megabyte of garbage: quote a short excerpt.
            parts.append(excerpt(self.path, 256))
        parts.append(self.problem)
        return ": ".join(parts)

    def with_context(self, lineno=None, path=None):
        """A copy with ``lineno``/``path`` filled in where this one has none."""
        return ComposefsError(
            self.problem,
            self.lineno if self.lineno is not None else lineno,
            self.path if self.path is not None else path,
        )
