"""Random directory trees on disk, for the image tests (hypothesis strategies, materialize, snapshot).

A tree *spec* is plain data so hypothesis can shrink it:

- a directory: ``("dir", meta, {name: spec})``
- a regular file: ``("file", meta, (size, seed, sparse))``
- a symlink: ``("symlink", meta, target)``
- a device: ``("chr" | "blk", meta, (major, minor))`` (``chr`` 0:0 is an overlay whiteout)
- ``("fifo", meta, None)``, ``("sock", meta, None)``

``meta`` is ``(mode bits, uid, gid, (mtime seconds, nanoseconds), {xattr name: value})``.
:func:`tree_specs` adds ``extras``: hardlinks to make, a wide directory (more
than one block of entries), a deep chain of directories.

:func:`materialize` writes a spec below a directory (as root: owners, devices,
trusted.* and security.* xattrs) and :func:`snapshot` reads any tree back as
comparable records.
"""
import hashlib
import os
import random
import socket
import stat

from hypothesis import strategies as st

# --- strategies -------------------------------------------------------------------------------

_SPECIAL_NAMES = [b"-rf", b"a b", b" lead", b"trail ", b"new\nline", b"tab\there", b"k=v", b"=", b"-", b"--", b"\\",
                  b"\xff\xfe", b"caf\xc3\xa9", b"\xc3", b"\x01\x7f", b"00", b"7f", b"ff", b"0a", b".hidden", b"...",
                  b"\xe2\x80\x8b", b"@x", b"%s", b"*"]


def _clean_name(name):
    name = name.replace(b"/", b"_").replace(b"\0", b"0")
    return name if name not in (b".", b"..") else name + b"_"


names = st.one_of(
    st.sampled_from(_SPECIAL_NAMES),
    st.binary(min_size=1, max_size=16),
    st.text(min_size=1, max_size=12).map(lambda t: t.encode("utf-8")),
    st.binary(min_size=200, max_size=255),
).map(_clean_name).filter(lambda n: 0 < len(n) <= 255)

uids = st.sampled_from([0, 0, 0, 1, 1000, 65534, 65535, 65536, 100000, 2 ** 31, 2 ** 32 - 2])
mtimes = st.tuples(st.sampled_from([0, 1, 1700000000, 1700000000, 2 ** 31 + 3, -1, -946684800]),
                   st.sampled_from([0, 0, 1, 123456789, 999999999]))
file_modes = st.one_of(st.sampled_from([0o644, 0o755, 0o600, 0o4755, 0o2755, 0o1777, 0o000, 0o444]),
                       st.integers(0, 0o7777))
dir_modes = st.sampled_from([0o755, 0o700, 0o1777, 0o2775, 0o555, 0o000])

_XATTR_FIXED = [b"user.a", b"user.b", b"user.overlay.foo", b"user.overlay.whiteout", b"user.=eq",
                b"trusted.overlay.opaque", b"trusted.overlay.redirect", b"trusted.overlay.metacopy",
                b"trusted.overlay.foo", b"trusted.overlay.overlay.x", b"trusted.overlay.whiteout", b"trusted.foo", b"trusted.overlayfoo",
                b"security.selinux", b"security.ima", b"security.capability.x"]
_USER_SUFFIX = st.binary(min_size=1, max_size=20).map(lambda b: b.replace(b"\0", b"0"))
xattr_names = st.one_of(st.sampled_from(_XATTR_FIXED), _USER_SUFFIX.map(lambda s: b"user." + s),
                        _USER_SUFFIX.map(lambda s: b"trusted." + s))
xattr_values = st.one_of(st.binary(max_size=40),
                         st.sampled_from([b"", b"y", b"x", b"system_u:object_r:usr_t:s0\0", b"=" * 10, b"v" * 700]))
# user.* xattrs only on regular files and directories (the kernel refuses them elsewhere).
_NON_USER = st.one_of(st.sampled_from([n for n in _XATTR_FIXED if not n.startswith(b"user.")]),
                      _USER_SUFFIX.map(lambda s: b"trusted." + s))
xattrs_any = st.dictionaries(xattr_names, xattr_values, max_size=4)
xattrs_special = st.dictionaries(_NON_USER, xattr_values, max_size=2)


