"""Run a command inside a QEMU guest that boots a Debian kernel with fs-verity.

The host kernel of the development machines lacks CONFIG_FS_VERITY, so the
tests/vm tier boots the kernel that ``scripts/fetch-guest-kernel.sh`` caches in
``.cache/vm/`` (TCG, one vCPU, 1 GiB) and runs one command inside it:

* the host's ``/`` is mounted read-only over 9p with a tmpfs overlay on top,
  and the command runs chrooted into it, so the host's own Python, the project
  venv and the checkout are all there (writes land in guest RAM only);
* a fixed set of small raw disk images (sparse, ``mkfs``'ed on the host for each
  run) is attached as virtio disks and mounted below ``/mnt/vm/``;
* the command gets ``COMPOSEFS_FLEET_IN_GUEST=1``, ``VM_DISK_<NAME>`` (block
  device), ``VM_MNT_<NAME>`` (mount point) for every disk and ``VM_MNT_TMPFS``;
* its exit code comes back through a second, writable 9p share.

Standard library only; see docs/vm-tier.md.
"""

from __future__ import annotations

import codecs
import dataclasses
import os
import re
import selectors
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from typing import IO, Mapping, Optional, Sequence

TOP = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CACHE = os.path.join(TOP, ".cache", "vm")
KERNEL = os.path.join(CACHE, "vmlinuz")
INITRAMFS = os.path.join(CACHE, "initramfs.cpio.gz")
FETCH_SCRIPT = "scripts/fetch-guest-kernel.sh"
QEMU = "qemu-system-x86_64"
# The flags that work on this machine kind: no usable KVM, so TCG.
QEMU_FLAGS = (
    "-accel", "tcg,thread=multi", "-cpu", "max", "-smp", "1", "-m", "1G",
    "-nographic", "-no-reboot", "-nodefaults", "-serial", "stdio",
)
KERNEL_CMDLINE = "console=ttyS0 panic=-1 quiet mitigations=off"
DEFAULT_TIMEOUT = 1500.0  # a hang guard for one TCG boot running every guest test, not a speed check
# Where the writable share is mounted in the guest; /init (built by the fetch
# script) expects job.sh there.
GUEST_SHARE = "/run/composefs-fleet-vm"
GUEST_MNT = "/mnt/vm"
GUEST_TMPFS = GUEST_MNT + "/tmpfs"
GUEST_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_SBIN = ("/usr/sbin", "/sbin", "/usr/bin", "/bin")
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,19}$")  # also the virtio serial (max 20 bytes)
_ESCAPES_RE = re.compile(r"\x1b(?:\[[0-9;?]*[A-Za-z]|[A-Za-z])")


class GuestError(RuntimeError):
    """The guest could not run the command (boot failure, panic, timeout...)."""

    def __init__(self, message: str, output: str = ""):
        self.output = output
        if output:
            message = "%s\n--- guest console (last 60 lines) ---\n%s" % (message, tail(output, 60))
        super().__init__(message)


class GuestSetupError(GuestError):
    """Something the guest needs is missing on the host."""


class GuestTimeout(GuestError):
    """The guest did not finish in time; QEMU was killed."""


@dataclasses.dataclass(frozen=True)
class Disk:
    """A raw disk image attached as a virtio disk with serial ``name``.

    ``fstype`` None attaches it unformatted and unmounted (only ``VM_DISK_<NAME>``).
    """

    name: str
    size_mib: int
    fstype: Optional[str] = None
    mkfs: Sequence[str] = ()
    mount_options: str = ""

    @property
    def env_suffix(self) -> str:
        return self.name.upper().replace("-", "_")

    @property
    def mountpoint(self) -> Optional[str]:
        return "%s/%s" % (GUEST_MNT, self.name) if self.fstype else None


