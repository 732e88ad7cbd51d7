"""Controller-side storage.conf logic (plugins/plugin_utils/storage_conf.py) on vendor-shaped files.

The fixtures are shaped like the storage.conf files Debian (bookworm), Fedora (41) and
RHEL (9) ship: the same tables, inline or table pull_options, commented-out defaults.
"""
import difflib
import hashlib
import os
import tomllib

import pytest
import tomlkit
from hypothesis import given, settings as hsettings, strategies as st

from ansible_collections.composefs.fleet.plugins.module_utils.storage_conf import toml_like_problem
from ansible_collections.composefs.fleet.plugins.plugin_utils import storage_conf as sc

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")
VENDORS = ["debian-bookworm.conf", "fedora-41.conf", "rhel-9.conf"]
MAIN = "/etc/containers/storage.conf"
VENDOR = "/usr/share/containers/storage.conf"
DROPIN = "/etc/containers/storage.rootful.conf.d/50-composefs-fleet.conf"


def fixture(name):
    with open(os.path.join(FIXTURES, name), encoding="utf-8") as f:
        return f.read()


def rec(path, text, requested=None, name=None):
    r = dict(requested=requested or path, path=path.replace("~", "/root"), exists=text is not None, content=text,
             sha256=hashlib.sha256(text.encode()).hexdigest() if text is not None else None, error=None)
    if name:
        r["name"] = name
    return r


def probe(files, podman="5.4.2", dropins=None, users=None, mk=None, kernel=None, euid=0, env=None):
    """A storage_conf_info answer: ``files`` maps path -> text (None: absent)."""
    recs = [rec(p, t) for p, t in files.items()]
    for must in (MAIN, VENDOR, "~/.config/containers/storage.conf", DROPIN):
        if must not in files:
            recs.append(rec(must, None))
    dirs = []
    for directory, entries in (dropins or {}).items():
        dirs.append(dict(requested=directory, path=directory, exists=True,
                         files=[rec("%s/%s" % (directory, n), t, name=n) for n, t in sorted(entries.items())]))
    return dict(files=recs, dropin_dirs=dirs, podman=dict(version=podman) if podman else None,
                rootless_users=users or [], mkcomposefs=mk, kernel=kernel or {}, euid=euid,
                env=env or {"HOME": "/root"}, filesystems=[])


def params(**kw):
    base = dict(use_composefs=None, pull_options=None, overlay_options=None, driver=None, graphroot=None, runroot=None,
                scope=None, path=None, layout="auto", dropin_name="50-composefs-fleet.conf", backup=False,
                mode=None, owner=None, group=None, follow=True, podman_version_check=True)
    base.update(kw)
    return base


def changed_lines(before, after):
    return [line for line in difflib.ndiff(before.splitlines(), after.splitlines()) if line[:2] in ("- ", "+ ")]


def comments(text):
    return [line for line in text.splitlines() if line.lstrip().startswith("#")]


# ---------------------------------------------------------------- vendor files, Podman 5

@pytest.mark.parametrize("vendor", VENDORS)
def test_enable_composefs_edits_in_place_and_keeps_comments(vendor):
    text = fixture(vendor)
    res = sc.plan(params(use_composefs=True), probe({MAIN: text}))
    assert res["changed"] and res["layout"] == "file" and res["path"] == MAIN
    after = res["content"]
    assert comments(after) == comments(text)
    parsed = tomllib.loads(after)
    assert parsed["storage"]["options"]["overlay"]["use_composefs"] == "true"
    assert parsed["storage"]["options"]["pull_options"]["enable_partial_images"] == "true"
    # Everything else parses exactly as before.
    before = tomllib.loads(text)
    for table in (parsed, before):
        table["storage"]["options"]["overlay"].pop("use_composefs", None)
        table["storage"]["options"]["pull_options"].pop("enable_partial_images", None)
    assert parsed == before
    assert res["diff"][0]["before"] == text and res["diff"][0]["after"] == after
    assert res["effective"]["storage.options.overlay.use_composefs"] == dict(value="true", source=MAIN)


@pytest.mark.parametrize("vendor", VENDORS)
def test_idempotent(vendor):
    first = sc.plan(params(use_composefs=True), probe({MAIN: fixture(vendor)}))
    second = sc.plan(params(use_composefs=True), probe({MAIN: first["content"]}))
    assert not second["changed"] and second["changes"] == []
    assert second["content"] == first["content"]


