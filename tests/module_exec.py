"""Run a module of the collection in-process-free and controller-free: ``python <module>.py args.json``.

This is how the guest tier runs modules (a full ansible controller is slow under
TCG); it executes the real module file exactly as AnsiballZ would, minus the zip.
"""
import json
import os
import subprocess
import sys
import tempfile

from support import TOP


def exec_module(name, args, check=False, diff=False):
    """Run plugins/modules/<name>.py with ``args``; return its result dict (with ``failed`` set on failure)."""
    module = os.path.join(TOP, "plugins", "modules", name + ".py")
    payload = {"ANSIBLE_MODULE_ARGS": dict(args, _ansible_check_mode=check, _ansible_diff=diff,
                                           _ansible_remote_tmp=tempfile.gettempdir(), _ansible_keep_remote_files=False)}
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(payload, f)
    try:
        env = dict(os.environ, PYTHONPATH=os.path.join(TOP, ".cache", "collections"))
        proc = subprocess.run([sys.executable, module, f.name], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              universal_newlines=True, env=env, cwd=TOP, check=False)
    finally:
        os.unlink(f.name)
    try:
        result = json.loads(proc.stdout)
    except ValueError:
        raise AssertionError("module %s printed no JSON (rc=%d):\n%s\n%s" % (name, proc.returncode, proc.stdout, proc.stderr))
    result.setdefault("failed", proc.returncode != 0)
    return result
