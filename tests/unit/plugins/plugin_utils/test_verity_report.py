"""The verity_check report logic: raw parsing, host outcomes, the policy, and rendering (inputs injected)."""
import html.parser
import json
import re
import shutil
import struct
import subprocess

import pytest

from ansible_collections.composefs.fleet.plugins.module_utils.common.mountinfo import mount_of, parse_mountinfo
from ansible_collections.composefs.fleet.plugins.module_utils.verity_facts.kernel import kernel_facts
from ansible_collections.composefs.fleet.plugins.module_utils.verity_facts.paths import block_facts, path_entry
from ansible_collections.composefs.fleet.plugins.module_utils.verity_facts.rootfs import root_facts
from ansible_collections.composefs.fleet.plugins.plugin_utils.verity_report import (
    COLOURS,
    RAW_NOTE,
    VerityReportError,
    evaluate,
    fleet_report,
    host_record,
    parse_raw,
    python_missing,
    raw_script,
    render_all,
    render_html,
    render_markdown,
)

MOUNTINFO = (
    "22 1 254:1 / / rw,relatime - ext4 /dev/vda1 rw\n"
    "30 22 7:0 / /srv/verity rw,relatime - ext4 /dev/loop0 rw\n"
    "32 22 0:45 / /srv/btrfs rw,relatime - btrfs /dev/loop2 rw\n"
    "33 22 7:3 / /srv/xfs rw,relatime - xfs /dev/loop3 rw\n"
    "36 22 0:52 / /srv/nfs rw,relatime - nfs4 server:/export rw\n"
)


def superblock(verity):
    data = bytearray(1024)
    struct.pack_into("<I", data, 0x18, 2)
    struct.pack_into("<H", data, 0x38, 0xEF53)
    struct.pack_into("<III", data, 0x5C, 0x3C, 0x2C2, 0x46B | (0x8000 if verity else 0))
    return bytes(data)


def facts(fs_verity=True, release="6.12.117+deb13-amd64", paths=("/srv/verity", "/srv/btrfs", "/srv/xfs"), verity_sb=True):
    sysfs = dict(ext4=["verity"] if fs_verity else ["encryption"], btrfs=None, f2fs=None, xfs=None, erofs=None)
    if fs_verity is None:
        sysfs["ext4"] = None
    kernel = kernel_facts(dict(release=release, sysfs=sysfs, filesystems=["ext4", "overlay", "erofs", "xfs", "btrfs"],
                               modules_dir=True, loop_devices=8, loop_control=True))
    mounts = parse_mountinfo(MOUNTINFO)
    entries = []
    for path in paths:
        mount = mount_of(path, None, mounts)
        block = block_facts(mount, superblock(verity_sb) if mount.fstype == "ext4" else None, None, mount.source)
        entries.append(path_entry(path, mount, kernel, block))
    return dict(facts_version=1, source="module", kernel=kernel, paths=entries, missing_paths=["/var/lib/composefs"],
                tools={"podman": {"path": "/usr/bin/podman", "version": "5.2.2"}}, root=root_facts(mounts), probe={})


def ok(f):
    return dict(changed=False, ansible_facts=dict(composefs=f))


NO_PYTHON = dict(failed=True, rc=127, msg="The module failed to execute correctly, you probably need to set the interpreter.",
                 module_stderr="/bin/sh: 1: /usr/bin/python3: not found\n", module_stdout="")

RAW_OUTPUT = """@@release
6.12.117+deb13-amd64
@@config_tried /proc/config.gz
@@config_tried /boot/config-6.12.117+deb13-amd64
@@config /boot/config-6.12.117+deb13-amd64
CONFIG_FS_VERITY=y
# CONFIG_FS_VERITY_BUILTIN_SIGNATURES is not set
CONFIG_OVERLAY_FS=m
CONFIG_EROFS_FS=m
CONFIG_EROFS_FS_BACKED_BY_FILE=y
CONFIG_BLK_DEV_LOOP=y
@@sysfs ext4
batched_discard
verity
@@sysfs btrfs
verity
@@filesystems
nodev\ttmpfs
\text4
\txfs
\tbtrfs
@@modules_loaded
@@modules_dir /usr/lib/modules/6.12.117+deb13-amd64
file kernel/fs/overlayfs/overlay.ko
file kernel/fs/erofs/erofs.ko
@@loop
devices 0
control
@@mountinfo
""" + MOUNTINFO + """@@device 254:1 /dev/vda1
@@ext4 254:1
@@device 7:0 /dev/loop0
@@ext4 7:0
""" + superblock(True).hex() + """
@@device 0:45 /dev/loop2
@@path 0 2f7372762f7665726974792f73746f7265
real 2f7372762f7665726974792f73746f72650a
dev 1792
@@path 1 2f7372762f6274726673
real 2f7372762f62747266730a
dev 45
@@path 2 2f6e6f7065
@missing
@@path 3 2f
real 2f0a
dev 65025
@@tool podman /usr/bin/podman
 podman version 5.2.2
@@tool ostree /usr/bin/ostree
 libostree:
  Version: '2024.5'
@@end
"""
RAW_PATHS = ["/srv/verity/store", "/srv/btrfs", "/nope", "/"]


