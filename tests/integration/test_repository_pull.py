"""repository_pull against a real nginx (Debian's nginx-light) on 127.0.0.1, into repositories on an ext4 loop fs.

nginx serves a repository directory as plain static files (it follows images/refs/
symlinks and sends the image's bytes). Shown here: a full pull and its no-op rerun,
check mode, a corrupt and a truncated object on the server refused with nothing
published, retries counted in nginx's own access log, resuming a partial staging file
with a Range request that nginx answers 206, and HTTPS with a private CA.
"""
import os
import shutil
import subprocess

import pytest

from ansible_run import run_module
from module_exec import exec_module
from nginx_server import access_log, nginx_server
from test_repository import make_tree

from ansible_collections.composefs.fleet.plugins.module_utils.composefs.build import build
from ansible_collections.composefs.fleet.plugins.module_utils.repository import http_pull
from ansible_collections.composefs.fleet.plugins.module_utils.repository import repo as repository


def _commit(root, where, name, files, ref):
    tree = make_tree(os.path.join(where, "tree-" + name), files)
    image = os.path.join(where, name + ".cfs")
    build(src=tree, dest=image, digest_store=os.path.join(root, "objects"), min_version=1, max_version=1, enable_verity=False)
    with repository.Repository(root) as repo:
        digest = repo.commit(image, ref)["digest"]
        return digest, repo.image_objects(digest)


def _size(root, rel):
    return os.path.getsize(os.path.join(root, "objects", rel))


@pytest.fixture
def served(tmp_path):
    """A sha256 repository to serve, with app/current (3 objects); yields (root, digest, objects, where)."""
    where = str(tmp_path / "server")
    root = os.path.join(where, "repo")
    repository.init(root, "sha256", 1, insecure=True)
    digest, objects = _commit(root, where, "v1", {"a": os.urandom(400000), "b/c": os.urandom(9000), "d": os.urandom(70000),
                                                  "tiny": b"inline"}, "app/current")
    os.chmod(where, 0o755)
    return root, digest, objects, where


@pytest.fixture
def host(ext4, request):
    d = os.path.join(ext4, "pull-" + request.node.name)
    os.makedirs(d)
    return os.path.join(d, "repo")


def _bad_objects(path):
    """Objects and staging files under objects/ (to show nothing half-written stays)."""
    top = os.path.join(path, "objects")
    return sorted(os.path.join(d, f)[len(top) + 1:] for d, _s, fs in os.walk(top) for f in fs)


def test_pull_then_nothing_then_a_pinned_digest(tmp_path, served, host):
    root, digest, objects, _where = served
    logs = str(tmp_path / "nginx")
    image_size = _size(root, digest[:2] + "/" + digest[2:])
    total = sum(_size(root, rel) for rel in objects)
    with nginx_server(root, logs) as url:
        args = {"path": host, "url": url, "ref": "app/current", "insecure": True}
        plan = exec_module("repository_pull", args, check=True, diff=True)
        assert plan["changed"] and not plan["failed"] and plan["objects_fetched"] == 3 and plan["initialized"], plan
        assert plan["diff"]["after"] == {"refs": {"app/current": digest}} and not os.path.exists(host)
        first = run_module("composefs.fleet.repository_pull", args)
        assert first["changed"] and first["digest"] == digest and not first["failed"], first
        assert (first["objects_missing"], first["objects_fetched"], first["objects_resumed"]) == (3, 3, 0)
        assert first["bytes_fetched"] == total + image_size
        again = run_module("composefs.fleet.repository_pull", args)
        # The ref is resolved by fetching the image again; no object is fetched and nothing changes.
        assert not again["changed"] and again["objects_fetched"] == 0 and again["bytes_fetched"] == image_size, again
        pinned = exec_module("repository_pull", {"path": host, "url": url, "digest": digest, "dest_ref": "app/pinned"},
                             diff=True)
        assert pinned["changed"] and pinned["bytes_fetched"] == 0 and not pinned["image_fetched"], pinned
        assert pinned["diff"] == {"before": {"refs": {"app/current": digest}},
                                  "after": {"refs": {"app/current": digest, "app/pinned": digest}}}
        assert not exec_module("repository_pull", {"path": host, "url": url, "digest": digest,
                                                   "dest_ref": "app/pinned"})["changed"]
    requests = access_log(logs)
    for rel in objects:  # every object came over once, whole (two runs with check mode fetched none)
        assert [(s, r) for u, s, r, _b in requests if u == "/objects/" + rel] == [(200, "-")]
    info = exec_module("repository_info", {"path": host, "fsck": True})
    assert info["fsck"]["ok"] and info["refs"] == {"app/current": digest, "app/pinned": digest}, info


