# -*- coding: utf-8 -*-
# Copyright: composefs.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The prepare_root module's logic: render the wanted prepare-root.conf, refuse what would break the boot.

Refusals are collected, not stopped at the first, so the user sees every reason at once.
Nothing is written when there is one.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import base64
import binascii
import os
import shutil

from ansible_collections.composefs.fleet.plugins.module_utils.boot import ostree
from ansible_collections.composefs.fleet.plugins.module_utils.boot.gvariant import GVariantError, loads
from ansible_collections.composefs.fleet.plugins.module_utils.boot.keyfile import KeyFile, KeyFileError
from ansible_collections.composefs.fleet.plugins.module_utils.boot.prepare_root import DEFAULT_KEYPATH, KARG, cmdline_value, effective
from ansible_collections.composefs.fleet.plugins.module_utils.boot.source import LocalSource

ED25519_PUBKEY_SIZE = 32
# option name -> (group, key) in prepare-root.conf
BOOLEAN_KEYS = dict(root_transient=("root", "transient"), root_transient_ro=("root", "transient-ro"),
                    etc_transient=("etc", "transient"), sysroot_readonly=("sysroot", "readonly"))


class PrepareRootRefused(Exception):
    """One or more reasons the wanted configuration would break the boot."""

    def __init__(self, reasons):
        Exception.__init__(self, "refusing to write prepare-root.conf: " + "; ".join(reasons))
        self.reasons = reasons


def render(current_text, params):
    """The new file text: the current file with the wanted keys set (comments and other keys kept)."""
    try:
        keyfile = KeyFile(current_text)
    except KeyFileError as exc:
        raise PrepareRootRefused(["the existing file is not a valid GLib key file (ostree-prepare-root would fail on it "
                                  "too): %s; fix or remove it first" % exc])
    if params.get("composefs") is not None:
        keyfile.set("composefs", "enabled", params["composefs"])
    if params.get("keypath") is not None:
        keyfile.set("composefs", "keypath", params["keypath"])
    for option, (group, key) in BOOLEAN_KEYS.items():
        if params.get(option) is not None:
            keyfile.set(group, key, "true" if params[option] else "false")
    return keyfile.render()


def _key_problems(root, keypath):
    full = os.path.join(root, keypath.lstrip("/"))
    try:
        with open(full, "rb") as handle:
            data = handle.read(1024 * 1024)
    except OSError as exc:
        return ["composefs=signed needs the Ed25519 public key file %s: %s (create it with the base64 public key, one per "
                "line, and include it in the initramfs)" % (keypath, exc.strerror)]
    keys = 0
    for number, line in enumerate(data.splitlines(), 1):
        if not line.strip():
            continue
        try:
            raw = base64.b64decode(line.strip(), validate=True)
        except (binascii.Error, ValueError):
            return ["%s line %d is not base64 (ostree reads one base64 Ed25519 public key per line)" % (keypath, number)]
        if len(raw) != ED25519_PUBKEY_SIZE:
            return ["%s line %d is %d bytes, not a %d-byte Ed25519 public key" % (keypath, number, len(raw),
                                                                                  ED25519_PUBKEY_SIZE)]
        keys += 1
    if not keys:
        return ["%s holds no public key (ostree: \"public key file specified, but no public keys found\")" % keypath]
    return []


def _commit_signed(root, repo, checksum):
    try:
        with open(os.path.join(root, ostree.object_path(repo, checksum, "commitmeta").lstrip("/")), "rb") as handle:
            meta = loads("a{sv}", handle.read())
    except (OSError, GVariantError):
        return False
    sigs = meta.get("ostree.sign.ed25519")
    return sigs is not None and sigs.type == "aay" and bool(sigs.value)


