# -*- coding: utf-8 -*-
# Copyright: composefs.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Controller-side logic of the verity_check role: raw facts, the policy and the fleet report.

Runs on the controller only (the filter plugins in plugins/filter/verity_report.py
expose it). Pure apart from what it is given: the per-host results that the role
registered, and the policy. It does no I/O.

* :func:`raw_script` / :func:`parse_raw`: a POSIX sh script for hosts without Python
  (run with ``ansible.builtin.raw``), and its output turned into the same
  ``composefs`` facts the verity_facts module returns, with the same decisions
  (the module_utils functions are pure and shared).
* :func:`host_record`: one host's outcome from its registered results (verity_facts and
  boot_facts: the "boot" column, see boot_column.py).
* :func:`evaluate`: the policy applied to one host.
* :func:`fleet_report` and ``render_*``: the report as a dict, JSON, Markdown and HTML.
"""

from __future__ import annotations

import html
import json
import re
import shlex
from collections.abc import Mapping

try:
    import jmespath
except ImportError:  # the report needs it; say so when it is used
    jmespath = None

from ansible_collections.composefs.fleet.plugins.module_utils.common.mountinfo import mount_of, parse_mountinfo
from ansible_collections.composefs.fleet.plugins.module_utils.verity_facts.gather import FACTS_VERSION
from ansible_collections.composefs.fleet.plugins.module_utils.verity_facts.kernel import (
    CONFIG_KEYS,
    MODULES,
    SYSFS_FILESYSTEMS,
    kernel_facts,
    parse_config,
    parse_proc_filesystems,
)
from ansible_collections.composefs.fleet.plugins.module_utils.verity_facts.paths import (
    SUPPORTED,
    UNKNOWN,
    UNSUPPORTED,
    block_facts,
    path_entry,
)
from ansible_collections.composefs.fleet.plugins.module_utils.verity_facts.rootfs import root_facts
from ansible_collections.composefs.fleet.plugins.module_utils.verity_facts.tools import EXTRA_DIRS, TOOLS, parse_version
from ansible_collections.composefs.fleet.plugins.plugin_utils import boot_column
from ansible_collections.composefs.fleet.plugins.plugin_utils.host_python import python_missing
from ansible_collections.composefs.fleet.plugins.plugin_utils.report_render import hosts_phrase as _hosts
from ansible_collections.composefs.fleet.plugins.plugin_utils.report_render import md as _md
from ansible_collections.composefs.fleet.plugins.plugin_utils.report_render import render_json
from ansible_collections.composefs.fleet.plugins.plugin_utils.suggestions import did_you_mean

REPORT_VERSION = 1
RAW_NOTE = "no python: raw facts only"

PASS = "pass"
FAIL = "fail"
VERDICT_UNKNOWN = "unknown"
UNREACHABLE = "unreachable"
ERROR = "error"
# Worst first: the order of the groups in the Markdown and HTML reports.
HOST_VERDICTS = (FAIL, ERROR, UNREACHABLE, VERDICT_UNKNOWN, PASS)
COLOURS = {
    PASS: "#1a7f37",
    FAIL: "#cf222e",
    VERDICT_UNKNOWN: "#9a6700",
    UNREACHABLE: "#57606a",
    ERROR: "#8250df",
}
PATH_COLOURS = {SUPPORTED: COLOURS[PASS], UNSUPPORTED: COLOURS[FAIL], UNKNOWN: COLOURS[VERDICT_UNKNOWN]}

# Kernel features a policy can require, as jmespath queries into the ``composefs`` facts.
KERNEL_FEATURES = {
    "fs_verity": "kernel.fs_verity",
    "overlay": "kernel.overlay.available",
    "overlay_data_only_lowers": "kernel.overlay.data_only_lowers",
    "overlay_verity": "kernel.overlay.verity",
    "overlay_lowerdir_plus": "kernel.overlay.lowerdir_plus",
    "erofs": "kernel.erofs.available",
    "erofs_file_backed": "kernel.erofs.file_backed",
    "loop": "kernel.loop.available",
}
FEATURE_WORDS = {
    "fs_verity": "fs-verity (CONFIG_FS_VERITY)",
    "overlay": "overlayfs",
    "overlay_data_only_lowers": "overlayfs data-only lower layers (6.5)",
    "overlay_verity": "overlayfs verity= option (6.6)",
    "overlay_lowerdir_plus": "overlayfs lowerdir+/datadir+ (6.7)",
    "erofs": "EROFS",
    "erofs_file_backed": "file-backed EROFS mounts (6.12)",
    "loop": "loop devices",
}
DEFAULT_POLICY = dict(
    required_paths=[],
    required_kernel_features=["fs_verity", "overlay_data_only_lowers", "overlay_verity", "erofs"],
)


class VerityReportError(Exception):
    """Bad input to the report (an unknown kernel feature in the policy...)."""


class RawOutputError(VerityReportError):
    """Output of the raw script that the script cannot have printed: that host is reported as ``error``."""


class MalformedFacts(VerityReportError):
    """A host's facts do not have the shape verity_facts returns: that host is reported as ``error``."""


def plain(value):
    """Plain dicts, lists, strings and scalars (Ansible's variables hold lazily templated, tagged containers)."""
    if isinstance(value, Mapping):
        return dict((str(k), plain(v)) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, str):
        return str(value)
    return value


def report_hosts(params, task_vars):
    """The report's hosts (in order), the set still in the play, and a reader of a host's variable as plain data.

    ``hosts``/``active_hosts`` default to the play's ``ansible_play_hosts_all``/``ansible_play_hosts``.
    """
    hostvars = task_vars.get("hostvars") or {}
    hosts = list(params["hosts"] if params["hosts"] is not None else task_vars.get("ansible_play_hosts_all") or [])
    active = set(params["active_hosts"] if params["active_hosts"] is not None else task_vars.get("ansible_play_hosts") or hosts)

    def hostvar(host, name):
        try:
            return plain(hostvars[host].get(name))
        except (KeyError, TypeError):
            return None

    return hosts, active, hostvar