def test_corrupt_and_truncated_objects_on_the_server_are_refused(tmp_path, served, host):
    root, v1, _objects, where = served
    logs = str(tmp_path / "nginx")
    with nginx_server(root, logs) as url:
        args = {"path": host, "url": url, "ref": "app/current", "insecure": True}
        assert exec_module("repository_pull", args)["changed"]
        v2, objects2 = _commit(root, where, "v2", {"a": os.urandom(300000), "e": os.urandom(50000)}, "app/current")
        victim = objects2[0]
        good = open(os.path.join(root, "objects", victim), "rb").read()
        before = _bad_objects(host)

        with open(os.path.join(root, "objects", victim), "r+b") as f:
            f.seek(1234)
            f.write(bytes([good[1234] ^ 0x80]))
        corrupt = exec_module("repository_pull", dict(args, workers=1))
        assert corrupt["failed"] and "corrupt or truncated" in corrupt["msg"], corrupt
        assert victim.replace("/", "") in corrupt["msg"] and url + "objects/" + victim in corrupt["msg"]
        assert victim not in _bad_objects(host) and not [o for o in _bad_objects(host) if ".tmp-" in o]
        with repository.Repository(host) as repo:
            assert repo.refs() == {"app/current": v1} and v2 not in repo.images()

        with open(os.path.join(root, "objects", victim), "wb") as f:
            f.write(good[:len(good) // 2])  # truncated on the server: nginx sends the shorter file, whole
        truncated = exec_module("repository_pull", dict(args, workers=1))
        assert truncated["failed"] and "corrupt or truncated" in truncated["msg"] and victim.replace("/", "") in truncated["msg"]
        assert "%d bytes" % (len(good) // 2) in truncated["msg"]
        assert victim not in _bad_objects(host) and not [o for o in _bad_objects(host) if ".tmp-" in o]
        assert set(before) <= set(_bad_objects(host))

        with open(os.path.join(root, "objects", victim), "wb") as f:
            f.write(good)
        fixed = exec_module("repository_pull", args)
        assert fixed["changed"] and fixed["digest"] == v2 and fixed["ref_before"] == v1, fixed
    info = exec_module("repository_info", {"path": host, "fsck": True})
    assert info["fsck"]["ok"] and info["refs"] == {"app/current": v2} and info["missing_objects"] == {"app/current": []}


def test_retries_are_counted_by_nginx_and_a_partial_file_is_resumed(tmp_path, served, host):
    root, digest, objects, _where = served
    flaky = max(objects, key=lambda rel: _size(root, rel))
    logs = str(tmp_path / "nginx-503")
    with nginx_server(root, logs, extra="location = /objects/%s { return 503; }" % flaky) as url:
        failed = exec_module("repository_pull", {"path": host, "url": url, "ref": "app/current", "insecure": True,
                                                 "retries": 2, "workers": 2})
    assert failed["failed"] and url + "objects/" + flaky in failed["msg"] and "HTTP 503" in failed["msg"], failed
    assert "3 attempts" in failed["msg"]
    assert [s for u, s, _r, _b in access_log(logs) if u == "/objects/" + flaky] == [503, 503, 503]
    assert flaky not in _bad_objects(host) and not [o for o in _bad_objects(host) if ".tmp-" in o]
    with repository.Repository(host) as repo:
        assert repo.refs() == {} and repo.images() == {}

    # A run killed in the middle leaves its staging file; the next run asks nginx for the rest only.
    size = _size(root, flaky)
    partial = os.path.join(host, "objects", flaky[:2], http_pull.staging_name(flaky.replace("/", "")))
    os.makedirs(os.path.dirname(partial), exist_ok=True)
    with open(os.path.join(root, "objects", flaky), "rb") as src, open(partial, "wb") as dst:
        dst.write(src.read(100000))
    logs = str(tmp_path / "nginx")
    with nginx_server(root, logs) as url:
        done = exec_module("repository_pull", {"path": host, "url": url, "digest": digest, "dest_ref": "app/current"})
    assert done["changed"] and done["objects_resumed"] == 1, done
    assert [(s, r, b) for u, s, r, b in access_log(logs) if u == "/objects/" + flaky] == [(206, "bytes=100000-", size - 100000)]
    assert not os.path.exists(partial)
    info = exec_module("repository_info", {"path": host, "fsck": True})
    assert info["fsck"]["ok"] and info["refs"] == {"app/current": digest}, info


def test_https_with_a_private_ca(tmp_path, served, host):
    root, digest, _objects, _where = served
    openssl = shutil.which("openssl")
    assert openssl, "openssl is missing: run scripts/setup-host.sh (requirements/apt.txt)"
    pki = tmp_path / "pki"
    pki.mkdir()

    def run(*argv):
        subprocess.run([openssl] + list(argv), cwd=str(pki), check=True, capture_output=True)
    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=test CA", "-keyout", "ca.key",
        "-out", "ca.pem", "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign")
    run("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1", "-keyout", "server.key", "-out", "server.csr")
    (pki / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1\n")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-days", "2",
        "-extfile", "ext.cnf", "-out", "server.pem")
    logs = str(tmp_path / "nginx-tls")
    with nginx_server(root, logs, ssl=(str(pki / "server.pem"), str(pki / "server.key"))) as url:
        assert url.startswith("https://")
        args = {"path": host, "url": url, "digest": digest, "insecure": True}
        untrusted = exec_module("repository_pull", dict(args, retries=0))
        assert untrusted["failed"] and "CERTIFICATE_VERIFY_FAILED" in untrusted["msg"], untrusted
        assert not os.path.exists(host)
        trusted = exec_module("repository_pull", dict(args, ca_path=str(pki / "ca.pem")))
        assert trusted["changed"] and trusted["objects_fetched"] == 3, trusted
        unchecked = exec_module("repository_pull", dict(args, validate_certs=False, path=host + "-2"))
        assert unchecked["changed"] and unchecked["objects_fetched"] == 3, unchecked
