"""A real SSH test fleet built from Linux primitives (no container engine needed).

Every *namespace host* is

* a network namespace ``cfsf<slot>-<host>`` with a veth pair to the bridge
  ``cfsf<slot>-br`` in the root namespace, on the private subnet
  ``10.213.<slot>.0/24`` (the bridge is ``.1``, hosts from ``.11``);
* its own mount namespace (``unshare -m --propagation private``) in which
  ``/run``, ``/srv`` and ``/root`` are fresh tmpfs mounts and one loop-mounted
  filesystem of each kind (ext4 with and without ``-O verity``, xfs, btrfs)
  plus a tmpfs sit below ``/srv/composefs-fleet/<kind>``: mounts made on one
  host are invisible to the others and to the machine;
* its own ``sshd -D`` (Debian openssh-server) with its own host key and config
  (made in the state directory, copied into the host's ``/run/cfsf-sshd``),
  key-only root login with a generated keypair.

A *no-python host* is a namespace host whose mount namespace also hides every
``python*`` in the directories of the SSH PATH (overlayfs whiteouts over
``/usr/bin`` and ``/usr/local/bin``), so Python is really absent there.

The optional *VM host* (``--vm``, see ``vmhost.py``) is the QEMU guest of the
tests/vm tier, whose kernel has fs-verity, reachable over SSH through user-mode
networking with a ``hostfwd`` on a loopback port.

The harness writes an Ansible inventory (YAML) with the connection variables
and, per host, the data paths (``verity_check_paths``) and what the harness
built there (``fleet_expected``: path -> verdict, ``fleet_expected_fstype``).

Everything is recorded in ``<state-dir>/fleet.json`` *before* it is created, and
``down`` also sweeps by name (``cfsf<slot>-``) and by backing file, so it cleans
up after a crashed ``up`` and is idempotent.  ``down --all`` removes every
``cfsf`` leftover on the machine.  Standard library only; see docs/fleet-tests.md.

    python tests/fleet/harness.py up --hosts 3 --no-python 1 [--vm] --state-dir DIR [--inventory FILE]
    python tests/fleet/harness.py down --state-dir DIR      (or: down --all)
    python tests/fleet/harness.py leftovers [--state-dir DIR]   (exit 1 when something is left)
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import fcntl
import glob
import importlib.util
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from typing import Dict, Iterable, List, Optional, Sequence

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.dirname(os.path.dirname(HERE))
PREFIX = "cfsf"
SUBNET = "10.213"  # slot k: 10.213.k.0/24
MAX_SLOTS = 64
FIRST_HOST_OCTET = 11
LOCK_FILE = "/run/lock/cfsf-fleet.lock"
DATA_ROOT = "/srv/composefs-fleet"
DATA_SUBDIR = "data"  # the data directory inside each mount: path != mountpoint, as on real hosts
STATE_FILE = "fleet.json"
SSHD = "/usr/sbin/sshd"
SSHD_DIR = "/run/%s-sshd" % PREFIX  # inside each host's own /run: sshd's config, host key, authorized_keys
# what `down --all` looks for in command lines: namespace sshd configs, QEMU -name, ssh ControlPath dirs
SWEEP_NEEDLES = (SSHD_DIR + "/" + PREFIX, "-name\0" + PREFIX, "/%s-cp" % PREFIX)
PYTHON_DIRS = ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin", "/usr/libexec")
PYTHON_NAME_RE = re.compile(r"^(python|pypy|platform-python)")
REMOTE_PYTHON = "/usr/bin/python3"
SSH_OPTIONS = ("-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR", "-o", "BatchMode=yes")
# What `up` needs, and the Debian package that brings it (requirements/apt.txt).
REQUIRED_COMMANDS = {
    "ip": "iproute2",
    "unshare": "util-linux",
    "losetup": "util-linux",
    "mount": "mount",
    "sshd": "openssh-server",
    "ssh": "openssh-client",
    "ssh-keygen": "openssh-client",
    "mkfs.ext4": "e2fsprogs",
    "mkfs.xfs": "xfsprogs",
    "mkfs.btrfs": "btrfs-progs",
}
# The sid root filesystem (scripts/setup-sid-root.sh) that the Podman host runs as its root.
SID_ROOTFS = os.path.join(TOP, ".cache", "sid-root", "rootfs")
PODMAN_GRAPHROOT = "/var/lib/containers"  # an ext4 image of its own: overlay cannot use overlayfs as its upper
PODMAN_GRAPHROOT_MIB = 512
# Machine facts of the Podman host, not storage settings (those are the role's): this machine runs hybrid
# cgroups, which crun refuses, so the host gets a fresh cgroup2 without controllers, and containers run
# without cgroups; there is no systemd (cgroupfs manager) and no journald (events to a file).
PODMAN_HOST_CONTAINERS_CONF = """# Written by tests/fleet/harness.py: what this fleet host's machine needs (see docs/fleet-tests.md).
[containers]
cgroups = "disabled"

