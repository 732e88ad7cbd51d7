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
    for bad in ("/a,b", "/a\\b", "/a'b", '/a"b'):
        with pytest.raises(MountError, match="cannot go into an fstab line"):
            persist.FstabEntry("/m", "/i", [bad], D, "require").lines()


@pytest.mark.parametrize("char, escape", [(" ", "\\040"), ("\t", "\\011"), ("\n", "\\012"), ("\\", "\\134")])
def test_special_characters_are_octal_escapes_in_every_field(char, escape):
    """As ansible.posix.mount and getmntent(3): written escaped, read back as they were."""
    path, image = "/srv/my%sapp" % char, "/img%s.cfs" % char
    basedir = "/o%sbjects" % char if char != "\\" else "/objects"  # no backslash escape inside options
    entry = persist.FstabEntry(path, image, [basedir], D, "userspace", "/u%s" % (char if char != "\\" else ""),
                               "/w", False)
    marker, line = entry.lines()
    fields = line.split()
    assert len(fields) == 6 and "\n" not in line and "\t" not in line
    assert fields[0] == image.replace(char, escape) and fields[1] == path.replace(char, escape)
    assert marker.split()[2] == path.replace(char, escape)
    if char != "\\":
        assert "basedir=" + basedir.replace(char, escape) in fields[3]
    back = persist.FstabEntry.parse(marker, line)
    assert (back.path, back.image, back.basedirs, back.upperdir) == (path, image, [basedir], entry.upperdir)
    view = persist.FstabView(OTHER + marker + "\n" + line + "\n", path)
    assert view.managed is not None and view.managed_lines() == [marker, line] and view.others == []


def test_unescape_reads_what_escape_writes():
    text = "a b\tc\nd\\e"
    assert persist.escape_field(text) == "a\\040b\\011c\\012d\\134e"
    assert persist.unescape_field(persist.escape_field(text)) == text


def test_writable_check_and_backup(tmp_path):
    fstab = tmp_path / "fstab"
    fstab.write_text(OTHER)
    persist.check_writable(str(fstab))
    persist.check_writable(str(tmp_path / "new-fstab"))  # a new file in a writable directory
    with pytest.raises(MountError, match="does not exist") as exc:
        persist.check_writable(str(tmp_path / "missing" / "fstab"))
    assert exc.value.kind == "invalid"
    with pytest.raises(MountError, match="is a directory"):
        persist.check_writable(str(tmp_path))
    backup = persist.backup_fstab(str(fstab))
    assert backup.startswith(str(fstab) + ".%d." % os.getpid()) and backup.endswith("~")
    with open(backup) as f:
        assert f.read() == OTHER


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


def test_systemd_ordering_uses_the_longest_ancestor_systemd_reads_unchanged():
    entry = persist.FstabEntry("/m", "/srv/my images/app.cfs", ["/var/lib/o"], D, "require")
    opts = persist.unescape_field(entry.lines()[1].split()[3]).split(",")
    assert [o for o in opts if o.startswith("x-systemd.")] == [
        "x-systemd.requires-mounts-for=/srv", "x-systemd.requires-mounts-for=/var/lib/o"]