@pytest.mark.parametrize("vendor", ["debian-bookworm.conf", "rhel-9.conf"])
def test_inline_pull_options_stay_inline(vendor):
    text = fixture(vendor)
    res = sc.plan(params(use_composefs=True, pull_options=dict(use_hard_links=True, convert_images=False)), probe({MAIN: text}))
    diff = changed_lines(text, res["content"])
    assert diff == [
        '- pull_options = {enable_partial_images = "false", use_hard_links = "false", ostree_repos=""}',
        '+ pull_options = {enable_partial_images = "true", use_hard_links = "true", ostree_repos="", convert_images = "false"}',
        '+ use_composefs = "true"',
    ]
    assert "[storage.options.pull_options]" not in res["content"]


def test_table_pull_options_stay_a_table_and_land_after_commented_defaults():
    text = fixture("fedora-41.conf")
    res = sc.plan(params(use_composefs=True, pull_options=dict(use_hard_links="TRUE", ostree_repos="/ostree/repo")),
                  probe({MAIN: text}))
    after = res["content"]
    assert "pull_options = {" not in after
    lines = after.splitlines()
    for commented, new in (('# use_hard_links = "false"', 'use_hard_links = "true"'),
                           ('# ostree_repos=""', 'ostree_repos = "/ostree/repo"'),
                           ('# use_composefs = "false"', 'use_composefs = "true"')):
        assert lines[lines.index(commented) + 1] == new
    # enable_partial_images was already "true": not a change.
    assert [c["key"] for c in res["changes"]] == [
        "storage.options.overlay.use_composefs",
        "storage.options.pull_options.use_hard_links",
        "storage.options.pull_options.ostree_repos",
    ]


def test_new_keys_go_before_sub_tables_and_after_last_key():
    text = '[storage]\ndriver = "overlay"\n\n# about options\n[storage.options]\nsize = ""\n'
    res = sc.plan(params(graphroot="/srv/storage", use_composefs=True), probe({MAIN: text}))
    parsed = tomllib.loads(res["content"])
    assert parsed["storage"]["graphroot"] == "/srv/storage"
    assert res["content"].startswith('[storage]\ndriver = "overlay"\ngraphroot = "/srv/storage"\n')


def test_dotted_keys_are_edited_where_they_are():
    text = '[storage]\ndriver = "overlay"\n[storage.options]\npull_options.enable_partial_images = "false"\n'
    res = sc.plan(params(use_composefs=True), probe({MAIN: text}))
    assert 'pull_options.enable_partial_images = "true"' in res["content"]
    assert tomllib.loads(res["content"])["storage"]["options"]["overlay"]["use_composefs"] == "true"


# ---------------------------------------------------------------- strings, booleans, typos

def test_toml_boolean_is_replaced_by_a_string():
    text = '[storage]\ndriver = "overlay"\n[storage.options.overlay]\nuse_composefs = true  # keep me\n'
    res = sc.plan(params(use_composefs=True, pull_options=dict(enable_partial_images=True)), probe({MAIN: text}))
    assert res["changes"][0] == dict(key="storage.options.overlay.use_composefs", before=True, after="true")
    assert 'use_composefs = "true"  # keep me' in res["content"]


def test_string_value_equal_is_no_change_even_with_other_spelling_in_params():
    text = '[storage.options.overlay]\nuse_composefs = "true"\n[storage.options.pull_options]\nenable_partial_images = "true"\n'
    res = sc.plan(params(use_composefs=True, pull_options=dict(enable_partial_images="True")), probe({MAIN: text}))
    assert not res["changed"]


def test_booleans_elsewhere_are_reported_as_fatal_for_podman():
    text = '[storage.options.pull_options]\nuse_hard_links = true\n'
    res = sc.plan(params(use_composefs=True), probe({MAIN: text}))
    assert any("use_hard_links is a TOML bool" in w and "whole file" in w for w in res["warnings"])


@pytest.mark.parametrize("bad", ["yes", "on", 1, "enabled"])
def test_non_boolean_values_for_boolean_keys_are_errors(bad):
    with pytest.raises(sc.StorageConfError, match="must be a boolean"):
        sc.plan(params(pull_options=dict(use_hard_links=bad)), probe({MAIN: fixture("rhel-9.conf")}))


