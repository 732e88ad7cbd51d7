"""The file handling of the composefs.fleet.verity_report action (the report logic is tested in plugin_utils)."""
import os
import stat

import pytest
from ansible.errors import AnsibleActionFail

from ansible_collections.composefs.fleet.plugins.action.verity_report import parse_mode, write_if_changed


def test_parse_mode():
    assert parse_mode("0644") == 0o644
    assert parse_mode("600") == 0o600
    assert parse_mode("1777") == 0o1777
    for bad in ("rw-r--r--", "0800", "64", "", "0o644"):
        with pytest.raises(AnsibleActionFail, match="not an octal file mode"):
            parse_mode(bad)


@pytest.mark.parametrize("number", [600, 0o644, 420, True])
def test_parse_mode_refuses_yaml_integers(number):
    """``mode: 600`` in YAML is the decimal 600 (and ``mode: 0644`` is 420): refused, as ansible.builtin.file advises quoting."""
    with pytest.raises(AnsibleActionFail, match="must be a quoted octal string such as '0644'"):
        parse_mode(number)


def test_write_if_changed(tmp_path):
    path = str(tmp_path / "report.json")
    assert write_if_changed(path, b"{}\n", 0o644, check_mode=True) is True
    assert not os.path.exists(path)
    assert write_if_changed(path, b"{}\n", 0o644, check_mode=False) is True
    assert open(path, "rb").read() == b"{}\n" and stat.S_IMODE(os.stat(path).st_mode) == 0o644
    assert write_if_changed(path, b"{}\n", 0o644, check_mode=False) is False
    inode = os.stat(path).st_ino
    assert write_if_changed(path, b"{}\n", 0o600, check_mode=False) is True  # the mode alone
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600 and os.stat(path).st_ino == inode
    assert write_if_changed(path, b"[]\n", 0o600, check_mode=True) is True
    assert open(path, "rb").read() == b"{}\n"
    assert write_if_changed(path, b"[]\n", 0o600, check_mode=False) is True
    assert open(path, "rb").read() == b"[]\n"
    assert sorted(os.listdir(str(tmp_path))) == ["report.json"]  # no temporary files left