def _search(expression, data):
    if jmespath is None:
        raise VerityReportError("the verity report needs the jmespath Python library on the controller (pip install jmespath)")
    return jmespath.search(expression, data)


# ---- raw facts for hosts without Python ----

_RAW_TEMPLATE = r"""LC_ALL=C; export LC_ALL
PATH="$PATH:@EXTRA@"
r=$(uname -r)
echo "@@release"; echo "$r"
for f in /proc/config.gz "/boot/config-$r" "/usr/lib/modules/$r/config" "/lib/modules/$r/config"; do
  echo "@@config_tried $f"
  if [ -r "$f" ]; then
    echo "@@config $f"
    case "$f" in
      *.gz) (zcat "$f" 2>/dev/null || gzip -dc "$f" 2>/dev/null) ;;
      *) cat "$f" ;;
    esac | grep -E '^(# )?(@KEYS@)[= ]'
    break
  fi
done
for fs in @SYSFS@; do
  if [ -d "/sys/fs/$fs/features" ]; then echo "@@sysfs $fs"; ls -1 "/sys/fs/$fs/features"; fi
done
echo "@@filesystems"; cat /proc/filesystems 2>/dev/null
echo "@@modules_loaded"
for m in @MODULES@; do [ -d "/sys/module/$m" ] && echo "$m"; done
for d in "/usr/lib/modules/$r" "/lib/modules/$r"; do
  if [ -d "$d" ]; then
    echo "@@modules_dir $d"
    for m in @MODULE_FILES@; do
      grep -qx "$m" "$d/modules.builtin" 2>/dev/null && echo "builtin $m"
      for k in "$d/$m"*; do [ -e "$k" ] && echo "file $m"; done
    done
  fi
done
if [ -d /sys/module/overlay/parameters ]; then
  echo "@@overlay_parameters"
  for p in /sys/module/overlay/parameters/*; do [ -r "$p" ] && echo "${p##*/}=$(cat "$p" 2>/dev/null)"; done
fi
echo "@@loop"
n=0; for b in /sys/block/loop*; do [ -e "$b" ] && n=$((n + 1)); done; echo "devices $n"
[ -e /dev/loop-control ] && echo control
[ -e /run/ostree-booted ] && echo "@@ostree_booted"
echo "@@mountinfo"; cat /proc/self/mountinfo
seen=" "
while read -r line; do
  rest=${line#* - }
  set -f; set -- $rest; fstype=$1; src=$2; set -- $line; set +f
  mm=$3
  case "$seen" in *" $mm "*) continue ;; esac
  seen="$seen$mm "
  dev=
  if [ -b "$src" ]; then dev=$src; elif [ -b "/dev/block/$mm" ]; then dev="/dev/block/$mm"; fi
  [ -n "$dev" ] || continue
  dev=$(readlink -f "$dev" 2>/dev/null || echo "$dev")
  echo "@@device $mm $dev"
  case "$fstype" in
    ext4)
      echo "@@ext4 $mm"
      dd if="$dev" bs=1024 skip=1 count=1 2>/dev/null | od -An -v -tx1 | tr -d ' \n'; echo ;;
    f2fs)
      echo "@@f2fs $mm"
      cat "/sys/fs/f2fs/${dev##*/}/features" 2>/dev/null ;;
  esac
done </proc/self/mountinfo
path_facts() {
  if [ -e "$1" ]; then
    printf 'real '; readlink -f -- "$1" 2>/dev/null | od -An -v -tx1 | tr -d ' \n'; echo
    echo "dev $(stat -L -c '%d' -- "$1" 2>/dev/null)"
  else echo "@missing"; fi
}
@PATHS@
for t in @TOOLS@; do
  p=$(command -v "$t" 2>/dev/null) || continue
  echo "@@tool $t $p"
  if command -v timeout >/dev/null 2>&1; then timeout 10 "$p" --version 2>&1; else "$p" --version 2>&1; fi \
    | head -n 5 | while IFS= read -r l; do echo " $l"; done
done
echo "@@end"
"""


def raw_script(paths):
    """A POSIX sh script printing what :func:`parse_raw` needs; only coreutils-level commands, all optional."""
    if not paths:
        raise VerityReportError("raw_script needs at least one path")
    text = _RAW_TEMPLATE
    for key, value in (
        ("@EXTRA@", ":".join(EXTRA_DIRS)),
        ("@KEYS@", "|".join(CONFIG_KEYS)),
        ("@SYSFS@", " ".join(SYSFS_FILESYSTEMS)),
        ("@MODULES@", " ".join(sorted(MODULES))),
        ("@MODULE_FILES@", " ".join(MODULES[m] for m in sorted(MODULES))),
        # each path's marker carries it hex-encoded, so the output names its paths whatever they contain
        ("@PATHS@", "\n".join('echo "@@path %d %s"; path_facts %s' % (i, p.encode("utf-8", "surrogateescape").hex(), shlex.quote(p))
                              for i, p in enumerate(paths))),
        ("@TOOLS@", " ".join(TOOLS)),
    ):
        text = text.replace(key, value)
    return text


def _sections(stdout):
    """``[(name, args, [lines])]`` from the ``@@name args`` markers of the raw output.

    Lines end at "\\n" only (a mount point may hold a "\\r"); the "\\r" a pty adds before
    each "\\n" (raw commands over SSH get one) is dropped.
    """
    sections = []
    current = None
    for line in stdout.split("\n"):
        if line.endswith("\r"):
            line = line[:-1]
        if line.startswith("@@"):
            name, dummy, args = line[2:].partition(" ")
            current = (name, args, [])
            sections.append(current)
        elif current is not None:
            current[2].append(line)
    return sections


