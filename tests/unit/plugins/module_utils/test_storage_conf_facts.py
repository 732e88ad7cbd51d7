"""plugins/module_utils/storage_conf.py: the facts and argument spec shared by the storage_conf modules and
action plugin. Standard library only, so this also runs on Python 3.9 (make test-unit-py39)."""
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
                                     "scope", "path", "mode", "dropin_name", "backup"}
    assert sc.ARGUMENT_SPEC["mode"]["choices"] == ["auto", "file", "dropin"]
    assert sc.REQUIRED_IF == [("scope", "path", ("path",))]


def test_known_keys():
    assert set(sc.KNOWN_PULL_OPTIONS) == {"enable_partial_images", "use_hard_links", "ostree_repos", "convert_images",
                                          "insecure_allow_unpredictable_image_contents"}
    assert "use_composefs" not in sc.KNOWN_OVERLAY_OPTIONS
