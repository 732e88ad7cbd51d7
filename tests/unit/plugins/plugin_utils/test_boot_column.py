"""The fleet report's "boot" column: boot_facts results of each kind, hosts whose boot facts cannot be read, escaping.

The boot facts are made by the real gather code (module_utils/boot/gather.py) from
sources: /run/ostree-booted written by GLib (python3-gi) as ostree-prepare-root does,
a bootc root on disk with the karg naming its image, a raw dump of a plain host.
"""
import copy
import html.parser
import json
import pathlib
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st
from test_verity_report import NO_PYTHON, _Rows, facts, ok
from test_verity_report_hostile import FUZZ, HOSTILE, _assert_markdown_is_inert

from ansible_collections.composefs.fleet.plugins.module_utils.boot.gather import gather
from ansible_collections.composefs.fleet.plugins.module_utils.boot.source import DumpSource, LocalSource
from ansible_collections.composefs.fleet.plugins.module_utils.fsverity.digest import data_digest
from ansible_collections.composefs.fleet.plugins.plugin_utils import boot_column
from ansible_collections.composefs.fleet.plugins.plugin_utils.verity_report import (
    boot_entry,
    fleet_report,
    host_record,
    render_all,
    render_html,
    render_markdown,
)

from glib_helper import write_ostree_booted

FIXTURES = pathlib.Path(__file__).resolve().parents[3] / "fixtures" / "bootc"
POLICY = dict(required_paths=[], required_kernel_features=["fs_verity"])
BEST_EFFORT = {"composefs": ["b", "true"], "composefs.verity": ["b", "false"], "sysroot-ro": ["b", "true"]}
SIGNED = {"composefs": ["b", "true"], "composefs.verity": ["b", "true"],
          "composefs.signed": ["s", "'/etc/ostree/initramfs-root-binding.key'"]}
FCOS_CONF = b"# as Fedora CoreOS ships it\n[composefs]\nenabled = yes\n"
OSTREE_KARG = "root=UUID=x ostree=/ostree/boot.1/fedora/abc/0"


def booted(tmp_path, spec):
    path = tmp_path / "ostree-booted"
    write_ostree_booted(path, spec)
    return path.read_bytes()


def boot_ok(f):
    return dict(changed=False, ansible_facts=dict(composefs_boot=f))


def ostree_facts(tmp_path, spec, conf=FCOS_CONF, raw=False):
    src = DumpSource(files={"/run/ostree-booted": booted(tmp_path, spec), "/usr/lib/ostree/prepare-root.conf": conf})
    out = gather(src, OSTREE_KARG)
    if not raw:
        out["source"] = "module"  # the same facts as the module reads them (LocalSource has kind "module")
    return out


def bootc_facts(tmp_path, optional=True):
    image = b"erofs-placeholder" * 300
    digest = data_digest(image).hex()
    images = tmp_path / "bootc" / "sysroot" / "composefs" / "images"
    images.mkdir(parents=True)
    (images / digest).write_bytes(image)
    state = tmp_path / "bootc" / "sysroot" / "state" / "deploy" / digest
    state.mkdir(parents=True)
    (state / (digest + ".origin")).write_text((FIXTURES / "origin-bls.origin").read_text())
    return gather(LocalSource(str(tmp_path / "bootc")), "composefs=%s%s" % ("?" if optional else "", digest), sysroot="/sysroot"), digest


def plain_facts():
    return gather(DumpSource(), "root=/dev/sda1 ro")


