"""GLib key files: parse as GLib does, edit keeping comments, render."""
import pytest

from ansible_collections.composefs.fleet.plugins.module_utils.boot.keyfile import KeyFile, KeyFileError, parse_boolean


def test_parse_values_groups_and_repeats():
    kf = KeyFile("# comment\n[composefs]\nenabled = verity  \nkeypath=/k\n\n[root]\ntransient=true\n[composefs]\nenabled=yes\n")
    assert kf.groups() == ["composefs", "root"]
    # GLib strips the value's leading whitespace only; the last repeat wins, even in a repeated group.
    assert kf.get("composefs", "enabled") == "yes"
    assert kf.items("composefs") == {"enabled": "yes", "keypath": "/k"}
    assert kf.get("root", "missing", "dflt") == "dflt"


@pytest.mark.parametrize("text, problem", [
    ("enabled=yes\n", "does not start with a group"),
    ("[composefs]\nenabled\n", "not a key-value pair"),
    ("[composefs\nenabled=yes\n", "not a valid group header"),
    ("[composefs]\n=yes\n", "invalid key name"),
    ("[composefs]\nen abled=yes\n", "invalid key name"),
])
def test_files_glib_refuses(text, problem):
    with pytest.raises(KeyFileError, match=problem):
        KeyFile(text)


@pytest.mark.parametrize("value, expected", [("true", True), ("1", True), ("false", False), ("0", False), ("true ", True)])
def test_glib_booleans(value, expected):
    assert parse_boolean(value) is expected


@pytest.mark.parametrize("value", ["yes", "no", "True", "on", ""])
def test_not_glib_booleans(value):
    with pytest.raises(KeyFileError):
        parse_boolean(value)


def test_edit_keeps_comments_and_order():
    kf = KeyFile("# keep me\n[composefs]\n# and me\nenabled = yes\n\n[etc]\ntransient=false\n")
    kf.set("composefs", "enabled", "verity")
    kf.set("composefs", "keypath", "/etc/ostree/k.key")
    kf.set("root", "transient", "true")
    kf.remove("etc", "transient")
    assert kf.render() == ("# keep me\n[composefs]\n# and me\nenabled=verity\nkeypath=/etc/ostree/k.key\n\n[etc]\n"
                           "\n[root]\ntransient=true\n")
    assert KeyFile(kf.render()).as_dict() == {"composefs": {"enabled": "verity", "keypath": "/etc/ostree/k.key"},
                                              "etc": {}, "root": {"transient": "true"}}


def test_set_refuses_line_breaks_and_bad_names():
    kf = KeyFile("")
    with pytest.raises(KeyFileError):
        kf.set("composefs", "enabled", "yes\n[root]")
    with pytest.raises(KeyFileError):
        kf.set("comp]osefs", "enabled", "yes")


def test_empty_renders_empty():
    assert KeyFile("").render() == ""
