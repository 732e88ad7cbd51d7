"""Ignition/Butane/Containerfile generation, checked by Debian's ignition-validate and Ignition's published 3.4 schema."""
import base64
import json
import os
import shutil
import subprocess
import urllib.parse

import jsonschema
import pytest
import yaml

from ansible_collections.composefs.fleet.plugins.plugin_utils import coreos_provision as cp

from support import TOP

SCHEMA = os.path.join(TOP, "tests", "fixtures", "ignition", "ignition-3.4.0.schema.json")
VARIANTS = [
    {},
    {"prepare_root": {"composefs": "verity"}, "root_verity": True},
    {"prepare_root": {"composefs": "signed", "keypath": "/etc/ostree/initramfs-root-binding.key", "etc_transient": True}},
    {"prepare_root": None, "storage_conf": {"use_composefs": True, "pull_options": {"convert_images": True}},
     "var_size_mib": 20480, "boot_device": "/dev/vda"},
]


def ignition_validate(config, tmp_path, version):
    """Debian's ignition 2.14 knows spec 3.4 only as 3.4.0-experimental (and 3.3.0): validate under those names."""
    binary = shutil.which("ignition-validate")
    if binary is None:
        raise AssertionError("ignition-validate is missing: install Debian's ignition (requirements/apt.txt)")
    path = tmp_path / ("config-%s.ign" % version)
    path.write_text(json.dumps(dict(config, ignition={"version": version})))
    return subprocess.run([binary, str(path)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True,
                          check=False)


def decode(source):
    if source.startswith("data:;base64,"):
        return base64.b64decode(source[len("data:;base64,"):]).decode()
    return urllib.parse.unquote(source[len("data:,"):])


@pytest.mark.parametrize("options", VARIANTS)
def test_ignition_is_valid(options, tmp_path):
    config = cp.ignition(options)
    assert config["ignition"]["version"] == "3.4.0"
    with open(SCHEMA) as handle:
        jsonschema.validate(config, json.load(handle))
    for version in ("3.4.0-experimental", "3.3.0"):
        proc = ignition_validate(config, tmp_path, version)
        assert proc.returncode == 0 and proc.stdout == "", proc.stdout


def test_validators_catch_a_broken_config(tmp_path):
    config = cp.ignition({})
    config["storage"]["filesystems"][0]["format"] = "ext5"
    assert ignition_validate(config, tmp_path, "3.4.0-experimental").returncode != 0
    config = cp.ignition({})
    config["storage"]["files"][0]["mode"] = "0644"
    with open(SCHEMA) as handle, pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(config, json.load(handle))


def test_var_is_ext4_with_verity_and_mounted():
    config = cp.ignition({})
    fs = [f for f in config["storage"]["filesystems"] if f.get("path") == "/var"][0]
    assert fs["format"] == "ext4" and fs["options"] == ["-O", "verity"] and fs["device"] == "/dev/disk/by-partlabel/var"
    units = dict((u["name"], u) for u in config["systemd"]["units"])
    assert "Where=/var\nWhat=/dev/disk/by-partlabel/var\nType=ext4" in units["var.mount"]["contents"]
    assert "rpm-ostree initramfs-etc --track=/etc/ostree/prepare-root.conf" in units[cp.INITRAMFS_UNIT]["contents"]


def test_storage_conf_is_what_storage_conf_writes():
    config = cp.ignition({})
    files = dict((f["path"], decode(f["contents"]["source"])) for f in config["storage"]["files"])
    path, content = cp.storage_conf_content({"use_composefs": True}, "5.4.0")
    assert files[path] == content
    assert 'use_composefs = "true"' in content and 'enable_partial_images = "true"' in content
    assert files["/etc/ostree/prepare-root.conf"] == "[composefs]\nenabled=yes\n"


def test_butane_says_the_same_as_ignition():
    for options in VARIANTS:
        ign = cp.ignition(options)
        but = yaml.safe_load(cp.butane(options))
        assert (but["variant"], but["version"]) == ("fcos", "1.5.0")
        assert [(f["path"], f["contents"]["inline"]) for f in but["storage"]["files"]] == \
            [(f["path"], decode(f["contents"]["source"])) for f in ign["storage"]["files"]]
        assert [(u["name"], u["contents"]) for u in but["systemd"]["units"]] == \
            [(u["name"], u["contents"]) for u in ign["systemd"]["units"]]
        assert [f["device"] for f in but["storage"]["filesystems"]] == [f["device"] for f in ign["storage"]["filesystems"]]


def test_containerfile_lines_write_the_same_files(tmp_path):
    lines = cp.containerfile({"prepare_root": {"composefs": "verity"}})
    runs = [line[len("RUN "):] for line in lines if line.startswith("RUN mkdir")]
    assert len(runs) == 2
    for run in runs:
        # Run each line's shell command under a scratch root to see the file it writes.
        script = run.replace(" /etc/", " %s/etc/" % tmp_path).replace(" /usr/", " %s/usr/" % tmp_path)
        subprocess.run(["sh", "-c", script], check=True)
    assert (tmp_path / "usr/lib/ostree/prepare-root.conf").read_text() == "[composefs]\nenabled=verity\n"
    assert 'use_composefs = "true"' in (tmp_path / "etc/containers/storage.conf").read_text()
    assert any(line.startswith("RUN set -eu; kver=") and "dracut" in line for line in lines)


@pytest.mark.parametrize("options, problem", [
    ({"nope": 1}, "unknown options"),
    ({"root_size_mib": -1}, "whole number"),
    ({"var_label": "a b"}, "plain string"),
    ({"prepare_root": {"composefs": "enforce"}}, "must be one of"),
    ({"prepare_root": {"root_transient": True, "root_transient_ro": True}}, "both set"),
    ({"storage_conf": {"use_composefs": True, "pull_options": {"bogus": 1}}}, "unknown pull_options key"),
])
def test_bad_options_are_refused(options, problem):
    with pytest.raises(cp.ProvisionError, match=problem):
        cp.ignition(options)
