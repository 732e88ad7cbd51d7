"""The reference tools ("the oracle"): mkcomposefs and composefs-info 1.0.8 unpacked by scripts/fetch-oracle.sh.

Tests that compare with them fail (never skip) when they are missing.
"""
import os
import subprocess

from support import TOP

BIN = os.path.join(TOP, ".cache", "oracle", "bin")
# Upstream's tests/assets from the same source package (dumpfiles and the sha256 of their images).
ASSETS = os.path.join(TOP, ".cache", "oracle", "assets")
MKCOMPOSEFS = os.path.join(BIN, "mkcomposefs")
COMPOSEFS_INFO = os.path.join(BIN, "composefs-info")


class OracleError(AssertionError):
    """The oracle rejected its input or failed; the message has its stderr."""


def _tool(path):
    if not os.access(path, os.X_OK):
        raise OracleError("the composefs oracle is missing: %s; run scripts/fetch-oracle.sh" % path)
    return path


def check_available():
    """Fail (AssertionError) unless both tools are there."""
    _tool(MKCOMPOSEFS)
    _tool(COMPOSEFS_INFO)


def _run(argv, stdin=None):
    result = subprocess.run(argv, input=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=False)
    if result.returncode != 0:
        command = " ".join(str(a) for a in argv)
        raise OracleError("%s failed (exit %d): %s"
                          % (command, result.returncode, result.stderr.decode("utf-8", "replace").strip()))
    return result.stdout


def version_args(min_version=None, max_version=None):
    args = []
    if min_version is not None:
        args.append("--min-version=%d" % min_version)
    if max_version is not None:
        args.append("--max-version=%d" % max_version)
    return args


def mkcomposefs_from_dump(dump_bytes, image, min_version=None, max_version=None):
    """``mkcomposefs --from-file - IMAGE`` with the dumpfile on stdin; returns the image bytes."""
    _run([_tool(MKCOMPOSEFS)] + version_args(min_version, max_version) + ["--from-file", "-", str(image)], dump_bytes)
    with open(str(image), "rb") as handle:
        return handle.read()


def mkcomposefs_dir(src, image, *options):
    """``mkcomposefs [OPTIONS] SRC IMAGE``; returns stdout (the digest with --print-digest)."""
    return _run([_tool(MKCOMPOSEFS)] + list(options) + [os.fsdecode(src), os.fsdecode(image)])


def info(command, *images, basedir=None, filters=()):
    """``composefs-info [--basedir=DIR] [--filter=NAME...] COMMAND IMAGES...``; returns stdout bytes."""
    argv = [_tool(COMPOSEFS_INFO)]
    if basedir is not None:
        argv.append("--basedir=%s" % basedir)
    argv.extend("--filter=%s" % f for f in filters)
    argv.append(command)
    argv.extend(str(i) for i in images)
    return _run(argv)


def mkcomposefs(*args):
    """``mkcomposefs ARGS...``; returns stdout bytes (the digest with --print-digest[-only])."""
    return _run([_tool(MKCOMPOSEFS)] + [os.fsdecode(a) for a in args])
