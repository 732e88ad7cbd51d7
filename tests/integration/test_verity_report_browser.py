"""report.html in headless Chromium: every host present, the verdict colours, the counts.

The fleet mixes this host's real facts (the module's, and the raw fallback's from
running the raw script here) with hosts whose kernel facts and mounts are injected
(an fs-verity kernel, as in the VM tier), so that every verdict shows. The page is
rendered twice: with a small probe script appended that writes computed styles into
the DOM (read back with --dump-dom), and as it is, for a screenshot.

Chromium (Debian packages chromium, chromium-driver) is required: without it this
test fails, naming the packages. COMPOSEFS_FLEET_UPDATE_SCREENSHOT=1 also writes
a screenshot of the whole page to docs/images/verity-report.png.
"""
import html
import json
import os
import re
import shutil
import struct
import subprocess
import zlib

import pytest
from support import TOP

from ansible_collections.composefs.fleet.plugins.module_utils.common.mountinfo import mount_of, parse_mountinfo
from ansible_collections.composefs.fleet.plugins.module_utils.verity_facts.gather import gather
from ansible_collections.composefs.fleet.plugins.module_utils.verity_facts.kernel import kernel_facts
from ansible_collections.composefs.fleet.plugins.module_utils.verity_facts.paths import block_facts, path_entry
from ansible_collections.composefs.fleet.plugins.module_utils.verity_facts.rootfs import root_facts
from ansible_collections.composefs.fleet.plugins.plugin_utils.verity_report import (
    COLOURS,
    HOST_VERDICTS,
    fleet_report,
    host_record,
    parse_raw,
    raw_script,
    render_html,
)

CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync")
SCREENSHOT = os.path.join(TOP, "docs", "images", "verity-report.png")

PROBE = """<script>
(function () {
  var out = {rows: [], counts: {}, groups: {}};
  document.querySelectorAll("tr.host").forEach(function (tr) {
    var box = tr.getBoundingClientRect();
    out.rows.push({
      host: tr.dataset.host, verdict: tr.dataset.verdict, group: tr.closest("section").dataset.verdict,
      background: getComputedStyle(tr).backgroundColor,
      border: getComputedStyle(tr.cells[0]).borderLeftColor,
      badge: getComputedStyle(tr.querySelector(".badge")).backgroundColor,
      text: tr.innerText, visible: box.width > 0 && box.height > 0
    });
  });
  document.querySelectorAll("ul.counts li").forEach(function (li) {
    out.counts[li.id] = {text: li.innerText, background: getComputedStyle(li).backgroundColor};
  });
  document.querySelectorAll("section.group").forEach(function (s) {
    out.groups[s.dataset.verdict] = s.querySelectorAll("tr.host").length;
  });
  var pre = document.createElement("pre");
  pre.id = "probe-result";
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
})();
</script>
"""

FS_VERITY_SOURCES = dict(
    release="6.12.117+deb13-amd64", sysfs=dict(ext4=["encryption", "verity"], btrfs=["verity"], f2fs=None, xfs=None, erofs=["sb_chksum"]),
    filesystems=["ext4", "btrfs", "xfs", "overlay", "erofs", "tmpfs"], modules_dir=True, loop_devices=8, loop_control=True,
)


def chromium():
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    pytest.fail("chromium is missing: install the Debian packages chromium and chromium-driver "
                "(apt-get install -y chromium chromium-driver)", pytrace=False)


def run_chromium(tmp_path, *args):
    profile = tmp_path / ("profile-%d" % len(list(tmp_path.glob("profile-*"))))
    argv = [chromium()] + list(CHROMIUM_FLAGS) + ["--user-data-dir=%s" % profile] + list(args)
    proc = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=180, check=False)
    assert proc.returncode == 0, "chromium failed (exit %d): %s" % (proc.returncode, proc.stderr[-3000:])
    return proc.stdout


def _superblock(verity):
    data = bytearray(1024)
    struct.pack_into("<I", data, 0x18, 2)
    struct.pack_into("<H", data, 0x38, 0xEF53)
    struct.pack_into("<III", data, 0x5C, 0x3C, 0x2C2, 0x46B | (0x8000 if verity else 0))
    return bytes(data)


