"""The fleet's host WITH fs-verity: the tests/vm QEMU guest, running sshd.

An optional addition to harness.py (``up --vm``), kept apart so the namespace
hosts work without it. It reuses what tests/vm provides:

* ``tests/vm/guest.py``: the kernel and initramfs (``.cache/vm/``, built by
  ``scripts/fetch-guest-kernel.sh``), the QEMU flags and kernel command line;
* the initramfs ``/init`` contract: the host's ``/`` read-only over 9p (tag
  ``hostroot``) with a tmpfs overlay, a writable 9p share (tag ``vmshare``)
  mounted at ``GUEST_SHARE``, and ``job.sh`` from that share run chrooted into
  the host's root. So ``/usr/sbin/sshd`` and ``/usr/bin/python3`` of this
  machine exist in the guest.

What it adds: the guest kernel's NIC driver (``virtio_net`` and its
dependencies, taken from the kernel package that the fetch script cached in
``.cache/vm/debs/``, into ``.cache/fleet/guest-net/<version>/``), a QEMU
user-mode network with ``restrict=on`` (the guest reaches nothing; only the
``hostfwd=tcp:127.0.0.1:<port>-:22`` comes in), its own ``job.sh`` that
mounts one virtio disk per data filesystem under ``/srv/composefs-fleet``
exactly as on the namespace hosts, and then ``exec sshd -D``.
"""

from __future__ import annotations

import importlib.util
import lzma
import os
import shlex
import shutil
import subprocess
import sys
import tarfile
import time
from typing import List, Sequence

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.dirname(os.path.dirname(HERE))
GUEST_PY = os.path.join(TOP, "tests", "vm", "guest.py")
NET_CACHE = os.path.join(TOP, ".cache", "fleet", "guest-net")
# load order: dependencies first
NET_MODULES = ("failover", "net_failover", "virtio_net")
GUEST_ADDRESS = "10.0.2.15"  # QEMU user networking's first DHCP address; set statically
HOST_NAME = "vm01"


def guest():
    """tests/vm/guest.py, loaded by path (as tests/vm/test_guest.py does)."""
    name = "composefs_fleet_vm_guest"
    if name not in sys.modules:
        if not os.path.isfile(GUEST_PY):
            raise ImportError("%s is missing (the tests/vm tier)" % GUEST_PY)
        spec = importlib.util.spec_from_file_location(name, GUEST_PY)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


_NEEDED = ("VM_DEV_FUNCTION", "KERNEL", "INITRAMFS", "QEMU", "QEMU_FLAGS", "KERNEL_CMDLINE", "GUEST_SHARE", "CACHE", "missing_prerequisites")


def _guest_kernel_dir() -> str:
    return os.path.dirname(os.path.realpath(guest().KERNEL))


def _manifest() -> dict:
    path = os.path.join(guest().CACHE, "guest-kernel.env")
    found = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            key, sep, value = line.strip().partition("=")
            if key and sep:
                found[key] = value
    return found


def missing_prerequisites() -> List[str]:
    """What the VM host lacks, as messages naming the fix."""
    try:
        g = guest()
    except Exception as exc:  # pylint: disable=broad-except
        return ["cannot load tests/vm/guest.py: %s" % exc]
    absent = [n for n in _NEEDED if not hasattr(g, n)]
    if absent:
        return ["tests/vm/guest.py no longer provides %s: update tests/fleet/vmhost.py" % ", ".join(absent)]
    problems = list(g.missing_prerequisites())
    if problems:
        return problems
    try:
        manifest = _manifest()
        version = manifest["KERNEL_VERSION"]
    except (OSError, KeyError):
        return [".cache/vm/guest-kernel.env is missing or incomplete: run scripts/fetch-guest-kernel.sh"]
    if not os.path.isfile(os.path.join(NET_CACHE, version, "virtio_net.ko")):
        deb = os.path.join(g.CACHE, "debs", manifest.get("DEB", "?"))
        if not os.path.isfile(deb):
            problems.append("%s is missing (the NIC driver comes from it): run scripts/fetch-guest-kernel.sh" % os.path.relpath(deb, TOP))
        for cmd in ("dpkg-deb",):
            if not _which(cmd):
                problems.append("%s is missing: apt-get install dpkg" % cmd)
    if not os.path.isfile(os.path.join(_guest_kernel_dir(), "config")):
        problems.append("the guest kernel's config is missing in %s: run scripts/fetch-guest-kernel.sh" % _guest_kernel_dir())
    return problems


def _which(cmd: str):
    return shutil.which(cmd) or shutil.which(cmd, path="/usr/sbin:/sbin:/usr/bin:/bin")


def guest_kernel_has_verity() -> bool:
    with open(os.path.join(_guest_kernel_dir(), "config"), encoding="utf-8") as f:
        return any(line.strip() == "CONFIG_FS_VERITY=y" for line in f)