def _excerpt(text, limit=60):
    """A short, printable quote of what the host printed, for error messages."""
    text = str(text)
    quoted = repr(text[:limit])
    return quoted + ("..." if len(text) > limit else "")


def _hex_bytes(text):
    text = re.sub(r"[^0-9a-fA-F]", "", text)
    try:
        return bytes.fromhex(text[:len(text) - len(text) % 2])
    except ValueError:
        return b""


def _index(args, line):
    index, dummy, rest = args.partition(" ")
    if not index.isdigit() or not index.isascii():
        raise RawOutputError("malformed marker %s: the path number is not a number" % _excerpt(line))
    return int(index), rest


def _path_section(index, lines):
    """``(real, dev)`` or None (missing) from the lines of one ``@@path`` section; other lines (stderr over a pty) are ignored."""
    real = dev = None
    for line in lines:
        if line == "@missing":
            return None
        if line.startswith("real "):
            encoded = line[5:].strip()
            try:
                real = bytes.fromhex(encoded).decode("utf-8", "surrogateescape")
            except ValueError:
                raise RawOutputError("malformed resolved name of path %d: %s is not hex" % (index, _excerpt(encoded))) from None
            # readlink ends its answer with a newline; od printed it too
            real = real[:-1] if real.endswith("\n") else real
        elif line.startswith("dev "):
            text = line[4:].strip()
            if text and not (text.isdigit() and text.isascii()):
                raise RawOutputError("malformed device number of path %d: %s" % (index, _excerpt(text)))
            dev = int(text) if text else None
    return real, dev


def parse_raw(stdout, paths=None):
    """The ``composefs`` facts (as the verity_facts module returns them) from :func:`raw_script` output.

    ``paths`` defaults to the paths named in the output. ``source`` is ``raw`` and
    ``note`` says so; no probe is possible. Output that the script cannot have printed
    (a marker or a number that does not parse) raises :class:`RawOutputError`.
    """
    if not isinstance(stdout, str):
        raise RawOutputError("the raw output is a %s, not text" % type(stdout).__name__)
    sources = dict(config=None, config_path=None, config_tried=[], sysfs=dict((fs, None) for fs in SYSFS_FILESYSTEMS),
                   filesystems=None, modules_loaded=[], modules_builtin=[], module_files=[], modules_dir=False,
                   overlay_parameters=None, loop_devices=None, loop_control=False)
    mountinfo = ""
    devices = {}
    ext4 = {}
    f2fs = {}
    path_facts = {}
    named = {}
    tools = {}
    ostree_booted = False
    complete = False
    by_file = dict((rel, name) for name, rel in MODULES.items())
    for name, args, lines in _sections(stdout):
        marker = "@@%s %s" % (name, args) if args else "@@" + name
        if name == "release":
            sources["release"] = lines[0].strip() if lines else ""
        elif name == "config_tried":
            sources["config_tried"].append(args)
        elif name == "config":
            sources["config_path"] = args
            sources["config"] = parse_config("\n".join(lines), CONFIG_KEYS)
        elif name == "sysfs":
            if args in sources["sysfs"]:
                sources["sysfs"][args] = sorted(line.strip() for line in lines if line.strip())
        elif name == "filesystems":
            sources["filesystems"] = parse_proc_filesystems("\n".join(lines)) if lines else None
        elif name == "modules_loaded":
            sources["modules_loaded"] = sorted(line.strip() for line in lines if line.strip())
        elif name == "modules_dir":
            sources["modules_dir"] = True
            for line in lines:
                kind, dummy, rel = line.partition(" ")
                target = "modules_builtin" if kind == "builtin" else "module_files"
                if rel in by_file and by_file[rel] not in sources[target]:
                    sources[target].append(by_file[rel])
        elif name == "overlay_parameters":
            sources["overlay_parameters"] = dict(line.split("=", 1) for line in lines if "=" in line)
        elif name == "loop":
            for line in lines:
                if line.startswith("devices "):
                    count = line[len("devices "):].strip()
                    if not (count.isdigit() and count.isascii()):
                        raise RawOutputError("malformed loop device count %s" % _excerpt(line))
                    sources["loop_devices"] = int(count)
                elif line.strip() == "control":
                    sources["loop_control"] = True
        elif name == "ostree_booted":
            ostree_booted = True
        elif name == "mountinfo":
            mountinfo = "\n".join(lines)
        elif name == "device":
            majmin, dummy, dev = args.partition(" ")
            devices[majmin] = dev or None
        elif name == "ext4":
            ext4[args] = _hex_bytes("".join(lines))
        elif name == "f2fs":
            f2fs[args] = sorted(n.strip() for n in ",".join(lines).split(",") if n.strip())
        elif name == "path":
            index, encoded = _index(args, marker)
            path_facts[index] = _path_section(index, lines)
            try:
                named[index] = bytes.fromhex(encoded).decode("utf-8", "surrogateescape")
            except ValueError:
                raise RawOutputError("malformed marker %s: the path is not hex" % _excerpt(marker)) from None
        elif name == "tool":
            tool, dummy, where = args.partition(" ")
            tools[tool] = dict(path=where, version=parse_version("\n".join(line.strip() for line in lines)))
        elif name == "end":
            complete = True
    if paths is None:
        paths = [named[i] for i in sorted(named)]
    kernel = kernel_facts(sources)
    try:
        mounts = parse_mountinfo(mountinfo)
    except (ValueError, IndexError) as exc:
        raise RawOutputError("malformed /proc/self/mountinfo in the raw output (%s)" % exc) from None
    entries = []
    missing = []
    for index, path in enumerate(paths):
        found = path_facts.get(index)
        if found is None:
            missing.append(path)
            continue
        real, dev = found
        real = real or path
        try:
            mount = mount_of(real, dev, mounts)
        except (ValueError, OverflowError) as exc:
            raise RawOutputError("malformed device numbers in the raw output (%s)" % exc) from None
        block = None
        if mount is not None:
            majmin = "%d:%d" % (mount.major, mount.minor)
            superblock = ext4.get(majmin) or None
            error = None
            if mount.fstype == "ext4" and superblock is None:
                error = "raw: could not read the superblock of %s (become root)" % (devices.get(majmin) or mount.source)
            block = block_facts(mount, superblock, error, devices.get(majmin), f2fs.get(majmin))
        entries.append(path_entry(path, mount, kernel, block, None, real))
    root = root_facts(mounts)
    root["ostree_booted"] = ostree_booted
    facts = dict(
        facts_version=FACTS_VERSION,
        source="raw",
        note=RAW_NOTE,
        kernel=kernel,
        paths=entries,
        missing_paths=missing,
        tools=tools,
        root=root,
        probe=dict(requested=False, performed=False, note="no python: the probe needs the module"),
    )
    if not complete:
        facts["warning"] = "the raw output ended early: the facts may be incomplete"
    return facts