def test_raw_script_is_valid_sh_and_quotes_paths():
    script = raw_script(["/srv/with space", "/it's"])
    assert "'/srv/with space'" in script and "'/it'\"'\"'s'" in script
    assert 'echo "@@path 1 %s"' % "/it's".encode().hex() in script
    for shell in ("sh", "bash", "dash"):
        path = shutil.which(shell)
        if path:
            proc = subprocess.run([path, "-n"], input=script, capture_output=True, text=True, check=False)
            assert proc.returncode == 0, (shell, proc.stderr)
    with pytest.raises(VerityReportError):
        raw_script([])


def test_parse_raw():
    f = parse_raw(RAW_OUTPUT)
    assert [e["path"] for e in f["paths"]] + f["missing_paths"] == ["/srv/verity/store", "/srv/btrfs", "/", "/nope"]
    assert parse_raw(RAW_OUTPUT, RAW_PATHS) == f
    assert f["source"] == "raw" and f["note"] == RAW_NOTE and "warning" not in f
    kernel = f["kernel"]
    assert kernel["fs_verity"] is True and kernel["config_source"] == "/boot/config-6.12.117+deb13-amd64"
    assert kernel["fs_verity_builtin_signatures"] is False
    assert kernel["overlay"]["available"] is True and kernel["overlay"]["basis"] == "module overlay can be loaded"
    assert kernel["erofs"]["file_backed"] is True
    assert kernel["loop"]["available"] is True
    entries = dict((e["path"], e) for e in f["paths"])
    assert entries["/srv/verity/store"]["verity"] == "supported" and entries["/srv/verity/store"]["device"] == "/dev/loop0"
    assert entries["/srv/verity/store"]["ext4"]["verity_feature"] is True
    assert entries["/srv/btrfs"]["verity"] == "supported"
    assert entries["/"]["verity"] == "unknown" and "become root" in entries["/"]["reason"]  # dd printed nothing
    assert f["missing_paths"] == ["/nope"]
    assert f["tools"] == {"podman": {"path": "/usr/bin/podman", "version": "5.2.2"}, "ostree": {"path": "/usr/bin/ostree", "version": "2024.5"}}


def test_parse_raw_truncated():
    f = parse_raw(RAW_OUTPUT.split("@@path 0")[0], RAW_PATHS)
    assert f["warning"].startswith("the raw output ended early")
    assert f["missing_paths"] == RAW_PATHS


@pytest.mark.parametrize("result, expected", [
    (NO_PYTHON, True),
    (dict(failed=True, rc=1, msg="MODULE FAILURE", module_stderr="/usr/bin/python3.12: No such file or directory"), True),
    (dict(failed=True, rc=1, msg="boom", module_stderr="Traceback ..."), False),
    (dict(changed=False), False),
    (dict(unreachable=True, msg="ssh"), False),
    (None, False),
])
def test_python_missing(result, expected):
    assert python_missing(result) is expected


def raw_ok(stdout=RAW_OUTPUT, paths=None):
    """The result of the verity_facts action on a host without Python (raw facts parsed on the controller)."""
    return ok(parse_raw(stdout, RAW_PATHS if paths is None else paths))


