"""Make the checkout importable as ansible_collections.composefs.fleet, and tests/support.py importable."""
import os
import sys

_TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_COLLECTIONS = os.path.join(_TOP, ".cache", "collections")
if not os.path.isdir(os.path.join(_COLLECTIONS, "ansible_collections", "composefs", "fleet")):
    raise RuntimeError("run scripts/setup-venv.sh (or make setup) first: %s is missing" % _COLLECTIONS)
if _COLLECTIONS not in sys.path:
    sys.path.insert(0, _COLLECTIONS)
# tests/support.py: paths shared by every tier.
if os.path.dirname(os.path.abspath(__file__)) not in sys.path:
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
