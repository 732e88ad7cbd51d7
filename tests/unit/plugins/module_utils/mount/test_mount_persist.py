"""fstab lines for persistent composefs mounts: content, parsing back, editing only our own lines."""
import os

import pytest

from ansible_collections.composefs.fleet.plugins.module_utils.mount import persist
from ansible_collections.composefs.fleet.plugins.module_utils.common.atomic import atomic_write
from ansible_collections.composefs.fleet.plugins.module_utils.mount.errors import MountError

D = "2b1dfb9ffe6938cb3134c339059572e38cbd8cc515d54758fdff55cad5a37427"
OTHER = "UUID=1234 / ext4 defaults 0 1\n# a comment\n/dev/sdb1 /data xfs noatime 0 2\n"


def test_require_line_carries_the_digest():
    entry = persist.FstabEntry("/srv/app", "/var/lib/cfs/app.cfs", ["/var/lib/cfs/objects"], D, "require")
    assert entry.lines() == [
        "# composefs.fleet: /srv/app digest=%s verity=require" % D,
        "/var/lib/cfs/app.cfs /srv/app composefs basedir=/var/lib/cfs/objects,digest=%s,"
        "x-systemd.requires-mounts-for=/var/lib/cfs/app.cfs,x-systemd.requires-mounts-for=/var/lib/cfs/objects 0 0" % D,
    ]


def test_userspace_line_keeps_the_pin_in_the_marker_only():
    entry = persist.FstabEntry("/srv/my app", "/img.cfs", ["/o1", "/o2"], D, "userspace", "/u", "/w", True)
    marker, line = entry.lines()
    assert marker == "# composefs.fleet: /srv/my\\040app digest=%s verity=userspace" % D
    assert line.split()[1] == "/srv/my\\040app"
    opts = line.split()[3].split(",")
    assert opts[:4] == ["basedir=/o1:/o2", "upperdir=/u", "workdir=/w", "ro"] and not any("digest" in o for o in opts)
    back = persist.FstabEntry.parse(marker, line)
    assert (back.path, back.image, back.basedirs, back.digest, back.verity) == ("/srv/my app", "/img.cfs", ["/o1", "/o2"], D, "userspace")
    assert (back.upperdir, back.workdir, back.readonly) == ("/u", "/w", True)


def test_unusable_paths_are_refused():
    with pytest.raises(MountError, match="separator"):
        persist.FstabEntry("/m", "/i", ["/a:b"], D, "require").lines()
    with pytest.raises(MountError, match="cannot go into an fstab line"):
        persist.FstabEntry("/m", "/i", ["/a,b"], D, "require").lines()


def test_view_adds_replaces_and_removes_only_our_lines():
    lines = persist.FstabEntry("/srv/app", "/i.cfs", ["/o"], D, "require").lines()
    view = persist.FstabView(OTHER.rstrip("\n"), "/srv/app")  # no final newline
    assert view.managed is None and view.others == []
    added = view.with_entry(lines)
    assert added == OTHER + "\n".join(lines) + "\n"
    view = persist.FstabView(added + "tmpfs /tmp tmpfs defaults 0 0\n", "/srv/app")
    assert view.managed[1].digest == D and view.managed_lines() == lines
    new = persist.FstabEntry("/srv/app", "/i2.cfs", ["/o"], "cd" * 32, "require").lines()
    replaced = view.with_entry(new)
    assert replaced == OTHER + "\n".join(new) + "\ntmpfs /tmp tmpfs defaults 0 0\n"
    assert persist.FstabView(replaced, "/srv/app").with_entry(None) == OTHER + "tmpfs /tmp tmpfs defaults 0 0\n"
    # Another mount point's managed line is not ours to touch.
    assert persist.FstabView(replaced, "/srv/other").managed is None


def test_foreign_entry_for_the_same_path_is_reported():
    view = persist.FstabView(OTHER + "/x.cfs /data composefs basedir=/o 0 0\n", "/data")
    assert view.managed is None and [n for n, _l in view.others] == [3, 4]


def test_atomic_write_keeps_mode_and_leaves_no_temp(tmp_path):
    p = tmp_path / "fstab"
    p.write_text("old\n")
    os.chmod(str(p), 0o640)
    atomic_write(str(p), b"new\n")
    assert p.read_text() == "new\n" and oct(p.stat().st_mode & 0o777) == "0o640"
    assert os.listdir(str(tmp_path)) == ["fstab"]
    assert persist.read_fstab(str(tmp_path / "missing")) == ""
