"""Run tests/glib/gvariant_glib.py with the system Python that has python3-gi (GLib's own GVariant serializer)."""
import json
import os
import subprocess

SYSTEM_PYTHON = "/usr/bin/python3"
SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "glib", "gvariant_glib.py")


def require_glib():
    """Fail loudly (never skip) when GLib's Python bindings are missing."""
    probe = subprocess.run([SYSTEM_PYTHON, "-c", "from gi.repository import GLib"], capture_output=True, check=False)
    if probe.returncode:
        raise AssertionError("python3-gi is missing on this host (requirements/apt.txt lists it; run scripts/setup-host.sh): %s"
                             % probe.stderr.decode(errors="replace"))


def serialize(cases):
    """[(type, text)] -> [{"hex", "value"}] from GLib."""
    require_glib()
    out = subprocess.run([SYSTEM_PYTHON, SCRIPT], input=json.dumps(cases).encode(), capture_output=True, check=True)
    return json.loads(out.stdout)


def write_ostree_booted(path, spec):
    """Write /run/ostree-booted as ostree-prepare-root does, from {key: (type, text)}."""
    require_glib()
    subprocess.run([SYSTEM_PYTHON, SCRIPT, "--ostree-booted", str(path)], input=json.dumps(spec).encode(), check=True)
