"""A real Podman 5 uses composefs after composefs.fleet.podman ran (issue 11).

One fleet (tests/fleet/harness.py) with one Podman host whose root is the cached Debian sid root
(Podman 5.8, composefs, crun; scripts/setup-sid-root.sh), one registry (sid's docker-registry on that
host's loopback), two one-layer images built there with no outside base, pushed zstd:chunked and gzip.
Storage is configured ONLY through the role (tests/podman/role.yml imports playbooks/podman.yml); the
test itself pulls and runs containers, as a user would. The tests run in file order and build on each
other's state (one store, as on a real host).

Nothing here skips: a missing sid root fails, naming `make setup-sid-root`.
"""

import json
import subprocess
import os
import re

import pytest

import realpodman as rp

SHOW = {}  # figures for the report at the end (partial pull bytes)


def _fail_missing():
    problems = rp.missing_prerequisites()
    if problems:
        pytest.fail("the real-Podman tier cannot run:\n  " + "\n  ".join(problems), pytrace=False)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    _fail_missing()
    fleet = rp.harness().up(str(tmp_path_factory.mktemp("podman-fleet")), hosts=0, podman=1)
    try:
        yield fleet
    finally:
        fleet.down()


@pytest.fixture(scope="module")
def registry(fleet):
    reg = rp.Registry(fleet).start()
    try:
        yield reg
    finally:
        reg.stop()
        assert reg.proc.poll() is not None, "docker-registry still runs after stop()"


@pytest.fixture(scope="module")
def images(fleet, registry):
    return rp.build_and_push(fleet)


@pytest.fixture(scope="module")
def reports(tmp_path_factory):
    return str(tmp_path_factory.mktemp("podman-reports"))


def role(fleet, reports, expect_rc=0, **variables):
    rc, out, report = rp.run_role(fleet, reports, **variables)
    assert rc == expect_rc, "role exit %d (expected %d):\n%s" % (rc, expect_rc, out[-6000:])
    return out, report


def verify_only(fleet, reports, use_composefs, *tags):
    _out, report = role(fleet, reports, podman_verify_only=True, podman_use_composefs=use_composefs,
                        podman_verify_images=[rp.image(t) for t in tags])
    return report


def pull(fleet, tag):
    rp.ssh(fleet, "podman pull -q --tls-verify=false %s" % rp.image(tag))


def layer_dirs(fleet, tag):
    data = json.loads(rp.ssh(fleet, "podman image inspect %s" % rp.image(tag)))[0]["GraphDriver"]["Data"]
    dirs = [d for d in data.get("LowerDir", "").split(":") + [data.get("UpperDir", "")] if d]
    return sorted({os.path.dirname(d) for d in dirs})


def has_blob(fleet, directory):
    return rp.ssh(fleet, "test -s %s/composefs-data/composefs.blob && echo yes || echo no" % directory).strip() == "yes"


def erofs_instances(fleet):
    return set(rp.ssh(fleet, "ls /sys/fs/erofs").split()) - {"features"}


def run_and_look(fleet, tag, name):
    """Run the image (--network none); return its / line of mountinfo, the erofs instances that came with it
    (and went with it), and the sha256 of its files."""
    before = erofs_instances(fleet)
    rp.ssh(fleet, "podman rm -f -t 0 %s >/dev/null 2>&1; podman run -d --network none --name %s %s /bin/busybox sleep 600" % (name, name, rp.image(tag)))
    try:
        inside = rp.ssh(fleet, "podman exec %s /bin/busybox cat /proc/self/mountinfo" % name)
        sums = rp.ssh(fleet, "podman exec %s /bin/busybox sh -c 'cd / && busybox sha256sum bin/busybox data/*.bin'" % name)
        during = erofs_instances(fleet)
    finally:
        rp.ssh(fleet, "podman rm -f -t 0 %s >/dev/null" % name)
    came_and_went = (during - before) - erofs_instances(fleet)
    root = [line for line in inside.splitlines() if line.split()[4] == "/"]
    files = {"/" + line.split(None, 1)[1].strip(): line.split()[0] for line in sums.splitlines() if line.strip()}
    return root[0], came_and_went, files


