"""The deploy role's ref plan: release refs, current, rollback targets and what gc keeps."""
import pytest

from ansible_collections.composefs.fleet.plugins.plugin_utils.deploy import (
    DeployPlanError,
    deploy_plan,
    releases,
    rollback_plan,
)

D1, D2, D3, D4 = ("%x" % n * 64 for n in (1, 2, 3, 4))


def _apply(refs, plan):
    """The refs after the role has run ``plan`` successfully (release ref, current, gc's removals)."""
    out = dict(refs)
    out[plan["release_ref"]] = plan["digest"]
    out[plan["current_ref"]] = plan["digest"]
    for ref in plan["remove_refs"]:
        del out[ref]
    return out


def test_first_deploy():
    plan = deploy_plan({}, "app", D1, "v1", 1)
    assert plan["release_ref"] == "app/releases/000001-v1"
    assert plan["current_ref"] == "app/current"
    assert plan["new_release"] and plan["changes_current"]
    assert plan["previous"] is None
    assert plan["remove_refs"] == []


def test_sequence_previous_and_gc_keep():
    refs = {}
    for digest, version in ((D1, "v1"), (D2, "v2"), (D3, "v3")):
        plan = deploy_plan(refs, "app", digest, version, 1)
        refs = _apply(refs, plan)
    assert plan["previous"]["version"] == "v2" and plan["previous"]["digest"] == D2
    assert plan["remove_refs"] == ["app/releases/000001-v1"]
    assert refs == {"app/current": D3, "app/releases/000002-v2": D2, "app/releases/000003-v3": D3}
    # keep 0: only current's release; keep 5: everything
    assert deploy_plan(refs, "app", D4, "v4", 0)["remove_refs"] == ["app/releases/000002-v2", "app/releases/000003-v3"]
    assert deploy_plan(refs, "app", D4, "v4", 5)["remove_refs"] == []
    # versions order numerically past 999999 and by the counter, not the label
    assert [r["version"] for r in releases({"app/releases/1000000-a": D1, "app/releases/000009-z": D2}, "app")] == ["z", "a"]


def test_rerun_is_a_noop():
    refs = _apply({}, deploy_plan({}, "app", D1, "v1"))
    plan = deploy_plan(refs, "app", D1, "v1")
    assert not plan["new_release"] and not plan["changes_current"]
    assert plan["release_ref"] == "app/releases/000001-v1"
    assert plan["remove_refs"] == []
    # the same image under another label keeps its first label
    assert deploy_plan(refs, "app", D1, "other")["version"] == "v1"


def test_default_version_is_the_digest_prefix():
    assert deploy_plan({}, "app", "sha256:" + D1, "", 1)["release_ref"] == "app/releases/000001-" + D1[:12]


def test_a_label_naming_another_image_is_refused():
    refs = _apply({}, deploy_plan({}, "app", D1, "v1"))
    with pytest.raises(DeployPlanError, match="version v1 of app already names image"):
        deploy_plan(refs, "app", D2, "v1")


@pytest.mark.parametrize("name,version,digest,keep,match", [
    ("", "v1", D1, 1, "deploy_name"),
    ("../x", "v1", D1, 1, "deploy_name"),
    ("app/", "v1", D1, 1, "deploy_name"),
    ("app", "a/b", D1, 1, "deploy_version"),
    ("app", ".hidden", D1, 1, "deploy_version"),
    ("app", "v1", "xyz", 1, "not an fs-verity digest"),
    ("app", "v1", "A" * 64, 1, "not an fs-verity digest"),
    ("app", "v1", D1, -1, "deploy_keep"),
    ("app", "v1", D1, True, "deploy_keep"),
])
def test_bad_input(name, version, digest, keep, match):
    with pytest.raises(DeployPlanError, match=match):
        deploy_plan({}, name, digest, version, keep)


def test_other_refs_are_left_alone():
    refs = {"other/current": D4, "app/releases/garbage": D4, "app/releases/000001-v1/x": D4, "app/current": D1,
            "app/releases/000001-v1": D1}
    plan = deploy_plan(refs, "app", D2, "v2", 0)
    assert plan["remove_refs"] == ["app/releases/000001-v1"]
    assert plan["release_ref"] == "app/releases/000002-v2"


def test_previous_without_a_release():
    plan = deploy_plan({"app/current": D4}, "app", D1, "v1")
    assert plan["previous"] == dict(ref=None, seq=None, version=None, digest=D4)


def test_rollback():
    refs = {}
    for digest, version in ((D1, "v1"), (D2, "v2"), (D3, "v3")):
        refs = _apply(refs, deploy_plan(refs, "app", digest, version, 2))
    plan = rollback_plan(refs, "app", "v1", 2)
    assert plan["digest"] == D1 and not plan["new_release"] and plan["changes_current"]
    assert plan["previous"]["version"] == "v3"
    assert plan["remove_refs"] == []
    # by ref and by digest; empty means the one before current
    assert rollback_plan(refs, "app", "app/releases/000002-v2")["digest"] == D2
    assert rollback_plan(refs, "app", D2)["digest"] == D2
    assert rollback_plan(refs, "app", "")["digest"] == D2
    # keep 1 after rolling back to v1: current (v1) and the newest other (v3)
    assert rollback_plan(refs, "app", "v1", 1)["remove_refs"] == ["app/releases/000002-v2"]
    with pytest.raises(DeployPlanError, match="has no release 'v9' on this host; it has: v1, v2, v3"):
        rollback_plan(refs, "app", "v9")
    with pytest.raises(DeployPlanError, match="no releases"):
        rollback_plan({}, "app", "v1")
    only = _apply({}, deploy_plan({}, "app", D1, "v1"))
    with pytest.raises(DeployPlanError, match="no release older than the current one"):
        rollback_plan(only, "app", "")
