"""The raw fallback of the composefs.fleet.verity_facts action: its result from one run of the raw script.

The action itself runs in tests/integration/test_verity_check_role.py (a local host whose
interpreter is missing) and tests/fleet/test_fleet.py (a namespace host without Python, over SSH).
"""
import subprocess

from ansible_collections.composefs.fleet.plugins.action.verity_facts import raw_result
from ansible_collections.composefs.fleet.plugins.plugin_utils.verity_report import RAW_NOTE, raw_script


def test_raw_result_from_this_host(tmp_path):
    paths = [str(tmp_path), str(tmp_path / "missing")]
    proc = subprocess.run(["/bin/sh", "-c", raw_script(paths)], capture_output=True, text=True, check=False)
    result = raw_result(dict(rc=proc.returncode, stdout=proc.stdout, stderr=proc.stderr), paths)
    facts = result["ansible_facts"]["composefs"]
    assert result["changed"] is False and "failed" not in result
    assert facts["source"] == "raw" and facts["note"] == RAW_NOTE and "warning" not in facts
    assert [e["path"] for e in facts["paths"]] == [str(tmp_path)] and facts["missing_paths"] == [paths[1]]


def test_raw_result_when_the_commands_fail():
    result = raw_result(dict(rc=127, stdout="", stderr="/bin/sh: not found\n"), ["/"])
    assert result["failed"] is True and result["msg"] == "the host has no Python, and the raw commands failed (exit 127): /bin/sh: not found"
    result = raw_result(dict(rc=1, stdout="\x00" * 5000, stderr=""), ["/"])
    assert result["failed"] is True and len(result["msg"]) < 400 and "\x00" not in result["msg"]  # a short, printable excerpt
    assert result["msg"].endswith("\\x00\\x00...")


def test_raw_result_with_malformed_output():
    result = raw_result(dict(rc=0, stdout="@@release\n6.1\n@@loop\ndevices many\n@@end\n", stderr=""), ["/"])
    assert result["failed"] is True
    assert result["msg"] == "the host has no Python, and its raw output cannot be read: malformed loop device count 'devices many'"
