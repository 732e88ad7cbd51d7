"""composefs images: ours against mkcomposefs 1.0.8 (the oracle), measured in the same run.

1. Digest only of a tree (default /usr/share): Tree.from_directory + writer, against
   `mkcomposefs --print-digest-only`.
2. Image plus object store of the same tree, into fresh stores on the same
   filesystem, against `mkcomposefs --digest-store`.
3. Dumpfile -> image on the upstream assets, against `mkcomposefs --from-file`.
4. A dumpfile whose 100,000 hardlinks form one chain (issue 9, item 14: the bar is
   under 2 s). mkcomposefs is itself quadratic on chains (minutes at 100k), so it is
   measured on a chain of 8,000 links, beside ours on the same file.
Each run also checks that both sides produce the same digest.
"""
import gzip
import os
import shutil
import tempfile

from common import TOP, best_of, best_of_each, report, run
from ansible_collections.composefs.fleet.plugins.module_utils.composefs import build

ORACLE = os.path.join(TOP, ".cache", "oracle", "bin", "mkcomposefs")
UPSTREAM_ASSETS = os.path.join(TOP, ".cache", "oracle", "assets")
VECTORS = os.path.join(os.environ.get("COMPOSEFS_FLEET_TEST_VECTORS")
                       or os.path.join(os.path.dirname(TOP), "shared", "test-vectors"), "composefs")


def _ours_digest(src):
    with build.paused_gc():  # as build.build(): no collection while the tree grows, freed at once after
        tree = build.load_tree(src)
        try:
            data = build.image_bytes(tree, 0, 1)
        finally:
            tree.release()
    return build.writer.image_digest(data).hex()


def bench_tree(results, src="/usr/share", workdir=None, store=True):
    (theirs, want), (ours, got) = best_of_each(lambda: run([ORACLE, "--print-digest-only", src]).decode().strip(),
                                               lambda: _ours_digest(src), repeat=3)
    assert got == want, "digest differs from mkcomposefs: %s vs %s" % (got, want)
    results.append(report("%s digest only" % src, ours, theirs, "mkcomposefs --print-digest-only"))
    if not store:
        return

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


DUMPFILE_ASSETS = ("cs9-x86_64-minimal.dump.gz", "cs9-x86_64-developer.dump.gz")


def bench_dumpfile(results, names=DUMPFILE_ASSETS):
    for name in names:
        asset = os.path.join(VECTORS, name)
        if not os.path.exists(asset):
            # ../shared/test-vectors lacks the larger one: upstream's tests/assets, which
            # scripts/fetch-oracle.sh unpacks from the composefs source package.
            asset = os.path.join(UPSTREAM_ASSETS, name)
        if not os.path.exists(asset):
            print("%-44s MISSING: %s (run scripts/fetch-oracle.sh)" % ("dumpfile -> image (%s)" % name, asset), flush=True)
            results.append({"name": "dumpfile -> image (%s)" % name, "missing": asset})
            continue
        with tempfile.TemporaryDirectory(prefix="cfsf-bench-") as d:
            dump = os.path.join(d, "in.dump")
            with gzip.open(asset, "rb") as src, open(dump, "wb") as out:
                shutil.copyfileobj(src, out)

            def theirs_run():
                return run([ORACLE, "--from-file", "--print-digest", dump, os.path.join(d, "theirs")]).decode().strip()

            def ours():
                return build.build(src_dumpfile=dump, dest=os.path.join(d, "ours"))["digest"]

            # Short runs (a tenth of a second): five each, in turn, so that a slow spell hits both.
            (theirs, want), (took, got) = best_of_each(theirs_run, ours, repeat=5)
            assert got == want
            results.append(report("dumpfile -> image (%s)" % name, took, theirs, "mkcomposefs --from-file"))


def chain_dumpfile(path, links):
    """A dumpfile of one file /f0 and ``links`` hardlinks, /f<i> linking to /f<i-1>."""
    with open(path, "wb") as out:
        out.write(b"/ 0 40755 2 0 0 0 0.0 - - -\n/f0 10 100644 1 0 0 0 0.0 - 0123456789 -\n")
        out.write(b"".join(b"/f%d 0 @100644 1 0 0 0 0.0 /f%d - -\n" % (i, i - 1) for i in range(1, links + 1)))


def bench_hardlink_chain(results, links=100000, reference_links=8000):
    with tempfile.TemporaryDirectory(prefix="cfsf-bench-") as d:
        for n in (reference_links, links):
            dump = os.path.join(d, "chain-%d.dump" % n)
            chain_dumpfile(dump, n)

            def ours():
                return build.build(src_dumpfile=dump, dest=os.path.join(d, "ours"))["digest"]

            took, got = best_of(ours, 2)
            if n == reference_links:
                theirs, want = best_of(lambda: run([ORACLE, "--from-file", "--print-digest", dump,
                                                    os.path.join(d, "theirs")]).decode().strip(), 2)
                assert got == want
                results.append(report("hardlink chain, %d links" % n, took, theirs, "mkcomposefs --from-file"))
            else:
                print("%-44s ours %8.3f s   (bar: under 2 s; mkcomposefs is quadratic here)"
                      % ("hardlink chain, %d links" % n, float(took)), flush=True)
                results.append({"name": "hardlink chain, %d links" % n, "ours_s": round(took, 3),
                                "ours_cpu_s": round(took.cpu, 3), "bar_s": 2.0})
                print("%-44s ours cpu %.3f s" % ("", took.cpu), flush=True)


def main(results):
    if not os.access(ORACLE, os.X_OK):
        raise SystemExit("mkcomposefs oracle missing: run scripts/fetch-oracle.sh")
    bench_tree(results)
    bench_dumpfile(results)
    bench_hardlink_chain(results)


if __name__ == "__main__":
    main([])