def composefs_root(root_line, erofs):
    """Whether the container's / is the composefs overlay: an overlay (metacopy) whose lowers are the layers'
    erofs images, mounted at ``.../<layer>/composefs-layers/N``, then ``::`` and the data-only lowers
    ``.../<layer>/diff``; and erofs instances (/sys/fs/erofs) that live exactly as long as the container.
    containers-storage mounts each layer's composefs-data/composefs.blob as erofs (file-backed, no loop
    device) and detaches that mount once the overlay holds it, so no mountinfo lists the erofs mounts."""
    lowers = re.search(r"lowerdir=([^,]+)", root_line).group(1)
    metadata, _sep, data = lowers.partition("::")
    cfs = [d for d in metadata.split(":") if "/composefs-layers/" in d]
    ok = bool(cfs) and bool(data) and "metacopy=on" in root_line and len(erofs) >= len(cfs)
    return ok, cfs, erofs


# ---------------------------------------------------------------------------------------------------------
def test_the_podman_host_is_sid_podman_5(fleet):
    out = rp.ssh(fleet, "podman --version; findmnt -n -o FSTYPE / 2>/dev/null || grep ' / / ' /proc/self/mountinfo")
    assert re.search(r"podman version 5\.\d+", out), out
    assert "overlay" in out, out


def test_role_turns_composefs_on_and_podman_reads_it(fleet, reports):
    # (check mode and --diff of the role: tests/integration/test_storage_conf_playbook.py)
    assert rp.ssh(fleet, "test -e /etc/containers/storage.conf && echo present || echo absent").strip() == "absent"
    out, report = role(fleet, reports, podman_use_composefs=True)
    assert rp.recap(out)["changed"] >= 1, out[-3000:]
    # podman info itself: use_composefs true
    info = json.loads(rp.ssh(fleet, "podman info --format json"))["store"]
    assert info["graphOptions"].get("overlay.use_composefs") == "true", info
    # the role names the file Podman read (Podman 5.8's info has no configFile: the role applies Podman's rule)
    assert report["config_file"] == "/etc/containers/storage.conf", report
    assert report["use_composefs"] is True and report["config_ok"] is True, report
    assert "Podman 5." in out and "reads /etc/containers/storage.conf" in out, out[-3000:]
    text = rp.ssh(fleet, "cat /etc/containers/storage.conf")
    assert 'use_composefs = "true"' in text and 'enable_partial_images = "true"' in text
    # idempotent
    out, _report = role(fleet, reports, podman_use_composefs=True)
    assert rp.recap(out)["changed"] == 0, out[-3000:]


def test_zstd_chunked_pull_stores_layers_as_composefs(fleet, images):
    assert images["1-zstd"]["layers"] == 1 and "io.github.containers.zstd-chunked.manifest-checksum" in images["1-zstd"]["annotations"], images
    pull(fleet, "1-zstd")
    dirs = layer_dirs(fleet, "1-zstd")
    assert dirs and all(has_blob(fleet, d) for d in dirs), dirs
    # the role's verdict on it: test_gzip_image_without_convert_images_is_reported_not_composefs


def test_container_runs_from_composefs_and_reads_the_image_files(fleet, images):
    root, erofs, files = run_and_look(fleet, "1-zstd", "cfsf-zstd")
    ok, _cfs, erofs = composefs_root(root, erofs)
    assert ok, "container / is not a composefs overlay:\n%s\nerofs instances of the container: %s" % (root, erofs)
    assert files == rp.expected_files(fleet, "1-zstd")