def test_entries_of_each_kind(tmp_path):
    plain = boot_entry(boot_ok(plain_facts()))
    assert plain["status"] == "raw" and plain["kind"] == "none" and plain["level"] == "none"
    assert boot_column.cell_text(plain) == "none"

    fcos = boot_entry(boot_ok(ostree_facts(tmp_path, BEST_EFFORT)))
    assert fcos["status"] == "ok" and (fcos["kind"], fcos["mode"], fcos["decided_by"]) == ("ostree", "yes", "/run/ostree-booted")
    assert (fcos["composefs"], fcos["verity_enforced"], fcos["signed"], fcos["pending"]) == (True, False, False, False)
    assert boot_column.cell_text(fcos) == ("ostree: best-effort; mode yes by /run/ostree-booted; verity not enforced; not signed; "
                                           "digest unknown")

    signed = boot_entry(boot_ok(ostree_facts(tmp_path, SIGNED)))
    assert signed["level"] == "signed" and signed["signed_with"] == "/etc/ostree/initramfs-root-binding.key"
    # the config still says yes: the change is pending until the initramfs says so too
    assert signed["pending"] is True and signed["configured_mode"] == "yes"
    assert boot_column.cell_text(signed).startswith("ostree: signed; mode signed by /run/ostree-booted; verity enforced; signed;")
    assert "pending: configured yes" in boot_column.cell_text(signed)

    bootc, digest = bootc_facts(tmp_path)
    entry = boot_entry(boot_ok(bootc))
    assert (entry["kind"], entry["mode"], entry["decided_by"], entry["level"]) == ("bootc", "yes", "karg", "best-effort")
    assert entry["booted_digest"] == digest and entry["digest_matches"] is True and entry["digest_checked_against"] == "karg"
    assert boot_column.cell_text(entry) == ("bootc: best-effort; mode yes by karg; verity not enforced; not signed; "
                                            "digest %s... (matches the karg)" % digest[:16])


def test_hosts_whose_boot_facts_cannot_be_read():
    unreachable = dict(unreachable=True, msg="Task failed: Failed to connect to the host via ssh: refused")
    # the role does not try boot_facts where verity_facts found the host unreachable: its boot task is skipped
    skipped = dict(skipped=True, skip_reason="Conditional result was False")
    assert boot_column.cell_text(boot_entry(skipped, unreachable)) == "not read: unreachable"
    assert boot_column.cell_text(boot_entry(unreachable, ok(facts()))) == \
        "not read: unreachable: Failed to connect to the host via ssh: refused"
    assert boot_column.cell_text(boot_entry(skipped, ok(facts()))) == "not read: boot_facts was skipped"
    assert boot_column.cell_text(boot_entry(None, ok(facts()))) == "not gathered: no boot_facts result for this host"
    assert boot_column.cell_text(boot_entry(None, None, active=False)) == \
        "not read: the host failed or became unreachable before"
    assert boot_column.cell_text(boot_entry(NO_PYTHON)) == "not read: no python, and the raw fallback is off"
    crashed = boot_entry(dict(failed=True, msg="MODULE FAILURE", module_stderr="Traceback"))
    assert crashed["status"] == "error" and boot_column.cell_text(crashed) == "not read: boot_facts failed: MODULE FAILURE"
    assert boot_entry(dict(changed=False, ansible_facts={}))["message"] == "boot_facts returned no composefs_boot facts"


@pytest.mark.parametrize("mutate, where", [
    (lambda f: f.update(kind=["ostree"]), "kind is a list, not text"),
    (lambda f: f.update(kind="rpm"), "kind is str 'rpm', not one of ostree, bootc, none"),
    (lambda f: f.update(composefs=[1]), "composefs is a list, not a mapping"),
    (lambda f: f["composefs"].update(mode=3), "composefs.mode is int '3', not text"),
    (lambda f: f["composefs"].update(verity_enforced="yes"), "composefs.verity_enforced is str 'yes', not true or false"),
    (lambda f: f.update(errors=["fine", {"a": 1}]), "errors[1] is a mapping, not text"),
    (lambda f: f.update(booted_deployment=7), "booted_deployment is int '7', not text"),
])
def test_malformed_boot_facts_are_that_hosts_boot_error(tmp_path, mutate, where):
    bad = ostree_facts(tmp_path, BEST_EFFORT)
    mutate(bad)
    records = [host_record("good", ok(facts()), boot_result=boot_ok(plain_facts())),
               host_record("bad", ok(facts()), boot_result=boot_ok(bad))]
    report = fleet_report(records, POLICY)
    good, bad_host = report["hosts"]
    assert bad_host["boot"]["status"] == "error" and bad_host["boot"]["message"] == "malformed boot facts: " + where
    # the boot column never changes the verdict
    assert bad_host["verdict"] == good["verdict"] == "fail" and good["boot"]["kind"] == "none"
    assert "not read: malformed boot facts: " in render_markdown(report)


