"""The one "did you mean" hint of the controller-side plugins."""
from ansible_collections.composefs.fleet.plugins.plugin_utils.suggestions import did_you_mean


def test_did_you_mean():
    assert did_you_mean("required_path", ["required_paths", "required_kernel_features"]) == " (did you mean required_paths?)"
    assert did_you_mean("use_composef", {"use_composefs": 1}) == " (did you mean use_composefs?)"
    assert did_you_mean("zzz", ["required_paths"]) == ""
    assert did_you_mean("x", []) == ""
