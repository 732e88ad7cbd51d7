# -*- coding: utf-8 -*-
# Copyright: composefs.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Versions of the composefs-related tools on the host, where present."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import re
import subprocess
import time

TOOLS = ("mkcomposefs", "mount.composefs", "fsverity", "podman", "ostree", "bootc")
# Looked in after $PATH: mount helpers live in sbin, which a non-login PATH may lack.
EXTRA_DIRS = ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin")
TIMEOUT = 10.0
_VERSION = re.compile(r"(?<![\w.])v?(\d+(?:\.\d+)+(?:[-+~][0-9A-Za-z.]+)?)")


def parse_version(text):
    """The first version number in a tool's ``--version`` output (``podman version 4.3.1`` -> ``4.3.1``), or None."""
    for line in (text or "").splitlines():
        match = _VERSION.search(line)
        if match:
            return match.group(1)
    return None


def find_tool(name, path=None):
    """Absolute path of an executable ``name`` on ``path`` (default $PATH) or in the sbin/bin directories, or None."""
    dirs = [d for d in (path if path is not None else os.environ.get("PATH", "")).split(os.pathsep) if d]
    for directory in dirs + [d for d in EXTRA_DIRS if d not in dirs]:
        candidate = os.path.join(directory, name)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None


def tool_versions(tools=TOOLS, timeout=TIMEOUT):
    """``{name: {path, version}}`` for each tool found; the ``--version`` runs go in parallel."""
    env = dict(os.environ, LC_ALL="C", LANG="C")
    running = []
    found = {}
    for name in tools:
        path = find_tool(name)
        if path is None:
            continue
        found[name] = dict(path=path, version=None)
        try:
            # The --version runs go in parallel, which run_command cannot do.
            # pylint: disable-next=ansible-bad-function
            proc = subprocess.Popen([path, "--version"], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, env=env, close_fds=True)
        except OSError as exc:
            found[name]["error"] = str(exc)
            continue
        running.append((name, proc))
    deadline = time.monotonic() + timeout
    for name, proc in running:
        try:
            out, dummy = proc.communicate(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            found[name]["error"] = "--version did not finish within %.0f s" % timeout
            continue
        found[name]["version"] = parse_version(out.decode("utf-8", "replace"))
    return found