def test_typo_in_pull_options_is_an_error_with_a_hint():
    with pytest.raises(sc.StorageConfError) as err:
        sc.plan(params(pull_options=dict(enable_partial_image=True)), probe({MAIN: fixture("fedora-41.conf")}))
    assert "enable_partial_image" in str(err.value) and "did you mean enable_partial_images" in str(err.value)


def test_typo_in_overlay_options_is_an_error():
    with pytest.raises(sc.StorageConfError, match="did you mean mountopt"):
        sc.plan(params(overlay_options=dict(mountopts="nodev")), probe({MAIN: fixture("fedora-41.conf")}))


def test_use_composefs_in_overlay_options_is_refused():
    with pytest.raises(sc.StorageConfError, match="use_composefs option"):
        sc.plan(params(overlay_options=dict(use_composefs=True)), probe({MAIN: fixture("fedora-41.conf")}))


def test_unknown_keys_already_in_the_file_are_warned_about():
    text = '[storage.options.pull_options]\nenable_partial_imagess = "true"\n'
    res = sc.plan(params(use_composefs=True), probe({MAIN: text}))
    assert any("ignores unknown key storage.options.pull_options.enable_partial_imagess" in w for w in res["warnings"])


def test_use_composefs_under_storage_options_is_flagged_as_ignored():
    text = '[storage]\ndriver = "overlay"\n[storage.options]\nuse_composefs = "true"\n'
    res = sc.plan(params(pull_options=dict(use_hard_links=True)), probe({MAIN: text}))
    assert any("under [storage.options], where containers-storage ignores it" in w for w in res["warnings"])
    assert not res["composefs_enabled"]


def test_overlay_options_are_written_as_strings():
    res = sc.plan(params(overlay_options=dict(skip_mount_home=True, inodes=1000, mountopt="nodev,metacopy=on")),
                  probe({MAIN: fixture("debian-bookworm.conf")}))
    overlay = tomllib.loads(res["content"])["storage"]["options"]["overlay"]
    assert overlay["skip_mount_home"] == "true" and overlay["inodes"] == "1000" and overlay["mountopt"] == "nodev,metacopy=on"


# ---------------------------------------------------------------- enable_partial_images

def test_partial_images_follow_composefs_unless_given():
    res = sc.plan(params(use_composefs=True), probe({MAIN: fixture("rhel-9.conf")}))
    assert res["settings"]["storage.options.pull_options.enable_partial_images"] == "true"
    assert any("enable_partial_images is managed" in n for n in res["notes"])


def test_partial_images_explicitly_off_warns_composefs_does_nothing():
    res = sc.plan(params(use_composefs=True, pull_options=dict(enable_partial_images=False)),
                  probe({MAIN: fixture("rhel-9.conf")}))
    assert any("Podman pulls no layer as composefs" in w for w in res["warnings"])


def test_composefs_off_does_not_touch_partial_images():
    res = sc.plan(params(use_composefs=False), probe({MAIN: fixture("rhel-9.conf")}))
    assert list(res["settings"]) == ["storage.options.overlay.use_composefs"]


# ---------------------------------------------------------------- bad TOML

@pytest.mark.parametrize("bad", [
    '[storage\ndriver = "overlay"\n',
    '[storage]\ndriver = "overlay"\ndriver = "vfs"\n',
    '[storage]\ndriver = overlay\n',
])
def test_bad_toml_is_an_error_naming_file_and_problem(bad):
    with pytest.raises(sc.StorageConfError) as err:
        sc.plan(params(use_composefs=True), probe({MAIN: bad}))
    msg = str(err.value)
    assert msg.startswith(MAIN + " is not valid TOML (") and "left untouched" in msg


def test_bad_vendor_file_when_seeding_is_an_error():
    with pytest.raises(sc.StorageConfError, match=VENDOR + " is not valid TOML"):
        sc.plan(params(use_composefs=True), probe({MAIN: None, VENDOR: "[storage\n"}))


def test_unreadable_target_is_an_error():
    p = probe({MAIN: "x"})
    for r in p["files"]:
        if r["path"] == MAIN:
            r.update(content=None, error="/etc/containers/storage.conf is not UTF-8 text")
    with pytest.raises(sc.StorageConfError, match="cannot edit /etc/containers/storage.conf: .*not UTF-8"):
        sc.plan(params(use_composefs=True), p)


# ---------------------------------------------------------------- creating the file

