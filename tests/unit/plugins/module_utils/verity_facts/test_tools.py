"""Tool versions: parsing, and real tiny executables on an injected PATH."""
import os

import pytest

from ansible_collections.composefs.fleet.plugins.module_utils.verity_facts import tools


@pytest.mark.parametrize("text, version", [
    ("podman version 5.2.2\n", "5.2.2"),
    ("mkcomposefs 1.0.8\n", "1.0.8"),
    ("fsverity v1.6\nCopyright 2018 Google LLC\n", "1.6"),
    ("libostree:\n Version: '2024.5'\n Git: v2024.5\n", "2024.5"),
    ("bootc 1.1.4\n", "1.1.4"),
    ("usage: mount.composefs [-o OPTIONS] IMAGE MOUNTPOINT\n", None),
    ("", None),
    ("thing 10.2-rc1 (built 2024)\n", "10.2-rc1"),
])
def test_parse_version(text, version):
    assert tools.parse_version(text) == version


def _tool(directory, name, output, code=0):
    path = os.path.join(directory, name)
    with open(path, "w", encoding="utf-8") as f:
        f.write("#!/bin/sh\necho '%s'\nexit %d\n" % (output, code))
    os.chmod(path, 0o755)
    return path


def test_find_and_run(tmp_path, monkeypatch):
    bindir = str(tmp_path)
    _tool(bindir, "mkcomposefs", "mkcomposefs 1.0.8")
    _tool(bindir, "mount.composefs", "usage: mount.composefs", code=1)
    monkeypatch.setenv("PATH", bindir)
    assert tools.find_tool("mkcomposefs") == os.path.join(bindir, "mkcomposefs")
    found = tools.tool_versions(("mkcomposefs", "mount.composefs", "no-such-tool-here"))
    assert found["mkcomposefs"] == dict(path=os.path.join(bindir, "mkcomposefs"), version="1.0.8")
    assert found["mount.composefs"]["version"] is None
    assert "no-such-tool-here" not in found


def test_hung_tool_times_out(tmp_path, monkeypatch):
    path = os.path.join(str(tmp_path), "ostree")
    with open(path, "w", encoding="utf-8") as f:
        f.write("#!/bin/sh\nexec /bin/sleep 30\n")
    os.chmod(path, 0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    found = tools.tool_versions(("ostree",), timeout=0.5)
    assert found["ostree"]["version"] is None and "did not finish" in found["ostree"]["error"]