def _fleet(tmp_path):
    bootc, digest = bootc_facts(tmp_path, optional=False)
    fcos = ostree_facts(tmp_path, BEST_EFFORT, raw=True)
    fcos["composefs"].update(image_digest="ab" * 32, image_matches_commit=False)
    fcos["errors"].append("deployment 0123456789ab.0: cannot read the commit")
    return [
        host_record("podman-1", ok(facts()), boot_result=boot_ok(plain_facts())),
        host_record("fcos-1", ok(facts()), boot_result=boot_ok(fcos)),
        host_record("signed-1", ok(facts()), boot_result=boot_ok(ostree_facts(tmp_path, SIGNED))),
        host_record("bootc-1", ok(facts()), boot_result=boot_ok(bootc)),
        host_record("gone", dict(unreachable=True, msg="ssh: connect to host gone port 22: Connection refused"),
                    boot_result=dict(skipped=True)),
    ], digest


def test_report_json_has_the_boot_entries_and_counts(tmp_path):
    records, digest = _fleet(tmp_path)
    report = json.loads(render_all(fleet_report(records, POLICY))["json"])
    boots = dict((h["host"], h["boot"]) for h in report["hosts"])
    assert dict((h, (b["status"], b.get("summary"))) for h, b in boots.items()) == {
        "podman-1": ("raw", "none"), "fcos-1": ("raw", "ostree: best-effort"), "signed-1": ("ok", "ostree: signed"),
        "bootc-1": ("ok", "bootc: enforced"), "gone": ("unreachable", None)}
    assert boots["bootc-1"]["booted_digest"] == digest and boots["bootc-1"]["verity_enforced"] is True
    assert boots["fcos-1"]["digest_matches"] is False and boots["fcos-1"]["digest_checked_against"] == "commit"
    assert report["boot_counts"] == {"bootc: enforced": 1, "none": 1, "not read": 1, "ostree: best-effort": 1, "ostree: signed": 1}


def test_markdown_boot_column_and_notes(tmp_path):
    records, digest = _fleet(tmp_path)
    text = render_markdown(fleet_report(records, POLICY, "fleet"))
    lines = text.splitlines()
    header = "| host | verdict | kernel | fs-verity | boot | path | fs | verity | reason |"
    rows = lines[lines.index(header) + 2:]
    rows = rows[:rows.index("")]
    assert all(len(re.split(r"(?<!\\)\|", row)) == 11 for row in rows), rows
    cells = dict((row.split(" | ")[0][2:], row.split(" | ")[4]) for row in rows if not row.startswith("|  |"))
    assert cells == {
        "podman-1": "none",
        "fcos-1": "ostree: best-effort; mode yes by /run/ostree-booted; verity not enforced; not signed; "
                  "digest abababababababab... (differs from the commit); 1 error",
        "signed-1": "ostree: signed; mode signed by /run/ostree-booted; verity enforced; signed; digest unknown; pending: configured yes",
        "bootc-1": "bootc: enforced; mode verity by karg; verity enforced; not signed; digest %s... (matches the karg)" % digest[:16],
        "gone": "not read: unreachable",
    }
    assert "Boot: 1 bootc: enforced, 1 none, 1 not read, 1 ostree: best-effort, 1 ostree: signed." in text
    notes = lines[lines.index("## Boot") + 2:]
    assert "- fcos-1: booted digest %s" % ("ab" * 32) in notes
    assert "- fcos-1: boot_facts: deployment 0123456789ab.0: cannot read the commit" in notes
    assert "- signed-1: pending: prepare-root.conf says yes, this boot ran signed (regenerate the initramfs and reboot)" in notes
    assert "- bootc-1: booted digest %s" % digest in notes
    _assert_markdown_is_inert(text)