# The standard set: every run gets all four unless told otherwise.
# (xfs refuses filesystems below 300 MiB, btrfs below ~114 MiB; images are sparse.
# ext4 gets 4 KiB blocks: mke2fs picks 1 KiB for small disks, and fs-verity's
# Merkle tree blocks (4 KiB by default) must not be larger than the fs blocks.)
STANDARD_DISKS = (
    Disk("ext4-verity", 256, "ext4", ("mkfs.ext4", "-q", "-F", "-b", "4096", "-O", "verity")),
    Disk("ext4-plain", 256, "ext4", ("mkfs.ext4", "-q", "-F", "-b", "4096", "-O", "^verity")),
    Disk("btrfs", 256, "btrfs", ("mkfs.btrfs", "-q", "-f")),
    Disk("xfs", 320, "xfs", ("mkfs.xfs", "-q", "-f")),
)


@dataclasses.dataclass
class GuestResult:
    returncode: int
    output: str  # the whole serial console: kernel warnings, init and the command
    elapsed: float  # seconds from starting QEMU to its exit


def tail(text: str, lines: int) -> str:
    return "\n".join(text.splitlines()[-lines:])


def missing_prerequisites() -> list:
    """What the host lacks to boot the guest, as messages naming the fix."""
    problems = []
    for path in (KERNEL, INITRAMFS):
        if not os.path.isfile(path):
            problems.append("%s is missing: run %s" % (os.path.relpath(path, TOP), FETCH_SCRIPT))
    if shutil.which(QEMU) is None:
        problems.append("%s is missing: install qemu-system-x86 (scripts/setup-host.sh)" % QEMU)
    return problems


def _which(cmd: str) -> str:
    found = shutil.which(cmd) or shutil.which(cmd, path=os.pathsep.join(_SBIN))
    if not found:
        raise GuestSetupError("%s is missing on the host: run scripts/setup-host.sh (requirements/apt.txt)" % cmd)
    return found


def _make_disk(disk: Disk, path: str) -> None:
    with open(path, "wb") as f:
        f.truncate(disk.size_mib * 1024 * 1024)
    if disk.mkfs:
        argv = [_which(disk.mkfs[0])] + list(disk.mkfs[1:]) + [path]
        proc = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, check=False)
        if proc.returncode != 0:
            raise GuestSetupError("%s failed (exit %d):\n%s" % (shlex.join(argv), proc.returncode, proc.stdout.decode(errors="replace")))


# Shell function for job scripts (here and tests/fleet/vmhost.py): `vm_dev SERIAL` prints a virtio disk's device.
VM_DEV_FUNCTION = [
    "vm_dev() {",
    "  for _ in $(seq 50); do",
    "    for b in /sys/block/vd*; do",
    '      [ "$(cat "$b/serial" 2>/dev/null)" = "$1" ] && { echo "/dev/${b##*/}"; return 0; }',
    "    done",
    "    sleep 0.1",
    "  done",
    "  return 1",
    "}",
]