def test_missing_main_file_is_created_from_the_vendor_file():
    vendor = fixture("fedora-41.conf")
    res = sc.plan(params(use_composefs=True), probe({MAIN: None, VENDOR: vendor}))
    assert res["created"] and res["changed"] and res["expected_sha256"] == "absent"
    assert res["content"].startswith("# Copied from %s by composefs.fleet.storage_conf" % VENDOR)
    assert comments(vendor) == comments(res["content"])[1:]
    assert res["diff"][0]["before"] == "" and res["diff"][0]["before_header"].endswith("(absent)")


def test_missing_main_file_and_vendor_gives_a_minimal_file():
    res = sc.plan(params(use_composefs=True), probe({MAIN: None, VENDOR: None}))
    parsed = tomllib.loads(res["content"])
    assert parsed["storage"]["driver"] == "overlay"
    assert parsed["storage"]["options"]["overlay"]["use_composefs"] == "true"
    assert any("created a minimal storage.conf" in w for w in res["warnings"])


def test_nothing_to_set_creates_nothing():
    res = sc.plan(params(), probe({MAIN: None, VENDOR: fixture("fedora-41.conf")}))
    assert not res["changed"]


# ---------------------------------------------------------------- Podman versions and placement

def test_podman_5_auto_is_the_full_file():
    res = sc.plan(params(use_composefs=True), probe({MAIN: fixture("fedora-41.conf")}, podman="5.8.0"))
    assert (res["layout"], res["path"], res["podman_reads_dropins"]) == ("file", MAIN, False)


def test_podman_6_auto_is_a_rootful_dropin_with_only_managed_keys():
    vendor = fixture("fedora-41.conf")
    res = sc.plan(params(use_composefs=True), probe({VENDOR: vendor}, podman="6.0.0"))
    assert (res["layout"], res["path"], res["created"]) == ("dropin", DROPIN, True)
    assert tomllib.loads(res["content"]) == {"storage": {"options": {
        "overlay": {"use_composefs": "true"}, "pull_options": {"enable_partial_images": "true"}}}}
    assert res["content"].startswith("# containers-storage drop-in")
    assert "[storage]\n" not in res["content"] and "[storage.options]\n" not in res["content"]
    assert res["effective"]["storage.options.overlay.use_composefs"]["source"] == DROPIN


def test_podman_6_dropin_existing_file_is_edited_in_place():
    existing = "# my notes\n[storage.options.overlay]\nuse_composefs = \"false\"  # off for now\n"
    res = sc.plan(params(use_composefs=True), probe({VENDOR: fixture("rhel-9.conf"), DROPIN: existing}, podman="6.1.0",
                                                    dropins={"/etc/containers/storage.rootful.conf.d":
                                                             {"50-composefs-fleet.conf": existing}}))
    assert res["content"].startswith("# my notes\n")
    assert 'use_composefs = "true"  # off for now' in res["content"]


def test_podman_6_later_dropin_override_is_reported():
    res = sc.plan(params(use_composefs=True), probe(
        {VENDOR: fixture("fedora-41.conf")}, podman="6.0.0",
        dropins={"/etc/containers/storage.conf.d": {"99-local.conf": '[storage.options.overlay]\nuse_composefs = "false"\n'}}))
    assert any("is overridden: Podman will use 'false' from /etc/containers/storage.conf.d/99-local.conf" in w
               for w in res["warnings"])
    assert not res["composefs_enabled"]


def test_podman_6_pull_options_merge_across_files():
    vendor_dropin = {"10-vendor.conf": '[storage.options.pull_options]\nuse_hard_links = "true"\n'}
    res = sc.plan(params(use_composefs=True), probe(
        {VENDOR: fixture("rhel-9.conf")}, podman="6.0.0", dropins={"/usr/share/containers/storage.conf.d": vendor_dropin}))
    eff = res["effective"]
    assert eff["storage.options.pull_options.enable_partial_images"] == dict(value="true", source=DROPIN)
    assert not [w for w in res["warnings"] if "overridden" in w]


def test_podman_6_file_mode_with_rootless_users_warns():
    p = probe({MAIN: fixture("fedora-41.conf")}, podman="6.0.0", users=["alice", "bob"])
    res = sc.plan(params(use_composefs=True, layout="file"), p)
    sc.host_checks(res, p, None)
    assert res["path"] == MAIN
    assert any("rootless Podman users (alice, bob) read /etc/containers/storage.conf" in w
               and "not supported in user namespaces" in w for w in res["warnings"])