[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
"""
_SBIN = ("/usr/local/sbin", "/usr/sbin", "/sbin", "/usr/local/bin", "/usr/bin", "/bin")


class FleetError(RuntimeError):
    """The fleet could not be built or torn down."""


class FleetSetupError(FleetError):
    """Something the fleet needs is missing on this machine."""


@dataclasses.dataclass(frozen=True)
class Kind:
    """One kind of data filesystem; every host gets one of each (``--kinds`` narrows)."""

    name: str
    fstype: str
    size_mib: int = 0  # 0: no image (tmpfs)
    mkfs: Sequence[str] = ()
    verity_capable: bool = False  # supports fs-verity when the kernel has CONFIG_FS_VERITY

    @property
    def mountpoint(self) -> str:
        return "%s/%s" % (DATA_ROOT, self.name)

    @property
    def path(self) -> str:
        return "%s/%s" % (self.mountpoint, DATA_SUBDIR)

    def verdict(self, kernel_verity: bool) -> str:
        return "supported" if kernel_verity and self.verity_capable else "unsupported"


# ext4 gets 4 KiB blocks: mke2fs picks 1 KiB for small images, and fs-verity needs
# Merkle tree blocks no larger than the filesystem block. xfs refuses < 300 MiB,
# btrfs < ~114 MiB; the images are sparse.
KINDS = (
    Kind("ext4-verity", "ext4", 64, ("mkfs.ext4", "-q", "-F", "-b", "4096", "-O", "verity"), True),
    Kind("ext4-plain", "ext4", 64, ("mkfs.ext4", "-q", "-F", "-b", "4096", "-O", "^verity")),
    Kind("xfs", "xfs", 300, ("mkfs.xfs", "-q", "-f")),
    Kind("btrfs", "btrfs", 128, ("mkfs.btrfs", "-q", "-f"), True),
    Kind("tmpfs", "tmpfs"),
)
KINDS_BY_NAME = {k.name: k for k in KINDS}


# --------------------------------------------------------------------------- helpers
def which(cmd: str) -> Optional[str]:
    return shutil.which(cmd) or shutil.which(cmd, path=os.pathsep.join(_SBIN))


def _tool(cmd: str) -> str:
    found = which(cmd)
    if not found:
        raise FleetSetupError("%s is missing: apt-get install %s (requirements/apt.txt)" % (cmd, REQUIRED_COMMANDS.get(cmd, cmd)))
    return found


def run(argv: Sequence[str], check: bool = True, timeout: float = 120.0) -> subprocess.CompletedProcess:
    """Run a command, capturing its output; raise FleetError naming it when it fails."""
    argv = list(argv)
    argv[0] = _tool(argv[0]) if "/" not in argv[0] else argv[0]
    try:
        proc = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        raise FleetError("%s timed out after %.0f s" % (shlex.join(argv), timeout)) from exc
    if check and proc.returncode != 0:
        raise FleetError("%s failed (exit %d): %s" % (shlex.join(argv), proc.returncode, (proc.stderr or proc.stdout).strip()))
    return proc


def missing_prerequisites(vm: bool = False, podman: bool = False) -> List[str]:
    """What this machine lacks to build the fleet, as messages naming the fix."""
    problems = []
    if podman:
        for tool in ("usr/bin/podman", "usr/bin/mkcomposefs", "usr/sbin/sshd", "usr/bin/python3", "usr/bin/docker-registry"):
            if not os.path.exists(os.path.join(SID_ROOTFS, tool)):
                problems.append("the Podman host needs the sid root filesystem, and %s has no /%s: run `make setup-sid-root` "
                                "(scripts/setup-sid-root.sh)" % (SID_ROOTFS, tool))
                break
    if os.geteuid() != 0:
        problems.append("the fleet needs root (network and mount namespaces, loop devices)")
    for cmd, pkg in REQUIRED_COMMANDS.items():
        if not which(cmd):
            problems.append("%s is missing: apt-get install %s (requirements/apt.txt)" % (cmd, pkg))
    if not os.path.exists("/dev/loop-control"):
        problems.append("/dev/loop-control is missing: the kernel needs loop device support")
    if vm:
        from_vm = _vmhost().missing_prerequisites()
        problems.extend(from_vm)
    return problems


def kernel_has_verity() -> bool:
    """Whether this machine's kernel has fs-verity (the kernel documents these files)."""
    return any(os.path.exists("/sys/fs/%s/features/verity" % fs) for fs in ("ext4", "btrfs", "f2fs"))


def _vmhost():
    """tests/fleet/vmhost.py: the QEMU host is an optional addition, loaded only when asked for."""
    name = "composefs_fleet_vmhost"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, os.path.join(HERE, "vmhost.py"))
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def _write(path: str, text: str, mode: int = 0o644) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def _proc_cmdline(pid: int) -> List[str]:
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            return [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
    except OSError:
        return []


def _proc_state(pid: int) -> str:
    try:
        with open("/proc/%d/stat" % pid, encoding="utf-8") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return ""


def _pids() -> List[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def _ancestors() -> set:
    pids, pid = set(), os.getpid()
    while pid > 1:
        pids.add(pid)
        try:
            with open("/proc/%d/stat" % pid, encoding="utf-8") as f:
                pid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            break
    return pids


def _alive(pid: int) -> bool:
    state = _proc_state(pid)
    return bool(state) and state not in ("Z", "X")


def kill_pids(pids: Iterable[int], grace: float = 5.0) -> None:
    """SIGTERM, wait up to ``grace`` seconds, SIGKILL; reap our own children."""
    pids = [p for p in set(pids) if p > 1 and p not in _ancestors()]
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            for pid in pids:
                with contextlib.suppress(ChildProcessError, OSError):
                    os.waitpid(pid, os.WNOHANG)
            pids = [p for p in pids if _alive(p)]
            if not pids:
                return
            time.sleep(0.05)
    if pids:
        raise FleetError("processes %s survived SIGKILL" % pids)


def netns_names(prefix: str = PREFIX) -> List[str]:
    try:
        names = os.listdir("/run/netns")
    except FileNotFoundError:
        return []
    return sorted(n for n in names if n.startswith(prefix))


def netns_pids(name: str) -> List[int]:
    """The processes in network namespace ``name`` (as `ip netns pids`, without the tool)."""
    try:
        st = os.stat("/run/netns/%s" % name)
    except OSError:
        return []
    found = []
    for pid in _pids():
        try:
            ns = os.stat("/proc/%d/ns/net" % pid)
        except OSError:
            continue
        if (ns.st_dev, ns.st_ino) == (st.st_dev, st.st_ino):
            found.append(pid)
    return found


def link_names(prefix: str = PREFIX) -> List[str]:
    try:
        return sorted(n for n in os.listdir("/sys/class/net") if n.startswith(prefix))
    except FileNotFoundError:
        return []


def loop_devices() -> Dict[str, str]:
    """Attached loop devices: /dev/loopN -> backing file."""
    found = {}
    for name in os.listdir("/sys/block"):
        if not name.startswith("loop"):
            continue
        try:
            with open("/sys/block/%s/loop/backing_file" % name, encoding="utf-8", errors="replace") as f:
                found["/dev/" + name] = f.read().strip()
        except OSError:
            continue
    return found


def mounts_matching(needle: str) -> List[str]:
    with open("/proc/mounts", encoding="utf-8", errors="replace") as f:
        return [line.strip() for line in f if needle in line]


def processes_matching(needles: Sequence[str], names: Sequence[str] = ("sshd", "ssh", "qemu-system-x86_64")) -> List[int]:
    """Processes (not zombies, not us) named ``names`` whose command line contains one of ``needles``."""
    me = _ancestors()
    found = []
    for pid in _pids():
        if pid in me:
            continue
        argv = _proc_cmdline(pid)
        # sshd retitles itself ("sshd: /usr/sbin/sshd -D ... [listener] ..."): one string, name with a colon
        if not argv or os.path.basename(argv[0].split()[0]).rstrip(":") not in names:
            continue
        line = "\0".join(argv)
        if any(n in line for n in needles) and _alive(pid):
            found.append(pid)
    return found


def _dump_yaml(value, indent: int = 0) -> str:
    """A small YAML emitter for the inventory: nested mappings, lists of scalars, JSON scalars (valid YAML)."""
    pad = "  " * indent
    if isinstance(value, dict):
        if not value:
            return " {}\n"
        out = "\n"
        for key, item in value.items():
            key = str(key)
            out += "%s%s:%s" % (pad, key if re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", key) else json.dumps(key), _dump_yaml(item, indent + 1))
        return out
    if isinstance(value, (list, tuple)):
        if not value:
            return " []\n"
        return "\n" + "".join("%s- %s\n" % (pad, json.dumps(item)) for item in value)
    return " %s\n" % json.dumps(value)


def _free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tcp_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


# --------------------------------------------------------------------------- the fleet
class Fleet:
    """One fleet, described by ``<state_dir>/fleet.json``. Use :func:`up` and :meth:`down`."""

    def __init__(self, state_dir: str):
        self.state_dir = os.path.abspath(state_dir)
        self.state_path = os.path.join(self.state_dir, STATE_FILE)
        self.state: dict = {}
        self._children: Dict[int, subprocess.Popen] = {}
        if os.path.isfile(self.state_path):
            with open(self.state_path, encoding="utf-8") as f:
                self.state = json.load(f)

    # -- state
    def save(self) -> None:
        os.makedirs(self.state_dir, exist_ok=True)
        _write(self.state_path, json.dumps(self.state, indent=2, sort_keys=True) + "\n")

    @property
    def slot(self) -> Optional[int]:
        return self.state.get("slot")

    @property
    def prefix(self) -> str:
        return "%s%d-" % (PREFIX, self.slot)

    @property
    def inventory_path(self) -> str:
        return self.state.get("inventory") or os.path.join(self.state_dir, "inventory.yml")

    @property
    def hosts(self) -> List[dict]:
        return self.state.get("hosts", [])

    def host(self, name: str) -> dict:
        for host in self.hosts:
            if host["name"] == name:
                return host
        raise KeyError(name)

    @property
    def key_file(self) -> str:
        return os.path.join(self.state_dir, "id_ed25519")

    def ssh_argv(self, host: dict, command: str = "", timeout: int = 10) -> List[str]:
        """An ssh command line that reaches ``host`` (a dict of :attr:`hosts`)."""
        argv = ["ssh"] + list(SSH_OPTIONS) + ["-o", "ConnectTimeout=%d" % timeout, "-i", self.key_file,
                                              "-p", str(host["port"]), "root@%s" % host["address"]]
        return argv + ([command] if command else [])

    def ssh(self, name: str, command: str, check: bool = True, timeout: float = 60.0) -> subprocess.CompletedProcess:
        return run(self.ssh_argv(self.host(name), command), check=check, timeout=timeout)

    # -- up
    def _allocate_slot(self) -> int:
        os.makedirs(os.path.dirname(LOCK_FILE), exist_ok=True)
        with open(LOCK_FILE, "w", encoding="utf-8") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            taken = set()
            for name in netns_names() + link_names():
                m = re.match(r"^%s(\d+)-" % PREFIX, name)
                if m:
                    taken.add(int(m.group(1)))
            for slot in range(MAX_SLOTS):
                if slot not in taken:
                    break
            else:
                raise FleetError("all %d fleet slots are taken (run `harness.py down --all` to clear leftovers)" % MAX_SLOTS)
            bridge = "%s%d-br" % (PREFIX, slot)
            self.state.update(slot=slot, bridge=bridge, subnet="%s.%d.0/24" % (SUBNET, slot), status="partial")
            self.save()
            run(["ip", "link", "add", bridge, "type", "bridge"])
            # the owner, for `leftovers` once the slot has gone to another fleet
            run(["ip", "link", "set", bridge, "alias", self.state_dir[-200:]])
            run(["ip", "addr", "add", "%s.%d.1/24" % (SUBNET, slot), "dev", bridge])
            run(["ip", "link", "set", bridge, "up"])
        return slot

    def _control_path_dir(self) -> str:
        # ssh's ControlPath must fit a unix socket path (108 bytes, ssh adds a 17-byte suffix)
        cp = os.path.join(self.state_dir, "%s-cp" % PREFIX)
        if len(cp) + 1 + 40 + 17 > 100:
            cp = os.path.join(tempfile.gettempdir(), "%s-cp-%d" % (PREFIX, self.slot))
        return cp

    def _new_host(self, name: str, kind_of_host: str, index: int, kinds: Sequence[Kind]) -> dict:
        host = {
            "name": name,
            "type": kind_of_host,
            "netns": self.prefix + name,
            "veth": self.prefix + name,
            "address": "%s.%d.%d" % (SUBNET, self.slot, FIRST_HOST_OCTET + index),
            "port": 22,
            "python": kind_of_host != "nopython",
            "kernel_verity": kernel_has_verity(),
            "kinds": [k.name for k in kinds],
            "loops": {},
            "pid": None,
            "dir": os.path.join(self.state_dir, "hosts", name),
        }
        if len(host["veth"]) > 15:
            raise FleetError("interface name %s is longer than 15 characters: use a shorter host name" % host["veth"])
        return host

    def _make_image(self, host: dict, kind: Kind) -> str:
        image = os.path.join(host["dir"], "%s%s-%s.img" % (self.prefix, host["name"], kind.name))
        with open(image, "wb") as f:
            f.truncate(kind.size_mib * 1024 * 1024)
        run(list(kind.mkfs) + [image])
        return image

    def _hidden_pythons(self) -> Dict[str, List[str]]:
        """Directory -> python* entries to hide on a no-python host."""
        hidden: Dict[str, List[str]] = {}
        for d in PYTHON_DIRS:
            if not os.path.isdir(d) or os.path.islink(d):
                continue  # /bin -> usr/bin on merged-/usr systems
            real = os.path.realpath(d)
            names = sorted(n for n in os.listdir(d) if PYTHON_NAME_RE.match(n))
            if names and real not in hidden:
                hidden[real] = names
        return hidden

    def _init_script(self, host: dict) -> str:
        """The shell script that sets up the host's mount namespace and execs its sshd."""
        q = shlex.quote
        tag = self.prefix + host["name"]
        lines = [
            "#!/bin/sh",
            "# Written by tests/fleet/harness.py: the mount namespace of fleet host %s, then its sshd." % host["name"],
            "set -eu",
            # copies of other hosts' /run/netns/* nsfs mounts would pin their namespaces and let
            # one host enter another's: drop them (this one's sshd is already in its netns)
            "for m in $(awk '$3 == \"nsfs\" && $2 ~ \"^/run/netns/\" {print $2}' /proc/self/mounts); do umount -l \"$m\" || true; done",
            # a /run of its own, holding sshd's files: the state directory may be below /root,
            # which the home tmpfs hides below (the shell has this script open already)
            "mount -t tmpfs -o mode=0755,size=16m %s /run" % q(tag + "-run"),
            "mkdir -p /run/sshd %s" % SSHD_DIR,
        ]
        for name in (self._sshd_config_name(host), "ssh_host_ed25519_key", "ssh_host_ed25519_key.pub"):
            lines.append("cp %s %s/" % (q(os.path.join(host["dir"], name)), SSHD_DIR))
        lines.append("cp %s %s/" % (q(os.path.join(self.state_dir, "authorized_keys")), SSHD_DIR))
        lines.append("chmod 0600 %s/ssh_host_ed25519_key %s/authorized_keys" % (SSHD_DIR, SSHD_DIR))
        lines.append("mount -t tmpfs -o mode=0755,size=16m %s /srv" % q(tag + "-srv"))
        for kind_name in host["kinds"]:
            kind = KINDS_BY_NAME[kind_name]
            lines.append("mkdir -p %s" % q(kind.mountpoint))
            if kind.fstype == "tmpfs":
                lines.append("mount -t tmpfs -o mode=0755,size=64m %s %s" % (q(tag + "-tmpfs"), q(kind.mountpoint)))
            else:
                lines.append("mount -t %s %s %s" % (kind.fstype, q(host["loops"][kind.name]["device"]), q(kind.mountpoint)))
            lines.append("mkdir -p %s" % q(kind.path))
        # a home of its own: no shared ~/.ansible, and no ~/.bashrc of the machine (pyenv init is slow)
        lines.append("mount -t tmpfs -o mode=0700,size=64m %s /root" % q(tag + "-home"))
        if not host["python"]:
            for i, (d, names) in enumerate(sorted(self._hidden_pythons().items())):
                scratch = "/run/%s-nopython/%d" % (PREFIX, i)
                lines.append("mkdir -p %s/upper %s/work" % (scratch, scratch))
                lines.extend("mknod %s c 0 0" % q("%s/upper/%s" % (scratch, n)) for n in names)  # overlayfs whiteouts
                lines.append("mount -t overlay -o %s %s %s" % (
                    q("lowerdir=%s,upperdir=%s/upper,workdir=%s/work" % (d, scratch, scratch)), q("%s-nopython-%d" % (tag, i)), q(d)))
        # the config's name carries the slot and host: `ps` tells whose sshd it is, sweeps find it
        lines.append("exec %s -D -e -f %s/%s" % (SSHD, SSHD_DIR, self._sshd_config_name(host)))
        return "\n".join(lines) + "\n"

    def _podman_init_script(self, host: dict) -> str:
        """The mount namespace of the Podman host: the sid root filesystem as ``/``, then its own sshd.

        The root is an overlay (upper in the host's state directory, lower the cached sid root, never
        written), so every fleet starts from a clean machine. crun sets propagation on ``/``, so ``/``
        must be a mount point: a chroot fails ("set propagation for `/`: Invalid argument"), pivot_root
        into the overlay mount works.
        """
        q = shlex.quote
        tag = self.prefix + host["name"]
        root = os.path.join(host["dir"], "root")
        ovl = os.path.join(host["dir"], "overlay")
        lines = [
            "#!/bin/sh",
            "# Written by tests/fleet/harness.py: the Podman host %s, whose root is the sid root filesystem." % host["name"],
            "set -eu",
            "for m in $(awk '$3 == \"nsfs\" && $2 ~ \"^/run/netns/\" {print $2}' /proc/self/mounts); do umount -l \"$m\" || true; done",
            "root=%s" % q(root),
            "mkdir -p %s/upper %s/work \"$root\"" % (q(ovl), q(ovl)),
            "mount -t overlay -o %s %s \"$root\"" % (
                q("lowerdir=%s,upperdir=%s/upper,workdir=%s/work" % (os.path.realpath(SID_ROOTFS), ovl, ovl)), q(tag + "-root")),
            "mount -t proc proc \"$root/proc\"",
            "mount --rbind /dev \"$root/dev\"",
            "mount -t sysfs sysfs \"$root/sys\"",
            # this machine's hybrid cgroups make crun refuse to start: a cgroup2 of its own (no controllers)
            "mount -t cgroup2 cgroup2 \"$root/sys/fs/cgroup\"",
            "mount -t tmpfs -o mode=0755,size=64m %s \"$root/run\"" % q(tag + "-run"),
            "mount -t tmpfs -o mode=1777,size=256m %s \"$root/tmp\"" % q(tag + "-tmp"),
            "mount -t tmpfs -o mode=0755,size=256m %s \"$root/srv\"" % q(tag + "-srv"),
            "mount -t tmpfs -o mode=0700,size=64m %s \"$root/root\"" % q(tag + "-home"),
            "mkdir -p \"$root%s\"" % PODMAN_GRAPHROOT,
            "mount -t ext4 %s \"$root%s\"" % (q(host["loops"]["graphroot"]["device"]), PODMAN_GRAPHROOT),
            "mkdir -p \"$root/run/sshd\" \"$root%s\" \"$root/etc/containers/containers.conf.d\"" % SSHD_DIR,
            "cp %s \"$root/etc/containers/containers.conf.d/00-cfsf-fleet-host.conf\"" % q(os.path.join(host["dir"], "containers.conf")),
        ]
        for name in (self._sshd_config_name(host), "ssh_host_ed25519_key", "ssh_host_ed25519_key.pub"):
            lines.append("cp %s \"$root%s/\"" % (q(os.path.join(host["dir"], name)), SSHD_DIR))
        lines.append("cp %s \"$root%s/\"" % (q(os.path.join(self.state_dir, "authorized_keys")), SSHD_DIR))
        lines.append("chmod 0600 \"$root%s/ssh_host_ed25519_key\" \"$root%s/authorized_keys\"" % (SSHD_DIR, SSHD_DIR))
        lines += [
            "mkdir -p \"$root/.cfsf-oldroot\"",
            "cd \"$root\"",
            "pivot_root . .cfsf-oldroot",
            "cd /",
            # the sid root has no util-linux mount tools; busybox-static has umount
            "/usr/bin/busybox umount -l /.cfsf-oldroot",
            "exec %s -D -e -f %s/%s" % (SSHD, SSHD_DIR, self._sshd_config_name(host)),
        ]
        return "\n".join(lines) + "\n"

    def _sshd_config_name(self, host: dict) -> str:
        return "%s%s-sshd_config" % (self.prefix, host["name"])

    @staticmethod
    def sshd_config(name: str, listen: str, files_dir: str, pidfile: str) -> str:
        """sshd's config; ``files_dir`` holds the host key and authorized_keys as sshd sees them."""
        return "\n".join([
            "# Written by tests/fleet/harness.py for fleet host %s" % name,
            "ListenAddress %s" % listen,
            "HostKey %s/ssh_host_ed25519_key" % files_dir,
            "PidFile %s" % pidfile,
            "AuthorizedKeysFile %s/authorized_keys" % files_dir,
            "PermitRootLogin prohibit-password",
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "UsePAM no",
            "StrictModes no",
            "UseDNS no",
            "PrintMotd no",
            "PrintLastLog no",
            "X11Forwarding no",
            "AllowAgentForwarding no",
            "AllowTcpForwarding no",
            "PermitTunnel no",
            "MaxStartups 200",
            "MaxSessions 64",
            "Subsystem sftp internal-sftp",
            "",
        ])

    def _start_namespace_host(self, host: dict) -> None:
        os.makedirs(host["dir"], exist_ok=True)
        if host["type"] == "podman":
            image = os.path.join(host["dir"], "%s%s-graphroot.img" % (self.prefix, host["name"]))
            with open(image, "wb") as f:
                f.truncate(PODMAN_GRAPHROOT_MIB * 1024 * 1024)
            run(["mkfs.ext4", "-q", "-F", "-b", "4096", image])
            device = run(["losetup", "--find", "--show", image]).stdout.strip()
            host["loops"]["graphroot"] = {"device": device, "image": image}
            self.save()
            _write(os.path.join(host["dir"], "containers.conf"), PODMAN_HOST_CONTAINERS_CONF)
        for kind_name in host["kinds"]:
            kind = KINDS_BY_NAME[kind_name]
            if not kind.size_mib:
                continue
            image = self._make_image(host, kind)
            device = run(["losetup", "--find", "--show", image]).stdout.strip()
            host["loops"][kind.name] = {"device": device, "image": image}
            self.save()
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "%s host key" % host["name"],
             "-f", os.path.join(host["dir"], "ssh_host_ed25519_key")])
        _write(os.path.join(host["dir"], self._sshd_config_name(host)),
               self.sshd_config(host["name"], "%s:22" % host["address"], SSHD_DIR, SSHD_DIR + "/sshd.pid"))
        init = os.path.join(host["dir"], "init.sh")
        _write(init, self._podman_init_script(host) if host["type"] == "podman" else self._init_script(host), 0o755)
        ns, veth = host["netns"], host["veth"]
        run(["ip", "netns", "add", ns])
        run(["ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns])
        run(["ip", "link", "set", veth, "master", self.state["bridge"], "up"])
        run(["ip", "-n", ns, "addr", "add", "%s/24" % host["address"], "dev", "eth0"])
        run(["ip", "-n", ns, "link", "set", "eth0", "up"])
        run(["ip", "-n", ns, "link", "set", "lo", "up"])
        with open(os.path.join(host["dir"], "sshd.log"), "ab") as log:
            proc = subprocess.Popen([_tool("ip"), "netns", "exec", ns, _tool("unshare"), "-m", "--propagation", "private", "--", "/bin/sh", init],
                                    stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
        self._children[proc.pid] = proc
        host["pid"] = proc.pid  # the exec chain ends in sshd -D: the same pid
        self.save()

    def _wait_ready(self, hosts: Sequence[dict], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        pending = list(hosts)
        while pending:
            for host in list(pending):
                proc = self._children.get(host["pid"])
                if proc is not None and proc.poll() is not None:
                    raise FleetError("sshd of %s exited %s during start-up:\n%s" % (host["name"], proc.returncode, self._log_tail(host)))
                if _tcp_open(host["address"], host["port"]):
                    pending.remove(host)
            if pending and time.monotonic() > deadline:
                raise FleetError("sshd did not listen within %.0f s on: %s" % (timeout, ", ".join(h["name"] for h in pending)))
            if pending:
                time.sleep(0.05)
        # one real login each, in parallel; the no-python hosts must really have no Python
        probe = "for p in python3 python python3.11 %s; do command -v $p; done; echo cfsf-ok" % REMOTE_PYTHON
        procs = [(h, subprocess.Popen(self.ssh_argv(h, probe), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
                 for h in hosts]
        for host, proc in procs:
            out = proc.communicate(timeout=max(10.0, deadline - time.monotonic()))[0]
            if proc.returncode != 0 or "cfsf-ok" not in out:
                raise FleetError("ssh to %s failed (exit %d): %s\n%s" % (host["name"], proc.returncode, out.strip(), self._log_tail(host)))
            found = [line for line in out.splitlines() if line.startswith("/") or line.startswith("python")]
            if host["python"] and REMOTE_PYTHON not in found:
                raise FleetError("%s has no %s" % (host["name"], REMOTE_PYTHON))
            if not host["python"] and found:
                raise FleetError("the no-python host %s still finds Python: %s" % (host["name"], found))

    def _log_tail(self, host: dict, lines: int = 20) -> str:
        path = host.get("log") or os.path.join(host["dir"], "sshd.log")
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                return "--- %s ---\n%s" % (path, "".join(f.readlines()[-lines:]))
        except OSError:
            return ""

    def _host_vars(self, host: dict) -> dict:
        kinds = [KINDS_BY_NAME[k] for k in host["kinds"]]
        kernel_verity = host["kernel_verity"]
        return {
            "ansible_host": host["address"],
            "ansible_port": host["port"],
            "ansible_user": "root",
            "ansible_ssh_private_key_file": self.key_file,
            "ansible_ssh_common_args": " ".join(SSH_OPTIONS[:6]),
            # no -C: compression only costs CPU on loopback and veth; ControlPersist reuses connections
            "ansible_ssh_args": "-o ControlMaster=auto -o ControlPersist=300s",
            "ansible_control_path_dir": self.state["control_path_dir"],
            "ansible_pipelining": True,
            "ansible_python_interpreter": REMOTE_PYTHON,
            "fleet_host_type": host["type"],
            "fleet_python": host["python"],
            "fleet_kernel_verity": kernel_verity,
            "verity_check_paths": [k.path for k in kinds],
            "fleet_paths": {k.name: k.path for k in kinds},
            "fleet_expected": {k.path: k.verdict(kernel_verity) for k in kinds},
            "fleet_expected_fstype": {k.path: k.fstype for k in kinds},
            **({"fleet_podman_graphroot": PODMAN_GRAPHROOT} if host["type"] == "podman" else {}),
        }

    def write_inventory(self, path: Optional[str] = None) -> str:
        path = os.path.abspath(path or self.inventory_path)
        groups: Dict[str, dict] = {"fleet_namespace": {}, "fleet_nopython": {}, "fleet_vm": {}, "fleet_podman": {}}
        for host in self.hosts:
            groups["fleet_%s" % host["type"]][host["name"]] = self._host_vars(host)
        inventory = {"all": {"children": {"fleet": {
            "children": {g: {"hosts": hosts} for g, hosts in groups.items() if hosts},
            "vars": {"fleet_state_dir": self.state_dir, "fleet_slot": self.slot},
        }}}}
        os.makedirs(os.path.dirname(path), exist_ok=True)
        header = ("# Written by tests/fleet/harness.py (slot %d, state %s).\n"
                  "# `python tests/fleet/harness.py down --state-dir %s` removes the fleet and this file.\n---" % (
                      self.slot, self.state_dir, self.state_dir))
        _write(path, header + _dump_yaml(inventory))
        self.state["inventory"] = path
        self.save()
        return path

    def up(self, hosts: int = 3, no_python: int = 0, vm: bool = False, kinds: Sequence[str] = (),
           inventory: Optional[str] = None, timeout: float = 60.0, vm_timeout: float = 300.0, podman: int = 0) -> "Fleet":
        problems = missing_prerequisites(vm=vm, podman=podman > 0)
        if problems:
            raise FleetSetupError("cannot build the fleet:\n  " + "\n  ".join(problems))
        kinds = [KINDS_BY_NAME[k] for k in kinds] if kinds else list(KINDS)
        for hidden in ("/run", "/srv"):
            if (self.state_dir + "/").startswith(hidden + "/"):
                raise FleetError("the state directory must not be below %s: each host mounts its own %s over it" % (hidden, hidden))
        if self.state.get("status") in ("up", "partial"):
            print("harness: %s holds a fleet (%s): tearing it down first" % (self.state_dir, self.state["status"]), file=sys.stderr)
            self.down()
        self.state = {"version": 1, "state_dir": self.state_dir, "status": "partial", "hosts": []}
        if inventory:
            self.state["inventory"] = os.path.abspath(inventory)
        started = time.monotonic()
        try:
            self._allocate_slot()
            self.state["control_path_dir"] = self._control_path_dir()
            os.makedirs(self.state["control_path_dir"], mode=0o700, exist_ok=True)
            if os.path.exists(self.key_file):
                os.unlink(self.key_file)
                os.unlink(self.key_file + ".pub")
            run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "composefs.fleet test fleet", "-f", self.key_file])
            with open(self.key_file + ".pub", encoding="utf-8") as f:
                _write(os.path.join(self.state_dir, "authorized_keys"), f.read(), 0o600)
            names = ([("ns%02d" % (i + 1), "namespace") for i in range(hosts)] + [("nopy%02d" % (i + 1), "nopython") for i in range(no_python)]
                     + [("pod%02d" % (i + 1), "podman") for i in range(podman)])
            for i, (name, kind_of_host) in enumerate(names):
                # the Podman host has no data filesystems: its one is the graphroot
                host = self._new_host(name, kind_of_host, i, kinds if kind_of_host != "podman" else [])
                self.state["hosts"].append(host)
                self.save()
                self._start_namespace_host(host)
            vm_host = None
            if vm:
                vm_host = _vmhost().start(self, kinds)
            self._wait_ready([h for h in self.hosts if h["type"] != "vm"], timeout)
            if vm_host is not None:
                _vmhost().wait_ready(self, vm_host, vm_timeout)
            self.write_inventory()
            self.state["status"] = "up"
            self.state["up_seconds"] = round(time.monotonic() - started, 2)
            self.save()
        except BaseException:
            print("harness: up failed: tearing down what was built", file=sys.stderr)
            with contextlib.suppress(Exception):
                self.down()
            raise
        return self

    # -- down
    def down(self) -> None:
        """Tear everything down; idempotent, and safe after a crash at any point of ``up``."""
        errors = []

        def attempt(what, fn, *args):
            try:
                fn(*args)
            except Exception as exc:  # pylint: disable=broad-except
                errors.append("%s: %s" % (what, exc))

        if not self.state:
            return
        slot = self.slot
        started = time.monotonic()
        # 1. the QEMU guest and ssh control masters (their command lines name the state directory)
        if any(h.get("type") == "vm" for h in self.hosts):
            attempt("vm", lambda: _vmhost().stop(self))
        cp = self.state.get("control_path_dir")
        needles = [self.state_dir + "/"] + ([cp + "/"] if cp else [])
        if slot is not None:
            needles += ["%s%d-vm" % (PREFIX, slot), "%s/%s" % (SSHD_DIR, self.prefix)]
        attempt("processes", kill_pids, processes_matching(needles))
        # 2. every process in the hosts' network namespaces (sshd, sessions, anything they started):
        #    their mount namespaces die with them and take the mounts along
        ns_names = [h["netns"] for h in self.hosts if h.get("netns")]
        if slot is not None:
            ns_names += netns_names(self.prefix)
        for ns in sorted(set(ns_names)):
            attempt("kill %s" % ns, kill_pids, netns_pids(ns))
        for host in self.hosts:
            if host.get("pid") and host.get("type") != "vm":
                argv = _proc_cmdline(host["pid"])
                if argv and "%s/%s" % (SSHD_DIR, self._sshd_config_name(host)) in " ".join(argv):
                    attempt("kill sshd of %s" % host["name"], kill_pids, [host["pid"]])
        for pid, proc in list(self._children.items()):
            with contextlib.suppress(Exception):
                proc.wait(timeout=5)
            self._children.pop(pid, None)
        # 3. network namespaces, veths, the bridge
        for ns in sorted(set(ns_names)):
            if os.path.exists("/run/netns/%s" % ns):
                attempt("ip netns del %s" % ns, run, ["ip", "netns", "del", ns])
        if slot is not None:
            for link in link_names(self.prefix):
                attempt("ip link del %s" % link, run, ["ip", "link", "del", link], False)
        # 4. loop devices whose backing file is ours (the mounts are gone with the namespaces;
        #    a detach of a still-busy device is deferred by the kernel: wait for it)
        attempt("loop devices", self._detach_loops)
        # 5. files: images, sockets, the inventory (logs and fleet.json stay for post-mortems)
        for host in self.hosts:
            # by name too: an image made just before a crash was never recorded
            for image in glob.glob(os.path.join(host.get("dir", "/nonexistent"), "%s*.img" % self.prefix)):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(image)
        if cp and os.path.isdir(cp):
            shutil.rmtree(cp, ignore_errors=True)
        inventory = self.state.get("inventory")
        if inventory and os.path.isfile(inventory):
            os.unlink(inventory)
        self.state["status"] = "down" if not errors else "partial"
        self.state["down_seconds"] = round(time.monotonic() - started, 2)
        if os.path.isdir(self.state_dir):
            self.save()
        left = self.leftovers()
        if errors or left:
            raise FleetError("teardown incomplete:\n  " + "\n  ".join(errors + left))

    def _detach_loops(self) -> None:
        deadline = time.monotonic() + 20
        while True:
            mine = {dev: b for dev, b in loop_devices().items() if b.startswith(self.state_dir + "/") or os.path.basename(b).startswith(self.prefix)}
            if not mine:
                return
            for dev in mine:
                run(["losetup", "-d", dev], check=False)
            if time.monotonic() > deadline:
                raise FleetError("loop devices still attached after 20 s: %s" % mine)
            time.sleep(0.1)

    def _slot_reused(self) -> bool:
        """Whether another fleet (another state directory) holds this fleet's slot now."""
        try:
            with open("/sys/class/net/%s/ifalias" % self.state.get("bridge", "?"), encoding="utf-8") as f:
                owner = f.read().strip()
        except OSError:
            return False
        return bool(owner) and owner != self.state_dir[-200:]

    def leftovers(self) -> List[str]:
        """Anything of this fleet still on the machine, one line each (empty: clean)."""
        if self.slot is None:
            return []
        found = []
        needles = [self.state_dir + "/"]
        if self.state.get("control_path_dir"):
            needles.append(self.state["control_path_dir"] + "/")
        if not self._slot_reused():  # else the cfsf<k>- names are the other fleet's
            found += ["network namespace %s" % n for n in netns_names(self.prefix)]
            found += ["link %s" % n for n in link_names(self.prefix)]
            found += ["mount %s" % m for m in mounts_matching(self.prefix)]
            needles += ["%s%d-vm" % (PREFIX, self.slot), "%s/%s" % (SSHD_DIR, self.prefix)]
        found += ["loop device %s -> %s" % (d, b) for d, b in loop_devices().items()
                  if b.startswith(self.state_dir + "/")]
        found += ["process %d: %s" % (p, " ".join(_proc_cmdline(p))) for p in processes_matching(needles)]
        return found


def up(state_dir: str, **kwargs) -> Fleet:
    """Build a fleet (see :meth:`Fleet.up` for the arguments); the caller must call ``down()``."""
    return Fleet(state_dir).up(**kwargs)


def down(state_dir: str) -> None:
    fleet = Fleet(state_dir)
    fleet.down()


def sweep() -> List[str]:
    """Remove every ``cfsf`` leftover on the machine, whoever made it; returns what it removed."""
    removed = []
    for pid in processes_matching(SWEEP_NEEDLES):
        removed.append("process %d: %s" % (pid, " ".join(_proc_cmdline(pid))))
        kill_pids([pid])
    for ns in netns_names():
        pids = netns_pids(ns)
        kill_pids(pids)
        run(["ip", "netns", "del", ns], check=False)
        removed.append("network namespace %s (%d processes)" % (ns, len(pids)))
    for link in link_names():
        run(["ip", "link", "del", link], check=False)
        removed.append("link %s" % link)
    for dev, backing in loop_devices().items():
        if os.path.basename(backing).startswith(PREFIX):
            run(["losetup", "-d", dev], check=False)
            removed.append("loop device %s -> %s" % (dev, backing))
    return removed


def all_leftovers() -> List[str]:
    found = ["network namespace %s" % n for n in netns_names()]
    found += ["link %s" % n for n in link_names()]
    found += ["loop device %s -> %s" % (d, b) for d, b in loop_devices().items() if os.path.basename(b).startswith(PREFIX)]
    found += ["mount %s" % m for m in mounts_matching("/run/netns/" + PREFIX)]
    found += ["process %d" % p for p in processes_matching(SWEEP_NEEDLES)]
    return found


# --------------------------------------------------------------------------- CLI
def _interrupt(signum, _frame):
    raise KeyboardInterrupt("signal %d" % signum)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="harness.py", description="The composefs.fleet SSH test fleet (docs/fleet-tests.md).")
    sub = parser.add_subparsers(dest="command", required=True)
    p_up = sub.add_parser("up", help="build a fleet and write its inventory")
    p_up.add_argument("--hosts", type=int, default=3, help="namespace hosts with Python (default 3)")
    p_up.add_argument("--no-python", type=int, default=0, help="namespace hosts without Python (default 0)")
    p_up.add_argument("--podman", type=int, default=0, help="Podman 5 hosts whose root is the sid root filesystem (default 0)")
    p_up.add_argument("--vm", action="store_true", help="add the QEMU guest with an fs-verity kernel (tests/vm)")
    p_up.add_argument("--kinds", default="", help="comma-separated data filesystems (default: %s)" % ",".join(KINDS_BY_NAME))
    p_up.add_argument("--state-dir", required=True)
    p_up.add_argument("--inventory", help="where to write the inventory (default STATE_DIR/inventory.yml)")
    p_up.add_argument("--timeout", type=float, default=60.0, help="seconds for the namespace hosts to answer")
    p_up.add_argument("--vm-timeout", type=float, default=300.0, help="seconds for the VM host to answer over SSH")
    p_down = sub.add_parser("down", help="tear a fleet down (idempotent)")
    g = p_down.add_mutually_exclusive_group(required=True)
    g.add_argument("--state-dir")
    g.add_argument("--all", action="store_true", help="remove every cfsf leftover on this machine, whoever made it")
    p_left = sub.add_parser("leftovers", help="list what is left of a fleet (exit 1 when anything is)")
    p_left.add_argument("--state-dir", help="this fleet only (default: every cfsf leftover)")
    args = parser.parse_args(argv)

    # SIGTERM (e.g. a CI timeout) unwinds like Ctrl-C, so an interrupted `up` still tears down
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        if args.command == "up":
            kinds = [k for k in args.kinds.split(",") if k]
            unknown = [k for k in kinds if k not in KINDS_BY_NAME]
            if unknown:
                parser.error("unknown kinds %s (known: %s)" % (unknown, ", ".join(KINDS_BY_NAME)))
            fleet = up(args.state_dir, hosts=args.hosts, no_python=args.no_python, vm=args.vm, kinds=kinds, podman=args.podman,
                       inventory=args.inventory, timeout=args.timeout, vm_timeout=args.vm_timeout)
            print("fleet slot %d up in %.1f s: %s" % (fleet.slot, fleet.state["up_seconds"], ", ".join(
                "%s (%s:%d)" % (h["name"], h["address"], h["port"]) for h in fleet.hosts)))
            print("inventory: %s" % fleet.inventory_path)
        elif args.command == "down":
            if args.all:
                for line in sweep():
                    print("removed %s" % line)
                left = all_leftovers()
                if left:
                    raise FleetError("still left:\n  " + "\n  ".join(left))
            else:
                fleet = Fleet(args.state_dir)
                if not fleet.state:
                    print("no fleet in %s" % args.state_dir)
                else:
                    fleet.down()
                    print("fleet slot %s down in %.1f s" % (fleet.slot, fleet.state.get("down_seconds", 0)))
        else:
            left = Fleet(args.state_dir).leftovers() if args.state_dir else all_leftovers()
            for line in left:
                print(line)
            return 1 if left else 0
    except FleetError as exc:
        print("harness: %s" % exc, file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("harness: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