class _BootCells(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.cells = {}
        self.host = None
        self.cell = None
        self.titles = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "tr" and "data-host" in attrs:
            self.host = attrs["data-host"]
        if tag == "td" and attrs.get("class") == "boot":
            self.cell = self.cells[self.host] = dict(attrs, text="")
        elif tag == "td":
            self.cell = None
        if tag == "li" and self.cell is not None and attrs.get("title"):
            self.titles.append((self.host, attrs["title"]))

    def handle_data(self, data):
        if self.cell is not None:
            self.cell["text"] += data


def test_html_boot_cells(tmp_path):
    records, digest = _fleet(tmp_path)
    page = render_html(fleet_report(records, POLICY, "fleet"))
    parser = _BootCells()
    parser.feed(page)
    cells = parser.cells
    assert sorted(cells) == ["bootc-1", "fcos-1", "gone", "podman-1", "signed-1"]
    assert [(cells[h]["data-boot-status"], cells[h].get("data-boot-kind"), cells[h].get("data-boot-level"))
            for h in ("podman-1", "fcos-1", "signed-1", "bootc-1", "gone")] == [
        ("raw", "none", "none"), ("raw", "ostree", "best-effort"), ("ok", "ostree", "signed"), ("ok", "bootc", "enforced"),
        ("unreachable", None, None)]
    assert cells["gone"]["text"] == "not read: unreachable"
    assert cells["bootc-1"]["text"].startswith("bootc: enforcedmode verity by karg")
    # the full digest and the errors are in the tooltips
    assert ("bootc-1", digest) in parser.titles and ("fcos-1", "ab" * 32) in parser.titles
    assert ("fcos-1", "deployment 0123456789ab.0: cannot read the commit") in parser.titles
    assert "<th>boot</th>" in page and 'class="policy boot-counts"' in page


def test_hostile_boot_strings_are_escaped(tmp_path):
    records = []
    for i, hostile in enumerate(HOSTILE):
        f = ostree_facts(tmp_path, BEST_EFFORT)
        f["summary"] = hostile
        f["composefs"].update(decided_by=hostile, mode=hostile[::-1], image_digest=hostile * 3)
        f["errors"] = [hostile]
        records.append(host_record("h%d" % i, ok(facts()), boot_result=boot_ok(f)))
    report = fleet_report(records, POLICY, "fleet")
    text = render_markdown(report)
    assert "\r" not in text and "<script" not in text and "<img" not in text
    _assert_markdown_is_inert(text)
    page = render_html(report)
    parser = _Rows()
    parser.feed(page)
    assert parser.scripts == 0 and parser.external == [] and "<script" not in page and "<img" not in page
    assert len(parser.rows) == len(HOSTILE)
    cells = _BootCells()
    cells.feed(page)
    # the host's strings come back as text, unchanged
    assert all(cells.cells["h%d" % i]["text"].startswith(hostile) for i, hostile in enumerate(HOSTILE)), cells.cells


@FUZZ
@given(st.lists(st.one_of(st.sampled_from(["kind", "composefs", "mode", "decided_by", "signed", "verity_enforced", "summary",
                                           "errors", "booted_deployment", "image_digest", "image_matches_commit", "source"]),
                          st.integers(0, 5)), max_size=3),
       st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=20), st.lists(st.integers(), max_size=2),
                 st.dictionaries(st.text(max_size=5), st.integers(), max_size=2), st.sampled_from(HOSTILE)))
def test_fuzz_boot_column(steps, new):
    from test_verity_report_hostile import _mutate

    base = gather(DumpSource(files={"/usr/lib/ostree/prepare-root.conf": FCOS_CONF}), OSTREE_KARG)
    mutated = _mutate(copy.deepcopy(base), steps, new)
    records = [host_record("good", ok(facts()), boot_result=boot_ok(copy.deepcopy(base))),
               host_record("mutated", ok(facts()), boot_result=boot_ok(mutated)),
               host_record("any", ok(facts()), boot_result=mutated if isinstance(mutated, dict) else None)]
    report = fleet_report(records, POLICY)
    rendered = render_all(report)
    assert [h["verdict"] for h in report["hosts"]] == ["fail", "fail", "fail"]
    assert report["hosts"][0]["boot"]["status"] == "raw"
    assert json.loads(rendered["json"])["counts"]["total"] == 3
    _assert_markdown_is_inert(rendered["md"])


def test_boot_facts_from_the_verity_facts_result(tmp_path):
    """verity_facts with boot: true carries the boot facts, or says why it could not read them."""
    both = ok(facts())
    both["ansible_facts"]["composefs_boot"] = bootc_facts(tmp_path)[0]
    entry = boot_entry(both, both)
    assert entry["status"] == "ok", entry
    missing = ok(facts())
    missing["boot_error"] = "PermissionError: denied"
    entry = boot_entry(missing, missing)
    assert entry["status"] == "error" and entry["message"] == "boot facts not read: PermissionError: denied"
