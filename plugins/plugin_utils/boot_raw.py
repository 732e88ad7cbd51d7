# -*- coding: utf-8 -*-
# Copyright: composefs.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Boot facts of a host without Python: raw commands there, the same gather code here on the controller.

Used by the boot_facts action plugin and by verity_facts with ``boot: true``.
"""

from __future__ import annotations

from ansible.errors import AnsibleActionFail

from ansible_collections.composefs.fleet.plugins.module_utils.boot.gather import gather
from ansible_collections.composefs.fleet.plugins.module_utils.boot.raw import parse_raw, raw_script


def read_boot_facts(execute, sysroot, digests=True):
    """The ``composefs_boot`` facts, read with ``execute`` (an action's ``_low_level_execute_command``).

    Raises AnsibleActionFail when the commands cannot be made or fail with no output.
    """
    try:
        script = raw_script(sysroot, digests=digests)
    except ValueError as exc:
        raise AnsibleActionFail(str(exc))
    raw = execute(script, sudoable=True)
    if raw.get("rc") not in (0, None) and not raw.get("stdout"):
        raise AnsibleActionFail("boot_facts: no Python on the host, and the raw commands failed: %s"
                                % (raw.get("stderr") or raw.get("rc")))
    src, cmdline, mountinfo, status, complete = parse_raw(raw.get("stdout") or "")
    facts = gather(src, cmdline, mountinfo, sysroot=sysroot, bootc_status_text=status)
    if not complete:
        facts["errors"].append("raw: the output ended early; the facts may be incomplete")
    return facts
