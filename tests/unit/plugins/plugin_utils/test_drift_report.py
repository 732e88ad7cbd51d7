"""The deploy drift report: host entries from registered deployment_info results, the order, and rendering with the verity report's escaping."""
import html.parser
import json

import pytest

from ansible_collections.composefs.fleet.plugins.plugin_utils.drift_report import (
    DriftReportError,
    drift_report,
    host_drift,
    render_all,
    render_html,
    render_markdown,
)

V1, V2, V3 = ("%x" % n * 64 for n in (10, 11, 12))


def _mount(digest, persisted=None, kind="ours", verity="kernel"):
    persisted = digest if persisted is None else persisted
    return dict(changed=False, kind=kind, mounted=kind == "ours" and digest is not None, digest=digest, verity=verity,
                persisted=bool(persisted), top="overlay composefs (mount id 7)",
                fstab=dict(path="/etc/fstab", digest=persisted, verity="require", image="/x", basedir=["/o"]) if persisted else None)


def _refs(current, *releases):
    refs = {"app/current": current} if current else {}
    for seq, (version, digest) in enumerate(releases, 1):
        refs["app/releases/%06d-%s" % (seq, version)] = digest
    return refs


def _info(mount, refs, image=None, missing=None, in_place=None, differences=()):
    """A composefs.fleet.deployment_info result: ``image`` the digest asked for (or current's), ``missing`` its lacks."""
    stored = image is not None and image in refs.values()
    found = None
    if image is not None:
        found = dict(digest=image, stored=stored, linked=stored, missing_objects=list(missing or [])[:20],
                     missing_count=len(missing) if stored and missing is not None else None)
    return dict(changed=False, repository=dict(version=1, algorithm="sha256"), refs=refs,
                current=refs.get("app/current"), image=found, mount=mount, in_place=in_place,
                differences=list(differences))


def test_in_sync():
    entry = host_drift("web1", "app", V2, _info(_mount(V2), _refs(V2, ("v1", V1), ("v2", V2)), V2, [], True))
    assert entry["status"] == "in_sync" and entry["problems"] == []
    assert entry["desired_version"] == "v2" and entry["mounted_version"] == "v2" and entry["missing_objects"] == 0


def test_every_kind_of_drift():
    missing = ["ab/" + "c" * 62, "cd/" + "e" * 62]
    entry = host_drift("web1", "app", V3, _info(_mount(V2, persisted=V1), _refs(V2, ("v1", V1), ("v2", V2), ("v3", V3)),
                                                V3, missing, False))
    assert entry["status"] == "drift"
    assert entry["problems"] == [
        "mounts %s (v2), not the desired %s (v3)" % (V2[:12], V3[:12]),
        "fstab persists %s, not the desired %s" % (V1[:12], V3[:12]),
        "app/current names %s, not the desired %s" % (V2[:12], V3[:12]),
        "2 objects of the desired image are missing",
    ]
    assert entry["missing_sample"] == missing
    gone = host_drift("web2", "app", V3, _info(_mount(None, persisted=""), _refs(V2, ("v2", V2)), V3, None, False))
    assert gone["problems"] == ["nothing of the deployment is mounted", "not persisted: no managed fstab line, so a reboot mounts nothing",
                                "app/current names %s, not the desired %s" % (V2[:12], V3[:12]),
                                "the desired image is not in the host repository"]
    other = host_drift("web3", "app", V2, _info(_mount(None, kind="other"), _refs(V2, ("v2", V2)), V2, [], False))
    assert other["problems"][0].startswith("someone else's mount is at the mount point (overlay composefs")
    # the digests agree, but a deploy would change the host (mounted with another verity mode): drift all the same
    modes = host_drift("web4", "app", V2, _info(_mount(V2), _refs(V2, ("v2", V2)), V2, [], False,
                                                ["/srv/app is not mounted and persisted as asked (the mount module would change it)"]))
    assert modes["status"] == "drift" and modes["problems"] == [
        "not as a deploy leaves it: /srv/app is not mounted and persisted as asked (the mount module would change it)"]