def injected_host(mountinfo, paths, verity_superblock=True):
    """composefs facts of a host with an fs-verity kernel: decided by the real logic from injected inputs."""
    kernel = kernel_facts(FS_VERITY_SOURCES)
    mounts = parse_mountinfo(mountinfo)
    entries = []
    for path in paths:
        mount = mount_of(path, None, mounts)
        sb = _superblock(verity_superblock) if mount.fstype == "ext4" else None
        entries.append(path_entry(path, mount, kernel, block_facts(mount, sb, None, mount.source if mount.source.startswith("/dev/") else None)))
    return dict(facts_version=1, source="module", kernel=kernel, paths=entries, missing_paths=[], tools={}, root=root_facts(mounts), probe={})


def ok(facts):
    return dict(changed=False, ansible_facts=dict(composefs=facts))


def fleet():
    this_host = gather(["/", "/tmp"])
    raw = subprocess.run(["/bin/sh", "-c", raw_script(["/", "/tmp"])], capture_output=True, text=True, check=True).stdout
    ext4 = "22 1 254:1 / / rw,relatime - ext4 /dev/vda1 rw\n30 22 254:16 / /var rw,relatime - ext4 /dev/vdb rw\n"
    btrfs = "22 1 0:31 / / rw,relatime - btrfs /dev/vda2 rw,subvol=/root\n"
    xfs = "22 1 0:30 / / ro,relatime - overlay composefs ro,lowerdir+=/run/l,datadir+=/sysroot/ostree/repo/objects,verity=require\n" \
          "23 1 252:4 / /sysroot rw,relatime - xfs /dev/vda4 rw\n"
    nfs = ext4 + "40 30 0:60 / /var/lib/containers rw,relatime - nfs4 filer:/containers rw,vers=4.2\n"
    return [
        host_record("bootc-ext4", ok(injected_host(ext4, ["/var/lib/containers/storage", "/"]))),
        host_record("podman-btrfs", ok(injected_host(btrfs, ["/var/lib/containers/storage", "/"]))),
        host_record("fcos-xfs", ok(injected_host(xfs, ["/sysroot/ostree/repo", "/"]))),
        host_record("ext4-no-verity", ok(injected_host(ext4, ["/var/lib/containers/storage"], verity_superblock=False))),
        host_record("nfs-store", ok(injected_host(nfs, ["/var/lib/containers/storage"]))),
        host_record("this-host", ok(this_host)),
        host_record("this-host-raw", ok(parse_raw(raw, ["/", "/tmp"]))),
        host_record("offline-01", dict(unreachable=True, changed=False,
                                       msg="Task failed: Failed to connect to the host via ssh: ssh: connect to host 192.0.2.7 port 22: No route to host")),
        host_record("broken-01", dict(failed=True, msg="MODULE FAILURE", module_stderr="Traceback (most recent call last): ...")),
    ]


EXPECTED = {
    "bootc-ext4": "pass", "podman-btrfs": "pass", "fcos-xfs": "fail", "ext4-no-verity": "fail", "nfs-store": "unknown",
    "this-host": "fail", "this-host-raw": "fail", "offline-01": "unreachable", "broken-01": "error",
}


def _rgb(colour):
    return "rgb(%d, %d, %d)" % tuple(int(colour[i:i + 2], 16) for i in (1, 3, 5))


def _rgba(colour, alpha):
    return "rgba(%d, %d, %d, %s)" % (tuple(int(colour[i:i + 2], 16) for i in (1, 3, 5)) + (alpha,))


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    work = tmp_path_factory.mktemp("browser")
    report = fleet_report(fleet(), dict(required_paths=[], required_kernel_features=["fs_verity", "overlay_verity", "erofs"]),
                          "composefs fs-verity fleet report")
    path = work / "report.html"
    path.write_text(render_html(report), encoding="utf-8")
    return dict(report=report, path=path, work=work)


