"""Hostile and malformed host data in the fleet report: one bad host never aborts the report.

Each host's facts, raw output and policy come from the host (or its variables); a host
whose data the report cannot use becomes ``error`` with the reason, and every other host
is still reported. report.md is checked with a real Markdown renderer (markdown-it-py,
CommonMark with GFM tables): no tag or link from host data survives.
"""
import copy
import json
import os
import re
import subprocess

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from markdown_it import MarkdownIt
from test_verity_report import NO_PYTHON, RAW_OUTPUT, RAW_PATHS, facts, ok, raw_ok

from ansible_collections.composefs.fleet.plugins.plugin_utils.verity_report import (
    RAW_NOTE,
    RawOutputError,
    VerityReportError,
    fleet_report,
    host_record,
    parse_raw,
    raw_script,
    render_all,
    render_markdown,
)

EXAMPLES = int(os.environ.get("CFSF_HYPOTHESIS_EXAMPLES", "200"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
POLICY = dict(required_paths=[], required_kernel_features=["fs_verity"])


def _good():
    return host_record("good", ok(facts()))


def _verdicts(report):
    return dict((h["host"], (h["verdict"], h["message"])) for h in report["hosts"])


def _assert_one_bad_host(bad_record, reason):
    report = fleet_report([_good(), bad_record, host_record("raw", raw_ok())], POLICY)
    rendered = render_all(report)
    verdicts = _verdicts(report)
    assert verdicts["good"][0] == "fail" and verdicts["raw"] == ("unknown", RAW_NOTE), verdicts
    verdict, message = verdicts[bad_record["host"]]
    assert verdict == "error" and reason in message, message
    assert report["counts"]["error"] == 1 and report["counts"]["total"] == 3
    assert json.loads(rendered["json"])["counts"]["total"] == 3
    assert "| bad | error (" in rendered["md"]
    return message


# ---- malformed facts from a host (issue 9, item 15) ----

def test_path_entry_without_path():
    f = facts()
    del f["paths"][0]["path"]
    message = _assert_one_bad_host(host_record("bad", ok(f)), "malformed verity facts")
    assert message == "malformed verity facts: paths[0].path is missing, not text"


def test_kernel_is_a_list():
    f = facts()
    f["kernel"] = [1]
    message = _assert_one_bad_host(host_record("bad", ok(f)), "malformed verity facts")
    assert message == "malformed verity facts: kernel is a list '[1]', not a mapping"


@pytest.mark.parametrize("mutate, where", [
    (lambda f: f.update(paths="/srv"), "paths is str"),
    (lambda f: f["paths"].append(7), "paths[3] is int"),
    (lambda f: f["paths"][1].update(reasons="no"), "paths[1].reasons"),
    (lambda f: f["paths"][1].update(fstype=["xfs"]), "paths[1].fstype"),
    (lambda f: f.update(missing_paths=[None]), "missing_paths"),
    (lambda f: f.update(tools=dict(podman="5.0")), "tools.podman"),
    (lambda f: f["kernel"].update(fs_verity_evidence="x"), "kernel.fs_verity_evidence"),
    (lambda f: f["kernel"].update(fs_verity=[]), "kernel.fs_verity is a list '[]', not true, false or null"),
    (lambda f: f["kernel"]["overlay"].update(basis=3), "kernel.overlay.basis"),
    (lambda f: f.update(root=[]), "root"),
    (lambda f: f.update(warning={"a": 1}), "warning"),
])
def test_other_malformed_facts(mutate, where):
    f = facts()
    mutate(f)
    message = _assert_one_bad_host(host_record("bad", ok(f)), "malformed verity facts")
    assert where in message


def test_bad_host_policy_is_that_hosts_error():
    message = _assert_one_bad_host(host_record("bad", ok(facts()), policy=dict(required_path=["/srv"])), "unknown key")
    assert message == ("unknown key 'required_path' in the host's own policy (did you mean required_paths?); "
                       "known keys: required_kernel_features, required_paths")


# ---- the policy of the report itself (issue 10, item 6) ----

@pytest.mark.parametrize("policy, message", [
    (dict(required_path=["/srv"]), "unknown key 'required_path' in the policy (did you mean required_paths?)"),
    (dict(required_kernel_feature=["fs_verity"]), "(did you mean required_kernel_features?)"),
    (dict(required_kernel_features=["fs_verty"]), "unknown kernel feature 'fs_verty' (did you mean fs_verity?)"),
    (dict(required_paths="/srv"), "required_paths must be a list of text, not str '/srv'"),
    (["required_paths"], "the policy must be a mapping"),
])
def test_report_policy_is_checked(policy, message):
    with pytest.raises(VerityReportError) as exc:
        fleet_report([_good()], policy)
    assert message in str(exc.value)


# ---- malformed raw output ----

def _raw_host(stdout):
    try:
        return host_record("bad", raw_ok(stdout, None))
    except RawOutputError as exc:
        # what the verity_facts action plugin returns for it
        return host_record("bad", dict(failed=True, msg="cannot read the raw facts: %s" % exc))


@pytest.mark.parametrize("change, reason", [
    (lambda out: out.replace("@@path 1 ", "@@path x "), "malformed marker '@@path x"),
    (lambda out: out.replace("devices 0", "devices many"), "malformed loop device count 'devices many'"),
    (lambda out: out.replace("dev 45", "dev 4x5"), "malformed device number of path 1: '4x5'"),
    (lambda out: out.replace("@@path 2 2f6e6f7065", "@@path 2 zz"), "the path is not hex"),
    (lambda out: out.replace("real 2f", "real 2q", 1), "is not hex"),
    (lambda out: out.replace("@@mountinfo\n", "@@mountinfo\n1 2 3\n"), "malformed /proc/self/mountinfo"),
    (lambda out: out.replace("30 22 7:0", "30 22 7:99999999999999999999"), "malformed device numbers"),
])
def test_malformed_raw_output(change, reason):
    out = change(RAW_OUTPUT)
    assert out != RAW_OUTPUT
    with pytest.raises(RawOutputError):
        parse_raw(out, None)
    message = _assert_one_bad_host(_raw_host(out), "verity_facts failed: cannot read the raw facts")
    assert reason in message, message


def test_raw_output_over_a_pty_and_with_stderr_noise():
    """Over SSH with a pty, lines end in \\r\\n and stderr is mixed in: same facts."""
    noisy = RAW_OUTPUT.replace("dev 45\n", "dev 45\nstat: cannot statx: Permission denied\n").replace("\n", "\r\n")
    assert parse_raw(noisy, RAW_PATHS) == parse_raw(RAW_OUTPUT, RAW_PATHS)


def test_raw_names_with_newlines_and_markers(tmp_path):
    """A path that resolves to a name holding a newline and a marker: parsed right, nothing injected."""
    target = tmp_path / "evil\n@@end\n@@path 9 2f\nreal 2f0a"
    target.mkdir()
    link = tmp_path / "store"
    link.symlink_to(target)
    paths = [str(link), str(tmp_path / "missing\nname")]
    proc = subprocess.run(["/bin/sh", "-c", raw_script(paths)], capture_output=True, text=True, check=False)
    assert "@@end" in proc.stdout, proc.stderr
    f = parse_raw(proc.stdout, paths)
    assert [e["real_path"] for e in f["paths"]] == [str(target)]
    assert f["missing_paths"] == [paths[1]]
    assert "warning" not in f
    # the paths as named in the output are the same
    assert parse_raw(proc.stdout)["missing_paths"] == [paths[1]]


# ---- fuzz: the raw parser ----

MARKERS = ["release", "config_tried", "config", "sysfs", "filesystems", "modules_loaded", "modules_dir", "overlay_parameters",
           "loop", "ostree_booted", "mountinfo", "device", "ext4", "f2fs", "path", "tool", "end"]
_text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=30)
_line = st.one_of(
    _text,
    st.sampled_from(["devices 3", "devices x", "control", "@missing", "real 2f0a", "real zz", "dev 12", "dev -1", "file overlay.ko",
                     "builtin kernel/fs/erofs/erofs.ko", "CONFIG_FS_VERITY=y", "verity", "metacopy=N", "nodev\toverlay",
                     "22 1 254:1 / / rw - ext4 /dev/vda1 rw", "1 2 x:y / / - ", "30 22 7:0 /a /srv\\040x rw - btrfs /dev/loop0 rw"]),
    st.from_regex(r"\A[0-9a-f]{0,80}\Z"),
)
_marker = st.tuples(st.sampled_from(MARKERS), st.one_of(_text, st.sampled_from(["0 2f", "1 2f7372762f6274726673", "x", "254:1", "7:0 /dev/loop0"])))
_section = st.tuples(_marker, st.lists(_line, max_size=6))


def _join(sections, sep):
    out = []
    for (name, args), lines in sections:
        out.append(("@@%s %s" % (name, args)).rstrip(" "))
        out.extend(lines)
    return sep.join(out)


@FUZZ
@given(st.lists(_section, max_size=12), st.sampled_from(["\n", "\r\n", "\r"]), st.booleans())
def test_fuzz_parse_raw(sections, sep, known_paths):
    stdout = _join(sections, sep)
    try:
        f = parse_raw(stdout, RAW_PATHS if known_paths else None)
    except RawOutputError:
        return
    json.dumps(f)
    assert f["source"] == "raw"
    report = fleet_report([_good(), host_record("fuzzed", ok(f))], POLICY)
    render_all(report)
    assert [h["host"] for h in report["hosts"]] == ["good", "fuzzed"]


@FUZZ
@given(st.text(max_size=400))
def test_fuzz_parse_raw_any_text(stdout):
    try:
        parse_raw(stdout)
    except RawOutputError:
        pass


# ---- fuzz: the renderer, with any JSON as a host's facts (or a mutated good one) ----

_json = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), _text),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(_text, inner, max_size=4)),
    max_leaves=12,
)
_KEYS = ["kernel", "paths", "missing_paths", "tools", "root", "warning", "note", "source", "path", "fstype", "verity", "reason",
         "reasons", "release", "fs_verity", "fs_verity_evidence", "overlay", "basis", "version", "device", "mountpoint"]


