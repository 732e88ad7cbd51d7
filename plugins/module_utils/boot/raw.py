# -*- coding: utf-8 -*-
# Copyright: composefs.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Boot facts of a host without Python: a POSIX sh script for ``raw``, and its output as a :class:`DumpSource`.

The script prints sections ``@@KIND ARGS`` followed by their lines; files come
base64-encoded (coreutils ``base64``, present on CoreOS). Every command is optional:
what is missing stays unknown. The fs-verity digest of ``.ostree.cfs`` comes from
``fsverity measure`` (the kernel's, when the image has fs-verity) and ``fsverity digest``
(computed on the host) when the host has fsverity-utils; the image is not copied over.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import base64
import binascii

from ansible_collections.composefs.fleet.plugins.module_utils.boot.source import DumpSource

_SCRIPT = r"""
S=%(sysroot)s
DIGESTS=%(digests)d
echo '@@cmdline'; cat /proc/cmdline 2>/dev/null
echo '@@mountinfo'; cat /proc/self/mountinfo 2>/dev/null
emit() { [ -f "$1" ] && { echo "@@file $1"; base64 -w0 < "$1" 2>/dev/null || base64 < "$1" | tr -d '\n'; echo; }; }
listing() { [ -d "$1" ] && { echo "@@dir $1"; ls -1A "$1" 2>/dev/null; }; }
for f in /run/ostree-booted /etc/ostree/prepare-root.conf /usr/lib/ostree/prepare-root.conf "$S/ostree/repo/config"; do emit "$f"; done
t=$(tr ' ' '\n' < /proc/cmdline 2>/dev/null | sed -n 's/^ostree=//p' | head -n1)
[ -n "$t" ] && echo "@@resolve $S$t" && readlink -f "$S$t"
listing "$S/ostree/deploy"
for o in "$S"/ostree/deploy/*/deploy; do
  [ -d "$o" ] || continue
  listing "$o"
  for d in "$o"/*.[0-9]*; do
    [ -d "$d" ] || { emit "$d"; continue; }
    echo "@@isdir $d"
    echo "@@devino $d"; stat -c '%%d %%i' "$d" 2>/dev/null
    c=${d##*/}; c=${c%%.*}
    emit "$S/ostree/repo/objects/$(echo "$c" | cut -c1-2)/$(echo "$c" | cut -c3-).commit"
    if [ -e "$d/.ostree.cfs" ]; then
      echo "@@exists $d/.ostree.cfs"
      if command -v fsverity >/dev/null 2>&1; then
        echo "@@measure $d/.ostree.cfs"; fsverity measure "$d/.ostree.cfs" 2>/dev/null
        [ "$DIGESTS" = 1 ] && { echo "@@digest $d/.ostree.cfs"; fsverity digest "$d/.ostree.cfs" 2>/dev/null; }
      fi
    fi
  done
done
listing "$S/state/deploy"
for d in "$S"/state/deploy/*; do [ -d "$d" ] && echo "@@isdir $d" && emit "$d/${d##*/}.origin"; done
[ -d "$S/composefs" ] && echo "@@isdir $S/composefs" && listing "$S/composefs/images"
command -v bootc >/dev/null 2>&1 && [ -d "$S/state/deploy" ] && { echo '@@bootc-status'; bootc status --json 2>/dev/null; }
echo '@@end'
"""


def raw_script(sysroot="/sysroot", digests=True):
    """The POSIX sh script that prints what :func:`parse_raw` reads.

    ``digests``: also compute the fs-verity digest of each ``.ostree.cfs`` with ``fsverity digest``
    (reads the image on the host), as the module does for images without fs-verity.
    """
    if not sysroot.startswith("/") or any(c in sysroot for c in "'\"`$\\ \n;&|<>*?"):
        raise ValueError("sysroot must be a plain absolute path, not %r" % sysroot)
    return _SCRIPT % dict(sysroot=sysroot, digests=1 if digests else 0)


def _sections(stdout):
    name, arg, lines = None, None, []
    for line in stdout.splitlines():
        if line.startswith("@@"):
            if name is not None:
                yield name, arg, lines
            head = line[2:].split(" ", 1)
            name, arg, lines = head[0], head[1] if len(head) > 1 else None, []
        elif name is not None:
            lines.append(line)
    if name is not None:
        yield name, arg, lines


def _sha256(lines):
    head = lines[0].split(" ", 1)[0] if lines else ""
    hexdigest = head[len("sha256:"):] if head.startswith("sha256:") else ""
    return hexdigest.lower() if len(hexdigest) == 64 and all(c in "0123456789abcdefABCDEF" for c in hexdigest) else None


def parse_raw(stdout):
    """``(source, cmdline, mountinfo_text, bootc_status_text, complete)`` from the script's output."""
    files, dirs, devinos, resolved, verity, existing, directories = {}, {}, {}, {}, {}, set(), set()
    cmdline, mountinfo, status, complete = "", "", None, False
    for name, arg, lines in _sections(stdout):
        if name == "cmdline":
            cmdline = " ".join(lines)
        elif name == "mountinfo":
            mountinfo = "\n".join(lines) + "\n"
        elif name == "file" and arg:
            try:
                files[arg] = base64.b64decode("".join(lines), validate=True)
            except (binascii.Error, ValueError):
                pass
        elif name == "dir" and arg:
            dirs[arg] = [line for line in lines if line]
        elif name == "isdir" and arg:
            directories.add(arg)
        elif name == "exists" and arg:
            existing.add(arg)
        elif name == "devino" and arg and lines:
            parts = lines[0].split()
            if len(parts) == 2 and all(p.isdigit() for p in parts):
                devinos[arg] = (int(parts[0]), int(parts[1]))
        elif name == "resolve" and arg and lines and lines[0].startswith("/"):
            resolved[arg] = lines[0]
        elif name == "measure" and arg:
            # "sha256:HEX PATH"; fsverity prints nothing (and fails) for files without fs-verity.
            head = _sha256(lines)
            verity.setdefault(arg, {}).update(enabled=head is not None, measured=head)
        elif name == "digest" and arg:
            # the same line from "fsverity digest" (computed from the bytes, without the kernel)
            head = _sha256(lines)
            if head is not None:
                verity.setdefault(arg, {})["digest"] = head
        elif name == "bootc-status":
            status = "\n".join(lines) or None
        elif name == "end":
            complete = True
    for path in existing:
        if path not in verity or "enabled" not in verity[path]:
            verity.setdefault(path, {}).update(enabled=None, error="raw: fs-verity of %s unknown (no fsverity command on the host)" % path)
    src = DumpSource(files=files, dirs=dirs, devinos=devinos, resolved=resolved, verity=verity, existing=existing,
                     directories=directories)
    return src, cmdline, mountinfo, status, complete