def net_modules() -> List[str]:
    """The guest kernel's virtio_net and dependencies, decompressed; cached per kernel version."""
    manifest = _manifest()
    version = manifest["KERNEL_VERSION"]
    out = os.path.join(NET_CACHE, version)
    paths = [os.path.join(out, "%s.ko" % m) for m in NET_MODULES]
    if all(os.path.isfile(p) for p in paths):
        return paths
    deb = os.path.join(guest().CACHE, "debs", manifest["DEB"])
    os.makedirs(out, exist_ok=True)
    wanted = {"%s.ko%s" % (m, ext): m for m in NET_MODULES for ext in ("", ".xz")}
    proc = subprocess.Popen([_which("dpkg-deb") or "dpkg-deb", "--fsys-tarfile", deb], stdout=subprocess.PIPE)
    found = {}
    try:
        with tarfile.open(fileobj=proc.stdout, mode="r|") as tar:
            for member in tar:
                base = os.path.basename(member.name)
                if member.isfile() and base in wanted and "/modules/%s/" % version in member.name:
                    data = tar.extractfile(member).read()
                    found[wanted[base]] = lzma.decompress(data) if base.endswith(".xz") else data
                    if len(found) == len(NET_MODULES):
                        break
    finally:
        proc.stdout.close()
        proc.kill()
        proc.wait()
    missing = [m for m in NET_MODULES if m not in found]
    if missing:
        raise RuntimeError("%s has no %s for %s (zstd-compressed modules are not handled)" % (deb, missing, version))
    for m in NET_MODULES:
        with open(os.path.join(out, "%s.ko.tmp" % m), "wb") as f:
            f.write(found[m])
        os.replace(os.path.join(out, "%s.ko.tmp" % m), os.path.join(out, "%s.ko" % m))
    return paths


def _job_script(share: str, kinds: Sequence, sshd_config: str) -> str:
    h = _harness_module()
    q = shlex.quote
    lines = [
        "# Written by tests/fleet/vmhost.py: the fleet's fs-verity host (runs chrooted into the host's / over 9p)",
        "export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8",
        "share=%s" % q(share),
        'say() { echo "fleet-vm: $*"; }',
        'fail() { say "FATAL: $*"; echo "$*" >"$share/setup-error"; exit 1; }',
    ]
    lines += ['insmod "$share/modules/%s.ko" || fail "insmod %s"' % (m, m) for m in NET_MODULES]
    lines += [
        "dev=",
        "for _ in $(seq 100); do",
        "  for n in /sys/class/net/*; do [ \"${n##*/}\" = lo ] || dev=${n##*/}; done",
        '  [ -n "$dev" ] && break; sleep 0.1',
        "done",
        '[ -n "$dev" ] || fail "no network interface after insmod virtio_net"',
        'ip link set lo up && ip link set "$dev" up && ip addr add %s/24 dev "$dev" || fail "network set-up of $dev"' % GUEST_ADDRESS,
    ] + guest().VM_DEV_FUNCTION + [
        'mount -t tmpfs -o mode=0755,size=16m cfsf-srv /srv || fail "tmpfs on /srv"',
    ]
    for kind in kinds:
        lines.append("mkdir -p %s" % q(kind.mountpoint))
        if kind.fstype == "tmpfs":
            lines.append('mount -t tmpfs -o mode=0755,size=64m cfsf-tmpfs %s || fail "tmpfs on %s"' % (q(kind.mountpoint), kind.mountpoint))
        else:
            lines.append('d=$(vm_dev %s) || fail "no virtio disk with serial %s"' % (q(kind.name), kind.name))
            lines.append('mount -t %s "$d" %s || fail "mount %s"' % (kind.fstype, q(kind.mountpoint), kind.name))
        lines.append("mkdir -p %s" % q(kind.path))
    lines += [
        # a home of its own: the machine's ~/.bashrc (pyenv init) is slow, under TCG very slow
        'mount -t tmpfs -o mode=0700,size=64m cfsf-home /root || fail "tmpfs on /root"',
        "mkdir -p /run/sshd",
        'say "sshd on %s:22 ($dev)"' % GUEST_ADDRESS,
        "exec %s -D -e -f %s" % (h.SSHD, q(sshd_config)),
    ]
    return "\n".join(lines) + "\n"


def _harness_module():
    for name in ("composefs_fleet_harness", "harness", "__main__"):
        module = sys.modules.get(name)
        if module is not None and hasattr(module, "Fleet") and hasattr(module, "KINDS"):
            return module
    raise RuntimeError("vmhost.py is used through tests/fleet/harness.py")


