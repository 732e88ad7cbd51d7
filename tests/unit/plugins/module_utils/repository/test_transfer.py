"""The push bundle: its format, the host's plan, and the import (verify everything, then publish) on tmp repositories."""
import io
import os
import struct

import pytest

from ansible_collections.composefs.fleet.plugins.module_utils.composefs.build import build
from ansible_collections.composefs.fleet.plugins.module_utils.fsverity.digest import data_digest
from ansible_collections.composefs.fleet.plugins.module_utils.repository import repo as repository
from ansible_collections.composefs.fleet.plugins.module_utils.repository import transfer
from ansible_collections.composefs.fleet.plugins.module_utils.repository.errors import RepositoryError

D = "ab" * 32


def _blob(tmp_path, name, data):
    path = tmp_path / name
    path.write_bytes(data)
    return str(path)


def _bundle(tmp_path, algorithm, image, blobs):
    """A bundle of ``blobs`` (bytes) as its entries; returns (path, [(digest, bytes)])."""
    entries = []
    for i, data in enumerate(blobs):
        entries.append((data_digest(data, algorithm).hex(), _blob(tmp_path, "blob%d" % i, data)))
    out = io.BytesIO()
    payload = transfer.write_bundle(out, algorithm, image, entries)
    assert payload == sum(len(b) for b in blobs)
    path = tmp_path / "bundle"
    path.write_bytes(out.getvalue())
    return str(path), [(d, b) for (d, _p), b in zip(entries, blobs)]


def test_header_round_trip_and_framing(tmp_path):
    blobs = [b"x" * 5000, b"", os.urandom(70000)]
    path, entries = _bundle(tmp_path, "sha256", D, blobs)
    data = open(path, "rb").read()
    assert data.startswith(transfer.MAGIC) and data.endswith(transfer.TRAILER)
    (length,) = struct.unpack(">I", data[len(transfer.MAGIC):len(transfer.MAGIC) + 4])
    assert len(data) == len(transfer.MAGIC) + 4 + length + sum(len(b) for b in blobs) + len(transfer.TRAILER)
    with open(path, "rb") as f:
        image, listed = transfer.read_header(f, "sha256")
        assert image == D and listed == [(d, len(b)) for d, b in entries]
        assert f.read(5000) == b"x" * 5000


@pytest.mark.parametrize("mangle, message", [
    (lambda d: b"not a bundle" + d, "bad magic"),
    (lambda d: d[:len(transfer.MAGIC) + 2], "truncated: header length"),
    (lambda d: d[:len(transfer.MAGIC) + 4] + b"x" + d[len(transfer.MAGIC) + 5:], "not JSON"),
])
def test_header_refusals(tmp_path, mangle, message):
    path, _entries = _bundle(tmp_path, "sha256", D, [b"abc"])
    with pytest.raises(transfer.BundleError, match=message):
        transfer.read_header(io.BytesIO(mangle(open(path, "rb").read())), "sha256")


def test_header_checks_algorithm_version_and_entries():
    with pytest.raises(transfer.BundleError, match="carries sha256 objects, but the repository uses sha512"):
        transfer.read_header(io.BytesIO(transfer.encode_header("sha256", D, [])), "sha512")
    raw = transfer.encode_header("sha256", D, [(D, 1), (D, 2)])
    with pytest.raises(transfer.BundleError, match="twice"):
        transfer.read_header(io.BytesIO(raw), "sha256")
    with pytest.raises(RepositoryError, match="not a sha256 fs-verity digest"):
        transfer.encode_header("sha256", "abc", [])


def _repo(tmp_path, name="host", algorithm="sha256"):
    path = str(tmp_path / name)
    repository.init(path, algorithm, 1, insecure=True)
    return path


def _objects(path):
    top = os.path.join(path, "objects")
    return sorted(os.path.join(d, f)[len(top) + 1:] for d, _s, fs in os.walk(top) for f in fs)


@pytest.mark.parametrize("algorithm", ["sha256", "sha512"])
def test_import_publishes_only_verified_objects(tmp_path, algorithm):
    host = _repo(tmp_path, algorithm=algorithm)
    image = "cd" * (32 if algorithm == "sha256" else 64)
    path, entries = _bundle(tmp_path, algorithm, image, [os.urandom(9000), os.urandom(100)])
    with repository.Repository(host) as repo:
        assert transfer.import_bundle(repo, path, image, check_mode=True) == (0, 0)
        assert _objects(host) == []
        assert transfer.import_bundle(repo, path, image) == (2, 9100)
    assert _objects(host) == sorted(d[:2] + "/" + d[2:] for d, _b in entries)
    for digest, data in entries:
        assert open(os.path.join(host, "objects", digest[:2], digest[2:]), "rb").read() == data