# ---- one host's outcome ----

def _message(result):
    for key in ("msg", "module_stderr", "stderr", "stdout"):
        value = str((result.get(key) if isinstance(result, dict) else None) or "").strip()
        if value:
            first = value.splitlines()[0]
            if first.startswith("Task failed: "):
                first = first[len("Task failed: "):]
            return first[:500]
    return "no result"


def boot_entry(boot_result, module_result=None, active=True):
    """The "boot" column of one host from its registered composefs.fleet.boot_facts result.

    (Or its verity_facts result, when that task read the boot facts too: ``boot: true``.)

    ``status`` is ``ok`` or ``raw`` (the facts, read by the module or through raw commands),
    ``unreachable``, ``error`` (failed, or facts the report cannot use), ``skipped`` or
    ``not_gathered`` (no boot_facts result), with ``message`` saying why; then the fields of
    :func:`boot_column.boot_view`. ``module_result`` (the verity_facts result) explains a
    missing or skipped one: the role does not try boot_facts on a host that was unreachable.
    """
    entry = dict(status=boot_column.BOOT_NOT_GATHERED, message=None)
    verity_unreachable = isinstance(module_result, dict) and bool(module_result.get("unreachable"))
    if not isinstance(boot_result, dict) or not boot_result or boot_result.get("skipped"):
        if verity_unreachable:
            entry.update(status=boot_column.BOOT_UNREACHABLE, message="unreachable")
        elif not active:
            entry.update(status=boot_column.BOOT_ERROR, message="the host failed or became unreachable before")
        elif isinstance(boot_result, dict) and boot_result.get("skipped"):
            entry.update(status=boot_column.BOOT_SKIPPED, message="boot_facts was skipped")
        else:
            entry["message"] = "no boot_facts result for this host"
        return entry
    if boot_result.get("unreachable"):
        # (the verity column already gives the reason when one task read both)
        same = boot_result == module_result
        entry.update(status=boot_column.BOOT_UNREACHABLE,
                     message="unreachable" if same else "unreachable: %s" % _message(boot_result))
        return entry
    if boot_result.get("failed"):
        if python_missing(boot_result):
            entry.update(status=boot_column.BOOT_ERROR, message="no python, and the raw fallback is off")
        else:
            entry.update(status=boot_column.BOOT_ERROR, message="boot_facts failed: %s" % _message(boot_result))
        return entry
    facts = boot_result.get("ansible_facts")
    facts = facts.get("composefs_boot") if isinstance(facts, dict) else None
    if facts is None:
        if boot_result.get("boot_error"):  # verity_facts with boot: true, which could not read them
            entry.update(status=boot_column.BOOT_ERROR, message="boot facts not read: %s" % boot_result["boot_error"])
        else:
            entry.update(status=boot_column.BOOT_ERROR, message="boot_facts returned no composefs_boot facts")
        return entry
    try:
        view = boot_column.boot_view(facts)
    except boot_column.MalformedBootFacts as exc:
        entry.update(status=boot_column.BOOT_ERROR, message="malformed boot facts: %s" % exc)
        return entry
    entry.update(view)
    entry["status"] = boot_column.BOOT_RAW if view["source"] == "raw" else boot_column.BOOT_OK
    return entry


def host_record(host, module_result, active=True, policy=None, boot_result=None):
    """One host's outcome: ``dict(host, status, facts, message, policy, boot)``.

    ``module_result`` is the registered result of composefs.fleet.verity_facts (whose
    action plugin reads hosts without Python through raw commands). ``status`` is ``ok``
    (module facts), ``raw`` (no Python: raw facts), ``unreachable`` or ``error``.
    ``active`` False means the host was no longer in the play; ``policy``, when given,
    overrides the report's policy for this host. ``boot_result`` is the registered result
    of composefs.fleet.boot_facts, for the "boot" column (:func:`boot_entry`); it does not
    change the verdict.
    """
    record = dict(host=host, status=ERROR, facts=None, message=None, policy=policy,
                  boot=boot_entry(boot_result, module_result, active))
    if not isinstance(module_result, dict) or not module_result:
        if not active:
            record["message"] = "the host failed or became unreachable before verity_check ran"
        else:
            record["message"] = "no verity_facts result for this host"
        return record
    if module_result.get("unreachable"):
        record.update(status=UNREACHABLE, message=_message(module_result))
        return record
    if module_result.get("skipped"):
        record["message"] = "verity_facts was skipped: %s" % module_result.get("skip_reason", "")
        return record
    if module_result.get("failed"):
        if python_missing(module_result):
            record["message"] = "no python, and the raw fallback is off: %s" % _message(module_result)
        else:
            record["message"] = "verity_facts failed: %s" % _message(module_result)
        return record
    facts = module_result.get("ansible_facts")
    facts = facts.get("composefs") if isinstance(facts, dict) else None
    if not isinstance(facts, dict):
        record["message"] = "verity_facts returned no composefs facts"
    elif facts.get("source") == "raw":
        record.update(status="raw", facts=facts, message=RAW_NOTE)
    else:
        record.update(status="ok", facts=facts)
    return record


