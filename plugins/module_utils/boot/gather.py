# -*- coding: utf-8 -*-
# Copyright: composefs.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The ``composefs_boot`` facts: how a host boots composefs, decided from what a source shows.

The same function serves the boot_facts module (a :class:`LocalSource` on the host)
and hosts without Python (a :class:`DumpSource` built on the controller from the raw
script's output), so both reach the same facts.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os

from ansible_collections.composefs.fleet.plugins.module_utils.boot import bootc, ostree
from ansible_collections.composefs.fleet.plugins.module_utils.boot.prepare_root import ETC_CONF, USR_CONF, cmdline_value, effective
from ansible_collections.composefs.fleet.plugins.module_utils.common.mountinfo import parse_mountinfo
from ansible_collections.composefs.fleet.plugins.module_utils.verity_facts.rootfs import root_facts

FACTS_VERSION = 1
IMAGE_NOTE = ("the deployment's .ostree.cfs differs from the digest in its commit: ostree writes the fs-verity digests of "
              "objects into the image only where the objects have fs-verity (or always with enabled=verity/signed), so the "
              "image of a repository without fs-verity lacks them; after ostree admin post-copy, a new deployment gets them")
SYSROOT = "/sysroot"
INITRAMFS_NOTE = ("ostree-prepare-root reads the copy of prepare-root.conf inside the initramfs: after changing "
                  "/etc/ostree/prepare-root.conf, regenerate it (rpm-ostree initramfs-etc --track=/etc/ostree/prepare-root.conf "
                  "on rpm-ostree hosts, or rebuild the bootc image) and reboot")


def _config(src, cmdline, key_exists):
    for path in (ETC_CONF, USR_CONF):
        data = src.read(path)
        if data is not None:
            return effective(data.decode("utf-8", "surrogateescape"), cmdline, source=path, key_exists=key_exists)
    return effective("", cmdline, source=None, key_exists=key_exists)


def _booted_state(src):
    data = src.read(ostree.RUN_BOOTED)
    if data is None:
        return None, None
    try:
        return ostree.parse_booted(data), None
    except ostree.OstreeError as exc:
        return None, str(exc)


def gather(src, cmdline, mountinfo_text="", sysroot=SYSROOT, bootc_status_text=None, verity_paths=None):
    """The ``composefs_boot`` facts.

    ``cmdline`` is ``/proc/cmdline``; ``mountinfo_text`` ``/proc/self/mountinfo``;
    ``bootc_status_text`` the output of ``bootc status --json`` when it ran;
    ``verity_paths`` the ``verity_facts`` path entries of the object stores (whether
    their filesystem can enforce fs-verity), keyed by path.
    """
    errors = []
    root = root_facts(parse_mountinfo(mountinfo_text)) if mountinfo_text else None
    booted_state, booted_error = _booted_state(src)
    if booted_error:
        errors.append(booted_error)
    try:
        bootc_karg = bootc.parse_karg(cmdline)
    except bootc.BootcError as exc:
        bootc_karg = None
        errors.append(str(exc))
    kind = "none"
    if bootc_karg is not None or src.isdir(os.path.join(sysroot, bootc.STATE_DIR)):
        kind = "bootc"
    elif (src.exists(ostree.RUN_BOOTED) or cmdline_value(cmdline, "ostree")
          or src.isdir(os.path.join(sysroot, "ostree", "deploy"))):
        kind = "ostree"
    facts = dict(
        facts_version=FACTS_VERSION,
        source=src.kind,
        kind=kind,
        booted=src.exists(ostree.RUN_BOOTED) or bootc_karg is not None,
        cmdline=cmdline.strip(),
        root=root,
        errors=errors,
    )
    if kind == "ostree":
        facts.update(_ostree_facts(src, cmdline, sysroot, booted_state, verity_paths, errors))
    elif kind == "bootc":
        facts.update(_bootc_facts(src, cmdline, sysroot, bootc_karg, bootc_status_text, verity_paths, errors))
    else:
        facts.update(composefs=dict(enabled=bool(root and root.get("composefs")), mode=None, decided_by=None,
                                    verity_enforced=bool(root and root.get("verity_required")), signed=False),
                     deployments=[], booted_deployment=None)
    facts["summary"] = summary(facts)
    return facts


def _ostree_facts(src, cmdline, sysroot, booted_state, verity_paths, errors):
    config = _config(src, cmdline, key_exists=src.exists)
    devino = (booted_state or {}).get("backing-root-device-inode")
    booted_path = ostree.booted_path_from_cmdline(src, sysroot, cmdline)
    deps = ostree.deployments(src, sysroot, booted_path=booted_path, booted_devino=devino)
    booted = next((d for d in deps if d["booted"]), None)
    repo_path = os.path.join(sysroot, "ostree", "repo")
    repo = ostree.repo_config(src, repo_path)
    errors.extend(repo["errors"])
    for dep in deps:
        errors.extend("deployment %s.%d: %s" % (dep["checksum"][:12], dep["serial"], e) for e in dep["errors"])
    # What the running boot did (/run/ostree-booted) wins over what the config says it would do.
    if booted_state is not None and "composefs" in booted_state:
        on = bool(booted_state.get("composefs"))
        verity = bool(booted_state.get("composefs.verity"))
        signed = booted_state.get("composefs.signed")
        mode = ("signed" if signed else "verity" if verity else "yes") if on else "no"
        decided_by = ostree.RUN_BOOTED
    elif booted_state is not None:
        on = verity = False
        signed = None
        mode = "no"
        decided_by = ostree.RUN_BOOTED
    else:
        on = config["enabled"] != "no"
        verity = config["require_verity"]
        signed = config["keypath"] if config["signed"] else None
        mode = config["mode"]
        decided_by = config["decided_by"]
    image = (booted or {}).get("composefs_image") or {}
    composefs = dict(
        enabled=on,
        mode=mode,
        decided_by=decided_by,
        configured_mode=config["mode"],
        configured_by=config["decided_by"],
        verity_enforced=verity,
        signed=bool(signed),
        signed_with=signed if isinstance(signed, str) else None,
        pending=booted_state is not None and config["mode"] != mode and not config["errors"],
        image_digest=image.get("measured") or image.get("digest"),
        image_digest_expected=image.get("expected"),
        image_matches_commit=image.get("matches_commit"),
    )
    if image.get("matches_commit") is False:
        composefs["image_note"] = IMAGE_NOTE
    if composefs["pending"]:
        composefs["pending_note"] = ("prepare-root.conf says %s but this boot ran %s: %s"
                                     % (config["mode"], mode, INITRAMFS_NOTE))
    return dict(
        composefs=composefs,
        prepare_root=config,
        run_ostree_booted=booted_state,
        deployments=deps,
        booted_deployment=("%s.%d" % (booted["checksum"], booted["serial"])) if booted else None,
        repository=dict(path=repo_path, config=repo,
                        filesystem=(verity_paths or {}).get(repo_path)),
    )


def _bootc_facts(src, cmdline, sysroot, karg, status_text, verity_paths, errors):
    status = None
    if status_text:
        try:
            status = bootc.parse_status(status_text)
        except bootc.BootcError as exc:
            errors.append(str(exc))
    digest = karg["digest"] if karg else None
    deps = bootc.deployments(src, sysroot, booted_digest=digest)
    repo_path = os.path.join(sysroot, bootc.REPO)
    image_path = os.path.join(repo_path, "images", digest) if digest else None
    image = src.verity(image_path) if image_path and src.exists(image_path) else None
    if karg and image is None:
        errors.append("the karg composefs=%s names an image missing from %s/images" % (digest, repo_path))
    actual = (image or {}).get("measured") or (image or {}).get("digest")
    booted_status = next((e for e in (status or {}).get("entries", []) if e["slot"] == "booted"), None)
    verity_optional = karg["verity_optional"] if karg else None
    if booted_status and booted_status.get("composefs") and booted_status["composefs"]["missing_verity_allowed"] is not None:
        verity_optional = booted_status["composefs"]["missing_verity_allowed"]
    for dep in deps:
        errors.extend("deployment %s: %s" % (dep["id"][:12], e) for e in dep["errors"])
    composefs = dict(
        enabled=karg is not None,
        mode=("yes" if verity_optional else "verity") if karg else "no",
        decided_by="karg" if karg else None,
        verity_enforced=bool(karg) and not verity_optional,
        signed=False,
        image_digest=digest,
        image_digest_actual=actual,
        image_matches_karg=(actual == digest) if actual and digest else None,
    )
    return dict(
        composefs=composefs,
        deployments=deps,
        booted_deployment=digest,
        bootc_status=status,
        repository=dict(path=repo_path, exists=src.isdir(repo_path), filesystem=(verity_paths or {}).get(repo_path)),
    )


def summary(facts):
    """One short word for the fleet report's "boot" column: none, off, best-effort, enforced, signed."""
    if facts["kind"] == "none":
        return "none"
    cfs = facts["composefs"]
    if not cfs["enabled"]:
        return "%s: off" % facts["kind"]
    if cfs["signed"]:
        return "%s: signed" % facts["kind"]
    return "%s: %s" % (facts["kind"], "enforced" if cfs["verity_enforced"] else "best-effort")


def gather_local(root="/", sysroot=SYSROOT, run_bootc=True, compute_digests=True):
    """The facts of this host (the boot_facts module): files below ``root``, its kernel command line and mounts."""
    import shutil
    import subprocess

    from ansible_collections.composefs.fleet.plugins.module_utils.boot.source import LocalSource
    from ansible_collections.composefs.fleet.plugins.module_utils.verity_facts.gather import gather as verity_gather

    src = LocalSource(root, compute_digests=compute_digests)
    cmdline = (_read_text("/proc/cmdline") or "").strip()
    mountinfo = _read_text("/proc/self/mountinfo") or ""
    status_text = None
    bootc = shutil.which("bootc") if run_bootc and root == "/" else None
    if bootc and os.path.isdir(os.path.join(sysroot, "state", "deploy")):
        try:
            # gather() also runs outside a module (the tests/vm guest, the raw path's tests): no run_command there,
            # and run_command has no timeout.
            # pylint: disable-next=ansible-bad-function
            proc = subprocess.run([bootc, "status", "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  stdin=subprocess.DEVNULL, check=False, timeout=120)
        except (OSError, subprocess.SubprocessError):
            proc = None  # no status: the facts then come from the .origin files alone
        if proc is not None and proc.returncode == 0:
            status_text = proc.stdout.decode("utf-8", "replace")
    stores = [p for p in (os.path.join(sysroot, "ostree", "repo"), os.path.join(sysroot, "composefs"))
              if src.isdir(p)]
    verity_paths = {}
    if stores:
        full = dict((src._path(p), p) for p in stores)
        for entry in verity_gather(list(full), tools=())["paths"]:
            verity_paths[full.get(entry["path"], entry["path"])] = dict(
                (k, entry.get(k)) for k in ("fstype", "mountpoint", "device", "verity", "reason"))
    return gather(src, cmdline, mountinfo, sysroot=sysroot, bootc_status_text=status_text, verity_paths=verity_paths)


def _read_text(path):
    try:
        with open(path, "rb") as handle:
            return handle.read().decode("utf-8", "replace")
    except OSError:
        return None