def _mutate(value, steps, new):
    """``value`` with the part reached by ``steps`` (keys or list positions, taken modulo) replaced by ``new``."""
    if not steps or not isinstance(value, (dict, list)) or not value:
        return new
    step, rest = steps[0], steps[1:]
    if isinstance(value, dict):
        key = step if isinstance(step, str) and step in value else sorted(value)[hash(str(step)) % len(value)]
        value[key] = _mutate(value[key], rest, new)
    else:
        index = (step if isinstance(step, int) else len(str(step))) % len(value)
        value[index] = _mutate(value[index], rest, new)
    return value


_FACTS = facts()
_hostile_text = st.sampled_from(["<script>alert(1)</script>", "<img src=x onerror=alert(1)>", "[x](javascript:alert(1))",
                                 "a\rb|c\nd", "`code`", "&lt;b&gt;", "<http://evil.example/>", "![i](x)"])


@FUZZ
@given(st.lists(st.one_of(st.sampled_from(_KEYS), st.integers(0, 5)), max_size=4), st.one_of(_json, _hostile_text),
       st.one_of(_json, st.just(None)))
def test_fuzz_renderer(steps, new, other_facts):
    mutated = _mutate(copy.deepcopy(_FACTS), steps, new)
    records = [_good(), host_record("mutated", ok(mutated)), host_record("any", ok(other_facts)),
               host_record("result", other_facts if isinstance(other_facts, dict) else None)]
    report = fleet_report(records, POLICY)
    rendered = render_all(report)
    assert [h["host"] for h in report["hosts"]] == ["good", "mutated", "any", "result"]
    assert report["hosts"][0]["verdict"] == "fail"
    assert json.loads(rendered["json"])["counts"]["total"] == 4
    _assert_markdown_is_inert(rendered["md"])