def _meta(modes, xattrs):
    return st.tuples(modes, uids, uids, mtimes, xattrs)


SIZES = [0, 1, 63, 64, 65, 100, 4095, 4096, 4097, 9000, 65536 + 3]
BIG_SIZES = [(3 << 20) + 7, 5 << 20]
_small_contents = st.tuples(st.sampled_from(SIZES), st.integers(0, 3), st.just(False))
# About one file in eight is big (a few MiB, sparse or not).
contents = st.one_of(*([_small_contents] * 7 + [st.tuples(st.sampled_from(BIG_SIZES), st.integers(0, 1), st.booleans())]))
# Bytes of real (not sparse) file data one tree may write; bigger files beyond it are made sparse.
DATA_BUDGET = 16 << 20

majors = st.sampled_from([1, 7, 8, 253, 4095])
minors = st.sampled_from([0, 1, 255, 256, 65536, (1 << 20) - 1])

leaves = st.one_of(
    st.tuples(st.just("file"), _meta(file_modes, xattrs_any), contents),
    st.tuples(st.just("file"), _meta(file_modes, xattrs_any), contents),
    st.tuples(st.just("symlink"), _meta(st.just(0o777), xattrs_special),
              st.one_of(names, st.sampled_from([b"/etc/passwd", b"../../x", b"a" * 4000, b"-", b"dir/sub"]))),
    st.tuples(st.sampled_from(["chr", "blk"]), _meta(file_modes, xattrs_special), st.tuples(majors, minors)),
    st.tuples(st.just("chr"), _meta(file_modes, xattrs_special), st.just((0, 0))),
    st.tuples(st.sampled_from(["fifo", "sock"]), _meta(file_modes, xattrs_special), st.none()),
)


def _dir(children):
    return st.tuples(st.just("dir"), _meta(dir_modes, xattrs_any), st.dictionaries(names, children, max_size=6))


tree_nodes = st.recursive(leaves, _dir, max_leaves=24)
extras = st.fixed_dictionaries({
    "links": st.lists(st.tuples(st.integers(0, 1000), st.integers(0, 1000), names), max_size=6),
    "many_links": st.sampled_from([0, 0, 0, 60]),
    "wide": st.sampled_from([0, 0, 0, 300]),
    "deep": st.sampled_from([0, 0, 0, 40]),
})


def tree_specs():
    """(root spec, extras) pairs."""
    return st.tuples(st.tuples(st.just("dir"), _meta(dir_modes, xattrs_any),
                               st.dictionaries(names, tree_nodes, max_size=8)), extras)


# --- writing a spec to disk ---------------------------------------------------------------------


def _content(size, seed):
    if size <= 0:
        return b""
    return random.Random(seed * 7919 + size).randbytes(size)


class _Ctx:
    def __init__(self, scratch):
        self.scratch = scratch
        self.files = []
        self.dirs = []
        self.meta = []  # (path, kind, meta) applied bottom-up at the end
        self.sockets = 0
        self.budget = DATA_BUDGET