def _job_script(argv: Sequence[str], disks: Sequence[Disk], env: Mapping[str, str], cwd: str) -> str:
    q = shlex.quote
    lines = [
        "# job.sh written by tests/vm/guest.py; run by the guest's /init, chrooted into the host's root",
        "share=%s" % q(GUEST_SHARE),
        'fail() { echo "vm-job: FATAL: $*"; echo "$*" >"$share/setup-error"; exit 1; }',
    ] + VM_DEV_FUNCTION  # the virtio disks by serial; probing is synchronous, the retries are a precaution
    assignments = []
    for i, disk in enumerate(disks):
        lines.append('dev%d=$(vm_dev %s) || fail "no virtio disk with serial %s"' % (i, q(disk.name), disk.name))
        assignments.append('"VM_DISK_%s=$dev%d"' % (disk.env_suffix, i))
        if disk.mountpoint:
            opts = " -o %s" % q(disk.mount_options) if disk.mount_options else ""
            lines.append("mkdir -p %s" % q(disk.mountpoint))
            lines.append('mount -t %s%s "$dev%d" %s || fail "cannot mount %s on %s"' % (
                q(disk.fstype), opts, i, q(disk.mountpoint), disk.name, disk.mountpoint))
            assignments.append(q("VM_MNT_%s=%s" % (disk.env_suffix, disk.mountpoint)))
    lines.append("mkdir -p %s" % q(GUEST_TMPFS))
    lines.append('mount -t tmpfs -o mode=1777,size=256m vm-tmpfs %s || fail "cannot mount tmpfs on %s"' % (q(GUEST_TMPFS), GUEST_TMPFS))
    assignments.append(q("VM_MNT_TMPFS=%s" % GUEST_TMPFS))
    assignments.extend(q("%s=%s" % (k, v)) for k, v in sorted(env.items()))
    lines.append('cd %s || fail "no directory %s in the guest"' % (q(cwd), cwd))
    lines.append("echo %s" % q("vm-job: running " + shlex.join(argv)))
    lines.append(" ".join(["env", "-i", "--"] + assignments + [q(a) for a in argv]) + " </dev/null")
    lines.append("rc=$?")
    lines.append('echo "vm-job: exit code $rc"')
    lines.append('echo "$rc" >"$share/rc.tmp" && mv "$share/rc.tmp" "$share/rc"')
    return "\n".join(lines) + "\n"


def _guest_env(env: Optional[Mapping[str, str]]) -> dict:
    path = GUEST_PATH
    venv_bin = os.path.join(TOP, ".venv", "bin")
    if os.path.isdir(venv_bin):
        path = venv_bin + ":" + path
    base = {
        "PATH": path,
        "HOME": "/root",
        "LANG": "C.UTF-8",
        "TERM": "dumb",
        "NO_COLOR": "1",
        "PY_COLORS": "0",
        "COLUMNS": "120",
        "PYTHONUNBUFFERED": "1",
        "COMPOSEFS_FLEET_IN_GUEST": "1",
    }
    base.update(env or {})
    return base


class _Console:
    """Collects QEMU's serial output, optionally echoing it as it arrives."""

    def __init__(self, stream: Optional[IO[str]]):
        self.stream = stream
        self.parts: list = []
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.pending = ""  # a trailing "\r" or an escape sequence cut by the chunking

    def feed(self, data: bytes, final: bool = False) -> None:
        text = self.pending + self.decoder.decode(data, final)
        self.pending = ""
        if not final:
            esc = text.rfind("\x1b")
            if esc >= 0 and len(text) - esc < 16 and not _ESCAPES_RE.match(text, esc):
                text, self.pending = text[:esc], text[esc:]
            elif text.endswith("\r"):
                text, self.pending = text[:-1], "\r"
        text = _ESCAPES_RE.sub("", text.replace("\r\n", "\n")).replace("\r", "")
        if not text:
            return
        self.parts.append(text)
        if self.stream is not None:
            self.stream.write(text)
            self.stream.flush()

    @property
    def text(self) -> str:
        return "".join(self.parts)