def test_desired_defaults_to_the_hosts_current():
    entry = host_drift("web1", "app", None, _info(_mount(V1), _refs(V2, ("v1", V1), ("v2", V2)), V2, []))
    assert entry["desired"] == V2 and entry["status"] == "drift" and entry["missing_objects"] == 0
    assert host_drift("web1", "app", None, _info(_mount(None, persisted=""), _refs(None)))["problems"][0].startswith("no desired digest")


def test_unreachable_failed_and_malformed_hosts():
    assert host_drift("a", "app", V1, dict(unreachable=True, msg="ssh: timeout"))["status"] == "unreachable"
    failed = host_drift("b", "app", V1, dict(failed=True, msg="cannot read the deployment at /r: denied"))
    assert failed["status"] == "error" and failed["message"] == "deployment_info failed: cannot read the deployment at /r: denied"
    assert host_drift("c", "app", V1, None, active=False)["message"].startswith("the host failed or became unreachable")
    assert host_drift("c", "app", V1, dict(skipped=True))["message"] == "deployment_info was skipped"
    bad = host_drift("d", "app", V1, _info(dict(_mount(V1), fstab="nope"), _refs(V1), V1, []))
    assert bad["status"] == "error" and "malformed" in bad["message"]
    bad = host_drift("e", "app", V1, dict(_info(_mount(V1), _refs(V1), V1, []), refs=["x"]))
    assert bad["status"] == "error"
    broken = dict(_info(_mount(V1), _refs(V1), V1, []), image=dict(digest=V1, stored=True, missing_count="2", missing_objects=[]))
    bad = host_drift("f", "app", V1, broken)
    assert bad["status"] == "error" and "missing_count" in bad["message"]


def test_differing_hosts_first_and_counts():
    entries = [host_drift("ok1", "app", V2, _info(_mount(V2), _refs(V2, ("v2", V2)), V2, [], True)),
               host_drift("gone", "app", V2, dict(unreachable=True, msg="x")),
               host_drift("old", "app", V2, _info(_mount(V1), _refs(V2, ("v1", V1), ("v2", V2)), V2, [], False)),
               host_drift("ok2", "app", V2, _info(_mount(V2), _refs(V2, ("v2", V2)), V2, [], True))]
    report = drift_report(entries, "app")
    assert [h["host"] for h in report["hosts"]] == ["old", "gone", "ok1", "ok2"]
    assert report["differing"] == ["old", "gone"]
    assert report["counts"] == dict(drift=1, error=0, unreachable=1, in_sync=2, total=4)
    assert report["title"] == "composefs deployment drift report: app"
    rendered = render_all(report)
    assert json.loads(rendered["json"]) == report
    md = rendered["md"]
    assert md.index("| old |") < md.index("| gone |") < md.index("| ok1 |")
    assert "4 hosts: 1 drift, 0 error, 1 unreachable, 2 in sync." in md
    with pytest.raises(DriftReportError, match="unknown report formats: pdf"):
        render_all(report, ["pdf"])
    with pytest.raises(DriftReportError):
        drift_report(entries, "")


class _Collector(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags = []
        self.text = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)

    def handle_data(self, data):
        self.text.append(data)


def test_hostile_host_strings_are_escaped():
    evil = "<script>alert(1)</script>|`x`[y](z)\r\n*"
    entry = host_drift(evil, "app", V2, _info(dict(_mount(None, kind="other"), top=evil), _refs(V2, ("v2", V2)), V2, []))
    report = drift_report([entry], "app", title="<b>t</b>")
    md = render_markdown(report)
    assert "<script>" not in md and "&lt;script&gt;" in md and "\\|" in md and "\\x0d" in md
    assert md.count("\n") == 7  # title, blank, counts, blank, header, rule, one row: the \r\n did not end the row
    page = render_html(report)
    parser = _Collector()
    parser.feed(page)
    assert "script" not in parser.tags and "b" not in parser.tags
    assert evil in "".join(parser.text)
