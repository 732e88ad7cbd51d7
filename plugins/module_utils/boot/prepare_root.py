# -*- coding: utf-8 -*-
# Copyright: composefs.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What ostree-prepare-root makes of ``prepare-root.conf`` and the kernel command line (ostree 2026.4).

Read from ostree's ``src/libotcore/otcore-prepare-root.c`` (``otcore_load_config``,
``otcore_load_rootfs_config``, ``otcore_mount_rootfs``) and ``src/libotutil/ot-keyfile-utils.c``:

* ``usr/lib/ostree/prepare-root.conf`` is loaded, then ``etc/ostree/prepare-root.conf``;
  GLib clears a key file before each load, so an ``/etc`` file replaces the
  ``/usr/lib`` one entirely (no per-key merge). The copy in the initramfs is the one
  read at boot.
* ``[composefs] enabled``: ``signed`` and ``verity`` are matched on the raw value
  before anything else (both require fs-verity; ``signed`` also a signature); otherwise
  a tristate: ``yes|true|1``, ``no|false|0``, ``maybe`` (default ``no``). ``maybe``
  mounts the image when it exists and boots without composefs only when
  ``.ostree.cfs`` is missing.
* ``[composefs] keypath`` (default ``/etc/ostree/initramfs-root-binding.key``):
  base64 Ed25519 public keys, one per line; read only for ``signed``.
* ``[root] transient`` / ``transient-ro``: GLib booleans, not both.
  ``[etc] transient``, ``[sysroot] readonly`` (default: on when composefs is ``yes``).
* The karg ``ostree.prepare-root.composefs=`` overrides ``enabled``: ``signed``, or a
  tristate (which turns signatures off but keeps ``require_verity`` from the file);
  ``verity`` is NOT accepted there and fails the boot.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os

from ansible_collections.composefs.fleet.plugins.module_utils.boot.keyfile import KeyFile, KeyFileError, parse_boolean

CONF_NAME = "ostree/prepare-root.conf"
ETC_CONF = "/etc/ostree/prepare-root.conf"
USR_CONF = "/usr/lib/ostree/prepare-root.conf"
DEFAULT_KEYPATH = "/etc/ostree/initramfs-root-binding.key"
KARG = "ostree.prepare-root.composefs"
ENABLED_CHOICES = ("yes", "no", "maybe", "verity", "signed")
# The mode names used in facts, from the weakest to the strongest.
MODES = ("no", "maybe", "yes", "verity", "signed")


class PrepareRootError(ValueError):
    """A prepare-root.conf or karg value that makes ostree-prepare-root fail."""


def parse_tristate(value):
    """ostree's ``_ostree_parse_tristate``: ``yes``, ``no`` or ``maybe``."""
    text = value.strip()
    if text == "maybe":
        return "maybe"
    if text in ("yes", "true", "1"):
        return "yes"
    if text in ("no", "false", "0"):
        return "no"
    raise PrepareRootError("invalid tri-state value %r (yes, no, maybe, true, false, 1, 0)" % value)


def cmdline_value(cmdline, key):
    """``otcore_find_proc_cmdline_key``: the value of the first ``key=...`` word, or None."""
    for word in (cmdline or "").split():
        if word.startswith(key + "="):
            return word[len(key) + 1:]
    return None


def read_config(root="/"):
    """``(path, text)`` of the prepare-root.conf that counts in ``root`` (``/etc`` wins), or ``(None, "")``."""
    for path in (ETC_CONF, USR_CONF):
        full = os.path.join(root, path.lstrip("/"))
        try:
            with open(full, "rb") as handle:
                data = handle.read()
        except FileNotFoundError:
            continue
        return path, data.decode("utf-8", "surrogateescape")
    return None, ""


def _boolean(keyfile, group, key, default, errors):
    if not keyfile.has(group, key):
        return default
    try:
        return parse_boolean(keyfile.get(group, key))
    except KeyFileError as exc:
        errors.append("[%s] %s: %s" % (group, key, exc))
        return default


def effective(text, cmdline="", source=None, key_exists=None):
    """What ostree-prepare-root would do with this config text and kernel command line.

    ``key_exists`` is a callable telling whether the keypath exists (None: not checked).
    Returns a dict: ``mode`` (no, maybe, yes, verity, signed), ``enabled`` (the tristate),
    ``require_verity``, ``signed``, ``keypath``, ``root_transient``, ``root_transient_ro``,
    ``etc_transient``, ``sysroot_readonly``, ``decided_by`` (``karg``, the file, or
    ``default``), ``karg``, ``file_mode`` (the file's own mode) and ``errors`` (each a
    reason the boot would fail).
    """
    errors = []
    try:
        keyfile = KeyFile(text)
    except KeyFileError as exc:
        errors.append("%s: %s" % (source or "prepare-root.conf", exc))
        keyfile = KeyFile("")
    transient = _boolean(keyfile, "root", "transient", False, errors)
    transient_ro = _boolean(keyfile, "root", "transient-ro", False, errors)
    if transient and transient_ro:
        errors.append("[root] transient and transient-ro are both set: ostree-prepare-root refuses that")
    root_transient = transient or transient_ro
    raw = keyfile.get("composefs", "enabled")
    require_verity = signed = False
    enabled = "no"
    if raw == "signed":
        enabled, require_verity, signed = "yes", True, True
    elif raw == "verity":
        enabled, require_verity = "yes", True
    elif raw is not None:
        try:
            enabled = parse_tristate(raw)
        except PrepareRootError as exc:
            errors.append("[composefs] enabled: %s" % exc)
    file_mode = _mode(enabled, require_verity, signed)
    keypath = keyfile.get("composefs", "keypath", DEFAULT_KEYPATH)
    decided_by = source if raw is not None else "default"
    karg = cmdline_value(cmdline, KARG)
    if karg is not None:
        decided_by = "karg"
        if karg == "signed":
            enabled, require_verity, signed = "yes", True, True
        else:
            signed = False
            try:
                enabled = parse_tristate(karg)
            except PrepareRootError as exc:
                errors.append("karg %s=%s: %s" % (KARG, karg, exc))
    if signed and key_exists is not None and not key_exists(keypath):
        errors.append("composefs is signed but the public key file %s does not exist (in the initramfs)" % keypath)
    sysroot_readonly = _boolean(keyfile, "sysroot", "readonly", enabled == "yes", errors)
    return dict(
        mode=_mode(enabled, require_verity, signed),
        enabled=enabled,
        require_verity=require_verity and enabled != "no",
        signed=signed,
        keypath=keypath,
        root_transient=root_transient,
        root_transient_ro=transient_ro,
        etc_transient=_boolean(keyfile, "etc", "transient", False, errors),
        sysroot_readonly=sysroot_readonly,
        decided_by=decided_by,
        karg=karg,
        file=source,
        file_mode=file_mode,
        settings=keyfile.as_dict(),
        errors=errors,
    )


def _mode(enabled, require_verity, signed):
    if enabled == "no":
        return "no"
    if signed:
        return "signed"
    if require_verity:
        return "verity"
    return enabled