def test_partial_pull_of_image_2_fetches_only_the_changed_file(fleet, registry, images):
    start = registry.log_size()
    pull(fleet, "2-zstd")
    fetched, ranges = rp.blob_bytes(registry.requests_since(start))
    full = images["2-zstd"]["layer_bytes"]
    SHOW["zstd"] = {"fetched": fetched, "range_requests": ranges, "layer": full}
    # the changed file is DATA_FILE_BYTES of random data (incompressible): its chunks, the TOC and the
    # config, far below the whole layer (busybox and 11 other files)
    assert ranges >= 1, registry.requests_since(start, settle=0)
    assert rp.DATA_FILE_BYTES <= fetched < rp.DATA_FILE_BYTES + 64 * 1024, SHOW
    assert fetched < full / 3, SHOW
    assert all(has_blob(fleet, d) for d in layer_dirs(fleet, "2-zstd"))
    _root, _mounts, files = run_and_look(fleet, "2-zstd", "cfsf-zstd2")
    assert files == rp.expected_files(fleet, "2-zstd") and files != rp.expected_files(fleet, "1-zstd")


def test_gzip_image_without_convert_images_is_reported_not_composefs(fleet, registry, reports, images):
    pull(fleet, "1-gzip")
    start = registry.log_size()
    pull(fleet, "2-gzip")
    fetched, _ranges = rp.blob_bytes(registry.requests_since(start))
    SHOW["gzip"] = {"fetched": fetched, "layer": images["2-gzip"]["layer_bytes"]}
    assert fetched >= images["2-gzip"]["layer_bytes"], SHOW  # the whole layer again
    root, erofs, files = run_and_look(fleet, "1-gzip", "cfsf-gzip")
    assert not composefs_root(root, erofs)[0] and "composefs-layers" not in root, root
    assert files == rp.expected_files(fleet, "1-gzip")
    out, report = role(fleet, reports, podman_verify_only=True, podman_use_composefs=True,
                       podman_verify_images=[rp.image("1-gzip"), rp.image("1-zstd")])
    verdict = report["images"][rp.image("1-gzip")]
    assert verdict["composefs"] is False and verdict["verdict"].startswith("does not run from composefs"), report
    assert "does not run from composefs" in out and "failed=0" in out, out[-3000:]
    verdict = report["images"][rp.image("1-zstd")]
    assert verdict["composefs"] is True and verdict["verdict"].startswith("runs from composefs"), report
    assert "1-zstd runs from composefs" in out
    print("\npartial pull of image 2 after image 1: zstd:chunked %(fetched)d bytes (%(range_requests)d range requests, "
          "layer %(layer)d bytes)" % SHOW["zstd"] + "; gzip %(fetched)d bytes (layer %(layer)d bytes)" % SHOW["gzip"])


def test_gzip_image_with_convert_images_runs_from_composefs(fleet, reports, images):
    out, report = role(fleet, reports, podman_use_composefs=True, podman_pull_options={"convert_images": True})
    assert rp.recap(out)["changed"] >= 1
    rp.ssh(fleet, "podman rmi %s %s >/dev/null" % (rp.image("1-gzip"), rp.image("2-gzip")))
    pull(fleet, "1-gzip")
    assert all(has_blob(fleet, d) for d in layer_dirs(fleet, "1-gzip"))
    root, erofs, files = run_and_look(fleet, "1-gzip", "cfsf-gzip-conv")
    assert composefs_root(root, erofs)[0], root
    assert files == rp.expected_files(fleet, "1-gzip")