def test_a_corrupt_object_is_refused_and_nothing_of_the_bundle_is_published(tmp_path):
    host = _repo(tmp_path)
    path, entries = _bundle(tmp_path, "sha256", D, [b"good" * 1000, b"also good" * 500, b"last" * 10])
    data = bytearray(open(path, "rb").read())
    second = data.index(b"also good")
    data[second] ^= 0xFF  # the second object's first byte
    open(path, "wb").write(bytes(data))
    with repository.Repository(host) as repo:
        with pytest.raises(transfer.BundleError, match="object %s in the bundle .* is corrupt" % entries[1][0]):
            transfer.import_bundle(repo, path, D)
    # Not even the first, intact object: nothing is renamed into place before all matched; no staging file is left.
    assert _objects(host) == []


def test_a_truncated_or_padded_bundle_is_refused(tmp_path):
    host = _repo(tmp_path)
    path, _entries = _bundle(tmp_path, "sha256", D, [b"a" * 10000, b"b" * 10000])
    whole = open(path, "rb").read()
    with repository.Repository(host) as repo:
        open(path, "wb").write(whole[:-len(transfer.TRAILER) - 5000])
        with pytest.raises(transfer.BundleError, match="truncated in the object"):
            transfer.import_bundle(repo, path, D)
        open(path, "wb").write(whole + b"more")
        with pytest.raises(transfer.BundleError, match="does not end after its last object"):
            transfer.import_bundle(repo, path, D)
        open(path, "wb").write(whole)
        with pytest.raises(transfer.BundleError, match="is for the image %s, not" % D):
            transfer.import_bundle(repo, path, "ef" * 32)
    assert _objects(host) == []


def _source_with_image(tmp_path, files):
    src = _repo(tmp_path, "src")
    tree = tmp_path / "tree"
    for name, data in files.items():
        (tree / name).parent.mkdir(parents=True, exist_ok=True)
        (tree / name).write_bytes(data)
    dest = str(tmp_path / "img.cfs")
    build(src=str(tree), dest=dest, digest_store=os.path.join(src, "objects"), min_version=1, max_version=1,
          enable_verity=False)
    with repository.Repository(src) as repo:
        digest = repo.commit(dest, "app/v1")["digest"]
    return src, digest


def test_plan_bundle_receive_round_trip(tmp_path):
    src, digest = _source_with_image(tmp_path, {"a": os.urandom(5000), "b/c": os.urandom(7000), "small": b"x"})
    plan = transfer.source_plan(src, "app/v1")
    assert plan["digest"] == digest and plan["name"] == "app/v1" and len(plan["objects"]) == 2
    assert transfer.source_plan(src, digest)["name"] is None
    host = str(tmp_path / "host")
    first = transfer.host_plan(host, digest, plan["objects"], "sha256")
    assert not first["exists"] and first["missing"] == plan["objects"] and not os.path.exists(host)
    with open(str(tmp_path / "b1"), "wb") as out:
        payload = transfer.build_bundle(src, digest, first["missing"], True, out)
    assert payload == 12000 + os.path.getsize(str(tmp_path / "img.cfs"))
    assert transfer.payload_size(src, digest, first["missing"], True) == payload
    check = transfer.receive(host, digest, plan["objects"], str(tmp_path / "b1"), "app/v1", "sha256", insecure=True,
                             check_mode=True)
    assert check["initialized"] and check["refs_after"] == {"app/v1": digest} and not os.path.exists(host)
    done = transfer.receive(host, digest, plan["objects"], str(tmp_path / "b1"), "app/v1", "sha256", insecure=True)
    assert done["initialized"] and done["objects_added"] == 3 and done["image_linked"] and done["ref_changed"]
    assert done["refs_before"] == {} and done["refs_after"] == {"app/v1": digest}
    again = transfer.host_plan(host, digest, plan["objects"], "sha256")
    assert again["exists"] and again["image_object"] and again["image_linked"] and again["missing"] == []
    with repository.Repository(host) as repo:
        assert repo.missing_objects(digest) == []
    # A ref only: no bundle.
    named = transfer.receive(host, digest, plan["objects"], None, "app/previous", "sha256")
    assert named["ref_changed"] and named["objects_added"] == 0 and not named["image_linked"]
    assert transfer.receive(host, digest, plan["objects"], None, "app/previous", "sha256")["ref_changed"] is False