# ---- report.md through a real Markdown renderer (issue 9, item 16) ----

HOSTILE = [
    "<script>alert(1)</script>",
    "<img src=x onerror=alert(1)>",
    "[click](javascript:alert(1))",
    "<javascript:alert(1)>",
    "![x](javascript:alert(1))",
    "`code` **bold** _it_ ~~s~~",
    "&lt;script&gt; &#60;b&#62;",
    "line\rbreak|pipe\nnew",
    "[ref]: javascript:alert(1)",
    "\\<b>",
]


def _markdown_html(text):
    return MarkdownIt("commonmark").enable("table").render(text)


def _assert_markdown_is_inert(text):
    page = _markdown_html(text)
    # the only tags are those of the report's own structure
    tags = set(re.findall(r"<\s*/?\s*([a-zA-Z][a-zA-Z0-9]*)", page))
    assert tags <= {"h1", "h2", "p", "table", "thead", "tbody", "tr", "th", "td", "ul", "li"}, tags
    assert "javascript:" not in re.sub(r">[^<]*<", "><", page), page  # not in any attribute
    assert "href" not in page and "src=" not in re.sub(r">[^<]*<", "><", page)
    # no table row split: every row has the 9 cells of the header
    for row in re.findall(r"<tr>(.*?)</tr>", page, re.S):
        assert len(re.findall(r"<t[dh][ >]", row)) == 9, row
    return page