# ---- the shape of the facts (a host may return anything) ----

def _is_text(value):
    return isinstance(value, str)


def _is_optional_text(value):
    return value is None or isinstance(value, str)


def _is_texts(value):
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def _check(condition, where, wanted, value):
    if not condition:
        raise MalformedFacts("%s is %s, not %s" % (where, _kind(value), wanted))


def _kind(value):
    if value is None:
        return "missing"
    if isinstance(value, (dict, Mapping)):
        return "a mapping"
    if isinstance(value, list):
        return "a list %s" % _excerpt(json.dumps(value, default=str), 40)
    return "%s %s" % (type(value).__name__, _excerpt(value, 40))


_PATH_TEXT_KEYS = ("mountpoint", "device", "fstype", "verity", "reason")


def check_facts(facts):
    """Raise :class:`MalformedFacts` naming the first part of ``facts`` that the report cannot use.

    Only what the report reads is checked; other keys may hold anything.
    """
    _check(isinstance(facts, dict), "the composefs facts", "a mapping", facts)
    kernel = facts.get("kernel")
    _check(kernel is None or isinstance(kernel, dict), "kernel", "a mapping", kernel)
    kernel = kernel or {}
    _check(_is_optional_text(kernel.get("release")), "kernel.release", "text", kernel.get("release"))
    _check(kernel.get("fs_verity") is None or isinstance(kernel.get("fs_verity"), bool), "kernel.fs_verity", "true, false or null",
           kernel.get("fs_verity"))
    _check(kernel.get("fs_verity_evidence") is None or _is_texts(kernel.get("fs_verity_evidence")),
           "kernel.fs_verity_evidence", "a list of text", kernel.get("fs_verity_evidence"))
    for part in ("overlay", "erofs", "loop"):
        value = kernel.get(part)
        _check(value is None or isinstance(value, dict), "kernel.%s" % part, "a mapping", value)
        if value:
            _check(_is_optional_text(value.get("basis")), "kernel.%s.basis" % part, "text", value.get("basis"))
    paths = facts.get("paths")
    _check(paths is None or isinstance(paths, list), "paths", "a list", paths)
    for i, entry in enumerate(paths or []):
        _check(isinstance(entry, dict), "paths[%d]" % i, "a mapping", entry)
        _check(_is_text(entry.get("path")), "paths[%d].path" % i, "text", entry.get("path"))
        for key in _PATH_TEXT_KEYS:
            _check(_is_optional_text(entry.get(key)), "paths[%d].%s" % (i, key), "text", entry.get(key))
        reasons = entry.get("reasons")
        _check(reasons is None or _is_texts(reasons), "paths[%d].reasons" % i, "a list of text", reasons)
    missing = facts.get("missing_paths")
    _check(missing is None or _is_texts(missing), "missing_paths", "a list of text", missing)
    root = facts.get("root")
    _check(root is None or isinstance(root, dict), "root", "a mapping", root)
    tools = facts.get("tools")
    _check(tools is None or isinstance(tools, dict), "tools", "a mapping", tools)
    for name, info in sorted((tools or {}).items()):
        _check(info is None or isinstance(info, dict), "tools.%s" % name, "a mapping", info)
        if info:
            _check(_is_optional_text(info.get("version")), "tools.%s.version" % name, "text", info.get("version"))
    for key in ("warning", "note"):
        _check(_is_optional_text(facts.get(key)), key, "text", facts.get(key))


# ---- the policy ----

def normalize_policy(policy, what="the policy"):
    """The policy with its defaults; unknown keys, wrong types and unknown kernel features raise VerityReportError."""
    if policy is None:
        policy = {}
    if not isinstance(policy, Mapping):
        raise VerityReportError("%s must be a mapping with the keys %s, not %s" % (what, ", ".join(sorted(DEFAULT_POLICY)), _kind(policy)))
    for key in policy:
        if key not in DEFAULT_POLICY:
            raise VerityReportError("unknown key %r in %s%s; known keys: %s" % (
                key, what, did_you_mean(key, DEFAULT_POLICY), ", ".join(sorted(DEFAULT_POLICY))))
    out = dict(DEFAULT_POLICY)
    out.update(dict((k, v) for k, v in policy.items() if v is not None))
    for key in sorted(DEFAULT_POLICY):
        if not _is_texts(out[key]):
            raise VerityReportError("%s: %s must be a list of text, not %s" % (what, key, _kind(out[key])))
        out[key] = list(out[key])
    for feature in out["required_kernel_features"]:
        if feature not in KERNEL_FEATURES:
            raise VerityReportError("%s: unknown kernel feature %r%s; known: %s" % (
                what, feature, did_you_mean(feature, KERNEL_FEATURES), ", ".join(sorted(KERNEL_FEATURES))))
    return out


def _yes_no(value):
    return "yes" if value is True else "no" if value is False else "unknown"


def _host_error(out, message):
    """``out`` as an ``error`` host: the facts could not be used."""
    out.update(status=ERROR, verdict=ERROR, message=message, note=None, problems=[], kernel=None, paths=[],
               missing_paths=[], root=None, tools={})
    return out


# What evaluating one host's untrusted facts may raise (beyond MalformedFacts) if a shape
# slipped past check_facts: that host is an error, the report goes on.
_HOST_FAILURES = (VerityReportError, ValueError, TypeError, KeyError, IndexError, AttributeError, OverflowError)


