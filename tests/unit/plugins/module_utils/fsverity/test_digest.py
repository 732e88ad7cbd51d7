"""fs-verity digests against the shared vectors and the fsverity-utils command."""
import ast
import io
import os
import random
import shutil
import subprocess

import pytest

from ansible_collections.composefs.fleet.plugins.module_utils.fsverity.digest import (
    FsverityHasher,
    FsverityParamsError,
    data_digest,
    digest_files,
    file_digest,
)

from support import shared_vectors


def _vectors():
    path = shared_vectors("fsverity.tsv")
    rows = []
    with open(path) as f:
        for line in f:
            if line.startswith("#") or not line.strip():
                continue
            content, digest, origin = line.rstrip("\n").split("\t")
            rows.append((content, digest, origin))
    return rows


def _eval_content(expr):
    # Contents are Python bytes expressions such as b"x" * 60 + b"\n": evaluate the literal parts only.
    tree = ast.parse(expr, mode="eval")

    def ev(node):
        if isinstance(node, ast.Constant) and isinstance(node.value, (bytes, int)):
            return node.value
        if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Mult)):
            left, right = ev(node.left), ev(node.right)
            return left + right if isinstance(node.op, ast.Add) else left * right
        raise ValueError("unsupported expression in vector: %s" % expr)

    return ev(tree.body)


@pytest.mark.parametrize("content,digest,origin", _vectors())
def test_shared_vectors(content, digest, origin):
    assert data_digest(_eval_content(content)).hex() == digest, origin


def _fsverity_cli():
    tool = shutil.which("fsverity")
    if tool is None:
        raise RuntimeError("the 'fsverity' command (Debian package fsverity) is needed: run scripts/setup-host.sh")
    return tool


def _cli_digest(path, hash_algorithm="sha256", block_size=4096, salt=b""):
    argv = [_fsverity_cli(), "digest", "--compact", "--hash-alg=" + hash_algorithm, "--block-size=%d" % block_size]
    if salt:
        argv.append("--salt=" + salt.hex())
    return subprocess.check_output(argv + [path]).decode().strip()


SIZES = [0, 1, 64, 65, 4095, 4096, 4097, 128 * 4096 - 1, 128 * 4096, 128 * 4096 + 1, 128 * 128 * 4096 + 4096 + 3]


@pytest.mark.parametrize("size", SIZES)
def test_against_fsverity_cli(tmp_path, size):
    data = random.Random(size).randbytes(size) if hasattr(random.Random, "randbytes") else os.urandom(size)
    path = tmp_path / "f"
    path.write_bytes(data)
    assert file_digest(str(path)).hex() == _cli_digest(str(path))


@pytest.mark.parametrize("hash_algorithm,block_size,salt", [
    ("sha512", 4096, b""),
    ("sha256", 1024, b""),
    ("sha256", 65536, b""),
    ("sha256", 4096, b"\x01\x02\x03"),
    ("sha512", 4096, bytes(range(32))),
])
def test_parameters_against_cli(tmp_path, hash_algorithm, block_size, salt):
    path = tmp_path / "f"
    path.write_bytes(os.urandom(3 * 65536 + 77))
    assert file_digest(str(path), hash_algorithm, block_size, salt).hex() == _cli_digest(str(path), hash_algorithm, block_size, salt)


def test_multilevel_tree_and_threads(tmp_path):
    # 1024-byte blocks with sha512 hold 16 hashes per block: 5 tree levels for ~1.1 MiB.
    path = tmp_path / "f"
    path.write_bytes(os.urandom(70 << 20 | 12345))
    want = _cli_digest(str(path))
    assert file_digest(str(path), threads=2).hex() == want
    assert file_digest(str(path)).hex() == want
    small = tmp_path / "g"
    small.write_bytes(os.urandom((1 << 20) + 1))
    assert file_digest(str(small), "sha512", 1024).hex() == _cli_digest(str(small), "sha512", 1024)


def test_incremental_updates_in_odd_pieces():
    data = os.urandom(3 * 4096 * 130 + 17)
    whole = data_digest(data)
    hasher = FsverityHasher()
    rng = random.Random(5)
    pos = 0
    while pos < len(data):
        step = rng.choice([1, 7, 4095, 4096, 4097, 100000])
        hasher.update(data[pos:pos + step])
        pos += step
    assert hasher.digest() == whole


def test_file_object_and_fd(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"hello world\n")
    want = "37061ef2ac4c21bec68489b56138c5780306a4ad7fe6676236ecdf2c9027cd92"
    with open(str(path), "rb") as f:
        f.read(3)  # the digest covers the whole file whatever the position
        assert file_digest(f).hex() == want
        assert file_digest(f.fileno()).hex() == want
    with pytest.raises(io.UnsupportedOperation):
        file_digest(io.BytesIO(b"x"))


def test_symlink_not_followed(tmp_path):
    (tmp_path / "f").write_bytes(b"x")
    os.symlink("f", str(tmp_path / "l"))
    with pytest.raises(OSError):
        file_digest(str(tmp_path / "l"))