def test_rendered_page(page):
    probed = page["work"] / "probed.html"
    probed.write_text(page["path"].read_text(encoding="utf-8").replace("</body>", PROBE + "</body>"), encoding="utf-8")
    dom = run_chromium(page["work"], "--dump-dom", probed.as_uri())
    match = re.search(r'<pre id="probe-result">(.*?)</pre>', dom, re.S)
    assert match, "the probe script did not run: %s" % dom[-2000:]
    result = json.loads(html.unescape(match.group(1)))

    assert page["report"]["counts"] == dict(total=9, **{"pass": 2, "fail": 4, "unknown": 1, "unreachable": 1, "error": 1})
    rows = dict((r["host"], r) for r in result["rows"])
    assert sorted(rows) == sorted(EXPECTED), "hosts missing from the page"
    for host, verdict in EXPECTED.items():
        row = rows[host]
        assert row["verdict"] == verdict and row["group"] == verdict, (host, row)
        assert row["visible"], host
        assert row["badge"] == _rgb(COLOURS[verdict]), (host, row["badge"])
        assert row["border"] == _rgb(COLOURS[verdict]), (host, row["border"])
        assert row["background"] == _rgba(COLOURS[verdict], "0.1"), (host, row["background"])
        assert host in row["text"]
    assert "no python: raw facts only" in rows["this-host-raw"]["text"]
    assert "kernel built without CONFIG_FS_VERITY" in rows["this-host"]["text"]
    assert "xfs has no fs-verity" in rows["fcos-xfs"]["text"]
    # the verdicts' colours differ from each other
    assert len({rows[h]["badge"] for h in EXPECTED}) == len(HOST_VERDICTS)
    # counts as shown, each in its verdict's colour; groups worst first with their hosts
    counts = page["report"]["counts"]
    assert result["counts"]["count-total"]["text"] == "9 hosts"
    for verdict in HOST_VERDICTS:
        shown = result["counts"]["count-%s" % verdict]
        assert shown["text"] == "%d %s" % (counts[verdict], verdict)
        assert shown["background"] == _rgb(COLOURS[verdict])
    assert result["groups"] == dict((v, counts[v]) for v in HOST_VERDICTS if counts[v])
    order = [r["group"] for r in result["rows"]]
    assert order == sorted(order, key=HOST_VERDICTS.index)


def _png_pixels(path):
    """(width, height, rows of RGB tuples) of an 8-bit RGB/RGBA PNG, decoded with zlib."""
    with open(path, "rb") as f:
        data = f.read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width, height, channels = 8, b"", 0, 0, 0
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        chunk = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, colour_type = struct.unpack(">IIBB", chunk[:10])
            assert depth == 8 and colour_type in (2, 6), (depth, colour_type)
            channels = 3 if colour_type == 2 else 4
        elif kind == b"IDAT":
            idat += chunk
        pos += 12 + length
    raw = zlib.decompress(idat)
    stride = width * channels
    rows, prev = [], bytearray(stride)
    for y in range(height):
        filt = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - channels] if i >= channels else 0
            b = prev[i]
            c = prev[i - channels] if i >= channels else 0
            if filt == 1:
                line[i] = (line[i] + a) & 255
            elif filt == 2:
                line[i] = (line[i] + b) & 255
            elif filt == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif filt == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        rows.append(line)
        prev = line
    return width, height, [[tuple(r[x:x + 3]) for x in range(0, stride, channels)] for r in rows]


def test_screenshot(page):
    shot = page["work"] / "verity-report.png"
    run_chromium(page["work"], "--screenshot=%s" % shot, "--window-size=1200,900", "--hide-scrollbars", page["path"].as_uri())
    width, height, pixels = _png_pixels(str(shot))
    assert (width, height) == (1200, 900)
    seen = set(p for row in pixels for p in row)
    for verdict in ("pass", "fail", "unknown", "unreachable", "error"):  # the count badges at the top
        colour = COLOURS[verdict]
        assert tuple(int(colour[i:i + 2], 16) for i in (1, 3, 5)) in seen, "no %s-coloured pixel in the screenshot" % verdict
    if os.environ.get("COMPOSEFS_FLEET_UPDATE_SCREENSHOT") == "1":
        # the whole page, for docs/verity_check.md
        os.makedirs(os.path.dirname(SCREENSHOT), exist_ok=True)
        run_chromium(page["work"], "--screenshot=%s" % SCREENSHOT, "--window-size=1200,1320", "--hide-scrollbars", page["path"].as_uri())
