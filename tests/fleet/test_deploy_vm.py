"""The deploy role on the fs-verity VM host of the test fleet: verity=require end to end (docs/deploy.md).

playbooks/deploy.yml over SSH to the QEMU guest (tests/vm, a kernel with fs-verity): the
host repository is a secure one (fs-verity on meta.json and on every object the push
writes) on ext4 -O verity; v1, then v2 (one file of a 200-file tree changed) replacing it;
mount_info reports the kernel's verity; an object swapped on the host reads as EIO through
the mount, and fsck names it. The molecule scenario `deploy` covers the rest (the no-op
rerun among it) on namespace hosts; it leaves the VM out for time (docs/deploy.md).
"""

import importlib.util
import json
import os
import re
import subprocess
import sys

_RECAP = re.compile(r"^(\S+)\s+:\s+ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)")


harness = sys.modules["composefs_fleet_harness"]  # loaded by conftest.py
_spec = importlib.util.spec_from_file_location(
    "composefs_fleet_deploy_trees", os.path.join(harness.TOP, "extensions", "molecule", "deploy", "make_trees.py"))
trees = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(trees)
VENV_BIN = os.path.join(harness.TOP, ".venv", "bin")
REPO = "/srv/composefs-fleet/ext4-verity/data/repo"


def _run(argv, fleet):
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(harness.TOP, "ansible.cfg"), ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0",
               PATH=VENV_BIN + os.pathsep + os.environ.get("PATH", ""))
    return subprocess.run(argv, cwd=harness.TOP, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=1200,
                          check=False)


def _deploy(fleet, work, version):
    extra = dict(deploy_name="app", deploy_version=version, deploy_ref="app/" + version,
                 deploy_source_repository=os.path.join(work, "source"), deploy_build_tree=os.path.join(work, "trees", version),
                 deploy_become=False, deploy_hosts="fleet", deploy_repository=REPO, deploy_verity="require",
                 deploy_mount_point="/srv/app", deploy_fstab="/srv/fstab", deploy_health_command="test -e /srv/app/healthy",
                 deploy_health_retries=1, deploy_health_delay=0)
    proc = _run([os.path.join(VENV_BIN, "ansible-playbook"), "-i", fleet.inventory_path, "playbooks/deploy.yml", "-e",
                 json.dumps(extra)], fleet)
    recap = dict((m.group(1), dict(changed=int(m.group(3)), failed=int(m.group(5))))
                 for m in (_RECAP.match(line) for line in proc.stdout.splitlines()) if m)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]
    return recap


def _module(fleet, module, args):
    proc = _run([os.path.join(VENV_BIN, "ansible"), "-i", fleet.inventory_path, "vm01", "-m", module, "-a", json.dumps(args)], fleet)
    head, dummy, body = proc.stdout.partition(" => ")
    assert body, proc.stdout + proc.stderr
    return json.loads(body)


def test_deploy_with_kernel_verity_and_a_swapped_object(vm_fleet, tmp_path):
    fleet = vm_fleet
    work = str(tmp_path)
    for version in ("v1", "v2"):
        trees.make(os.path.join(work, "trees", version), version)
    try:
        assert _deploy(fleet, work, "v1")["vm01"]["changed"] > 0
        assert _deploy(fleet, work, "v2")["vm01"]["changed"] > 0
        mounted = _module(fleet, "composefs.fleet.mount_info", dict(path="/srv/app", fstab="/srv/fstab"))
        assert mounted["kind"] == "ours" and mounted["verity"] == "kernel" and mounted["kernel_verity"] is True, mounted
        assert mounted["fstab"]["verity"] == "require" and mounted["fstab"]["digest"] == mounted["digest"]
        info = _module(fleet, "composefs.fleet.repository_info", dict(path=REPO, fsck=True))
        assert info["secure"] and info["fsck"]["ok"] and info["refs"]["app/current"] == mounted["digest"], info
        assert fleet.ssh("vm01", "cat /srv/app/VERSION").stdout == "v2\n"
        # swap one 32 KiB object for another's bytes (a file without fs-verity): the kernel refuses it at open
        out = fleet.ssh("vm01", "cd %s/objects && set -- $(find . -type f -size 32768c | sort | head -2) && cp \"$2\" ../swap "
                                "&& mv ../swap \"$1\" && echo \"$1\"; for f in /srv/app/data/*; do cat \"$f\" >/dev/null 2>&1 "
                                "|| echo \"EIO $f\"; done; true" % REPO).stdout.split()
        swapped = out[0][2:]
        assert out[1:] and all(word.startswith("/srv/app/data/") or word == "EIO" for word in out[1:]), out
        assert fleet.ssh("vm01", "cat %s 2>&1 >/dev/null; true" % out[2]).stdout.strip().endswith("Input/output error")
        fsck = _module(fleet, "composefs.fleet.repository_info", dict(path=REPO, fsck=True))["fsck"]
        assert not fsck["ok"] and any(swapped in c["path"] for c in fsck["corrupt"]), fsck
    finally:
        # the VM is shared by the tier: take the deployment down again
        fleet.ssh("vm01", "umount /srv/app; rm -rf %s /srv/app /srv/fstab; true" % os.path.dirname(REPO))
