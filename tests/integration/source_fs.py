"""Per-example directories for the image tests (their ext4 fixture is in conftest.py).

Source trees go on ext4 (it takes trusted.*, security.* and user.* xattrs on every file
type the tests make); images and stores go on the host's disk, since the loop
filesystem is small.
"""
import contextlib
import shutil
import tempfile


@contextlib.contextmanager
def example_dirs(ext4):
    """(a directory on the ext4 for a source tree, one on the host for images and stores); removed after."""
    src_parent = tempfile.mkdtemp(prefix="example-", dir=ext4)
    out = tempfile.mkdtemp(prefix="cfsf-example-")
    try:
        yield src_parent, out
    finally:
        shutil.rmtree(src_parent, ignore_errors=True)
        shutil.rmtree(out, ignore_errors=True)