def test_podman_6_dropin_with_rootless_users_is_quiet_unless_main_file_enables_composefs():
    p = probe({VENDOR: fixture("fedora-41.conf")}, podman="6.0.0", users=["alice"])
    res = sc.host_checks(sc.plan(params(use_composefs=True), p), p, None)
    assert not [w for w in res["warnings"] if "rootless" in w]
    main = fixture("fedora-41.conf").replace('# use_composefs = "false"', 'use_composefs = "true"')
    p = probe({MAIN: main, VENDOR: fixture("fedora-41.conf")}, podman="6.0.0", users=["alice"])
    res = sc.host_checks(sc.plan(params(use_composefs=True), p), p, None)
    assert any("rootless" in w and MAIN in w for w in res["warnings"])


def test_podman_5_rootless_users_get_a_note_not_a_warning():
    p = probe({MAIN: fixture("fedora-41.conf")}, podman="5.4.2", users=["alice"])
    res = sc.host_checks(sc.plan(params(use_composefs=True), p), p, None)
    assert not [w for w in res["warnings"] if "rootless" in w]
    assert any("rootless Podman users (alice)" in n and "but not use_composefs" in n for n in res["notes"])


def test_podman_6_root_home_config_shadows_etc():
    p = probe({MAIN: fixture("fedora-41.conf"), "~/.config/containers/storage.conf": "[storage]\ndriver = \"overlay\"\n"},
              podman="6.0.0")
    res = sc.plan(params(use_composefs=True, layout="file"), p)
    assert any("/root/.config/containers/storage.conf exists, and Podman >= 6 reads it instead" in w for w in res["warnings"])


def test_dropin_on_podman_5_is_an_error():
    with pytest.raises(sc.StorageConfError, match="layout=dropin needs Podman >= 6.0.0"):
        sc.plan(params(use_composefs=True, layout="dropin"), probe({MAIN: fixture("fedora-41.conf")}, podman="5.4.2"))


def test_bad_dropin_name():
    with pytest.raises(sc.StorageConfError, match="must be a plain file name ending in .conf"):
        sc.plan(params(use_composefs=True, dropin_name="composefs"), probe({VENDOR: ""}, podman="6.0.0"))


def test_podman_4_is_too_old_for_composefs():
    with pytest.raises(sc.StorageConfError) as err:
        sc.plan(params(use_composefs=True), probe({MAIN: fixture("debian-bookworm.conf")}, podman="4.3.1"))
    msg = str(err.value)
    assert "Podman 4.3.1 on this host is too old for composefs" in msg and "5.0.0" in msg and "left untouched" in msg


def test_podman_4_composefs_off_adds_no_unknown_key():
    res = sc.plan(params(use_composefs=False), probe({MAIN: fixture("debian-bookworm.conf")}, podman="4.3.1"))
    assert not res["changed"]
    assert any("does not know use_composefs" in n for n in res["notes"])


def test_pull_option_newer_than_podman_warns():
    res = sc.plan(params(pull_options=dict(insecure_allow_unpredictable_image_contents=False)),
                  probe({MAIN: fixture("fedora-41.conf")}, podman="5.3.1"))
    assert any("insecure_allow_unpredictable_image_contents is read only by Podman >= 5.4.0" in w for w in res["warnings"])


def test_no_podman_assumes_full_file_and_says_so():
    res = sc.plan(params(use_composefs=True), probe({MAIN: fixture("fedora-41.conf")}, podman=None))
    assert res["layout"] == "file" and res["podman_version"] is None
    assert any("Podman was not found" in w for w in res["warnings"])


def test_environment_override_is_reported():
    res = sc.plan(params(use_composefs=True), probe({MAIN: fixture("fedora-41.conf")},
                                                    env={"HOME": "/root", "CONTAINERS_STORAGE_CONF": "/x.conf"}))
    assert any("CONTAINERS_STORAGE_CONF=/x.conf" in w for w in res["warnings"])


# ---------------------------------------------------------------- scope=path

def test_scope_path_edits_only_that_file():
    text = fixture("rhel-9.conf")
    res = sc.plan(params(scope="path", path="/srv/ci/storage.conf", use_composefs=True),
                  probe({"/srv/ci/storage.conf": text}))
    assert res["path"] == "/srv/ci/storage.conf" and res["changed"]
    assert res["effective"]["storage.options.overlay.use_composefs"]["source"] == "/srv/ci/storage.conf"


