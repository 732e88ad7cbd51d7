"""plugins/module_utils/storage_conf.py: the facts and argument spec shared by the storage_conf modules and
action plugin. Standard library only, so this also runs on Python 3.9 (make test-unit-py39)."""
import pytest

from ansible_collections.composefs.fleet.plugins.module_utils import storage_conf as sc


def test_parse_version():
    assert sc.parse_version("podman version 4.3.1") == (4, 3, 1)
    assert sc.parse_version("5.4") == (5, 4, 0)
    assert sc.parse_version("6.0.0-dev") == (6, 0, 0)
    assert sc.parse_version("") is None and sc.parse_version("none") is None
    assert sc.version_string((5, 0, 0)) == "5.0.0" and sc.version_string(None) is None


def test_minimums():
    assert sc.parse_version("4.9.5") < sc.MIN_PODMAN_COMPOSEFS <= sc.parse_version("5.0.0")
    assert sc.parse_version("5.8.2") < sc.MIN_PODMAN_DROPINS <= sc.parse_version("6.0.0")
    assert sc.MIN_MKCOMPOSEFS == (1, 0, 1)


def test_argument_spec_matches_the_documented_options():
    assert set(sc.ARGUMENT_SPEC) == {"use_composefs", "pull_options", "overlay_options", "driver", "graphroot", "runroot",
                                     "scope", "path", "layout", "dropin_name", "mode", "owner", "group", "follow",
                                     "backup", "podman_version_check"}
    assert sc.ARGUMENT_SPEC["layout"]["choices"] == ["auto", "file", "dropin"]
    # mode is the file permission, as in every file module; path alone must not be overridden by a default scope.
    assert sc.ARGUMENT_SPEC["mode"]["type"] == "raw" and "default" not in sc.ARGUMENT_SPEC["scope"]
    assert sc.ARGUMENT_SPEC["follow"]["default"] is True and sc.ARGUMENT_SPEC["podman_version_check"]["default"] is True
    assert sc.REQUIRED_IF == [("scope", "path", ("path",))]


def test_known_keys():
    assert set(sc.KNOWN_PULL_OPTIONS) == {"enable_partial_images", "use_hard_links", "ostree_repos", "convert_images",
                                          "insecure_allow_unpredictable_image_contents"}
    assert "use_composefs" not in sc.KNOWN_OVERLAY_OPTIONS


# ---------------------------------------------------------------- TOML-like text (issue 9 item 6)

TOML_LIKE = [
    "",
    "# only a comment\n",
    '[storage]\ndriver = "overlay"\n',
    '[storage.options]\npull_options = {enable_partial_images = "false", use_hard_links = "false", ostree_repos=""}\n',
    'a = """x\n"y" [ {\n"""\nb = [1,\n  2, # c\n]\n["q.r" . s]\n"k.k" = \'x # not a comment\'\r\n',
    'storage.options.overlay.mountopt = "nodev"  # dotted\n[[aot]]\nx = 1\n',
    'a = "x\\"y]" # c\n',
]
NOT_TOML = [
    ("root:$6$salt$hash:19000:0:99999:7:::\n", "line 1 is not a TOML table header, key = value or comment"),
    ("root:x:0:0:root:/root:/bin/bash\n", "line 1 is not a TOML"),
    ('a = "x\nroot:x:0:0\n', "line 2 is not a TOML"),
    ("[a b]\n", "line 1 is not a TOML table header"),
    ("a = [1,\n", "an array or inline table never ends"),
    ('a = """\n', "a multi-line string never ends"),
    ("a = 1]\n", "closes a bracket that was never opened"),
    ("a = 1\n\x1b[31m = 2\n", "control character U+001B"),
]


def test_toml_like_accepts_toml():
    for text in TOML_LIKE:
        assert sc.toml_like_problem(text) is None, text


def test_toml_like_refuses_other_text_and_quotes_none_of_it():
    for text, why in NOT_TOML:
        problem = sc.toml_like_problem(text)
        assert problem and why in problem, (text, problem)
        assert "salt" not in problem and "root" not in problem


def test_resolve_path(tmp_path):
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "f.conf").write_text("a = 1\n")
    (tmp_path / "dirlink").symlink_to("real")
    (tmp_path / "link.conf").symlink_to("dirlink/f.conf")
    (tmp_path / "abs.conf").symlink_to(str(tmp_path / "link.conf"))
    real = str(tmp_path / "real" / "f.conf")
    assert sc.resolve_path(str(tmp_path / "abs.conf")) == (real, True)
    assert sc.resolve_path(str(tmp_path / "dirlink" / "f.conf")) == (real, False)
    assert sc.resolve_path(str(tmp_path / "dirlink" / "new.conf")) == (str(tmp_path / "real" / "new.conf"), False)
    assert sc.resolve_path(str(tmp_path / "none" / "x.conf")) == (str(tmp_path / "none" / "x.conf"), False)
    (tmp_path / "dangling.conf").symlink_to("nowhere/x.conf")
    with pytest.raises(sc.UnsafeFile, match="is a symlink to .*nowhere, which does not exist"):
        sc.resolve_path(str(tmp_path / "dangling.conf"))
    (tmp_path / "loop").symlink_to("loop")
    with pytest.raises(sc.UnsafeFile, match="too many levels"):
        sc.resolve_path(str(tmp_path / "loop"))
    with pytest.raises(sc.UnsafeFile, match="not an absolute path"):
        sc.resolve_path("relative.conf")
