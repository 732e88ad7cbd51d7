"""Peak memory of an image build: ours against mkcomposefs 1.0.8, measured in the same run.

Each side runs as a child process; its peak is the maximum resident set size that
wait4() reports for it (what `/usr/bin/time -v` prints as "Maximum resident set size":
the largest of the process and the children it waited for, such as our digest workers).

1. The image of /usr/share (`mkcomposefs DIR IMAGE` against `image` module logic,
   build.build(src=..., dest=...)).
2. Dumpfile -> image of generated trees of 50k, 100k and 200k entries (directories of
   1,000 files with digests and payloads, every tenth with an xattr), to show that memory
   grows linearly with the entries; the bytes per entry are the slope between 50k and 200k.
Both sides must give the same digest.
"""
import os
import subprocess
import sys
import tempfile

from common import TOP

ORACLE = os.path.join(TOP, ".cache", "oracle", "bin", "mkcomposefs")
_OURS = """
import sys
sys.path.insert(0, %r)
from ansible_collections.composefs.fleet.plugins.module_utils.composefs import build
kind, src, dest = sys.argv[1:4]
res = build.build(src=src, dest=dest) if kind == "dir" else build.build(src_dumpfile=src, dest=dest)
print(res["digest"])
""" % os.path.join(TOP, ".cache", "collections")


def peak_rss(argv):
    """(stdout, peak RSS in bytes) of a child process."""
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE)
    out = proc.stdout.read()
    proc.stdout.close()
    _pid, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status) if hasattr(os, "waitstatus_to_exitcode") else status >> 8
    if proc.returncode != 0:
        raise SystemExit("%s failed with %d" % (" ".join(argv), proc.returncode))
    return out.decode().strip(), usage.ru_maxrss * 1024  # Linux gives kilobytes


def generated_dumpfile(path, entries):
    """A dumpfile of ``entries`` entries: directories of 1,000 external files."""
    with open(path, "wb") as out:
        out.write(b"/ 4096 40755 2 0 0 0 1700000000.0 - - -\n")
        n = 1
        d = 0
        while n < entries:
            out.write(b"/d%05d 4096 40755 2 0 0 0 1700000000.0 - - -\n" % d)
            n += 1
            lines = []
            for i in range(min(1000, entries - n)):
                digest = b"%064x" % (n * 2654435761)
                xattr = b" user.tag=v%d" % (i % 7) if i % 10 == 0 else b""
                lines.append(b"/d%05d/file-%04d %d 100644 1 0 0 0 1700000000.%d %s/%s - %s%s\n"
                             % (d, i, 4096 + n, i, digest[:2], digest[2:], digest, xattr))
                n += 1
            out.write(b"".join(lines))
            d += 1


def _row(results, name, ours, theirs, entries=None):
    ratio = theirs / ours
    print("%-44s ours %7.1f MB   mkcomposefs %7.1f MB   ratio %.2fx" % (name, ours / 1e6, theirs / 1e6, ratio), flush=True)
    row = {"name": name, "ours_rss_mb": round(ours / 1e6, 1), "reference_rss_mb": round(theirs / 1e6, 1),
           "ratio": round(ratio, 2)}
    if entries:
        row["entries"] = entries
    results.append(row)


def main(results, src="/usr/share", sizes=(50000, 100000, 200000)):
    if not os.access(ORACLE, os.X_OK):
        raise SystemExit("mkcomposefs oracle missing: run scripts/fetch-oracle.sh")
    with tempfile.TemporaryDirectory(prefix="cfsf-bench-") as d:
        theirs_digest, theirs = peak_rss([ORACLE, "--print-digest", src, os.path.join(d, "theirs")])
        ours_digest, ours = peak_rss([sys.executable, "-c", _OURS, "dir", src, os.path.join(d, "ours")])
        assert ours_digest == theirs_digest, (ours_digest, theirs_digest)
        _row(results, "%s image, peak RSS" % src, ours, theirs)

        peaks = {}
        for entries in sizes:
            dump = os.path.join(d, "gen-%d.dump" % entries)
            generated_dumpfile(dump, entries)
            theirs_digest, theirs = peak_rss([ORACLE, "--from-file", "--print-digest", dump, os.path.join(d, "theirs")])
            ours_digest, ours = peak_rss([sys.executable, "-c", _OURS, "dump", dump, os.path.join(d, "ours")])
            assert ours_digest == theirs_digest, (ours_digest, theirs_digest)
            _row(results, "generated dumpfile, %d entries, peak RSS" % entries, ours, theirs, entries)
            peaks[entries] = (ours, theirs)
            os.unlink(dump)
        low, high = min(sizes), max(sizes)
        per = [(peaks[high][k] - peaks[low][k]) / (high - low) for k in (0, 1)]
        label = "bytes per entry (%dk -> %dk)" % (low // 1000, high // 1000)
        print("%-44s ours %7.0f B    mkcomposefs %7.0f B" % (label, per[0], per[1]), flush=True)
        results.append({"name": "bytes per entry", "ours_b": round(per[0]), "reference_b": round(per[1])})


if __name__ == "__main__":
    main([])
