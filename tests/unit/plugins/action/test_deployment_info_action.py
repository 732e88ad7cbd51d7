"""The plan the composefs.fleet.deployment_info action adds to the module's read of a host.

The action itself runs in tests/integration/test_deploy_role.py (the deploy role on two
local hosts) and in the molecule scenario ``deploy``.
"""
from ansible_collections.composefs.fleet.plugins.action.deployment_info import plan_result

D1 = "1" * 64
D2 = "2" * 64
PLAN = dict(version="v2", keep=1, gc=True, rollback=False, rollback_version="")


def _read(refs, in_place=True, differences=()):
    """What the module returns for a host whose repository has ``refs``."""
    return dict(changed=False, refs=refs, in_place=in_place, differences=list(differences))


def test_a_host_in_place_gets_the_deployment_it_runs():
    refs = {"app/current": D2, "app/releases/000001-v1": D1, "app/releases/000002-v2": D2}
    out = plan_result(_read(refs), "app", D2, PLAN, "/srv/app")
    assert out["in_place"] is True and out["differences"] == []
    assert out["plan"]["release_ref"] == "app/releases/000002-v2" and not out["plan"]["new_release"]
    # the deploy role's deploy_result for a host it leaves alone: this plus zeros for what was sent
    assert out["deployment"] == dict(name="app", version="v2", digest=D2, release_ref="app/releases/000002-v2",
                                     previous=dict(ref="app/releases/000002-v2", seq=2, version="v2", digest=D2),
                                     mount_point="/srv/app")


def test_a_new_release_or_a_ref_to_drop_makes_the_host_out_of_place():
    refs = {"app/current": D2, "app/releases/000001-v1": D1}
    out = plan_result(_read(refs), "app", D2, PLAN, "/srv/app")
    assert out["in_place"] is False and out["plan"]["new_release"]
    assert out["differences"] == ["the image gets the new release ref app/releases/000002-v2"]
    refs = {"app/current": D2, "app/releases/000001-v0": D1, "app/releases/000002-v1": D1, "app/releases/000003-v2": D2}
    dropped = plan_result(_read(refs), "app", D2, dict(PLAN, keep=0), "/srv/app")
    assert dropped["in_place"] is False and dropped["plan"]["remove_refs"] == ["app/releases/000001-v0", "app/releases/000002-v1"]
    assert dropped["differences"] == ["release refs to remove: app/releases/000001-v0, app/releases/000002-v1"]
    assert out["deployment"]["release_ref"] == "app/releases/000002-v2" and out["deployment"]["digest"] == D2


def test_what_the_module_found_is_kept():
    out = plan_result(_read({}, in_place=False, differences=["nothing is mounted at /srv/app"]), "app", D1,
                      dict(PLAN, version="v1"), "/srv/app")
    assert out["in_place"] is False and out["differences"][0] == "nothing is mounted at /srv/app"
    assert out["deployment"]["previous"] is None and out["deployment"]["version"] == "v1"
