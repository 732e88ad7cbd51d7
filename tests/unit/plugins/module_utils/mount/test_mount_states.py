"""The mount module's state machine and parameter rules (no mounting): ansible.posix.mount's state names."""
import pytest

from ansible_collections.composefs.fleet.plugins.module_utils.mount import manager, verify
from ansible_collections.composefs.fleet.plugins.module_utils.mount.errors import MountError

D = "2b1dfb9ffe6938cb3134c339059572e38cbd8cc515d54758fdff55cad5a37427"


def test_state_table_matches_ansible_posix_mount():
    assert manager.STATES == {
        "mounted": ("mount", "write"),      # mounted now and persisted
        "present": (None, "write"),         # persisted only
        "ephemeral": ("mount", None),       # mounted now, not persisted
        "unmounted": ("unmount", None),     # unmounted, persistence kept
        "absent": ("unmount", "remove"),    # unmounted and persistence removed
        "remounted": ("remount", None),     # mounted afresh
    }
    assert set(manager.MOUNTING_STATES) == {"mounted", "ephemeral", "remounted"}
    assert set(manager.IMAGE_STATES) == {"mounted", "present", "ephemeral", "remounted"}


@pytest.mark.parametrize("name", sorted(manager.STATES))
def test_request_carries_the_actions_of_its_state(name):
    request = manager.Request("/srv/app", "/i.cfs", ["/o"], D, state=name)
    assert (request.mount_action, request.persist_action) == manager.STATES[name]


@pytest.mark.parametrize("name", ["mounted", "present", "ephemeral", "remounted"])
def test_states_that_mount_or_persist_need_image_basedir_and_pin(name):
    with pytest.raises(MountError, match="needs image"):
        manager.Request("/srv/app", None, ["/o"], D, state=name)
    with pytest.raises(MountError, match="needs basedir"):
        manager.Request("/srv/app", "/i.cfs", [], D, state=name)
    with pytest.raises(MountError, match="digest is required"):
        manager.Request("/srv/app", "/i.cfs", ["/o"], None, state=name)
    assert manager.Request("/srv/app", "/i.cfs", ["/o"], None, insecure=True, state=name).digest is None


@pytest.mark.parametrize("name", ["unmounted", "absent"])
def test_states_that_unmount_need_only_the_path(name):
    assert manager.Request("/srv/app", state=name).path == "/srv/app"


def test_unknown_state_and_old_defaults():
    with pytest.raises(MountError, match="state must be one of"):
        manager.Request("/srv/app", "/i.cfs", ["/o"], D, state="bogus")


def test_verify_objects_digest_is_for_userspace_only():
    assert manager.Request("/m", "/i", ["/o"], D, verity="userspace", verify_objects="digest").verify_objects == "digest"
    for mode in ("require", "off"):
        with pytest.raises(MountError, match="for verity=userspace only"):
            manager.Request("/m", "/i", ["/o"], D, verity=mode, verify_objects="digest")
    with pytest.raises(MountError, match="verify_objects must be one of"):
        manager.Request("/m", "/i", ["/o"], D, verify_objects="some")


NAME = "ab/" + "cd" * 31


def test_pinned_payloads_must_be_named_after_their_digest():
    verify.check_payload_names([(NAME, "ab" + "cd" * 31), ("12/" + "3" * 62, None)], "/i.cfs")
    for refs, words in (
        ([("etc/passwd", None)], ["'etc/passwd'", "not an object-store name"]),
        ([("./etc/passwd", None)], ["'./etc/passwd'"]),
        ([("../../etc/shadow", None)], ["'../../etc/shadow'"]),
        ([("AB/" + "CD" * 31, None)], ["not an object-store name"]),
        ([(NAME, "ff" * 32)], ["the image records digest " + "ff" * 32]),
    ):
        with pytest.raises(MountError) as exc:
            verify.check_payload_names(refs, "/i.cfs")
        assert exc.value.kind == "invalid"
        for word in words:
            assert word in str(exc.value)
    many = [("x%d" % i, None) for i in range(8)]
    with pytest.raises(MountError, match="8 payloads that are not .* and 3 more"):
        verify.check_payload_names(many, "/i.cfs")
