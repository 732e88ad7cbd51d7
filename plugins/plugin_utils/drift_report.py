# -*- coding: utf-8 -*-
# Copyright: composefs.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The deploy role's drift report: which host runs which digest, against the one it should.

Pure, controller-side. For each host it is given the desired digest and the registered
result of composefs.fleet.deployment_info (the host repository's refs, the desired image
and the objects it lacks, what is mounted at the deployment's mount point with which
digest, what fstab persists, and whether a deploy would change anything: the deploy
role's own no-op test, so "in sync" here is "a deploy leaves it alone"). Hosts that
differ come first. Rendering (JSON, Markdown, HTML) and escaping are the verity
report's (plugins/plugin_utils/report_render.py); host data is untrusted and a host
whose results have the wrong shape is reported as ``error``.
"""

from __future__ import annotations

import html
from collections.abc import Mapping

from ansible_collections.composefs.fleet.plugins.plugin_utils.deploy import DeployPlanError, current_ref, releases
from ansible_collections.composefs.fleet.plugins.plugin_utils.report_render import hosts_phrase, html_page, md, render_json
from ansible_collections.composefs.fleet.plugins.plugin_utils.verity_report import COLOURS, ERROR, UNREACHABLE

REPORT_VERSION = 1
DRIFT = "drift"
IN_SYNC = "in_sync"
# Differing first: the order of hosts in every rendering.
STATUSES = (DRIFT, ERROR, UNREACHABLE, IN_SYNC)
STATUS_COLOURS = {DRIFT: COLOURS["fail"], ERROR: COLOURS[ERROR], UNREACHABLE: COLOURS[UNREACHABLE], IN_SYNC: COLOURS["pass"]}
MISSING_SHOWN = 5


class DriftReportError(Exception):
    """Bad input to the report as a whole (not one host's results)."""


def _short(digest):
    return digest[:12] if isinstance(digest, str) and digest else "-"


def _message(result):
    if not isinstance(result, Mapping):
        return ""
    return str(result.get("msg") or result.get("reason") or "").strip()


def _problem_result(what, result, active):
    """Why a registered result cannot be used, or None."""
    if not isinstance(result, Mapping) or not result:
        return (ERROR, "the host failed or became unreachable before the drift check" if not active else "no %s result" % what)
    if result.get("unreachable"):
        return (UNREACHABLE, _message(result) or "unreachable")
    if result.get("skipped"):
        return (ERROR, "%s was skipped" % what)
    if result.get("failed"):
        return (ERROR, "%s failed: %s" % (what, _message(result)))
    return None


def _version_of(refs, name, digest):
    if not digest:
        return None
    try:
        found = [r for r in releases(refs, name) if r["digest"] == digest]
    except DeployPlanError:
        return None
    return found[-1]["version"] if found else None


def _text_or_none(value, what):
    if value is None or isinstance(value, str):
        return value
    raise TypeError("%s is a %s, not text" % (what, type(value).__name__))


def _mapping(value, what):
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise TypeError("%s is not a mapping" % what)
    return value


def host_drift(host, name, desired, result, active=True):
    """One host's entry from its composefs.fleet.deployment_info result: ``status`` (drift, in_sync, unreachable, error),
    the digests and the problems."""
    out = dict(host=str(host), status=ERROR, desired=desired, desired_version=None, mounted=None, mounted_version=None,
               kind=None, persisted=False, persisted_digest=None, verity=None, current=None, missing_objects=None,
               missing_sample=[], problems=[], message=None)
    bad = _problem_result("deployment_info", result, active)
    if bad is not None:
        out["status"], out["message"] = bad
        return out
    try:
        refs = _mapping(result.get("refs"), "deployment_info refs")
        mount = _mapping(result.get("mount"), "deployment_info mount")
        image = _mapping(result.get("image"), "deployment_info image")
        refs = dict((str(k), _text_or_none(v, "ref %s" % k)) for k, v in refs.items())
        if not desired:
            desired = refs.get(current_ref(name))
        out["desired"] = desired = _text_or_none(desired, "the desired digest")
        out["kind"] = _text_or_none(mount.get("kind"), "mount kind")
        out["mounted"] = _text_or_none(mount.get("digest") if mount.get("mounted") else None, "mount digest")
        out["verity"] = _text_or_none(mount.get("verity"), "mount verity")
        line = mount.get("fstab")
        if line is not None and not isinstance(line, Mapping):
            raise TypeError("mount fstab is not a mapping")
        out["persisted"] = bool(mount.get("persisted")) and line is not None
        out["persisted_digest"] = _text_or_none(line.get("digest"), "fstab digest") if line else None
        out["current"] = refs.get(current_ref(name))
        out["desired_version"] = _version_of(refs, name, desired)
        out["mounted_version"] = _version_of(refs, name, out["mounted"])
        problems = []
        if not desired:
            problems.append("no desired digest: none was given and the host has no %s ref" % current_ref(name))
        if out["kind"] == "other":
            problems.append("someone else's mount is at the mount point (%s)" % (mount.get("top") or "?"))
        elif out["kind"] == "covered":
            problems.append("the composefs mount is covered by another mount (%s)" % (mount.get("top") or "?"))
        elif not out["mounted"]:
            problems.append("nothing of the deployment is mounted")
        elif desired and out["mounted"] != desired:
            problems.append("mounts %s%s, not the desired %s%s" % (
                _short(out["mounted"]), " (%s)" % out["mounted_version"] if out["mounted_version"] else "",
                _short(desired), " (%s)" % out["desired_version"] if out["desired_version"] else ""))
        if not out["persisted"]:
            problems.append("not persisted: no managed fstab line, so a reboot mounts nothing")
        elif desired and out["persisted_digest"] != desired:
            problems.append("fstab persists %s, not the desired %s" % (_short(out["persisted_digest"]), _short(desired)))
        if desired and out["current"] != desired:
            problems.append("%s names %s, not the desired %s" % (current_ref(name), _short(out["current"]), _short(desired)))
        if desired and (image.get("digest") != desired or not image.get("stored")):
            problems.append("the desired image is not in the host repository")
        elif desired:
            missing = image.get("missing_objects")
            count = image.get("missing_count")
            if count is not None:
                if isinstance(count, bool) or not isinstance(count, int) or not isinstance(missing, list):
                    raise TypeError("missing_count is not a number or missing_objects not a list")
                out["missing_objects"] = count
                out["missing_sample"] = [str(m) for m in missing[:MISSING_SHOWN]]
                if count:
                    problems.append("%d objects of the desired image are missing" % count)
        if not problems and result.get("in_place") is False:
            # what only the mount code sees: other mount options, an image that lost its pin
            differences = result.get("differences") or []
            if not isinstance(differences, list):
                raise TypeError("deployment_info differences is not a list")
            problems.append("not as a deploy leaves it: %s" % ("; ".join(str(d) for d in differences) or "?"))
        out["problems"] = problems
        out["status"] = DRIFT if problems else IN_SYNC
    except (TypeError, AttributeError, ValueError, KeyError) as exc:
        out.update(status=ERROR, problems=[], message="malformed results: %s" % exc)
    return out


def drift_report(entries, name, title=None):
    """The report dict: counts, and the host entries, differing hosts first (each group in the given order)."""
    if not isinstance(name, str) or not name:
        raise DriftReportError("the drift report needs the deployment's name")
    hosts = [h for status in STATUSES for h in entries if h["status"] == status]
    counts = dict((status, sum(1 for h in hosts if h["status"] == status)) for status in STATUSES)
    counts["total"] = len(hosts)
    return dict(report_version=REPORT_VERSION, title=title or "composefs deployment drift report: %s" % name, name=name,
                counts=counts, differing=[h["host"] for h in hosts if h["status"] != IN_SYNC], hosts=hosts)


def _counts_line(counts):
    return "%s: %s." % (hosts_phrase(counts["total"]), ", ".join("%d %s" % (counts[s], s.replace("_", " ")) for s in STATUSES))


def _persisted_text(host):
    if not host["persisted"]:
        return "no"
    return "yes" if host["persisted_digest"] == host["mounted"] else "yes (%s)" % _short(host["persisted_digest"])


def _digest_text(digest, version):
    return "%s%s" % (_short(digest), " (%s)" % version if version else "")


def render_markdown(report):
    lines = [
        "# %s" % md(report["title"]),
        "",
        _counts_line(report["counts"]),
        "",
        "| host | status | desired | mounted | persisted | verity | missing objects | problems |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for host in report["hosts"]:
        problems = host["problems"] or ([host["message"]] if host.get("message") else [])
        lines.append("| %s |" % " | ".join([
            md(host["host"]), md(host["status"].replace("_", " ")), md(_digest_text(host["desired"], host["desired_version"])),
            md(_digest_text(host["mounted"], host["mounted_version"])), md(_persisted_text(host)), md(host["verity"] or "-"),
            md("-" if host["missing_objects"] is None else host["missing_objects"]), md("; ".join(problems))]))
    return "\n".join(lines) + "\n"


_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", "Liberation Sans", sans-serif; margin: 1.5rem; color: #1f2328; background: #ffffff; }
h1 { font-size: 1.5rem; margin: 0 0 .5rem 0; }
.counts { display: flex; flex-wrap: wrap; gap: .5rem; margin: .75rem 0 1rem 0; padding: 0; list-style: none; }
.counts li { padding: .35rem .7rem; border-radius: .4rem; color: #ffffff; font-weight: 600; }
.counts .total { background: #24292f; }
table { border-collapse: collapse; width: 100%; table-layout: fixed; }
th, td { text-align: left; vertical-align: top; padding: .35rem .5rem; border-bottom: 1px solid #d0d7de; font-size: .9rem; overflow-wrap: anywhere; }
th { background: #f6f8fa; }
tr.host td:first-child { border-left: .45rem solid transparent; }
.hostname { font-weight: 600; }
.badge { display: inline-block; white-space: nowrap; padding: .1rem .45rem; border-radius: .3rem; color: #ffffff; font-weight: 600; font-size: .8rem; }
.problems { color: #57606a; }
code { font-size: .85rem; }
"""


def _css():
    rules = [_CSS]
    for status, colour in sorted(STATUS_COLOURS.items()):
        rules.append(".status-%s { background: %s; }" % (status, colour))
        rules.append("tr.host.status-%s { background: %s1a; }" % (status, colour))
        rules.append("tr.host.status-%s td:first-child { border-left-color: %s; }" % (status, colour))
    return "\n".join(rules)


def _html_digest(digest, version):
    e = html.escape
    if not digest:
        return "-"
    return '<code title="%s">%s</code>%s' % (e(digest), e(_short(digest)), " %s" % e(version) if version else "")


def render_html(report):
    e = html.escape
    counts = report["counts"]
    body = ['<ul class="counts">',
            '<li class="total" id="count-total" data-count="%d">%s</li>' % (counts["total"], hosts_phrase(counts["total"]))]
    for status in STATUSES:
        body.append('<li class="count status-%s" id="count-%s" data-count="%d">%d %s</li>' % (
            status, status, counts[status], counts[status], e(status.replace("_", " "))))
    body.append("</ul>")
    body.append("<table><thead><tr><th>host</th><th>status</th><th>desired</th><th>mounted</th><th>persisted</th><th>verity</th>"
                "<th>missing objects</th><th>problems</th></tr></thead><tbody>")
    for host in report["hosts"]:
        problems = host["problems"] or ([host["message"]] if host.get("message") else [])
        missing = "-" if host["missing_objects"] is None else str(host["missing_objects"])
        body.append(
            '<tr class="host status-%s" data-host="%s" data-status="%s"><td><span class="hostname">%s</span></td>'
            '<td><span class="badge status-%s">%s</span></td><td>%s</td><td>%s</td><td>%s</td><td>%s</td>'
            '<td title="%s">%s</td><td class="problems">%s</td></tr>' % (
                host["status"], e(host["host"]), host["status"], e(host["host"]), host["status"], e(host["status"].replace("_", " ")),
                _html_digest(host["desired"], host["desired_version"]), _html_digest(host["mounted"], host["mounted_version"]),
                e(_persisted_text(host)), e(host["verity"] or "-"), e(", ".join(host["missing_sample"])), e(missing),
                "".join("<div>%s</div>" % e(p) for p in problems)))
    body.append("</tbody></table>")
    return html_page(report["title"], _css(), body)


def render_all(report, formats=("json", "md", "html")):
    renderers = dict(json=render_json, md=render_markdown, html=render_html)
    unknown = [f for f in formats if f not in renderers]
    if unknown:
        raise DriftReportError("unknown report formats: %s (known: json, md, html)" % ", ".join(unknown))
    return dict((f, renderers[f](report)) for f in formats)
