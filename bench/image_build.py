"""composefs images: ours against mkcomposefs 1.0.8 (the oracle), measured in the same run.

1. Digest only of a tree (default /usr/share): Tree.from_directory + writer, against
   `mkcomposefs --print-digest-only`.
2. Image plus object store of the same tree, into fresh stores on the same
   filesystem, against `mkcomposefs --digest-store`.
3. Dumpfile -> image on the largest upstream asset, against `mkcomposefs --from-file`.
Each run also checks that both sides produce the same digest.
"""
import gzip
import os
import shutil
import tempfile

from common import TOP, best_of, report, run
from ansible_collections.composefs.fleet.plugins.module_utils.composefs import build

ORACLE = os.path.join(TOP, ".cache", "oracle", "bin", "mkcomposefs")
VECTORS = os.path.join(os.path.dirname(TOP), "shared", "test-vectors", "composefs")


def _ours_digest(src):
    tree = build.load_tree(src)
    return build.writer.image_digest(build.image_bytes(tree, 0, 1)).hex()


def bench_tree(results, src="/usr/share", workdir=None):
    theirs, want = best_of(lambda: run([ORACLE, "--print-digest-only", src]).decode().strip(), 2)
    ours, got = best_of(lambda: _ours_digest(src), 2)
    assert got == want, "digest differs from mkcomposefs: %s vs %s" % (got, want)
    results.append(report("%s digest only" % src, ours, theirs, "mkcomposefs --print-digest-only"))

    base = tempfile.mkdtemp(prefix="cfsf-bench-", dir=workdir)
    try:
        def theirs_store():
            d = tempfile.mkdtemp(dir=base)
            out = run([ORACLE, "--digest-store=%s/objects" % d, "--print-digest", src, "%s/img" % d]).decode().strip()
            shutil.rmtree(d)
            return out

        def ours_store():
            d = tempfile.mkdtemp(dir=base)
            res = build.build(src=src, dest="%s/img" % d, digest_store="%s/objects" % d)
            shutil.rmtree(d)
            return res["digest"]

        theirs_s, want_s = best_of(theirs_store, 2)
        ours_s, got_s = best_of(ours_store, 2)
        assert got_s == want_s
        results.append(report("%s image + object store" % src, ours_s, theirs_s, "mkcomposefs --digest-store"))
    finally:
        shutil.rmtree(base, ignore_errors=True)


def bench_dumpfile(results, name="cs9-x86_64-minimal.dump.gz"):
    with tempfile.TemporaryDirectory(prefix="cfsf-bench-") as d:
        dump = os.path.join(d, "in.dump")
        with gzip.open(os.path.join(VECTORS, name), "rb") as src, open(dump, "wb") as out:
            shutil.copyfileobj(src, out)
        theirs, want = best_of(lambda: run([ORACLE, "--from-file", "--print-digest", dump, os.path.join(d, "theirs")]).decode().strip())

        def ours():
            return build.build(src_dumpfile=dump, dest=os.path.join(d, "ours"))["digest"]

        took, got = best_of(ours)
        assert got == want
        results.append(report("dumpfile -> image (%s)" % name, took, theirs, "mkcomposefs --from-file"))


def main(results):
    if not os.access(ORACLE, os.X_OK):
        raise SystemExit("mkcomposefs oracle missing: run scripts/fetch-oracle.sh")
    bench_tree(results)
    bench_dumpfile(results)


if __name__ == "__main__":
    main([])
