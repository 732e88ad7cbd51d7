"""Paths and small helpers shared by every test tier (tests/ is on sys.path via conftest)."""
import os

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def shared_vectors(*parts):
    """Path inside ../shared/test-vectors/ (beside the checkout); fails loudly when missing."""
    base = os.environ.get("COMPOSEFS_FLEET_TEST_VECTORS") or os.path.join(os.path.dirname(TOP), "shared", "test-vectors")
    path = os.path.join(base, *parts)
    if not os.path.exists(path):
        raise RuntimeError("shared test vectors missing: %s (expected ../shared/test-vectors beside the checkout, "
                           "or set COMPOSEFS_FLEET_TEST_VECTORS)" % path)
    return path