def evaluate(record, policy):
    """The policy applied to one host record: adds ``verdict``, ``problems``, ``kernel``, ``paths`` (report views)."""
    policy = normalize_policy(policy)
    out = dict(host=record["host"], status=record["status"], message=record.get("message"),
               note=RAW_NOTE if record["status"] == "raw" else None, boot=_boot_of(record))
    if record.get("policy"):
        try:
            own = normalize_policy(record["policy"], "the host's own policy")
        except VerityReportError as exc:
            return _host_error(out, str(exc))
        if own != policy:
            out["policy"] = policy = own
    facts = record.get("facts")
    if facts is None:
        out.update(verdict=UNREACHABLE if record["status"] == UNREACHABLE else ERROR, problems=[], kernel=None, paths=[],
                   missing_paths=[], root=None, tools={})
        return out
    try:
        check_facts(facts)
    except MalformedFacts as exc:
        return _host_error(out, "malformed verity facts: %s" % exc)
    kernel = facts.get("kernel") or {}
    features = dict((name, _search(query, facts)) for name, query in sorted(KERNEL_FEATURES.items()))
    problems = []
    for name in policy["required_kernel_features"]:
        value = features.get(name)
        if value is True:
            continue
        detail = FEATURE_WORDS[name]
        if name == "fs_verity":
            evidence = kernel.get("fs_verity_evidence") or []
        else:
            evidence = [b for b in [_search(KERNEL_FEATURES[name].rsplit(".", 1)[0] + ".basis", facts)] if b]
        problems.append(dict(severity=FAIL if value is False else VERDICT_UNKNOWN, kind="kernel", subject=name, evidence=evidence,
                             message=("kernel lacks %s" if value is False else "kernel: unknown whether it has %s") % detail))
    required = policy["required_paths"]
    reported = facts.get("paths") or []
    paths = []
    for entry in reported:
        is_required = not required or entry["path"] in required
        paths.append(dict(
            path=entry["path"], mountpoint=entry.get("mountpoint"), device=entry.get("device"), fstype=entry.get("fstype"),
            verity=entry.get("verity"), reason=entry.get("reason"), reasons=entry.get("reasons") or [entry.get("reason")], required=is_required,
        ))
        if not is_required or entry.get("verity") == SUPPORTED:
            continue
        problems.append(dict(severity=FAIL if entry.get("verity") == UNSUPPORTED else VERDICT_UNKNOWN, kind="path", subject=entry["path"],
                             message="%s (%s): %s" % (entry["path"], entry.get("fstype"), entry.get("reason"))))
    for path in required:
        if path in (facts.get("missing_paths") or []):
            problems.append(dict(severity=FAIL, kind="missing", subject=path, message="%s does not exist" % path))
        elif not any(entry["path"] == path for entry in reported):
            problems.append(dict(severity=VERDICT_UNKNOWN, kind="missing", subject=path, message="%s was not examined" % path))
    if required == [] and not reported:
        problems.append(dict(severity=VERDICT_UNKNOWN, kind="missing", subject="paths", message="none of the paths exists"))
    severities = [p["severity"] for p in problems]
    verdict = FAIL if FAIL in severities else VERDICT_UNKNOWN if VERDICT_UNKNOWN in severities else PASS
    root = facts.get("root") or {}
    out.update(
        verdict=verdict,
        problems=problems,
        kernel=dict(release=kernel.get("release"), fs_verity=kernel.get("fs_verity"), fs_verity_evidence=kernel.get("fs_verity_evidence") or [],
                    features=features),
        paths=paths,
        missing_paths=list(facts.get("missing_paths") or []),
        root=dict(composefs=root.get("composefs"), verity=root.get("verity"), verity_required=root.get("verity_required")),
        tools=dict((name, (info or {}).get("version")) for name, info in sorted((facts.get("tools") or {}).items())),
    )
    if facts.get("warning"):
        out["message"] = "%s; %s" % (out["message"], facts["warning"]) if out["message"] else facts["warning"]
    return out


def _boot_of(record):
    boot = record.get("boot")
    return boot if isinstance(boot, dict) and boot.get("status") else boot_entry(None)


# ---- the fleet report ----

def fleet_report(records, policy=None, title="composefs fs-verity fleet report"):
    """The report dict: policy, counts and groups (jmespath queries), and one entry per host, in the given order.

    A host whose record carries a policy different from ``policy`` is judged by its own, shown in its entry.
    """
    policy = normalize_policy(policy)
    hosts = []
    for record in records:
        try:
            hosts.append(evaluate(record, policy))
        except _HOST_FAILURES as exc:
            out = dict(host=record["host"], status=ERROR, message=None, note=None, boot=_boot_of(record))
            hosts.append(_host_error(out, "cannot evaluate this host's facts: %s: %s" % (type(exc).__name__, _excerpt(exc, 200))))
    data = dict(hosts=hosts)
    counts = dict((verdict, _search("length(hosts[?verdict=='%s'])" % verdict, data)) for verdict in HOST_VERDICTS)
    counts["total"] = len(hosts)
    groups = dict((verdict, _search("hosts[?verdict=='%s'].host" % verdict, data)) for verdict in HOST_VERDICTS)
    return dict(
        report_version=REPORT_VERSION,
        title=title,
        policy=policy,
        counts=counts,
        groups=groups,
        raw_only=_search("hosts[?status=='raw'].host", data),
        boot_counts=_boot_counts(hosts),
        hosts=hosts,
    )


def _boot_counts(hosts):
    """Hosts per boot summary (``ostree: best-effort``...), and ``not read`` for those whose boot facts are missing."""
    counts = {}
    for host in hosts:
        boot = host["boot"]
        key = boot["summary"] if boot["status"] in (boot_column.BOOT_OK, boot_column.BOOT_RAW) else "not read"
        counts[key] = counts.get(key, 0) + 1
    return dict(sorted(counts.items()))


