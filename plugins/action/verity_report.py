# -*- coding: utf-8 -*-
# Copyright: composefs.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin behind composefs.fleet.verity_report: the fleet report, built and written on the controller.

Runs once for the play (the verity_check role calls it with ``run_once``). It reads
every host's registered composefs.fleet.verity_facts result (whose own action plugin
reads hosts without Python through raw commands), its composefs.fleet.boot_facts result
(the "boot" column) and the host's own policy from ``hostvars``, classifies the hosts with the logic in plugins/plugin_utils/verity_report.py,
and writes the report files into a directory on the controller, each only when its
content changed. Nothing runs on a managed node, so there is no module execution and no
delegation.
"""

from __future__ import annotations

import os
import re
import stat
import tempfile

from ansible.errors import AnsibleActionFail
from ansible.module_utils.common.text.converters import to_bytes
from ansible.plugins.action import ActionBase

from ansible_collections.composefs.fleet.plugins.plugin_utils.verity_report import (
    VerityReportError,
    fleet_report,
    host_record,
    plain,
    render_all,
)

FILE_NAMES = dict(json="report.json", md="report.md", html="report.html")
ARGUMENT_SPEC = dict(
    dest=dict(type="path", required=True),
    formats=dict(type="list", elements="str", choices=sorted(FILE_NAMES), default=["json", "md", "html"]),
    title=dict(type="str", default="composefs fs-verity fleet report"),
    policy=dict(type="dict", default={}),
    mode=dict(type="raw", default="0644"),
    hosts=dict(type="list", elements="str"),
    active_hosts=dict(type="list", elements="str"),
    module_var=dict(type="str", default="verity_check_module"),
    policy_var=dict(type="str", default="verity_check_host_policy"),
    boot_var=dict(type="str", default="verity_check_boot"),
)


_OCTAL_MODE = re.compile(r"\A0?[0-7]{3,4}\Z")


def parse_mode(mode):
    """The file mode from an octal string ("0644", "644"); integers are refused.

    YAML reads ``mode: 644`` as the decimal number 644 and ``mode: 0644`` as 420, and
    ansible.builtin.file documents that only a quoted string is read as octal: an
    integer here is almost always a mode that would come out wrong, so it is refused.
    """
    if not isinstance(mode, str):
        what = "the number %d" % mode if isinstance(mode, int) and not isinstance(mode, bool) else "%s" % type(mode).__name__
        raise AnsibleActionFail("mode must be a quoted octal string such as '0644', not %s: YAML reads 644 as a decimal number "
                                "and 0644 as 420 (quote it, as for ansible.builtin.file)" % what)
    if not _OCTAL_MODE.match(mode):
        raise AnsibleActionFail("mode %r is not an octal file mode such as '0644'" % (mode,))
    return int(mode, 8)


def write_if_changed(path, data, mode, check_mode):
    """Replace ``path`` atomically with ``data`` unless it already has it (and ``mode``). Returns whether it changed."""
    try:
        st = os.stat(path)
        with open(path, "rb") as f:
            same = f.read() == data
        if same and stat.S_IMODE(st.st_mode) == mode:
            return False
        if same:
            if not check_mode:
                os.chmod(path, mode)
            return True
    except FileNotFoundError:
        pass
    if check_mode:
        return True
    fd, tmp = tempfile.mkstemp(prefix=".%s." % os.path.basename(path), dir=os.path.dirname(path))
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return True


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _VALID_ARGS = frozenset(ARGUMENT_SPEC)

    def run(self, tmp=None, task_vars=None):
        task_vars = task_vars or {}
        result = super().run(tmp, task_vars)
        del tmp
        dummy, params = self.validate_argument_spec(argument_spec=ARGUMENT_SPEC)
        hostvars = task_vars.get("hostvars") or {}
        hosts = list(params["hosts"] if params["hosts"] is not None else task_vars.get("ansible_play_hosts_all") or [])
        active = set(params["active_hosts"] if params["active_hosts"] is not None else task_vars.get("ansible_play_hosts") or hosts)

        def hostvar(host, name):
            try:
                return plain(hostvars[host].get(name))
            except (KeyError, TypeError):
                return None

        records = [host_record(host, hostvar(host, params["module_var"]), active=host in active,
                               policy=hostvar(host, params["policy_var"]), boot_result=hostvar(host, params["boot_var"]))
                   for host in hosts]
        try:
            report = fleet_report(records, plain(params["policy"]), params["title"])
            rendered = render_all(report, params["formats"])
        except VerityReportError as exc:
            raise AnsibleActionFail(str(exc)) from exc

        # a relative dest is relative to the controller's current directory, as on the command line
        dest = os.path.abspath(params["dest"])
        mode = parse_mode(params["mode"])
        check_mode = self._task.check_mode
        changed = False
        written = []
        try:
            if not os.path.isdir(dest):
                changed = True
                if not check_mode:
                    os.makedirs(dest, 0o755)
            for fmt in params["formats"]:
                path = os.path.join(dest, FILE_NAMES[fmt])
                data = to_bytes(rendered[fmt], errors="surrogate_then_replace")
                if (check_mode and not os.path.isdir(dest)) or write_if_changed(path, data, mode, check_mode):
                    changed = True
                    written.append(path)
        except OSError as exc:
            raise AnsibleActionFail("cannot write the report in %s: %s" % (dest, exc)) from exc

        verdicts = dict((h["host"], dict(verdict=h["verdict"], problems=[p["message"] for p in h["problems"]], message=h.get("message"),
                                         boot=h["boot"].get("summary") if h["boot"]["status"] in ("ok", "raw") else None))
                        for h in report["hosts"])
        result.update(
            changed=changed,
            dest=dest,
            files=[os.path.join(dest, FILE_NAMES[fmt]) for fmt in params["formats"]],
            written=written,
            counts=report["counts"],
            groups=report["groups"],
            verdicts=verdicts,
            report=report,
        )
        return result