def test_receive_refuses_an_image_whose_objects_did_not_arrive(tmp_path):
    src, digest = _source_with_image(tmp_path, {"a": os.urandom(5000), "b": os.urandom(6000)})
    plan = transfer.source_plan(src, "app/v1")
    with open(str(tmp_path / "b1"), "wb") as out:
        transfer.build_bundle(src, digest, plan["objects"][:1], True, out)
    host = str(tmp_path / "host")
    with pytest.raises(RepositoryError, match="still lacks 1 object"):
        transfer.receive(host, digest, plan["objects"], str(tmp_path / "b1"), "app/v1", "sha256", insecure=True)
    with repository.Repository(host) as repo:
        assert repo.refs() == {} and repo.images() == {}


def test_plans_refuse_mismatches(tmp_path):
    src, digest = _source_with_image(tmp_path, {"a": os.urandom(5000)})
    other = _repo(tmp_path, "other512", "sha512")
    with pytest.raises(RepositoryError, match="is a sha512 repository; the image is a sha256 one"):
        transfer.host_plan(other, digest, [], "sha256")
    with pytest.raises(RepositoryError, match="has no ref 'nope'"):
        transfer.source_plan(src, "nope")
    os.unlink(os.path.join(src, "objects", transfer.source_plan(src, "app/v1")["objects"][0]))
    with pytest.raises(RepositoryError, match="lacks 1 object"):
        transfer.source_plan(src, "app/v1")
    full = tmp_path / "full"
    full.mkdir()
    (full / "passwd").write_text("x")
    with pytest.raises(RepositoryError, match="not empty and has no meta.json"):
        transfer.host_plan(str(full), digest, [], "sha256")
    with pytest.raises(RepositoryError, match="not an object path"):
        transfer.host_plan(str(tmp_path / "new"), digest, ["../../etc/passwd"], "sha256")


def test_receive_waits_for_the_lock_gc_holds(tmp_path):
    from ansible_collections.composefs.fleet.plugins.module_utils.repository.errors import RepositoryLocked
    from ansible_collections.composefs.fleet.plugins.module_utils.repository.lock import RepositoryLock
    src, digest = _source_with_image(tmp_path, {"a": os.urandom(5000)})
    plan = transfer.source_plan(src, "app/v1")
    host = _repo(tmp_path)
    with open(str(tmp_path / "b1"), "wb") as out:
        transfer.build_bundle(src, digest, plan["objects"], True, out)
    with RepositoryLock(host, exclusive=True):  # as a running gc holds it
        with pytest.raises(RepositoryLocked, match="locked for garbage collection"):
            transfer.receive(host, digest, plan["objects"], str(tmp_path / "b1"), "app/v1", "sha256", lock_timeout=0.1)
    assert _objects(host) == []
    assert transfer.receive(host, digest, plan["objects"], str(tmp_path / "b1"), "app/v1", "sha256")["ref_changed"]


def test_source_plan_reads_an_image_once_per_cache(tmp_path):
    src, digest = _source_with_image(tmp_path, {"a": os.urandom(5000), "b": os.urandom(6000)})
    cache = tmp_path / "cache"
    cache.mkdir()
    first = transfer.source_plan(src, "app/v1", cache_dir=str(cache))
    (entry,) = os.listdir(str(cache))
    assert entry == "composefs-image-objects-sha256-%s.json" % digest
    # The cached list is what is used (an image's objects follow from its digest)...
    (cache / entry).write_text('["%s"]' % first["objects"][0])
    assert transfer.source_plan(src, digest, cache_dir=str(cache))["objects"] == first["objects"][:1]
    # ...but the objects are still looked for in src, and a damaged cache entry is read again from the image.
    (cache / entry).write_text("not json")
    assert transfer.source_plan(src, "app/v1", cache_dir=str(cache))["objects"] == first["objects"]
    os.unlink(os.path.join(src, "objects", first["objects"][0]))
    with pytest.raises(RepositoryError, match="lacks 1 object"):
        transfer.source_plan(src, "app/v1", cache_dir=str(cache))