def test_host_records():
    assert host_record("a", ok(facts()))["status"] == "ok"
    unreachable = host_record("b", dict(unreachable=True, msg="Task failed: Failed to connect to the host via ssh: refused", changed=False))
    assert unreachable["status"] == "unreachable" and unreachable["message"] == "Failed to connect to the host via ssh: refused"
    raw = host_record("c", raw_ok())
    assert raw["status"] == "raw" and raw["message"] == RAW_NOTE and raw["facts"]["source"] == "raw"
    no_raw = host_record("d", NO_PYTHON)
    assert no_raw["status"] == "error" and "raw fallback is off" in no_raw["message"]
    crashed = host_record("f", dict(failed=True, msg="MODULE FAILURE", module_stderr="Traceback: KeyError"))
    assert crashed["status"] == "error" and crashed["message"] == "verity_facts failed: MODULE FAILURE"
    gone = host_record("g", None, active=False)
    assert gone["status"] == "error" and "before verity_check ran" in gone["message"]
    skipped = host_record("h", dict(skipped=True, skip_reason="Conditional result was False"))
    assert skipped["status"] == "error" and "skipped" in skipped["message"]
    assert host_record("i", dict(changed=False, ansible_facts=dict(composefs=[1])))["message"] == "verity_facts returned no composefs facts"


def test_policy_pass():
    host = evaluate(host_record("a", ok(facts())), dict(required_paths=["/srv/verity", "/srv/btrfs"]))
    assert host["verdict"] == "pass" and host["problems"] == []
    assert [p["required"] for p in host["paths"]] == [True, True, False]
    assert host["kernel"]["features"]["fs_verity"] is True and host["tools"] == {"podman": "5.2.2"}


def test_policy_every_path_by_default():
    host = evaluate(host_record("a", ok(facts())), {})
    assert host["verdict"] == "fail"
    assert [p["subject"] for p in host["problems"]] == ["/srv/xfs"]
    assert host["problems"][0]["message"] == "/srv/xfs (xfs): xfs has no fs-verity"


def test_policy_kernel_without_fs_verity():
    host = evaluate(host_record("a", ok(facts(fs_verity=False))), dict(required_paths=["/srv/verity"]))
    assert host["verdict"] == "fail"
    kernel_problem = host["problems"][0]
    assert kernel_problem["kind"] == "kernel" and kernel_problem["message"] == "kernel lacks fs-verity (CONFIG_FS_VERITY)"
    assert kernel_problem["evidence"] == ["/sys/fs/ext4/features has no verity entry"]


def test_policy_unknown():
    host = evaluate(host_record("a", ok(facts(fs_verity=None))), dict(required_paths=["/srv/btrfs"]))
    assert host["verdict"] == "unknown"
    assert {p["severity"] for p in host["problems"]} == {"unknown"}


def test_policy_old_kernel_features():
    host = evaluate(host_record("a", ok(facts(release="6.1.0-18-amd64"))), dict(required_paths=["/srv/btrfs"]))
    assert host["verdict"] == "fail"
    assert [p["subject"] for p in host["problems"]] == ["overlay_data_only_lowers", "overlay_verity"]
    lenient = evaluate(host_record("a", ok(facts(release="6.1.0-18-amd64"))), dict(required_paths=["/srv/btrfs"], required_kernel_features=["fs_verity"]))
    assert lenient["verdict"] == "pass"


def test_policy_missing_required_path():
    host = evaluate(host_record("a", ok(facts())), dict(required_paths=["/var/lib/composefs", "/elsewhere"]))
    assert host["verdict"] == "fail"
    assert [(p["severity"], p["message"]) for p in host["problems"]] == [
        ("fail", "/var/lib/composefs does not exist"), ("unknown", "/elsewhere was not examined")]


def test_host_policy_overrides_the_report_policy():
    records = [host_record("own", ok(facts()), policy=dict(required_paths=["/srv/btrfs"])), host_record("default", ok(facts()))]
    report = fleet_report(records, dict(required_paths=[]))
    own, default = report["hosts"]
    assert own["verdict"] == "pass" and own["policy"]["required_paths"] == ["/srv/btrfs"]
    assert default["verdict"] == "fail" and "policy" not in default
    same = fleet_report([host_record("same", ok(facts()), policy=dict(required_paths=[]))], dict(required_paths=[]))
    assert "policy" not in same["hosts"][0]


def test_policy_rejects_unknown_features():
    with pytest.raises(VerityReportError, match="no_such_feature"):
        evaluate(host_record("a", ok(facts())), dict(required_kernel_features=["no_such_feature"]))


