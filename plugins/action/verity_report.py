# -*- coding: utf-8 -*-
# Copyright: composefs.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin behind composefs.fleet.verity_report: the fleet report, built and written on the controller.

Runs once for the play (the verity_check role calls it with ``run_once``). It reads
every host's registered results from ``hostvars`` (the verity_facts result, the raw
fallback's output, the host's own policy), classifies the hosts with the logic in
plugins/plugin_utils/verity_report.py, and writes the report files into a directory
on the controller, each only when its content changed. Nothing runs on a managed
node, so there is no module execution and no delegation.
"""

from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Mapping

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
    raw_var=dict(type="str", default="verity_check_raw"),
    policy_var=dict(type="str", default="verity_check_host_policy"),
)


def parse_mode(mode):
    if isinstance(mode, int):
        return mode
    try:
        return int(str(mode), 8)
    except ValueError:
        raise AnsibleActionFail("mode %r is not an octal file mode such as '0644'" % (mode,)) from None


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

        def registered(host, name):
            # A registered result is data, not a template: read it untemplated. Templating an empty loop's
            # result reads its 'skipped_reason', which warns as deprecated on ansible-core >= 2.21.
            try:
                found = hostvars.raw_get(host)
            except (AttributeError, KeyError, TypeError):
                return hostvar(host, name)
            return plain(found.get(name)) if isinstance(found, Mapping) else None

        def raw_of(host):
            # The raw fallback runs once for the play, looping over the hosts that need it.
            raw = registered(host, params["raw_var"])
            if isinstance(raw, dict) and "results" in raw:
                mine = [r for r in raw["results"] if isinstance(r, dict) and r.get("item") == host and not r.get("skipped")]
                return mine[0] if mine else None
            return raw

        records = [host_record(host, hostvar(host, params["module_var"]), raw_of(host),
                               active=host in active, policy=hostvar(host, params["policy_var"])) for host in hosts]
        try:
            report = fleet_report(records, plain(params["policy"]), params["title"])
            rendered = render_all(report, params["formats"])
        except VerityReportError as exc:
            raise AnsibleActionFail(str(exc)) from exc

        dest = params["dest"]
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
                data = to_bytes(rendered[fmt], errors="surrogate_or_strict")
                if (check_mode and not os.path.isdir(dest)) or write_if_changed(path, data, mode, check_mode):
                    changed = True
                    written.append(path)
        except OSError as exc:
            raise AnsibleActionFail("cannot write the report in %s: %s" % (dest, exc)) from exc

        verdicts = dict((h["host"], dict(verdict=h["verdict"], problems=[p["message"] for p in h["problems"]], message=h.get("message")))
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
