# -*- coding: utf-8 -*-
# Copyright: composefs.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The checks every module applies to the same kinds of option: digests, paths, worker counts.

One function per kind, so a digest, a relative path or ``workers: 0`` gets the
same answer from every module.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import re

from ansible_collections.composefs.fleet.plugins.module_utils.common.text import excerpt

# Hex digits of each fs-verity hash algorithm's digest.
DIGEST_HEX_LENGTHS = {"sha256": 64, "sha512": 128}
_HEX = re.compile(r"^[0-9a-f]*$")


class ParameterError(ValueError):
    """An option value is malformed; the message names the option and the fix."""


def normalize_digest(value, option="digest", algorithms=("sha256",)):
    """``(algorithm, lowercase hex)`` of a digest option; ``(None, None)`` for None.

    Accepts bare hex or ``ALG:hex`` (``sha256:`` and, where ``algorithms``
    allows, ``sha512:``). A bare digest is taken as the first algorithm of
    ``algorithms`` whose length it has. Refuses other prefixes, non-hex and,
    up front, any length that is not a digest's: 8 hex digits are a typo, not
    a digest that "does not match".
    """
    if value is None:
        return None, None
    shown = excerpt(value)
    text = str(value).strip().lower()
    kinds = " or ".join(alg.upper().replace("SHA", "SHA-") for alg in algorithms)
    lengths = " or ".join("%d" % DIGEST_HEX_LENGTHS[alg] for alg in algorithms)
    prefixes = " or ".join("'%s:'" % alg for alg in algorithms)
    algorithm = None
    if ":" in text:
        algorithm, text = text.split(":", 1)
        if algorithm not in algorithms:
            raise ParameterError("%s %r is not a %s fs-verity digest: unknown prefix %r (expected %s hex digits, "
                                 "optionally prefixed %s)" % (option, shown, kinds, excerpt(algorithm, 16), lengths, prefixes))
    if not text or not _HEX.match(text):
        raise ParameterError("%s %r is not a %s fs-verity digest: not hex (expected %s hex digits, optionally prefixed %s)"
                             % (option, shown, kinds, lengths, prefixes))
    candidates = [algorithm] if algorithm else list(algorithms)
    for alg in candidates:
        if len(text) == DIGEST_HEX_LENGTHS[alg]:
            return alg, text
    expected = " or ".join("%d" % DIGEST_HEX_LENGTHS[alg] for alg in candidates)
    raise ParameterError("%s %r is not a %s fs-verity digest: %d hex digits, expected %s (optionally prefixed %s)"
                         % (option, shown, kinds, len(text), expected, prefixes))


def require_absolute(value, option="path"):
    """Refuse a relative path: modules run on the managed node, where a relative path has no fixed meaning."""
    if value is None:
        return None
    if not value or not os.path.isabs(value):
        raise ParameterError("%s must be an absolute path, not %r: modules run on the managed node, whose working "
                             "directory is not the playbook's" % (option, excerpt(value)))
    return value


def check_workers(value, option="workers"):
    """``workers``: None (one per CPU) or at least 1; 0 and negative numbers are refused."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ParameterError("%s must be at least 1 (or left unset for one per CPU), not %r" % (option, value))
    return value
