# -*- coding: utf-8 -*-
# Copyright: composefs.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Where boot facts read a host from: its files here (:class:`LocalSource`), or a raw dump (:class:`DumpSource`).

The facts code asks only these questions, so the module on the host and the
controller reading the output of the raw script (hosts without Python) reach the
same facts by the same code.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os

from ansible_collections.composefs.fleet.plugins.module_utils.fsverity.ioctl import VerityError, measure, verity_enabled

READ_LIMIT = 16 * 1024 * 1024


class LocalSource:
    """This host's files, below ``root`` (``/`` except in tests)."""

    kind = "module"

    def __init__(self, root="/", compute_digests=True):
        self.root = root
        self.compute_digests = compute_digests

    def _path(self, path):
        return os.path.join(self.root, path.lstrip("/")) if self.root != "/" else path

    def read(self, path):
        """The file's bytes, or None when it does not exist or cannot be read."""
        try:
            with open(self._path(path), "rb") as handle:
                return handle.read(READ_LIMIT)
        except OSError:
            return None

    def listdir(self, path):
        try:
            return sorted(os.listdir(self._path(path)))
        except OSError:
            return None

    def isdir(self, path):
        return os.path.isdir(self._path(path))

    def exists(self, path):
        return os.path.lexists(self._path(path))

    def devino(self, path):
        try:
            st = os.lstat(self._path(path))
        except OSError:
            return None
        return (st.st_dev, st.st_ino)

    def resolve(self, path):
        """``path`` with symlinks resolved inside the root (as the host sees it), or None."""
        real = os.path.realpath(self._path(path))
        if self.root != "/":
            top = os.path.realpath(self.root)
            if real != top and not real.startswith(top + os.sep):
                return None
            real = "/" + os.path.relpath(real, top) if real != top else "/"
        return real if os.path.exists(self._path(real)) else None

    def verity(self, path):
        """fs-verity of a file: the kernel's flag and digest, and the digest computed here."""
        full = self._path(path)
        out = dict(path=path, enabled=None, measured=None, digest=None, size=None, error=None)
        try:
            fd = os.open(full, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        except OSError as exc:
            out["error"] = "cannot open %s: %s" % (path, exc.strerror)
            return out
        try:
            out["size"] = os.fstat(fd).st_size
            try:
                out["enabled"] = verity_enabled(fd, path)
                if out["enabled"]:
                    out["measured"] = measure(fd, path)[1].hex()
            except VerityError as exc:
                out["error"] = str(exc)
        finally:
            os.close(fd)
        if self.compute_digests:
            try:
                # Imported here: most hosts have no image to digest, and a module compiles what it imports.
                from ansible_collections.composefs.fleet.plugins.module_utils.fsverity.digest import file_digest
                out["digest"] = file_digest(full).hex()
            except OSError as exc:
                out["error"] = "cannot read %s: %s" % (path, exc.strerror)
        return out


class DumpSource:
    """A host seen through the raw script's output (parsed on the controller)."""

    kind = "raw"

    def __init__(self, files=None, dirs=None, devinos=None, resolved=None, verity=None, existing=None, directories=None):
        self.files = files or {}
        self.dirs = dirs or {}
        self.directories = set(directories or ()) | set(self.dirs)
        self.devinos = devinos or {}
        self.resolved = resolved or {}
        self.verities = verity or {}
        self.existing = set(existing or ()) | set(self.files) | set(self.dirs)

    def read(self, path):
        return self.files.get(path)

    def listdir(self, path):
        names = self.dirs.get(path)
        return sorted(names) if names is not None else None

    def isdir(self, path):
        return path in self.directories

    def exists(self, path):
        if path in self.existing or path in self.directories:
            return True
        parent, name = path.rsplit("/", 1) if "/" in path else ("", path)
        return name in (self.dirs.get(parent) or ())

    def devino(self, path):
        return self.devinos.get(path)

    def resolve(self, path):
        return self.resolved.get(path)

    def verity(self, path):
        out = dict(path=path, enabled=None, measured=None, digest=None, size=None, error=None)
        out.update(self.verities.get(path) or {})
        return out