def test_digest_files_reports_errors_in_order(tmp_path):
    (tmp_path / "a").write_bytes(b"hello world\n")
    out = list(digest_files([str(tmp_path / "a"), str(tmp_path / "missing")]))
    assert out[0][1].hex() == "37061ef2ac4c21bec68489b56138c5780306a4ad7fe6676236ecdf2c9027cd92"
    assert isinstance(out[1][1], FileNotFoundError)
    # Enough files for the worker processes: same answers, same order.
    many = []
    for i in range(700):
        p = tmp_path / ("f%04d" % i)
        p.write_bytes(os.urandom(i * 13))
        many.append(str(p))
    many.insert(300, str(tmp_path / "missing"))
    parallel = list(digest_files(many, workers=2))
    serial = list(digest_files(many, workers=1))
    assert [path for path, _digest in parallel] == many
    assert [d for _p, d in parallel if not isinstance(d, OSError)] == [d for _p, d in serial if not isinstance(d, OSError)]
    assert isinstance(parallel[300][1], FileNotFoundError)


@pytest.mark.parametrize("kwargs", [
    dict(hash_algorithm="md5"),
    dict(block_size=4097),
    dict(block_size=512),
    dict(salt=b"x" * 33),
])
def test_bad_parameters(kwargs):
    with pytest.raises(FsverityParamsError):
        data_digest(b"x", **kwargs)


@pytest.mark.parametrize("hash_algorithm,block_size,salt", [
    ("sha256", 4096, b""),
    ("sha512", 1024, b""),
    ("sha256", 4096, b"\x01\x02\x03"),
])
def test_digest_files_reader_against_cli(tmp_path, hash_algorithm, block_size, salt):
    # digest_files reads each file into one reused buffer (files of one block: one pread,
    # no fstat); each size that takes another branch, the buffer's size included.
    sizes = [0, 1, block_size - 1, block_size, block_size + 1, 3 * block_size + 5, 129 * 4096, (1 << 20) - 1,
             1 << 20, (1 << 20) + 1, 5, 4 * block_size]
    paths = []
    for i, size in enumerate(sizes):
        path = tmp_path / ("f%02d" % i)
        path.write_bytes(random.Random(i).randbytes(size) if hasattr(random.Random, "randbytes") else os.urandom(size))
        paths.append(str(path))
    for workers in (1, 2):
        got = dict(digest_files(paths, hash_algorithm, block_size, salt, workers=workers))
        for path in paths:
            assert got[path].hex() == _cli_digest(path, hash_algorithm, block_size, salt), path


def test_digest_files_refuses_special_files_and_symlinks(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(str(fifo))
    os.symlink("/dev/zero", str(tmp_path / "zero-link"))
    out = dict(digest_files([str(fifo), "/dev/zero", str(tmp_path / "zero-link")], workers=1))
    assert all(isinstance(result, OSError) for result in out.values()), out  # and none hangs


# SHA-512 digests (4096-byte blocks, no salt) of some shared vectors' contents: the shared
# fsverity.tsv has SHA-256 only, so these were computed with `fsverity digest --hash-alg=sha512`
# (Debian fsverity 1.5) and are checked against the command again below.
SHA512_VECTORS = [
    (b"foo.txt" + b"_" * 60 + b"\n",
     "0c261e3b9fde9716d54e380d9232c2a6dc8583efb2dbcf261f42b48d6ffa046a746ce2a56f326542dd8d73d4202941fefb52564a380d43b3716aeba475d83d6d"),
    (b"",
     "ccf9e5aea1c2a64efa2f2354a6024b90dffde6bbc017825045dce374474e13d10adb9dadcc6ca8e17a3c075fbd31336e8f266ae6fa93a6c3bed66f9e784e5abf"),
    (b"hello world\n",
     "4098b052d2427dc9029c85062215dd6e6c41667bfae09f5ce90a49f7e01fca295c89b16a4d2703ac5b0593f476ca174675ee51829c2f1fd07c4133a87041c1d7"),
]


@pytest.mark.parametrize("content,digest", SHA512_VECTORS)
def test_sha512_vectors(tmp_path, content, digest):
    assert len(data_digest(content, "sha512")) == 64
    assert data_digest(content, "sha512").hex() == digest
    path = tmp_path / "f"
    path.write_bytes(content)
    assert file_digest(str(path), "sha512").hex() == digest == _cli_digest(str(path), "sha512")


@pytest.mark.parametrize("content,digest,origin", _vectors())
def test_shared_vectors_sha512_against_cli(tmp_path, content, digest, origin):
    # The same contents as the SHA-256 vectors, through SHA-512: the reference tool decides.
    path = tmp_path / "f"
    path.write_bytes(_eval_content(content))
    assert file_digest(str(path), "sha512").hex() == _cli_digest(str(path), "sha512"), origin
