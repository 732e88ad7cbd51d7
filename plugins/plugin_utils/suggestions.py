# -*- coding: utf-8 -*-
# Copyright: composefs.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Name suggestions for the controller-side plugins: one "did you mean" for every unknown key.

A typo in a key that a tool silently ignores (containers-storage's storage.conf, the
verity report's policy) would otherwise never fail on its own; every plugin that
rejects unknown keys words its hint the same way through :func:`did_you_mean`.
"""

from __future__ import annotations

import difflib


def did_you_mean(name, known):
    """``" (did you mean X?)"`` for the closest of ``known`` to ``name``, or ``""`` when none is close."""
    close = difflib.get_close_matches(str(name), [str(k) for k in known], n=1)
    return " (did you mean %s?)" % close[0] if close else ""