def test_scope_path_dropin_mode_creates_a_minimal_file():
    res = sc.plan(params(scope="path", path="/srv/x.conf", layout="dropin", pull_options=dict(use_hard_links=True)),
                  probe({"/srv/x.conf": None}, podman="5.4.2"))
    assert tomllib.loads(res["content"]) == {"storage": {"options": {"pull_options": {"use_hard_links": "true"}}}}


def test_probe_request_reads_what_plan_needs():
    req = sc.probe_request(params(scope="path", path="/srv/x.conf"))
    assert req["paths"][0] == "/srv/x.conf" and MAIN in req["paths"] and VENDOR in req["paths"] and DROPIN in req["paths"]
    assert "/etc/containers/storage.rootful.conf.d" in req["dropin_dirs"]


# ---------------------------------------------------------------- reset and host checks

def test_graphroot_change_requires_reset():
    res = sc.plan(params(graphroot="/srv/containers"), probe({MAIN: fixture("rhel-9.conf")}))
    assert res["reset_required"]
    assert res["reset_reasons"] == ["storage.graphroot changes from '/var/lib/containers/storage' to '/srv/containers'"]
    assert res["graphroot"]["path"] == "/srv/containers"


def test_same_driver_and_composefs_change_need_no_reset():
    res = sc.plan(params(driver="overlay", use_composefs=True, graphroot="/var/lib/containers/storage"),
                  probe({MAIN: fixture("rhel-9.conf")}))
    assert not res["reset_required"]


def test_host_checks_report_mkcomposefs_kernel_and_verity():
    p = probe({MAIN: fixture("fedora-41.conf")}, mk=dict(path="/usr/bin/mkcomposefs", from_file=False, version="1.0.0"),
              kernel=dict(release="6.1.0", erofs="missing", overlay="available", loop="available"), euid=1000)
    res = sc.plan(params(use_composefs=True), p)
    sc.host_checks(res, p, dict(path="/var/lib/containers/storage", mountpoint="/", fstype="xfs", source="/dev/sda1",
                                verity="unsupported", reason="xfs has no fs-verity"))
    text = "\n".join(res["warnings"])
    assert "mkcomposefs is too old" in text and "composefs >= 1.0.1 (found 1.0.0)" in text
    assert "lacks erofs" in text and "uid 1000, not root" in text
    assert "graphroot /var/lib/containers/storage is on xfs (xfs has no fs-verity)" in text
    assert any("best effort" in n and "verity=require" in n for n in res["notes"])


def test_host_checks_missing_mkcomposefs():
    p = probe({MAIN: fixture("fedora-41.conf")})
    res = sc.host_checks(sc.plan(params(use_composefs=True), p), p, None)
    assert any("mkcomposefs is not on PATH" in w for w in res["warnings"])


def test_host_checks_quiet_when_composefs_off():
    p = probe({MAIN: fixture("fedora-41.conf")}, users=["alice"])
    res = sc.host_checks(sc.plan(params(use_composefs=False), p), p, None)
    assert res["warnings"] == []


def test_round_trip_guard():
    with pytest.raises(sc.StorageConfError, match="would not read back"):
        sc.check_round_trip('a = "1"\n', {"a": "2"}, "/x")


# ---------------------------------------------------------------- issue 10: path implies scope, the version override

def test_path_alone_implies_scope_path():
    text = fixture("rhel-9.conf")
    res = sc.plan(params(path="/srv/ci/storage.conf", use_composefs=True), probe({"/srv/ci/storage.conf": text}))
    assert res["scope"] == "path" and res["path"] == "/srv/ci/storage.conf" and res["changed"]
    assert sc.probe_request(params(path="/srv/ci/storage.conf"))["paths"][0] == "/srv/ci/storage.conf"


def test_path_with_scope_rootful_is_an_error_not_ignored():
    with pytest.raises(sc.StorageConfError, match="path=/srv/ci/storage.conf was given with scope=rootful"):
        sc.plan(params(scope="rootful", path="/srv/ci/storage.conf", use_composefs=True),
                probe({"/srv/ci/storage.conf": fixture("rhel-9.conf")}))


def test_no_path_no_scope_is_rootful():
    res = sc.plan(params(use_composefs=True), probe({MAIN: fixture("fedora-41.conf")}))
    assert (res["scope"], res["path"]) == ("rootful", MAIN)