def _boot_line(report):
    counts = report.get("boot_counts") or {}
    return ", ".join("%d %s" % (n, summary) for summary, n in counts.items()) or "no hosts"


def render_markdown(report):
    counts = report["counts"]
    lines = [
        "# %s" % _md(report["title"]),
        "",
        "%s: %s." % (_hosts(counts["total"]), ", ".join("%d %s" % (counts[v], v) for v in HOST_VERDICTS)),
        "",
        "Policy: kernel features %s; paths %s." % (
            _md(", ".join(report["policy"]["required_kernel_features"])) or "none",
            _md(", ".join(report["policy"]["required_paths"])) or "every path examined"),
        "",
        "Boot: %s." % _md(_boot_line(report)),
        "",
        "| host | verdict | kernel | fs-verity | boot | path | fs | verity | reason |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for verdict in HOST_VERDICTS:
        for host in report["hosts"]:
            if host["verdict"] != verdict:
                continue
            kernel = host.get("kernel") or {}
            release = kernel.get("release") or ""
            fs_verity = _yes_no(kernel.get("fs_verity")) if host.get("kernel") else ""
            note = host.get("note") or (host.get("message") if not host.get("paths") else None)
            head = [_md(host["host"]), _md(verdict + (" (%s)" % note if note else "")), _md(release), fs_verity,
                    _md(boot_column.cell_text(_boot_of(host)))]
            if not host.get("paths"):
                lines.append("| %s | | | | |" % " | ".join(head))
                continue
            for i, path in enumerate(host["paths"]):
                cells = head if i == 0 else ["", "", "", "", ""]
                lines.append("| %s | %s | %s | %s | %s |" % (
                    " | ".join(cells), _md(path["path"]), _md(path["fstype"]), _md(path["verity"]), _md(path["reason"])))
    problems = [(h["host"], p) for h in report["hosts"] for p in h.get("problems") or []]
    if problems:
        lines += ["", "## Problems", ""]
        lines += ["- %s: %s%s" % (_md(host), _md(p["message"]), " (%s)" % _md("; ".join(p["evidence"])) if p.get("evidence") else "")
                  for host, p in problems]
    notes = [(h["host"], note) for h in report["hosts"] for note in _boot_notes(_boot_of(h))]
    if notes:
        lines += ["", "## Boot", ""]
        lines += ["- %s: %s" % (_md(host), _md(note)) for host, note in notes]
    return "\n".join(lines) + "\n"


def _boot_notes(boot):
    """What the boot column abbreviates: a change waiting for the initramfs or a reboot, the booted digest in full, errors."""
    if boot["status"] not in (boot_column.BOOT_OK, boot_column.BOOT_RAW) or boot.get("kind") == "none":
        return []
    notes = []
    if boot.get("pending"):
        notes.append("pending: prepare-root.conf says %s, this boot ran %s (regenerate the initramfs and reboot)"
                     % (boot.get("configured_mode"), boot.get("mode")))
    if boot.get("booted_digest") and boot["booted_digest"] != boot_column.short_digest(boot["booted_digest"]):
        notes.append("booted digest %s" % boot["booted_digest"])
    notes.extend("boot_facts: %s" % error for error in boot.get("errors") or [])
    return notes


_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", "Liberation Sans", sans-serif; margin: 1.5rem; color: #1f2328; background: #ffffff; }
h1 { font-size: 1.5rem; margin: 0 0 .5rem 0; }
h2 { font-size: 1.15rem; margin: 1.5rem 0 .4rem 0; }
.counts { display: flex; flex-wrap: wrap; gap: .5rem; margin: .75rem 0 1rem 0; padding: 0; list-style: none; }
.counts li { padding: .35rem .7rem; border-radius: .4rem; color: #ffffff; font-weight: 600; }
.counts .total { background: #24292f; }
.policy { color: #57606a; font-size: .9rem; }
table { border-collapse: collapse; width: 100%; margin-bottom: .5rem; table-layout: fixed; }
col.c-host { width: 11%; } col.c-verdict { width: 9%; } col.c-kernel { width: 11%; } col.c-verity { width: 6%; }
col.c-boot { width: 18%; } col.c-paths { width: 29%; } col.c-problems { width: 16%; }
th, td { text-align: left; vertical-align: top; padding: .35rem .5rem; border-bottom: 1px solid #d0d7de; font-size: .9rem; overflow-wrap: anywhere; }
th { background: #f6f8fa; }
tr.host td:first-child { border-left: .45rem solid transparent; }
.hostname { font-weight: 600; }
.badge { display: inline-block; white-space: nowrap; padding: .1rem .45rem; border-radius: .3rem; color: #ffffff; font-weight: 600; font-size: .8rem; }
ul.paths { margin: 0; padding-left: 1rem; }
ul.paths li { margin: .1rem 0; }
.reason, .note, .problems { color: #57606a; }
.note { font-style: italic; font-size: .85rem; }
.fsverity-yes { color: #1a7f37; font-weight: 600; }
.fsverity-no { color: #cf222e; font-weight: 600; }
.fsverity-unknown { color: #9a6700; font-weight: 600; }
.boot-summary { font-weight: 600; }
.boot-signed, .boot-enforced { color: #1a7f37; }
.boot-best-effort { color: #9a6700; }
.boot-off { color: #cf222e; }
.boot-none, .boot-missing { color: #57606a; }
ul.boot { margin: .1rem 0 0 0; padding-left: 1rem; color: #57606a; font-size: .85rem; }
"""


def _css():
    rules = [_CSS]
    for verdict, colour in sorted(COLOURS.items()):
        rules.append(".verdict-%s { background: %s; }" % (verdict, colour))
        rules.append("tr.host.verdict-%s { background: %s1a; }" % (verdict, colour))
        rules.append("tr.host.verdict-%s td:first-child { border-left-color: %s; }" % (verdict, colour))
    for verdict, colour in sorted(PATH_COLOURS.items()):
        rules.append(".path-%s { color: %s; font-weight: 600; }" % (verdict, colour))
    return "\n".join(rules)


def _html_host_row(host):
    e = html.escape
    verdict = host["verdict"]
    kernel = host.get("kernel") or {}
    paths = []
    for path in host.get("paths") or []:
        verity = path.get("verity") or ""
        paths.append(
            '<li class="path" data-path="%s" data-verity="%s"><code>%s</code> %s <span class="path-%s">%s</span>%s '
            '<span class="reason">%s</span></li>' % (
                e(path["path"]), e(verity), e(path["path"]), e(path.get("fstype") or "?"), e(verity), e(verity),
                "" if path.get("required") else " (not required)", e(path.get("reason") or "")))
    host_notes = '<div class="note">%s</div>' % e(host["note"]) if host.get("note") else ""
    problems = ['<div title="%s">%s</div>' % (e("; ".join(p.get("evidence") or [])), e(p["message"]))
                for p in host.get("problems") or [] if p.get("kind") != "path"]
    if host.get("message") and host.get("message") != host.get("note"):
        problems.append("<div>%s</div>" % e(host["message"]))
    fs_verity = ""
    if host.get("kernel"):
        word = _yes_no(kernel.get("fs_verity"))
        fs_verity = '<span class="fsverity-%s" title="%s">%s</span>' % (word, e("; ".join(kernel.get("fs_verity_evidence") or [])), word)
    return (
        '<tr class="host verdict-%s" data-host="%s" data-verdict="%s" data-status="%s">'
        '<td><span class="hostname">%s</span>%s</td><td><span class="badge verdict-%s">%s</span></td>'
        '<td>%s</td><td>%s</td>%s<td>%s</td><td class="problems">%s</td></tr>' % (
            verdict, e(host["host"]), verdict, e(host.get("status") or ""), e(host["host"]), host_notes, verdict, e(verdict),
            e(kernel.get("release") or ""), fs_verity, _html_boot_cell(_boot_of(host)),
            '<ul class="paths">%s</ul>' % "".join(paths) if paths else "", "".join(problems)))


def _html_boot_cell(boot):
    """The "boot" cell: the summary in its level's colour, then the details; the full digest and the notes in tooltips."""
    e = html.escape
    missing = boot_column.not_read(boot)
    if missing is not None:
        return '<td class="boot" data-boot-status="%s"><span class="boot-missing">%s</span></td>' % (e(boot["status"]), e(missing))
    items = []
    for phrase in boot_column.details(boot):
        title = ""
        if phrase.startswith("digest ") and boot.get("booted_digest"):
            title = boot["booted_digest"]
        elif phrase.endswith(" error") or phrase.endswith(" errors"):
            title = "; ".join(boot.get("errors") or [])
        items.append('<li%s>%s</li>' % (' title="%s"' % e(title) if title else "", e(phrase)))
    return ('<td class="boot" data-boot-status="%s" data-boot-kind="%s" data-boot-level="%s">'
            '<span class="boot-summary boot-%s">%s</span>%s</td>' % (
                e(boot["status"]), e(boot["kind"]), e(boot["level"]), e(boot["level"]), e(boot["summary"]),
                '<ul class="boot">%s</ul>' % "".join(items) if items else ""))


def render_html(report):
    """A self-contained page (no scripts, no external resources): counts, then one row per host, grouped by verdict."""
    e = html.escape
    counts = report["counts"]
    out = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        "<title>%s</title>" % e(report["title"]),
        "<style>%s</style>" % _css(),
        "</head>",
        "<body>",
        "<h1>%s</h1>" % e(report["title"]),
        '<ul class="counts">',
        '<li class="total" id="count-total" data-count="%d">%s</li>' % (counts["total"], _hosts(counts["total"])),
    ]
    for verdict in HOST_VERDICTS:
        out.append('<li class="count verdict-%s" id="count-%s" data-verdict="%s" data-count="%d">%d %s</li>' % (
            verdict, verdict, verdict, counts[verdict], counts[verdict], verdict))
    out.append("</ul>")
    policy = report["policy"]
    out.append('<p class="policy">Policy: kernel features %s; paths %s.</p>' % (
        e(", ".join(policy["required_kernel_features"]) or "none"), e(", ".join(policy["required_paths"]) or "every path examined")))
    out.append('<p class="policy boot-counts">Boot: %s.</p>' % e(_boot_line(report)))
    for verdict in HOST_VERDICTS:
        hosts = [h for h in report["hosts"] if h["verdict"] == verdict]
        if not hosts:
            continue
        out.append('<section class="group" id="group-%s" data-verdict="%s">' % (verdict, verdict))
        out.append('<h2><span class="badge verdict-%s">%s</span> %s</h2>' % (verdict, e(verdict), _hosts(len(hosts))))
        out.append('<table><colgroup><col class="c-host"><col class="c-verdict"><col class="c-kernel"><col class="c-verity">'
                   '<col class="c-boot"><col class="c-paths"><col class="c-problems"></colgroup>')
        out.append("<thead><tr><th>host</th><th>verdict</th><th>kernel</th><th>fs-verity</th><th>boot</th><th>paths</th>"
                   "<th>problems</th></tr></thead><tbody>")
        out.extend(_html_host_row(host) for host in hosts)
        out.append("</tbody></table>")
        out.append("</section>")
    out += ["</body>", "</html>"]
    return "\n".join(out) + "\n"


def render_all(report, formats=("json", "md", "html")):
    renderers = dict(json=render_json, md=render_markdown, html=render_html)
    unknown = [f for f in formats if f not in renderers]
    if unknown:
        raise VerityReportError("unknown report formats: %s (known: json, md, html)" % ", ".join(unknown))
    return dict((f, renderers[f](report)) for f in formats)