def _kill(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        pass


def run_in_guest(
    argv: Sequence[str],
    disks: Sequence[Disk] = STANDARD_DISKS,
    timeout: float = DEFAULT_TIMEOUT,
    env: Optional[Mapping[str, str]] = None,
    cwd: str = TOP,
    stream: Optional[IO[str]] = None,
    tmpdir: Optional[str] = None,
) -> GuestResult:
    """Boot the guest, run ``argv`` in ``cwd`` (default: the checkout) and power off.

    ``env`` is added to the guest's base environment (nothing is inherited from
    the host). ``stream`` receives the console output as it arrives. Returns the
    command's exit code and the console output; raises GuestSetupError when the
    kernel/initramfs or a host tool is missing, GuestTimeout after ``timeout``
    seconds (QEMU is killed) and GuestError when the guest ends without
    reporting an exit code.
    """
    if not argv:
        raise ValueError("argv is empty")
    problems = missing_prerequisites()
    if problems:
        raise GuestSetupError("cannot boot the fs-verity guest:\n  " + "\n  ".join(problems))
    names = [d.name for d in disks]
    for name in names:
        if not _NAME_RE.match(name) or name == "tmpfs":
            raise ValueError("bad disk name %r (lower-case letters, digits, '-', at most 20, not 'tmpfs')" % name)
    if len(set(names)) != len(names):
        raise ValueError("duplicate disk names: %r" % names)
    guest_env = _guest_env(env)

    work = tempfile.mkdtemp(prefix="composefs-fleet-vm-", dir=tmpdir)
    proc = None
    try:
        share = os.path.join(work, "share")
        os.mkdir(share)
        with open(os.path.join(share, "job.sh"), "w", encoding="utf-8") as f:
            f.write(_job_script(argv, disks, guest_env, cwd))
        qemu = [_which(QEMU)] + list(QEMU_FLAGS) + [
            "-kernel", KERNEL, "-initrd", INITRAMFS, "-append", KERNEL_CMDLINE,
            "-virtfs", "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap",
            "-virtfs", "local,path=%s,mount_tag=vmshare,security_model=none" % share,
        ]
        for i, disk in enumerate(disks):
            image = os.path.join(work, "%s.img" % disk.name)
            _make_disk(disk, image)
            qemu += [
                "-drive", "file=%s,format=raw,if=none,id=disk%d,cache=unsafe" % (image, i),
                "-device", "virtio-blk-pci,drive=disk%d,serial=%s" % (i, disk.name),
            ]
        console = _Console(stream)
        start = time.monotonic()
        deadline = start + timeout
        proc = subprocess.Popen(qemu, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
        timed_out = False
        with selectors.DefaultSelector() as sel:
            sel.register(proc.stdout, selectors.EVENT_READ)
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    timed_out = True
                    break
                if not sel.select(timeout=min(left, 1.0)):
                    continue
                data = os.read(proc.stdout.fileno(), 65536)
                if not data:
                    break
                console.feed(data)
        if timed_out:
            _kill(proc)
        else:
            try:
                proc.wait(timeout=max(5.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                timed_out = True
                _kill(proc)
        console.feed(b"", final=True)
        elapsed = time.monotonic() - start
        output = console.text
        if timed_out:
            raise GuestTimeout("the guest did not finish within %.0f s; QEMU was killed" % timeout, output)
        rc_file = os.path.join(share, "rc")
        error_file = os.path.join(share, "setup-error")
        if os.path.isfile(rc_file):
            with open(rc_file, encoding="utf-8") as f:
                text = f.read().strip()
            try:
                returncode = int(text)
            except ValueError:
                raise GuestError("the guest reported a bad exit code %r" % text, output) from None
            return GuestResult(returncode=returncode, output=output, elapsed=elapsed)
        if os.path.isfile(error_file):
            with open(error_file, encoding="utf-8", errors="replace") as f:
                raise GuestError("guest set-up failed: %s" % f.read().strip(), output)
        raise GuestError(
            "the guest ended (QEMU exit %s) without reporting an exit code: kernel panic or /init failure? "
            "(rebuild the initramfs with %s if it is stale)" % (proc.returncode, FETCH_SCRIPT), output)
    finally:
        if proc is not None:
            _kill(proc)
            if proc.stdout is not None:
                proc.stdout.close()
        shutil.rmtree(work, ignore_errors=True)


def main(args: Sequence[str]) -> int:
    """``python tests/vm/guest.py CMD...``: run CMD in the guest (handy for debugging)."""
    if not args or args[0] in ("-h", "--help"):
        print("usage: %s COMMAND [ARG...]   (runs in the fs-verity guest, cwd = the checkout)" % sys.argv[0])
        return 2
    try:
        result = run_in_guest(list(args), stream=sys.stdout)
    except GuestError as exc:
        print("guest.py: %s" % exc.args[0], file=sys.stderr)
        return 125
    print("guest.py: exit code %d after %.1f s" % (result.returncode, result.elapsed), file=sys.stderr)
    return result.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