def test_markdown_report_is_inert_in_a_markdown_renderer():
    f = facts()
    for entry, hostile in zip(f["paths"], HOSTILE):
        entry["path"] = entry["path"] + hostile
        entry["reason"] = hostile
        entry["fstype"] = hostile[::-1]
    f["kernel"]["release"] = HOSTILE[1]
    f["kernel"]["fs_verity_evidence"] = HOSTILE[3:6]
    f["warning"] = HOSTILE[7]
    records = [host_record(name, ok(copy.deepcopy(f))) for name in HOSTILE]
    records.append(host_record("gone", dict(unreachable=True, msg=HOSTILE[0] + HOSTILE[2])))
    records.append(host_record("nopy", NO_PYTHON))
    report = fleet_report(records, dict(required_paths=[HOSTILE[2], "/srv/verity" + HOSTILE[0]], required_kernel_features=["fs_verity"]),
                          title="fleet " + HOSTILE[1])
    text = render_markdown(report)
    assert "\r" not in text and "<script" not in text and "<img" not in text
    page = _assert_markdown_is_inert(text)
    # the host data is all there, as text
    for hostile in ("<script>alert(1)</script>", "<img src=x onerror=alert(1)>", "[click](javascript:alert(1))", "`code` **bold**"):
        assert hostile.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;") in page, hostile
    assert "line\\x0dbreak|pipe\\x0anew" in page


def test_markdown_escapes_each_character():
    from ansible_collections.composefs.fleet.plugins.plugin_utils.verity_report import _md
    assert _md("<a href='x'>&</a>") == "&lt;a href='x'&gt;&amp;&lt;/a&gt;"
    assert _md("`[x](y)` |*_#~!\\") == "\\`\\[x\\](y)\\` \\|\\*\\_\\#\\~\\!\\\\"
    assert _md("CONFIG_FS_VERITY _it_ a__b") == "CONFIG_FS_VERITY \\_it\\_ a\\_\\_b"
    assert _md("a\rb\nc\td\x00\x7f\x85\u2028") == "a\\x0db\\x0ac\\x09d\\x00\\x7f\\x85\\u2028"
    assert _md(None) == "" and _md(3) == "3"