def test_turning_composefs_off_takes_effect_for_new_pulls_without_a_reset(fleet, reports, images):
    out, report = role(fleet, reports, podman_use_composefs=False)
    assert "system reset" not in out.split("PLAY RECAP")[0].replace("Reset Podman storage when", ""), out[-3000:]
    assert report["use_composefs"] is False and report["config_ok"] is True, report
    info = json.loads(rp.ssh(fleet, "podman info --format json"))["store"]
    assert info["graphOptions"].get("overlay.use_composefs") == "false", info
    # the store was not reset: what was pulled before is still there
    assert rp.image("2-zstd") in rp.ssh(fleet, "podman images --format '{{.Repository}}:{{.Tag}}'")
    # a new pull of the zstd:chunked image is stored without composefs
    rp.ssh(fleet, "podman rmi %s >/dev/null" % rp.image("1-zstd"))
    pull(fleet, "1-zstd")
    assert not any(has_blob(fleet, d) for d in layer_dirs(fleet, "1-zstd"))
    root, erofs, files = run_and_look(fleet, "1-zstd", "cfsf-off")
    assert not composefs_root(root, erofs)[0] and "composefs-layers" not in root, root
    assert files == rp.expected_files(fleet, "1-zstd")
    report = verify_only(fleet, reports, False, "1-zstd", "2-zstd")
    assert report["images"][rp.image("1-zstd")]["composefs"] is False
    # an image pulled while composefs was on keeps its composefs layers until it is pulled again
    assert report["images"][rp.image("2-zstd")]["composefs"] is True


def test_verify_only_fails_a_host_whose_podman_disagrees(fleet, reports):
    # composefs is off on the host now; an operator's fleet check that expects it on fails that host, in words
    before = rp.ssh(fleet, "sha256sum /etc/containers/storage.conf")
    rc, out, _report = rp.run_role(fleet, reports, podman_verify_only=True, podman_use_composefs=True)
    assert rc == 2 and "Podman does not use what the role wrote" in out, out[-3000:]
    assert "changed=0" in out and rp.ssh(fleet, "sha256sum /etc/containers/storage.conf") == before  # read-only


def test_a_storage_conf_dropin_wins_over_the_main_file(fleet, reports):
    """sid's containers-storage 1.64 (the storage library generation of Podman 6) reads
    storage.rootful.conf.d/ drop-ins, and so does Debian's Podman 5.8.6, which Debian builds against it.
    A drop-in written by storage_conf turns composefs on over a main file that says "false"."""
    dropin = "/etc/containers/storage.rootful.conf.d/50-composefs-fleet.conf"
    # scope: path writes into an existing directory only (the rootful scope creates it)
    rp.ssh(fleet, "mkdir -p /etc/containers/storage.rootful.conf.d")
    before = json.loads(rp.ssh(fleet, "containers-storage config"))
    # in file order, test_turning_composefs_off... left use_composefs = "false" in /etc/containers/storage.conf
    assert "overlay.use_composefs=true" not in before["driver-options"], before
    try:
        code, out = rp_ansible_storage_conf(fleet, dict(use_composefs=True, scope="path", path=dropin, layout="dropin"))
        assert code == 0, out
        text = rp.ssh(fleet, "cat %s" % dropin)
        assert 'use_composefs = "true"' in text
        config = json.loads(rp.ssh(fleet, "containers-storage config"))
        assert "overlay.use_composefs=true" in config["driver-options"], config
        info = json.loads(rp.ssh(fleet, "podman info --format json"))["store"]
        assert info["graphOptions"].get("overlay.use_composefs") == "true", info
    finally:
        rp.ssh(fleet, "rm -rf /etc/containers/storage.rootful.conf.d")
    assert json.loads(rp.ssh(fleet, "containers-storage config")) == before


def rp_ansible_storage_conf(fleet, args):
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(rp.TOP, "ansible.cfg"), PATH=rp.VENV_BIN + os.pathsep + os.environ.get("PATH", ""))
    proc = subprocess.run([os.path.join(rp.VENV_BIN, "ansible"), "-i", fleet.inventory_path, "fleet_podman",
                           "-m", "composefs.fleet.storage_conf", "-a", json.dumps(args)],
                          cwd=rp.TOP, env=env, capture_output=True, text=True, timeout=300, check=False)
    return proc.returncode, proc.stdout + proc.stderr