def test_podman_4_composefs_written_with_the_version_check_off():
    res = sc.plan(params(use_composefs=True, podman_version_check=False),
                  probe({MAIN: fixture("debian-bookworm.conf")}, podman="4.3.1"))
    assert res["changed"] and 'use_composefs = "true"' in res["content"]
    assert any("too old for composefs" in w and "podman_version_check=false" in w for w in res["warnings"])


def test_podman_4_refusal_names_the_override():
    with pytest.raises(sc.StorageConfError, match="podman_version_check=false"):
        sc.plan(params(use_composefs=True), probe({MAIN: fixture("debian-bookworm.conf")}, podman="4.3.1"))


def test_dropin_on_podman_5_with_the_version_check_off_warns():
    res = sc.plan(params(use_composefs=True, layout="dropin", podman_version_check=False),
                  probe({MAIN: fixture("fedora-41.conf")}, podman="5.4.2"))
    assert res["layout"] == "dropin" and res["path"] == DROPIN and res["changed"]
    assert any("layout=dropin needs Podman >= 6.0.0" in w for w in res["warnings"])


# ---------------------------------------------------------------- issue 9 item 6: symlinked files

def linked(path, target, text):
    r = rec(path, text)
    r.update(link=True, target=target)
    return r


def probe_with(record, **kw):
    p = probe({}, **kw)
    p["files"] = [r for r in p["files"] if r["requested"] != record["requested"]] + [record]
    return p


def test_symlink_followed_by_default_edits_the_target():
    p = probe_with(linked(MAIN, VENDOR, fixture("fedora-41.conf")))
    res = sc.plan(params(use_composefs=True), p)
    assert res["changed"] and res["path"] == MAIN and res["target"] == VENDOR
    assert res["diff"][0]["after_header"] == "%s (-> %s)" % (MAIN, VENDOR)
    assert any("its target %s is edited and the link stays" % VENDOR in n for n in res["notes"])


def test_symlink_not_followed_is_replaced_even_without_a_content_change():
    text = fixture("fedora-41.conf").replace('# use_composefs = "false"', 'use_composefs = "true"')
    p = probe_with(linked(MAIN, VENDOR, text))
    res = sc.plan(params(use_composefs=True, follow=False), p)
    assert res["changed"] and res["changes"] == [] and res["target"] == MAIN and res["content"] == text
    res = sc.plan(params(use_composefs=True), p)
    assert not res["changed"]


def test_symlinked_dropin_is_warned_about():
    p = probe_with(linked(DROPIN, "/srv/mine.conf", "[storage]\n"), podman="6.0.0")
    res = sc.plan(params(use_composefs=True), p)
    assert any("containers-storage skips symlinked drop-ins" in w for w in res["warnings"])


def test_unreadable_target_error_is_passed_on_without_content():
    r = rec("/srv/x.conf", None)
    r.update(exists=True, error="/etc/shadow does not look like a TOML file (line 1 is not ...): not returned")
    with pytest.raises(sc.StorageConfError, match="cannot edit /srv/x.conf: /etc/shadow does not look like a TOML"):
        sc.plan(params(path="/srv/x.conf", use_composefs=True), probe_with(r))


# ---------------------------------------------------------------- the host's TOML-like check never refuses real TOML

_keys = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x7f"), min_size=1, max_size=8)
_scalars = st.one_of(st.booleans(), st.integers(), st.text(max_size=20), st.floats(allow_nan=False, allow_infinity=False))
_values = st.recursive(
    _scalars, lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(_keys, inner, max_size=3)), max_leaves=8)


@hsettings(max_examples=150, deadline=None)
@given(st.dictionaries(_keys, _values, max_size=5))
def test_toml_like_accepts_everything_tomlkit_writes(doc):
    text = tomlkit.dumps(doc)
    assert tomllib.loads(text) is not None
    assert toml_like_problem(text) is None, text


@pytest.mark.parametrize("vendor", VENDORS)
def test_toml_like_accepts_the_vendor_files_and_our_edits(vendor):
    assert toml_like_problem(fixture(vendor)) is None
    res = sc.plan(params(use_composefs=True, pull_options=dict(use_hard_links=True)), probe({MAIN: fixture(vendor)}))
    assert toml_like_problem(res["content"]) is None
