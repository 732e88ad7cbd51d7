"""Push and pull into SECURE repositories, where the kernel seals every object (runs inside the guest).

Both publish objects with fs-verity enabled on the staged file, which the kernel
allows only when no writable descriptor of it is open: shown here for the bundle
import and for the HTTP fetcher (a loopback stdlib server in the guest).
"""
import fcntl
import functools
import http.server
import os
import socket
import struct
import threading

from ansible_collections.composefs.fleet.plugins.module_utils.fsverity import ioctl
from ansible_collections.composefs.fleet.plugins.module_utils.repository import fsck, http_pull, transfer
from ansible_collections.composefs.fleet.plugins.module_utils.repository import repo as repository
from module_exec import exec_module

SIOCSIFFLAGS = 0x8914
SIOCSIFADDR = 0x8916
IFF_UP = 0x1


def _measure(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        return ioctl.measure(fd, path)
    finally:
        os.close(fd)


def _source(where):
    """An insecure sha256 repository with app/current built by the image module; returns (path, digest)."""
    src = os.path.join(where, "controller")
    assert exec_module("repository", {"path": src, "algorithm": "sha256", "insecure": True})["changed"]
    tree = os.path.join(where, "tree")
    os.makedirs(tree)
    for name, size in (("a", 5000), ("b", 70000), ("c", 300000)):
        with open(os.path.join(tree, name), "wb") as f:
            f.write(os.urandom(size))
    built = exec_module("image", {"src": tree, "repository": src, "ref": "app/current", "enable_verity": False})
    assert built["changed"] and not built["failed"], built
    return src, built["digest"]


def _all_sealed(path):
    count = 0
    for d, _subdirs, files in os.walk(os.path.join(path, "objects")):
        for name in files:
            digest = os.path.basename(d) + name
            assert _measure(os.path.join(d, name)) == ("sha256", bytes.fromhex(digest))
            count += 1
    return count


def test_push_bundle_into_a_secure_repository(ext4_verity_dir):
    src, digest = _source(ext4_verity_dir)
    plan = transfer.source_plan(src, "app/current")
    host = os.path.join(ext4_verity_dir, "host")
    bundle = os.path.join(ext4_verity_dir, "bundle")
    with open(bundle, "wb") as out:
        transfer.build_bundle(src, digest, plan["objects"], True, out)
    done = transfer.receive(host, digest, plan["objects"], bundle, "app/current", "sha256")
    assert done["initialized"] and done["objects_added"] == 4 and done["ref_changed"]
    with repository.Repository(host) as repo:
        assert repo.secure and fsck.fsck(repo, workers=1)["ok"]
    assert _all_sealed(host) == 4


def _loopback_up():
    """Bring lo up with 127.0.0.1 (a minimal guest may not have): the ioctls ifconfig uses."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        addr = struct.pack("16sH2s4s8s", b"lo", socket.AF_INET, b"\0\0", socket.inet_aton("127.0.0.1"), b"\0" * 8)
        try:
            fcntl.ioctl(s, SIOCSIFADDR, addr)
        except OSError:
            pass  # already has it
        fcntl.ioctl(s, SIOCSIFFLAGS, struct.pack("16sH14s", b"lo", IFF_UP, b"\0" * 14))
    finally:
        s.close()


def test_pull_into_a_secure_repository(ext4_verity_dir):
    src, digest = _source(ext4_verity_dir)
    _loopback_up()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=src)
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever)
    thread.start()
    try:
        host = os.path.join(ext4_verity_dir, "pulled")
        # A partial staging file, as a killed run leaves it: continued, then sealed like the others.
        with repository.Repository(src) as repo:
            first = repo.image_objects(digest)[0]
        repository.init(host, "sha256", 1)
        os.makedirs(os.path.join(host, "objects", first[:2]))
        with open(os.path.join(src, "objects", first), "rb") as f, \
                open(os.path.join(host, "objects", first[:2], http_pull.staging_name(first.replace("/", ""))), "wb") as out:
            out.write(f.read(1000))
        out = http_pull.pull(host, "http://127.0.0.1:%d/" % server.server_address[1], ref="app/current", workers=2,
                             backoff=0)
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
    assert out["changed"] and out["digest"] == digest and out["objects_fetched"] == 3, out
    with repository.Repository(host) as repo:
        assert repo.secure and repo.refs() == {"app/current": digest}
        assert fsck.fsck(repo, workers=1)["ok"]
    assert _all_sealed(host) == 4
