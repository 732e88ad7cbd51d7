"""Kernel facts from injected sources: config text, /sys listings, /proc/filesystems."""
import pytest

from ansible_collections.composefs.fleet.plugins.module_utils.verity_facts.kernel import (
    CONFIG_KEYS,
    kernel_facts,
    parse_config,
    parse_proc_filesystems,
    parse_release,
)

CONFIG_WITHOUT = """
#
# Automatically generated file; DO NOT EDIT.
CONFIG_EXT4_FS=y
# CONFIG_FS_VERITY is not set
CONFIG_OVERLAY_FS=y
CONFIG_EROFS_FS=m
CONFIG_EROFS_FS_BACKED_BY_FILE=y
CONFIG_BLK_DEV_LOOP=y
CONFIG_LOCALVERSION="-fc"
"""
CONFIG_WITH = CONFIG_WITHOUT.replace("# CONFIG_FS_VERITY is not set", "CONFIG_FS_VERITY=y\n# CONFIG_FS_VERITY_BUILTIN_SIGNATURES is not set")
EXT4_FEATURES = ["batched_discard", "encryption", "fast_commit", "lazy_itable_init", "meta_bg_resize", "metadata_csum_seed"]
FILESYSTEMS = "nodev\tsysfs\nnodev\ttmpfs\n\text4\nnodev\toverlay\n\txfs\n\tbtrfs\n"


def sources(**kw):
    base = dict(
        release="6.12.117+deb13-amd64",
        config=None,
        config_path=None,
        config_tried=["/proc/config.gz", "/boot/config-6.12.117+deb13-amd64"],
        sysfs=dict(ext4=None, btrfs=None, f2fs=None, xfs=None, erofs=None),
        filesystems=parse_proc_filesystems(FILESYSTEMS),
        modules_dir=True,
        modules_loaded=[],
        modules_builtin=[],
        module_files=[],
        overlay_parameters=None,
        loop_devices=8,
        loop_control=True,
    )
    base.update(kw)
    return base


def test_parse_release():
    assert parse_release("6.12.117+deb13-amd64") == (6, 12, 117)
    assert parse_release("5.14.0-427.13.1.el9_4.x86_64") == (5, 14, 0)
    assert parse_release("6.8-rc1") == (6, 8, 0)
    assert parse_release("weird") is None
    assert parse_release(None) is None


def test_parse_config():
    values = parse_config(CONFIG_WITHOUT)
    assert values["CONFIG_FS_VERITY"] == "n"
    assert values["CONFIG_EROFS_FS"] == "m"
    assert values["CONFIG_LOCALVERSION"] == "-fc"
    assert "CONFIG_EXT4_FS" not in parse_config(CONFIG_WITHOUT, CONFIG_KEYS)


def test_parse_proc_filesystems():
    assert parse_proc_filesystems(FILESYSTEMS) == ["sysfs", "tmpfs", "ext4", "overlay", "xfs", "btrfs"]


def test_sys_verity_entry_means_yes():
    facts = kernel_facts(sources(sysfs=dict(ext4=EXT4_FEATURES + ["verity"], btrfs=["verity", "zoned"], f2fs=None)))
    assert facts["fs_verity"] is True
    assert facts["verity_filesystems"] == ["btrfs", "ext4"]
    assert "/sys/fs/ext4/features/verity exists" in facts["fs_verity_evidence"]


def test_sys_without_verity_means_no_even_against_a_config():
    facts = kernel_facts(sources(sysfs=dict(ext4=EXT4_FEATURES), config=parse_config(CONFIG_WITH), config_path="/boot/config-x"))
    assert facts["fs_verity"] is False
    assert facts["fs_verity_evidence"] == ["/sys/fs/ext4/features has no verity entry", "/boot/config-x: CONFIG_FS_VERITY=y"]


def test_one_filesystem_with_verity_is_enough():
    facts = kernel_facts(sources(sysfs=dict(ext4=EXT4_FEATURES, btrfs=["verity"])))
    assert facts["fs_verity"] is True


