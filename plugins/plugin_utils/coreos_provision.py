# -*- coding: utf-8 -*-
# Copyright: composefs.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Provisioning a new CoreOS node for composefs: an Ignition config (spec 3.4.0), its Butane source, Containerfile lines.

One model (:func:`build`) feeds all three, so they say the same thing:

* ``/var`` on its own partition of the boot disk, ext4 made with ``-O verity`` (so
  containers-storage's composefs objects there can have fs-verity), with a mount unit;
* optionally the root filesystem re-made as ext4 ``-O verity`` (Fedora CoreOS's root is
  xfs, which has no fs-verity; the ostree objects live there);
* ``/etc/containers/storage.conf`` with exactly the content composefs.fleet.storage_conf
  writes on a node that has no storage.conf yet (same code: plugin_utils.storage_conf.plan);
* ``/etc/ostree/prepare-root.conf`` rendered with GLib key file semantics (module_utils.boot),
  and a first-boot unit that copies it into the initramfs (``rpm-ostree initramfs-etc --track``):
  ostree-prepare-root has already run when Ignition writes /etc, so the setting counts from
  the boot after that.
"""

from __future__ import annotations

import base64
import json
import urllib.parse

import yaml

from ansible_collections.composefs.fleet.plugins.module_utils.boot.prepare_root import ENABLED_CHOICES, effective
from ansible_collections.composefs.fleet.plugins.module_utils.boot.prepare_root_plan import BOOLEAN_KEYS, PrepareRootRefused, render
from ansible_collections.composefs.fleet.plugins.module_utils.storage_conf import MAIN_FILE, VENDOR_FILE
from ansible_collections.composefs.fleet.plugins.plugin_utils.storage_conf import StorageConfError, plan as storage_plan

IGNITION_VERSION = "3.4.0"
BUTANE_VARIANT = "fcos"
BUTANE_VERSION = "1.5.0"  # the Butane fcos spec that produces Ignition 3.4.0
PREPARE_ROOT_CONF = "/etc/ostree/prepare-root.conf"
INITRAMFS_UNIT = "composefs-fleet-initramfs-etc.service"
DEFAULTS = dict(
    boot_device="/dev/disk/by-id/coreos-boot-disk",
    root_size_mib=8192,
    var_size_mib=0,
    var_label="var",
    root_verity=False,
    storage_conf=dict(use_composefs=True),
    podman_version="5.4.0",
    prepare_root=dict(composefs="yes"),
    initramfs_unit=True,
)


class ProvisionError(ValueError):
    """Options that cannot make a valid config."""


def _options(opts):
    unknown = set(opts or {}) - set(DEFAULTS)
    if unknown:
        raise ProvisionError("unknown options: %s (known: %s)" % (", ".join(sorted(unknown)), ", ".join(sorted(DEFAULTS))))
    out = dict(DEFAULTS)
    out.update(opts or {})
    for key in ("root_size_mib", "var_size_mib"):
        if not isinstance(out[key], int) or isinstance(out[key], bool) or out[key] < 0:
            raise ProvisionError("%s must be a whole number of MiB >= 0, not %r" % (key, out[key]))
    for key in ("boot_device", "var_label"):
        if not isinstance(out[key], str) or not out[key] or any(c in out[key] for c in "\n\"'\\ "):
            raise ProvisionError("%s must be a plain string, not %r" % (key, out[key]))
    return out


def storage_conf_content(params, podman_version):
    """What composefs.fleet.storage_conf writes on a node without storage.conf (nor the vendor file)."""
    full = dict(scope="rootful", mode="file", dropin_name="composefs-fleet.conf", backup=False)
    full.update(params or {})
    probe = dict(podman=dict(version=podman_version),
                 files=[dict(requested=MAIN_FILE, path=MAIN_FILE, exists=False),
                        dict(requested=VENDOR_FILE, path=VENDOR_FILE, exists=False)],
                 dropin_dirs=[], env={})
    try:
        result = storage_plan(full, probe)
    except StorageConfError as exc:
        raise ProvisionError("storage_conf: %s" % exc)
    return result["path"], result["content"]


def prepare_root_content(params):
    params = dict(params or {})
    unknown = set(params) - {"composefs", "keypath"} - set(BOOLEAN_KEYS)
    if unknown:
        raise ProvisionError("prepare_root: unknown keys %s" % ", ".join(sorted(unknown)))
    if params.get("composefs") is not None and params["composefs"] not in ENABLED_CHOICES:
        raise ProvisionError("prepare_root.composefs must be one of %s" % ", ".join(ENABLED_CHOICES))
    try:
        text = render("", dict(params, path=PREPARE_ROOT_CONF))
    except PrepareRootRefused as exc:
        raise ProvisionError(str(exc))
    errors = effective(text, "")["errors"]
    if errors:
        raise ProvisionError("prepare_root: %s" % "; ".join(errors))
    return text


def _mount_unit(device, where="/var", fstype="ext4"):
    escaped = device.lstrip("/").replace("-", "\\x2d").replace("/", "-")
    return ("[Unit]\nDescription=Mount %s (ext4 with fs-verity)\nBefore=local-fs.target\n"
            "Requires=systemd-fsck@%s.service\nAfter=systemd-fsck@%s.service\n\n"
            "[Mount]\nWhere=%s\nWhat=%s\nType=%s\n\n[Install]\nRequiredBy=local-fs.target\n"
            % (where, escaped, escaped, where, device, fstype))


INITRAMFS_UNIT_TEXT = """\
[Unit]
Description=Copy %(conf)s into the initramfs (composefs.fleet)
Documentation=https://ostreedev.github.io/ostree/composefs/
ConditionPathExists=!/var/lib/composefs-fleet/initramfs-etc.done
After=network-online.target
Wants=network-online.target

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/bin/rpm-ostree initramfs-etc --track=%(conf)s
ExecStart=/usr/bin/mkdir -p /var/lib/composefs-fleet
ExecStart=/usr/bin/touch /var/lib/composefs-fleet/initramfs-etc.done

[Install]
WantedBy=multi-user.target
""" % dict(conf=PREPARE_ROOT_CONF)


def build(opts=None):
    """The model the three outputs are made from."""
    o = _options(opts)
    var_device = "/dev/disk/by-partlabel/%s" % o["var_label"]
    storage_path, storage_text = storage_conf_content(o["storage_conf"], o["podman_version"])
    files = [dict(path=storage_path, mode=0o644, contents=storage_text)]
    units = [dict(name="var.mount", enabled=True, contents=_mount_unit(var_device))]
    if o["prepare_root"] is not None:
        files.append(dict(path=PREPARE_ROOT_CONF, mode=0o644, contents=prepare_root_content(o["prepare_root"])))
        if o["initramfs_unit"]:
            units.append(dict(name=INITRAMFS_UNIT, enabled=True, contents=INITRAMFS_UNIT_TEXT))
    partitions = [dict(number=4, label="root", size_mib=o["root_size_mib"], resize=True),
                  dict(label=o["var_label"], size_mib=o["var_size_mib"])]
    filesystems = [dict(path="/var", device=var_device, format="ext4", wipe_filesystem=True, label=o["var_label"],
                        options=["-O", "verity"])]
    if o["root_verity"]:
        filesystems.insert(0, dict(device="/dev/disk/by-partlabel/root", format="ext4", wipe_filesystem=True, label="root",
                                   options=["-O", "verity"]))
    return dict(disk=o["boot_device"], partitions=partitions, filesystems=filesystems, files=files, units=units)


def _data_url(text):
    raw = text.encode("utf-8")
    plain = "data:," + urllib.parse.quote(raw, safe="")
    encoded = "data:;base64," + base64.b64encode(raw).decode("ascii")
    return plain if len(plain) <= len(encoded) else encoded


def ignition(opts=None):
    """The Ignition config (a dict, spec 3.4.0)."""
    m = build(opts)
    partitions = []
    for p in m["partitions"]:
        entry = dict(label=p["label"], sizeMiB=p["size_mib"])
        if "number" in p:
            entry["number"] = p["number"]
        if p.get("resize"):
            entry["resize"] = True
        partitions.append(entry)
    return {
        "ignition": {"version": IGNITION_VERSION},
        "storage": {
            "disks": [{"device": m["disk"], "wipeTable": False, "partitions": partitions}],
            "filesystems": [dict(dict(device=f["device"], format=f["format"], wipeFilesystem=f["wipe_filesystem"],
                                      label=f["label"], options=f["options"]), **({"path": f["path"]} if "path" in f else {}))
                            for f in m["filesystems"]],
            "files": [{"path": f["path"], "mode": f["mode"], "overwrite": True,
                       "contents": {"source": _data_url(f["contents"])}} for f in m["files"]],
        },
        "systemd": {"units": [{"name": u["name"], "enabled": u["enabled"], "contents": u["contents"]} for u in m["units"]]},
    }


class _Literal(str):
    pass


def _literal(dumper, data):
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style="|")


class _Dumper(yaml.SafeDumper):
    pass


_Dumper.add_representer(_Literal, _literal)


def butane(opts=None):
    """The Butane source (fcos 1.5.0, which Butane translates to Ignition 3.4.0), as YAML text."""
    m = build(opts)
    doc = {
        "variant": BUTANE_VARIANT,
        "version": BUTANE_VERSION,
        "storage": {
            "disks": [{"device": m["disk"], "wipe_table": False, "partitions": m["partitions"]}],
            "filesystems": [dict(f) for f in m["filesystems"]],
            "files": [{"path": f["path"], "mode": f["mode"], "overwrite": True,
                       "contents": {"inline": _Literal(f["contents"])}} for f in m["files"]],
        },
        "systemd": {"units": [{"name": u["name"], "enabled": u["enabled"], "contents": _Literal(u["contents"])}
                              for u in m["units"]]},
    }
    return yaml.dump(doc, Dumper=_Dumper, sort_keys=False, default_flow_style=False)


def containerfile(opts=None):
    """Containerfile lines that give a bootc image the same storage.conf and prepare-root.conf."""
    m = build(opts)
    lines = ["# composefs.fleet: the same settings as the Ignition config, for a bootc image build"]
    for f in m["files"]:
        path = f["path"]
        if path == PREPARE_ROOT_CONF:
            # bootc images carry it under /usr/lib; the initramfs is built from the image, so regenerate it here.
            path = "/usr/lib/ostree/prepare-root.conf"
        payload = base64.b64encode(f["contents"].encode("utf-8")).decode("ascii")
        lines.append("RUN mkdir -p %s && echo %s | base64 -d > %s && chmod 0644 %s"
                     % (path.rsplit("/", 1)[0], payload, path, path))
    if any(f["path"] == PREPARE_ROOT_CONF for f in m["files"]):
        lines.append("RUN set -eu; kver=$(ls /usr/lib/modules); "
                     "dracut --force --no-hostonly /usr/lib/modules/$kver/initramfs.img $kver")
    lines.append("# /var as ext4 with -O verity is made at install time (bootc install to-filesystem onto a prepared "
                 "filesystem, or a kickstart/Ignition partition); an image cannot carry it.")
    return lines


def to_json(config):
    return json.dumps(config, indent=2, sort_keys=False) + "\n"
