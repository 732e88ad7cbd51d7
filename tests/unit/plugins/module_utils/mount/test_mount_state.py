"""The mount record and what mountinfo says: escaping, option parsing, top mount, identification."""
import json
import os

import pytest

from ansible_collections.composefs.fleet.plugins.module_utils.common.mountinfo import parse_mountinfo
from ansible_collections.composefs.fleet.plugins.module_utils.mount import state
from ansible_collections.composefs.fleet.plugins.module_utils.mount.composefs_mount import (
    FEATURES,
    escape_lowerdir,
    feature_error,
    helper_options,
    kernel_version,
)
from ansible_collections.composefs.fleet.plugins.module_utils.mount.errors import MountError

LABEL = "/run/composefs-fleet/tmp/0123456789abcdef.k2j4x1"
OURS = ("50 27 0:44 / /srv/app ro,relatime - overlay composefs ro,lowerdir+=%s,datadir+=/srv/objects,"
        "datadir+=/srv/more\\054objects,redirect_dir=on,metacopy=on,verity=require" % LABEL)


@pytest.mark.parametrize("path,escaped", [
    ("/", "-"),
    ("/srv/app", "srv-app"),
    ("/srv//app/", "srv-app"),
    ("/mnt/app-1", "mnt-app\\x2d1"),
    ("/mnt/.hidden dir", "mnt-.hidden\\x20dir"),
    ("/a/b:c_d.e", "a-b:c_d.e"),
    ("/.x", "\\x2ex"),
    ("/mnt/é", "mnt-\\xc3\\xa9"),
])
def test_escape_path_is_systemd_escape(path, escaped):
    assert state.escape_path(path) == escaped


def test_record_roundtrip_and_bad_records(tmp_path):
    d = str(tmp_path / "mounts")
    assert state.load_record("/srv/app", d) is None
    state.save_record({"path": "/srv/app", "digest": "ab" * 32, "mount_id": 50, "label": LABEL}, d)
    rec = state.load_record("/srv/app", d)
    assert rec["digest"] == "ab" * 32 and rec["version"] == state.RECORD_VERSION and rec["recorded_at"] > 0
    assert oct(os.stat(state.record_path("/srv/app", d)).st_mode & 0o777) == "0o600"
    assert os.listdir(d) == ["srv-app.json"]  # no temp files left
    with open(state.record_path("/srv/app", d), "w") as f:
        f.write("{not json")
    assert state.load_record("/srv/app", d) is None
    with open(state.record_path("/srv/app", d), "w") as f:
        json.dump({"version": 1, "path": "/elsewhere"}, f)
    assert state.load_record("/srv/app", d) is None
    assert state.remove_record("/srv/app", d) and not state.remove_record("/srv/app", d)


def test_mount_facts_new_api():
    facts = state.MountFacts(parse_mountinfo(OURS)[0])
    assert facts.label == LABEL
    assert facts.datadirs == ["/srv/objects", "/srv/more,objects"]
    assert facts.verity == "require" and facts.readonly and facts.upperdir is None


def test_mount_facts_legacy_lowerdir_string():
    line = ("51 27 0:45 / /srv/app rw,relatime - overlay composefs rw,lowerdir=/run/x/a\\134:b::/srv/o1::/srv/o2,"
            "upperdir=/u,workdir=/w,redirect_dir=on,metacopy=on")
    facts = state.MountFacts(parse_mountinfo(line)[0])
    assert facts.lowers == ["/run/x/a:b"] and facts.datadirs == ["/srv/o1", "/srv/o2"]
    assert facts.label == "/run/x/a:b" and facts.verity == "off"
    assert (facts.upperdir, facts.workdir, facts.readonly) == ("/u", "/w", False)
    assert escape_lowerdir("/run/x/a:b") == "/run/x/a\\:b"
    assert state.lower_layers(["lowerdir=/a\\:b:/c::/d"]) == (["/a:b", "/c"], ["/d"])


def test_top_mount_follows_stacking_not_file_order():
    # After MOVE_MOUNT_BENEATH the old (top) mount comes first in mountinfo, with the new one as its parent.
    text = ("108 112 0:64 / /srv/app ro - overlay composefs ro,lowerdir+=/old\n"
            "112 27 0:67 / /srv/app ro - overlay composefs ro,lowerdir+=/new\n"
            "113 108 0:5 / /srv/app/proc rw - proc proc rw\n")
    mounts = parse_mountinfo(text)
    assert state.top_mount(mounts, "/srv/app").mount_id == 108
    assert [e.mount_id for e in state.submounts(mounts, mounts[0])] == [113]
    assert state.top_mount(mounts, "/srv/other") is None


def test_identify():
    record = {"mount_id": 50, "label": LABEL}
    mounts = parse_mountinfo(OURS)
    assert state.identify("/srv/app", mounts, record)[:1] == ("ours",)
    # Same mount id, different temporary mount point: someone else's mount that reused the id.
    assert state.identify("/srv/app", mounts, dict(record, label="/tmp/.composefs.x")) == ("other", mounts[0], True)
    assert state.identify("/srv/app", mounts, None) == ("other", mounts[0], False)
    assert state.identify("/srv/gone", mounts, record) == ("none", None, True)
    covered = parse_mountinfo(OURS + "\n60 50 0:30 / /srv/app rw - tmpfs tmpfs rw\n")
    kind, top, stale = state.identify("/srv/app", covered, record)
    assert kind == "covered" and top.fstype == "tmpfs" and not stale


def test_feature_errors_name_the_kernel():
    err = feature_error("lowerdir-plus")
    assert isinstance(err, MountError) and err.kind == "kernel-feature"
    assert "Linux 6.7 or later" in str(err) and os.uname()[2] in str(err)
    assert FEATURES["data-only-lowers"][0] == (6, 5) and FEATURES["overlay-verity"][0] == (6, 6)
    assert FEATURES["erofs-file"][0] == (6, 12)
    assert kernel_version("6.12.117+deb13-amd64") == (6, 12) and kernel_version("weird") is None


class _Check:
    def __init__(self, verity, digest="ab" * 32):
        self.verity = verity
        self.digest = digest


def test_helper_options():
    assert helper_options(_Check("kernel"), ["/a", "/b"], None, None, True) == ["basedir=/a:/b", "digest=" + "ab" * 32, "ro"]
    assert helper_options(_Check("userspace"), ["/a,b"], "/u", "/w", False) == ["basedir=/a\\,b", "upperdir=/u", "workdir=/w"]
    assert helper_options(_Check("kernel", None), ["/a"], None, None, False) == ["basedir=/a", "verity"]
    with pytest.raises(MountError, match="separator"):
        helper_options(_Check("none"), ["/a:b"], None, None, False)


def test_loop_config_layout():
    from ansible_collections.composefs.fleet.plugins.module_utils.mount import syscalls
    assert syscalls.LOOP_CONFIG.size == 304  # struct loop_config of <linux/loop.h>
    packed = syscalls.LOOP_CONFIG.pack(7, 4096, 0, 0, 0, 0, 0, 0, 0, 0, 21, b"/img", b"", b"", 0, 0, *([0] * 8))
    assert packed[:8] == b"\x07\x00\x00\x00\x00\x10\x00\x00" and packed[8 + 52:8 + 56] == b"\x15\x00\x00\x00"
    assert packed[8 + 56:8 + 60] == b"/img"
