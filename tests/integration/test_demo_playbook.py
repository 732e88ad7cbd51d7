"""playbooks/demo.yml works in a private directory, never in a fixed, guessable one (issue 9 item 1)."""
import os
import subprocess

import yaml

from ansible_run import BIN
from support import TOP

DEMO = os.path.join(TOP, "playbooks", "demo.yml")


def test_demo_makes_its_directory_with_tempfile():
    with open(DEMO) as f:
        text = f.read()
    assert "/tmp/" not in text  # no fixed path a local user could plant symlinks in
    first = yaml.safe_load(text)[0]["tasks"][0]
    assert first["ansible.builtin.tempfile"]["state"] == "directory", first


def test_demo_does_not_write_through_planted_symlinks(tmp_path):
    # A hostile user's pre-made "demo directory": tree and files point at a directory root must not write.
    victim = tmp_path / "victim"
    victim.mkdir()
    planted = tmp_path / "planted"
    planted.mkdir()
    os.symlink(str(victim), str(planted / "tree"))
    os.symlink(str(victim), str(planted / "files"))
    private_tmp = tmp_path / "tmp"
    private_tmp.mkdir()
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(TOP, "ansible.cfg"), ANSIBLE_NOCOLOR="1",
               COMPOSEFS_FLEET_DEMO_DIR=str(planted),  # the old override: must not lead the demo there
               TMPDIR=str(private_tmp), COMPOSEFS_FLEET_REPORT_DIR=str(tmp_path / "report"))
    # The fleet report play is left out (no hosts): only the demo's own plays run.
    proc = subprocess.run([os.path.join(BIN, "ansible-playbook"), DEMO, "-e", "verity_report_hosts=no_such_host"],
                          cwd=TOP, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True,
                          check=False)
    assert os.listdir(str(victim)) == [], proc.stdout  # on 0.1.0: foo.txt, bar.txt, hello.txt written through the link
    assert proc.returncode == 0, proc.stdout
    # The private directory was made under TMPDIR and removed at the end.
    assert str(private_tmp / "composefs-fleet-demo.") in proc.stdout
    assert not [n for n in os.listdir(str(private_tmp)) if n.startswith("composefs-fleet-demo.")]