def start(fleet, kinds: Sequence) -> dict:
    """Boot the guest (not waiting for it); adds the host to ``fleet.state['hosts']``."""
    h = _harness_module()
    g = guest()
    host = {
        "name": HOST_NAME,
        "type": "vm",
        "address": "127.0.0.1",
        "port": h._free_loopback_port(),  # pylint: disable=protected-access
        "python": True,
        "kernel_verity": guest_kernel_has_verity(),
        "kinds": [k.name for k in kinds],
        "loops": {},
        "images": [],
        "pid": None,
        "dir": os.path.join(fleet.state_dir, "hosts", HOST_NAME),
        "qemu_name": "%s%d-%s" % (h.PREFIX, fleet.slot, HOST_NAME),
    }
    host["log"] = os.path.join(host["dir"], "console.log")
    fleet.state["hosts"].append(host)
    fleet.save()
    share = os.path.join(host["dir"], "share")
    os.makedirs(os.path.join(share, "modules"), exist_ok=True)
    for path in net_modules():
        with open(path, "rb") as src, open(os.path.join(share, "modules", os.path.basename(path)), "wb") as dst:
            dst.write(src.read())
    g_share = g.GUEST_SHARE
    h.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "%s host key" % HOST_NAME, "-f", os.path.join(share, "ssh_host_ed25519_key")])
    with open(fleet.key_file + ".pub", encoding="utf-8") as f:
        h._write(os.path.join(share, "authorized_keys"), f.read(), 0o600)  # pylint: disable=protected-access
    # the config as the guest sees it: files in the share, at its guest path
    config = fleet.sshd_config(HOST_NAME, "%s:22" % GUEST_ADDRESS, g_share, "/run/sshd-fleet.pid")
    h._write(os.path.join(share, "sshd_config"), config)  # pylint: disable=protected-access
    h._write(os.path.join(share, "job.sh"), _job_script(g_share, kinds, g_share + "/sshd_config"))  # pylint: disable=protected-access
    qemu = [h._tool(g.QEMU)] + list(g.QEMU_FLAGS) + [  # pylint: disable=protected-access
        "-name", host["qemu_name"],
        "-pidfile", os.path.join(host["dir"], "qemu.pid"),
        "-kernel", g.KERNEL, "-initrd", g.INITRAMFS, "-append", g.KERNEL_CMDLINE,
        # the two 9p shares the initramfs /init mounts (tags fixed by scripts/fetch-guest-kernel.sh)
        "-virtfs", "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap",
        "-virtfs", "local,path=%s,mount_tag=vmshare,security_model=none" % share,
        "-netdev", "user,id=net0,restrict=on,hostfwd=tcp:127.0.0.1:%d-:22" % host["port"],
        "-device", "virtio-net-pci,netdev=net0,romfile=",  # no iPXE option ROM: nothing boots from the network
    ]
    for i, kind in enumerate(k for k in kinds if k.size_mib):
        image = os.path.join(host["dir"], "%s%s-%s.img" % (fleet.prefix, HOST_NAME, kind.name))
        host["images"].append(image)
        fleet.save()
        with open(image, "wb") as f:
            f.truncate(kind.size_mib * 1024 * 1024)
        h.run(list(kind.mkfs) + [image])
        qemu += ["-drive", "file=%s,format=raw,if=none,id=disk%d,cache=unsafe" % (image, i),
                 "-device", "virtio-blk-pci,drive=disk%d,serial=%s" % (i, kind.name)]
    with open(host["log"], "ab") as log:
        proc = subprocess.Popen(qemu, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
    fleet._children[proc.pid] = proc  # pylint: disable=protected-access
    host["pid"] = proc.pid
    fleet.save()
    return host


def wait_ready(fleet, host: dict, timeout: float) -> None:
    """Wait until sshd in the guest answers a login (boot under TCG takes a while)."""
    deadline = time.monotonic() + timeout
    setup_error = os.path.join(host["dir"], "share", "setup-error")
    proc = fleet._children.get(host["pid"])  # pylint: disable=protected-access
    last = ""
    while True:
        if os.path.isfile(setup_error):
            with open(setup_error, encoding="utf-8", errors="replace") as f:
                raise _harness_module().FleetError("the VM host's set-up failed: %s\n%s" % (f.read().strip(), fleet._log_tail(host, 40)))
        if proc is not None and proc.poll() is not None:
            raise _harness_module().FleetError("QEMU exited %s before sshd answered\n%s" % (proc.returncode, fleet._log_tail(host, 40)))
        result = subprocess.run(fleet.ssh_argv(host, "%s -c 'import sys; print(sys.version_info[:2])'" % "/usr/bin/python3", timeout=5),
                                stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False)
        if result.returncode == 0:
            return
        last = (result.stderr or result.stdout).strip()
        if time.monotonic() > deadline:
            raise _harness_module().FleetError("the VM host did not answer over SSH within %.0f s (last: %s)\n%s" % (
                timeout, last, fleet._log_tail(host, 40)))
        time.sleep(1.0)


def stop(fleet) -> None:
    """Kill QEMU (SIGTERM, then SIGKILL) and remove the disk images."""
    h = _harness_module()
    for host in fleet.hosts:
        if host.get("type") != "vm":
            continue
        pids = h.processes_matching(["-name\0%s" % host["qemu_name"]], names=("qemu-system-x86_64",))
        if host.get("pid"):
            argv = h._proc_cmdline(host["pid"])  # pylint: disable=protected-access
            if argv and host["qemu_name"] in argv:
                pids.append(host["pid"])
        h.kill_pids(pids)
        for image in host.get("images", []):
            if os.path.exists(image):
                os.unlink(image)
