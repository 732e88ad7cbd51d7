# -*- coding: utf-8 -*-
# Copyright: composefs.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Whether a module failed because the host has no Python: the raw fallbacks' trigger.

On its own so that the facts action plugins import nothing else on every run: the collection
loader compiles, with no bytecode cache, everything an action plugin imports, in every worker.
"""

from __future__ import annotations

import re

_NOT_FOUND = re.compile(r"python[0-9.]*\S*: (?:\S+: )?(?:not found|No such file or directory)")


def python_missing(result):
    """Whether a failed module result means the host has no usable Python."""
    if not isinstance(result, dict) or not result.get("failed") or result.get("unreachable"):
        return False
    text = " ".join(str(result.get(k) or "") for k in ("msg", "module_stderr", "module_stdout"))
    if result.get("rc") == 127:
        return True
    if "you probably need to set the interpreter" in text:
        return True
    return bool(_NOT_FOUND.search(text))