@pytest.mark.parametrize("text, expected, words", [
    (CONFIG_WITHOUT, False, "/proc/config.gz: # CONFIG_FS_VERITY is not set"),
    (CONFIG_WITH, True, "/proc/config.gz: CONFIG_FS_VERITY=y"),
    ("CONFIG_EXT4_FS=y\n", None, "/proc/config.gz does not mention CONFIG_FS_VERITY"),
])
def test_config_alone(text, expected, words):
    facts = kernel_facts(sources(config=parse_config(text, CONFIG_KEYS), config_path="/proc/config.gz"))
    assert facts["fs_verity"] is expected
    assert facts["fs_verity_evidence"] == [words]
    assert facts["config_source"] == "/proc/config.gz"


def test_nothing_known():
    facts = kernel_facts(sources())
    assert facts["fs_verity"] is None
    assert facts["fs_verity_evidence"] == ["no kernel config found (/proc/config.gz, /boot/config-6.12.117+deb13-amd64)"]


def test_builtin_signatures_only_with_config():
    with_config = kernel_facts(sources(config=parse_config(CONFIG_WITH), config_path="/boot/c", sysfs=dict(ext4=["verity"])))
    assert with_config["fs_verity_builtin_signatures"] is False
    assert kernel_facts(sources(sysfs=dict(ext4=["verity"])))["fs_verity_builtin_signatures"] is None


@pytest.mark.parametrize("release, data_only, verity, plus", [
    ("6.4.16", False, False, False),
    ("6.5.0", True, False, False),
    ("6.6.30", True, True, False),
    ("6.7.1", True, True, True),
    ("6.12.117+deb13-amd64", True, True, True),
    ("5.14.0-427.el9.x86_64", False, False, False),  # RHEL backports are not detected
])
def test_overlay_features_by_version(release, data_only, verity, plus):
    overlay = kernel_facts(sources(release=release))["overlay"]
    assert overlay["available"] is True and overlay["basis"] == "overlay is in /proc/filesystems"
    assert (overlay["data_only_lowers"], overlay["verity"], overlay["lowerdir_plus"]) == (data_only, verity, plus)


def test_overlay_availability_sources():
    no_fs = dict(filesystems=["ext4"])
    assert kernel_facts(sources(modules_loaded=["overlay"], **no_fs))["overlay"]["basis"] == "module overlay is loaded"
    assert kernel_facts(sources(module_files=["overlay"], **no_fs))["overlay"]["basis"] == "module overlay can be loaded"
    assert kernel_facts(sources(modules_builtin=["overlay"], **no_fs))["overlay"]["available"] is True
    missing = kernel_facts(sources(**no_fs))["overlay"]
    assert missing["available"] is False and missing["verity"] is False
    unknown = kernel_facts(sources(filesystems=None, modules_dir=False))["overlay"]
    assert unknown["available"] is None and unknown["verity"] is None
    config_no = kernel_facts(sources(filesystems=None, modules_dir=False, config={"CONFIG_OVERLAY_FS": "n"}, config_path="/c"))
    assert config_no["overlay"]["available"] is False


def test_overlay_parameters_are_reported():
    params = {"metacopy": "N", "redirect_dir": "N"}
    assert kernel_facts(sources(overlay_parameters=params))["overlay"]["parameters"] == params


@pytest.mark.parametrize("release, config, expected", [
    ("6.12.1", None, True),
    ("6.11.9", None, False),
    ("6.12.1", {"CONFIG_EROFS_FS": "y", "CONFIG_EROFS_FS_BACKED_BY_FILE": "y"}, True),
    ("6.12.1", {"CONFIG_EROFS_FS": "y", "CONFIG_EROFS_FS_BACKED_BY_FILE": "n"}, False),
    ("6.12.1", {"CONFIG_EROFS_FS": "y"}, False),
])
def test_erofs_file_backed(release, config, expected):
    erofs = kernel_facts(sources(release=release, filesystems=["erofs"], config=config, config_path="/c" if config else None))["erofs"]
    assert erofs["available"] is True
    assert erofs["file_backed"] is expected


def test_erofs_missing():
    erofs = kernel_facts(sources(filesystems=["ext4"]))["erofs"]
    assert erofs["available"] is False and erofs["file_backed"] is False


def test_loop():
    assert kernel_facts(sources())["loop"] == dict(available=True, basis="/dev/loop-control exists", devices=8, control=True)
    assert kernel_facts(sources(loop_control=False, loop_devices=2))["loop"]["basis"] == "2 loop devices in /sys/block"
    none = kernel_facts(sources(loop_control=False, loop_devices=0, config={"CONFIG_BLK_DEV_LOOP": "n"}, config_path="/c"))["loop"]
    assert none["available"] is False