def _fleet():
    return [
        host_record("good", ok(facts())),
        host_record("xfs-only", ok(facts(paths=("/srv/xfs",)))),
        host_record("coreos", raw_ok()),
        host_record("gone", dict(unreachable=True, msg="ssh: connect to host gone port 22: Connection refused")),
        host_record("broken", dict(failed=True, msg="MODULE FAILURE")),
        host_record("nfs <b>", ok(facts(fs_verity=True, paths=("/srv/nfs",)))),
    ]


POLICY = dict(required_paths=[], required_kernel_features=["fs_verity"])


def test_fleet_report_counts_and_groups():
    report = fleet_report(_fleet(), dict(POLICY, required_paths=[]), "fleet")
    assert [h["host"] for h in report["hosts"]] == ["good", "xfs-only", "coreos", "gone", "broken", "nfs <b>"]
    verdicts = dict((h["host"], h["verdict"]) for h in report["hosts"])
    assert verdicts == {"good": "fail", "xfs-only": "fail", "coreos": "unknown", "gone": "unreachable", "broken": "error", "nfs <b>": "unknown"}
    assert report["counts"] == {"pass": 0, "fail": 2, "unknown": 2, "unreachable": 1, "error": 1, "total": 6}
    assert report["groups"]["fail"] == ["good", "xfs-only"]
    assert report["raw_only"] == ["coreos"]
    coreos = report["hosts"][2]
    assert coreos["note"] == RAW_NOTE and coreos["status"] == "raw"


def test_render_json_is_deterministic():
    a = render_all(fleet_report(_fleet(), POLICY))["json"]
    b = render_all(fleet_report(_fleet(), POLICY))["json"]
    assert a == b and json.loads(a)["counts"]["total"] == 6


def test_render_markdown_table():
    text = render_markdown(fleet_report(_fleet(), POLICY, "fleet"))
    lines = text.splitlines()
    assert lines[0] == "# fleet"
    assert "6 hosts: 2 fail, 1 error, 1 unreachable, 2 unknown, 0 pass." in text
    header = "| host | verdict | kernel | fs-verity | boot | path | fs | verity | reason |"
    rows = lines[lines.index(header) + 2:]
    rows = rows[:rows.index("")] if "" in rows else rows
    assert rows and all(len(re.split(r"(?<!\\)\|", row)) == 11 for row in rows), rows
    assert any(row.startswith("| coreos | unknown (no python: raw facts only) | 6.12.117+deb13-amd64 | yes | not gathered") for row in rows)
    assert any(row.startswith("| gone | unreachable (ssh: connect to host gone port 22: Connection refused) |") for row in rows)
    assert "| /srv/xfs | xfs | unsupported | xfs has no fs-verity |" in text


class _Rows(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.rows = []
        self.counts = {}
        self.scripts = 0
        self.external = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "tr" and "data-host" in attrs:
            self.rows.append((attrs["data-host"], attrs["data-verdict"], attrs["class"]))
        if tag == "li" and "data-count" in attrs:
            self.counts[attrs.get("data-verdict", "total")] = int(attrs["data-count"])
        if tag == "script":
            self.scripts += 1
        for key in ("src", "href"):
            if attrs.get(key):
                self.external.append(attrs[key])


def test_render_html_self_contained_grouped_escaped():
    page = render_html(fleet_report(_fleet(), POLICY, "fleet <&>"))
    parser = _Rows()
    parser.feed(page)
    assert parser.scripts == 0 and parser.external == []
    assert "<title>fleet &lt;&amp;&gt;</title>" in page and "nfs &lt;b&gt;" in page and "nfs <b>" not in page
    # grouped, worst first
    assert [r[1] for r in parser.rows] == ["fail", "fail", "error", "unreachable", "unknown", "unknown"]
    assert sorted(r[0] for r in parser.rows) == sorted(["good", "xfs-only", "coreos", "gone", "broken", "nfs <b>"])
    assert all("verdict-%s" % verdict in cls for dummy, verdict, cls in parser.rows)
    assert parser.counts == {"total": 6, "fail": 2, "error": 1, "unreachable": 1, "unknown": 2, "pass": 0}
    for verdict, colour in COLOURS.items():
        assert ".verdict-%s { background: %s; }" % (verdict, colour) in page
    assert RAW_NOTE in page


def test_render_unknown_format():
    with pytest.raises(VerityReportError):
        render_all(fleet_report([], POLICY), ["pdf"])
