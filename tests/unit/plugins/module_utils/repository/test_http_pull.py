"""repository_pull's fetcher against a loopback stdlib HTTP server that breaks transfers on purpose.

The real-server tests (nginx) are in tests/integration/test_repository_pull.py; here a
server of our own cuts a response in the middle, answers 503 once, or ignores Range,
so that retrying and resuming are shown deterministically.
"""
import http.server
import os
import re
import threading

import pytest

from ansible_collections.composefs.fleet.plugins.module_utils.composefs.build import build
from ansible_collections.composefs.fleet.plugins.module_utils.repository import http_pull
from ansible_collections.composefs.fleet.plugins.module_utils.repository import repo as repository


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_GET(self):
        server = self.server
        rel = self.path.lstrip("/")
        server.log.append((rel, self.headers.get("Range")))
        if server.unavailable.get(rel, 0) > 0:
            server.unavailable[rel] -= 1
            self.send_response(503)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        link = os.path.join(server.root, rel)
        if server.symlinks and os.path.islink(link):
            # composefs-http's convention for a server that keeps symlinks: the target, typed as such.
            body = os.readlink(link).encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/x-symlink-target")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        full = os.path.realpath(os.path.join(server.root, rel))
        if not full.startswith(server.root + "/") or not os.path.isfile(full):
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        data = open(full, "rb").read()
        start = 0
        match = re.match(r"bytes=(\d+)-$", self.headers.get("Range") or "")
        if match and server.ranges:
            start = int(match.group(1))
            self.send_response(206)
            self.send_header("Content-Range", "bytes %d-%d/%d" % (start, len(data) - 1, len(data)))
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if server.cut.get(rel, 0) > 0:
            server.cut[rel] -= 1
            self.wfile.write(body[:len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)


@pytest.fixture
def served(tmp_path):
    """A sha256 repository with one image (3 objects) served on 127.0.0.1; yields (server, url, digest, objects)."""
    root = str(tmp_path / "served")
    repository.init(root, "sha256", 1, insecure=True)
    tree = tmp_path / "tree"
    tree.mkdir()
    for name, size in (("a", 300000), ("b", 9000), ("c", 20000)):
        (tree / name).write_bytes(os.urandom(size))
    build(src=str(tree), dest=str(tmp_path / "img.cfs"), digest_store=os.path.join(root, "objects"), min_version=1,
          max_version=1, enable_verity=False)
    with repository.Repository(root) as repo:
        digest = repo.commit(str(tmp_path / "img.cfs"), "app/v1")["digest"]
        objects = repo.image_objects(digest)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.root = os.path.realpath(root)
    server.log, server.unavailable, server.cut, server.ranges, server.symlinks = [], {}, {}, True, False
    thread = threading.Thread(target=server.serve_forever)
    thread.start()
    try:
        yield server, "http://127.0.0.1:%d/" % server.server_address[1], digest, objects
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def _pull(tmp_path, url, **kw):
    args = dict(ref="app/v1", insecure=True, backoff=0)
    args.update(kw)
    return http_pull.pull(str(tmp_path / "host"), url, **args)


def test_a_cut_transfer_is_resumed_with_a_range_request(tmp_path, served):
    server, url, digest, objects = served
    big = max(objects, key=lambda rel: os.path.getsize(os.path.join(server.root, "objects", rel)))
    server.cut["objects/" + big] = 1
    out = _pull(tmp_path, url, workers=2)
    assert out["changed"] and out["digest"] == digest and out["objects_fetched"] == 3 and out["objects_resumed"] == 1
    ranges = [r for rel, r in server.log if rel == "objects/" + big]
    assert ranges == [None, "bytes=150000-"]
    with repository.Repository(str(tmp_path / "host")) as repo:
        assert repo.missing_objects(digest) == [] and repo.refs() == {"app/v1": digest}
        assert repo.store().check_object(big.replace("/", "")) == "ok"
    # Every byte received counts, the image included, none twice.
    assert out["bytes_fetched"] == sum(os.path.getsize(os.path.join(server.root, "objects", rel)) for rel in objects) + \
        os.path.getsize(os.path.join(server.root, "objects", digest[:2], digest[2:]))


def test_a_server_that_ignores_range_sends_the_whole_file_again(tmp_path, served):
    server, url, digest, objects = served
    server.ranges = False
    rel = objects[0]
    server.cut["objects/" + rel] = 1
    out = _pull(tmp_path, url, digest=digest, ref=None, dest_ref="pinned")
    assert out["objects_fetched"] == 3 and out["dest_ref"] == "pinned"
    with repository.Repository(str(tmp_path / "host")) as repo:
        assert repo.store().check_object(rel.replace("/", "")) == "ok" and repo.refs() == {"pinned": digest}


def test_unavailable_is_retried_then_refused_with_nothing_left(tmp_path, served):
    server, url, digest, objects = served
    rel = objects[1]
    server.unavailable["objects/" + rel] = 2
    out = _pull(tmp_path, url, retries=2)
    assert out["objects_fetched"] == 3
    assert [r for r, _h in server.log].count("objects/" + rel) == 3
    host2 = tmp_path / "second"
    server.unavailable["objects/" + rel] = 5
    with pytest.raises(http_pull.PullError, match=r"objects/%s: HTTP 503 .*\(3 attempts" % rel):
        http_pull.pull(str(host2), url, ref="app/v1", insecure=True, retries=2, backoff=0, workers=1)
    with repository.Repository(str(host2)) as repo:
        assert repo.refs() == {} and repo.images() == {}
        assert not os.path.exists(os.path.join(repo.objects_path, rel))
        assert not repo.store().stale_temp_files()


def test_a_partial_staging_file_from_a_killed_run_is_continued(tmp_path, served):
    server, url, digest, objects = served
    rel = objects[0]
    data = open(os.path.join(server.root, "objects", rel), "rb").read()
    host = str(tmp_path / "host")
    repository.init(host, "sha256", 1, insecure=True)
    os.makedirs(os.path.join(host, "objects", rel[:2]))
    partial = os.path.join(host, "objects", rel[:2], http_pull.staging_name(rel.replace("/", "")))
    open(partial, "wb").write(data[:1000])
    out = _pull(tmp_path, url)
    assert out["objects_resumed"] == 1 and ("objects/" + rel, "bytes=1000-") in server.log
    assert not os.path.exists(partial)
    # A partial file that does not fit (a different object's bytes): refused once, then fetched whole.
    other = str(tmp_path / "other")
    repository.init(other, "sha256", 1, insecure=True)
    os.makedirs(os.path.join(other, "objects", rel[:2]))
    open(os.path.join(other, "objects", rel[:2], http_pull.staging_name(rel.replace("/", ""))), "wb").write(b"junk" * 10)
    again = http_pull.pull(other, url, ref="app/v1", backoff=0)
    assert again["objects_fetched"] == 3 and again["objects_resumed"] == 0
    with repository.Repository(other) as repo:
        assert repo.store().check_object(rel.replace("/", "")) == "ok" and not repo.store().stale_temp_files()


def test_url_and_algorithm_checks(tmp_path, served):
    _server, url, digest, _objects = served
    for bad in ("ftp://x/", "http://", "http://h/?q=1", "/srv/repo"):
        with pytest.raises(http_pull.PullError, match="must"):
            http_pull.HttpSource(bad)
    assert http_pull.HttpSource("http://h/r").url_of("images/refs/a b") == "http://h/r/images/refs/a%20b"
    with pytest.raises(http_pull.PullError, match="the server's meta.json says sha256"):
        http_pull.pull(str(tmp_path / "x"), url, ref="app/v1", algorithm="sha512", insecure=True)
    repository.init(str(tmp_path / "r512"), "sha512", 1, insecure=True)
    with pytest.raises(http_pull.PullError, match="is a sha512 repository, but the server's meta.json says sha256"):
        http_pull.pull(str(tmp_path / "r512"), url, ref="app/v1")
    with pytest.raises(http_pull.PullError, match="not found"):
        http_pull.pull(str(tmp_path / "y"), url, ref="nope", insecure=True, backoff=0)
    with pytest.raises(http_pull.PullError, match="one of ref"):
        http_pull.pull(str(tmp_path / "z"), url, ref="app/v1", digest=digest)
    for name in ("x", "y", "z"):
        assert not os.path.exists(str(tmp_path / name))  # refused before anything was created


def test_a_ref_served_as_a_symlink_target_names_the_digest(tmp_path, served):
    server, url, digest, _objects = served
    server.symlinks = True
    out = _pull(tmp_path, url)
    assert out["digest"] == digest and out["objects_fetched"] == 3 and out["dest_ref"] == "app/v1"
    requested = [rel for rel, _r in server.log]
    assert "images/refs/app/v1" in requested and "objects/%s/%s" % (digest[:2], digest[2:]) in requested