def _make(ctx, path, spec):
    kind, meta, arg = spec
    if kind == "dir":
        os.mkdir(path)
        ctx.dirs.append(path)
        for name, child in sorted(arg.items()):
            _make(ctx, os.path.join(path, name), child)
    elif kind == "file":
        size, seed, sparse = arg
        if not sparse and size > 65536:
            sparse = size > ctx.budget
            ctx.budget -= 0 if sparse else size
        with open(path, "wb") as handle:
            if sparse:
                handle.truncate(size)
                handle.seek(size // 3)
                handle.write(_content(4096 * 3 + 5, seed))
                handle.seek(size - 1)
                handle.write(b"!")
            else:
                handle.write(_content(size, seed))
        ctx.files.append(path)
    elif kind == "symlink":
        os.symlink(arg, path)
    elif kind in ("chr", "blk"):
        os.mknod(path, (stat.S_IFCHR if kind == "chr" else stat.S_IFBLK) | 0o600, os.makedev(*arg))
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind == "sock":
        # sun_path holds 108 bytes: bind a short name, then move it into place.
        ctx.sockets += 1
        short = os.path.join(ctx.scratch, b"s%d" % ctx.sockets)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(short)
        finally:
            sock.close()
        os.rename(short, path)
    else:
        raise ValueError(kind)
    ctx.meta.append((path, kind, meta))


def _apply_meta(path, kind, meta):
    mode, uid, gid, (sec, nsec), xattrs = meta
    for name, value in sorted(xattrs.items()):
        os.setxattr(path, name, value, follow_symlinks=False)
    os.lchown(path, uid, gid)
    if kind != "symlink":
        os.chmod(path, mode)
    os.utime(path, ns=(0, sec * 1000000000 + nsec), follow_symlinks=False)


def _fresh(parent, name):
    path = os.path.join(parent, name)
    while os.path.lexists(path):
        path += b"_"
    return path


def materialize(spec, parent, name=b"src"):
    """Create the tree ``spec`` (from :func:`tree_specs`) as ``parent/name``; returns its path (bytes)."""
    root_spec, extra = spec
    parent = os.fsencode(parent)
    scratch = os.path.join(parent, b".scratch")
    os.mkdir(scratch)
    ctx = _Ctx(scratch)
    top = os.path.join(parent, name)
    try:
        _make(ctx, top, root_spec)
        if extra["wide"]:
            wide = _fresh(top, b"wide")
            os.mkdir(wide)
            ctx.dirs.append(wide)
            for i in range(extra["wide"]):
                with open(os.path.join(wide, b"entry-%04d-%s" % (i, b"x" * (i % 40))), "wb") as handle:
                    handle.write(b"%d" % (i % 7))
        if extra["deep"]:
            deep = _fresh(top, b"deep")
            os.mkdir(deep)
            for i in range(extra["deep"]):
                deep = os.path.join(deep, b"d%d" % (i % 3))
                os.mkdir(deep)
            with open(os.path.join(deep, b"bottom"), "wb") as handle:
                handle.write(b"deep")
        if extra["many_links"]:
            many = _fresh(top, b"many")
            os.mkdir(many)
            first = os.path.join(many, b"orig")
            with open(first, "wb") as handle:
                handle.write(_content(5000, 9))
            for i in range(extra["many_links"]):
                os.link(first, os.path.join(many, b"link%03d" % i))
        dirs = ctx.dirs or [top]
        for file_index, dir_index, link_name in extra["links"]:
            if not ctx.files:
                break
            dest = os.path.join(dirs[dir_index % len(dirs)], link_name)
            if not os.path.lexists(dest):
                os.link(ctx.files[file_index % len(ctx.files)], dest)
        for path, kind, meta in reversed(ctx.meta):  # children before their directory
            _apply_meta(path, kind, meta)
    finally:
        os.rmdir(scratch)
    return top


# --- reading a tree back ------------------------------------------------------------------------------


def _file_digest(path):
    h = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _xattrs(path):
    try:
        names_ = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return {}
    return dict((os.fsencode(n), os.getxattr(path, n, follow_symlinks=False)) for n in names_)


def snapshot(top, content=True):
    """{relative path (bytes): record} for every file below ``top`` (``b""`` is ``top`` itself).

    A record is a dict: type, mode (permission bits), uid, gid, mtime_ns,
    nlink, size, rdev, target (symlinks), xattrs, sha256 (regular files, when
    ``content``).
    """
    top = os.fsencode(top)
    out = {}
    stack = [b""]
    while stack:
        rel = stack.pop()
        path = os.path.join(top, rel) if rel else top
        st_ = os.lstat(path)
        fmt_ = stat.S_IFMT(st_.st_mode)
        rec = {"type": fmt_, "mode": stat.S_IMODE(st_.st_mode), "uid": st_.st_uid, "gid": st_.st_gid,
               "mtime_ns": st_.st_mtime_ns, "nlink": st_.st_nlink, "size": st_.st_size, "rdev": st_.st_rdev,
               "xattrs": _xattrs(path)}
        if fmt_ == stat.S_IFLNK:
            rec["target"] = os.readlink(path)
        elif fmt_ == stat.S_IFREG and content:
            rec["sha256"] = _file_digest(path)
        elif fmt_ == stat.S_IFDIR:
            for name in os.listdir(path):
                stack.append(os.path.join(rel, name) if rel else name)
        out[rel] = rec
    return out
