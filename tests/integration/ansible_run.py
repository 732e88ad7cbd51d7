"""Run real modules and playbooks through ansible, from the checkout (ansible.cfg applies)."""
import json
import os
import subprocess
import sys

from support import TOP

BIN = os.path.dirname(sys.executable)


def run_module(module, args, check=False, diff=False, env=None):
    """Run ``composefs.fleet.<module>`` on localhost via the ``ansible`` CLI; return the result dict."""
    argv = [os.path.join(BIN, "ansible"), "localhost", "-m", module, "-a", json.dumps(args)]
    if check:
        argv.append("--check")
    if diff:
        argv.append("--diff")
    full_env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(TOP, "ansible.cfg"), ANSIBLE_NOCOLOR="1")
    full_env.update(env or {})
    proc = subprocess.run(argv, cwd=TOP, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, check=False)
    # Ad-hoc output is "localhost | STATUS => {json}" (the minimal callback).
    head, sep, body = proc.stdout.partition(" => ")
    try:
        result = json.loads(body)
    except ValueError:
        raise AssertionError("ansible printed no result (rc=%d):\n%s\n%s" % (proc.returncode, proc.stdout, proc.stderr))
    result["failed"] = result.get("failed", False) or "FAILED" in head
    result["_stderr"] = proc.stderr
    return result