def verity_checks(root, sysroot, signed, verity_paths=None):
    """``(reasons, report)``: what stops ``enabled = verity|signed`` on the booted and staged deployments."""
    src = LocalSource(root, compute_digests=False)
    repo = os.path.join(sysroot, "ostree", "repo")
    reasons = []
    report = dict(repository=repo, deployments=[], objects_checked=0, objects_without_verity=0, examples=[])
    if not src.isdir(repo):
        return ["no ostree repository at %s: cannot prove that the deployed objects have fs-verity" % repo], report
    config = ostree.repo_config(src, repo)
    if config["fsverity_effective"] == "no":
        reasons.append("the repository %s does not have fs-verity on ([ex-integrity] fsverity): set it to true and run "
                       "ostree admin post-copy first" % repo)
    verdict = (verity_paths or {}).get(repo) or {}
    if verdict.get("verity") == "unsupported":
        reasons.append("the filesystem of %s cannot enforce fs-verity: %s" % (repo, verdict.get("reason")))
    deps = ostree.deployments(src, sysroot, booted_path=ostree.booted_path_from_cmdline(src, sysroot, _cmdline()))
    # Not booted from this sysroot (an image, a chroot): every deployment must pass.
    wanted = [d for d in deps if d["booted"] or d["staged"]] or deps
    store = os.path.join(root, repo.lstrip("/"))
    for dep in wanted:
        name = "%s.%d" % (dep["checksum"], dep["serial"])
        cfs = os.path.join(root, dep["path"].lstrip("/"), ostree.CFS_NAME)
        entry = dict(deployment=name, booted=dep["booted"], objects=0, without_verity=0)
        report["deployments"].append(entry)
        if not os.path.exists(cfs):
            reasons.append("deployment %s has no %s: it cannot boot a composefs root" % (name, ostree.CFS_NAME))
            continue
        try:
            objects = ostree.image_objects(cfs)
        except Exception as exc:  # the image reader raises its own error types for broken images
            reasons.append("cannot read %s: %s" % (cfs, exc))
            continue
        checked, without, absent, examples = ostree.objects_without_verity(store, objects)
        entry.update(objects=checked, without_verity=without, absent=absent)
        report["objects_checked"] += checked
        report["objects_without_verity"] += without
        report["examples"].extend(examples[:5])
        if without or absent:
            reasons.append("deployment %s: %d of %d objects have no fs-verity%s (e.g. %s); run ostree admin post-copy "
                           "with [ex-integrity] fsverity=true on a filesystem with fs-verity"
                           % (name, without, checked, (", %d are missing" % absent) if absent else "",
                              ", ".join(examples[:3])))
        if signed and not _commit_signed(root, repo, dep["checksum"]):
            reasons.append("deployment %s: its commit has no ostree.sign.ed25519 signature in its commitmeta, so a "
                           "signed composefs boot would fail" % name)
    return reasons, report


def _cmdline():
    try:
        with open("/proc/cmdline") as handle:
            return handle.read()
    except OSError:
        return ""


def regeneration(root, path, keypath=None):
    """How to get the new file into the initramfs on this kind of host (the module never reboots)."""
    tracked = [path] + ([keypath] if keypath else [])
    if shutil.which("rpm-ostree") and root == "/":
        commands = ["rpm-ostree initramfs-etc " + " ".join("--track=%s" % p for p in tracked)]
        kind = "rpm-ostree"
    elif shutil.which("bootc") and root == "/":
        commands = ["put the same file in /usr/lib/ostree/prepare-root.conf in the bootc image (Containerfile), rebuild "
                    "the image (its initramfs is regenerated in the build) and bootc upgrade / bootc switch to it"]
        kind = "bootc"
    else:
        commands = ["rpm-ostree initramfs-etc " + " ".join("--track=%s" % p for p in tracked) + " (rpm-ostree hosts)",
                    "rebuild the bootc image with the file under /usr/lib/ostree/ (bootc hosts)"]
        kind = "unknown"
    return dict(kind=kind, commands=commands,
                note="ostree-prepare-root reads the copy in the initramfs; regenerate it, then reboot (this module never "
                     "reboots)")


def plan(params, current_text, root="/", verity_paths=None):
    """``(new_text, effective_config, warnings)``; raises PrepareRootRefused with every reason."""
    new_text = render(current_text, params)
    reasons = []
    warnings = []
    keypath = KeyFile(new_text).get("composefs", "keypath", DEFAULT_KEYPATH)
    result = effective(new_text, "", source=params["path"])
    reasons.extend(result["errors"])
    mode = result["file_mode"]
    if mode == "signed":
        reasons.extend(_key_problems(root, keypath))
    if mode in ("verity", "signed") and params.get("check_objects", True):
        more, report = verity_checks(root, params["sysroot"], mode == "signed", verity_paths)
        reasons.extend(more)
        result["verity_check"] = report
    if mode == "maybe":
        warnings.append("composefs enabled=maybe mounts the image when it exists and only falls back when .ostree.cfs is "
                        "missing; it enforces nothing")
    karg = cmdline_value(_cmdline(), KARG) if root == "/" else None
    if karg is not None:
        warnings.append("this host boots with the karg %s=%s, which overrides [composefs] enabled" % (KARG, karg))
    if reasons:
        raise PrepareRootRefused(reasons)
    return new_text, result, warnings
