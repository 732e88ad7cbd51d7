"""The raw path's fs-verity lines: ``fsverity measure`` (the kernel's digest) and ``fsverity digest`` (computed on the host)."""
import subprocess

from ansible_collections.composefs.fleet.plugins.module_utils.boot.raw import parse_raw, raw_script

CFS = "/sysroot/ostree/deploy/os/deploy/%s.0/.ostree.cfs" % ("c" * 64)
DIGEST = "3d" * 32


def _src(*sections):
    return parse_raw("\n".join(["@@exists " + CFS] + list(sections) + ["@@end", ""]))[0]


def test_script_is_valid_sh_and_asks_for_digests_only_when_told():
    for digests, line in ((True, "DIGESTS=1"), (False, "DIGESTS=0")):
        script = raw_script("/srv/sysroot", digests=digests)
        assert line in script.splitlines()
        subprocess.run(["sh", "-n", "-c", script], check=True)


def test_measured_by_the_kernel():
    verity = _src("@@measure " + CFS, "sha256:%s %s" % (DIGEST, CFS), "@@digest " + CFS, "sha256:%s %s" % (DIGEST, CFS)).verity(CFS)
    assert (verity["enabled"], verity["measured"], verity["digest"], verity["error"]) == (True, DIGEST, DIGEST, None)


def test_no_fs_verity_on_the_image_but_its_digest_computed():
    # fsverity measure prints nothing (and fails) for a file without fs-verity; fsverity digest still computes it
    verity = _src("@@measure " + CFS, "@@digest " + CFS, "sha256:%s %s" % (DIGEST.upper(), CFS)).verity(CFS)
    assert (verity["enabled"], verity["measured"], verity["digest"], verity["error"]) == (False, None, DIGEST, None)


def test_without_fsverity_command_it_stays_unknown_and_says_why():
    verity = _src().verity(CFS)
    assert verity["enabled"] is None and verity["digest"] is None and "no fsverity command" in verity["error"]


def test_garbage_digest_lines_are_not_digests():
    verity = _src("@@measure " + CFS, "sha256:xyz " + CFS, "@@digest " + CFS, "Error: something").verity(CFS)
    assert (verity["enabled"], verity["measured"], verity["digest"]) == (False, None, None)
