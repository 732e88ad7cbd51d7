# -*- coding: utf-8 -*-
# Copyright: composefs.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Measuring and enabling fs-verity over a set of files: the logic of the fsverity module.

Enabling fs-verity cannot be undone, so a batch is checked as a whole before any
file is touched: every path must exist and be a regular file, and every
``expected_digest`` must match the userspace digest. Only then are files enabled,
one by one. If the kernel refuses one midway, the files before it keep fs-verity
(nothing can take it away again) and the error lists them.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import stat

from ansible_collections.composefs.fleet.plugins.module_utils.common.params import ParameterError
from ansible_collections.composefs.fleet.plugins.module_utils.common.params import normalize_digest as _normalize_digest
from ansible_collections.composefs.fleet.plugins.module_utils.common.regular_file import NotRegularFile, open_regular
from ansible_collections.composefs.fleet.plugins.module_utils.fsverity import ioctl
from ansible_collections.composefs.fleet.plugins.module_utils.fsverity.digest import (
    check_params,
    digest_files,
)


class FsverityFilesError(Exception):
    """A problem with the files asked for, or a refused operation; the message names the path."""

    def __init__(self, message, results=None):
        super(FsverityFilesError, self).__init__(message)
        self.results = results or []


def normalize_digest(value, hash_algorithm=None):
    """Accept 'hex', 'sha256:hex' or 'sha512:hex'; return (algorithm, lowercase hex).

    The one digest check of the collection (common.params): a wrong length is
    refused here, before anything is read, never reported as a "mismatch" later.
    """
    algorithms = ("sha256", "sha512")
    if hash_algorithm in algorithms:
        algorithms = (hash_algorithm,) + tuple(a for a in algorithms if a != hash_algorithm)
    try:
        return _normalize_digest(value, "expected_digest", algorithms)
    except ParameterError as exc:
        raise FsverityFilesError(str(exc))


def collect_files(paths, recurse=False, follow=False):
    """Resolve the requested paths to a sorted, de-duplicated list of regular files.

    Explicit paths that are missing, special files, or symlinks (unless
    ``follow``) are errors. Inside directories walked with ``recurse``, only
    regular files are taken; symlinks and special files there are skipped.
    """
    found = []
    seen = set()

    def add(path):
        if path not in seen:
            seen.add(path)
            found.append(path)

    for path in paths:
        try:
            st = os.stat(path) if follow else os.lstat(path)
        except FileNotFoundError:
            raise FsverityFilesError("%s: no such file or directory" % path)
        except OSError as exc:
            raise FsverityFilesError("%s: cannot stat: %s" % (path, exc.strerror))
        if stat.S_ISLNK(st.st_mode):
            raise FsverityFilesError("%s is a symlink; symlinks are not followed unless follow=true" % path)
        if stat.S_ISDIR(st.st_mode):
            if not recurse:
                raise FsverityFilesError("%s is a directory; set recurse=true to take the regular files below it" % path)
            for root, dirs, names in os.walk(path, followlinks=False):
                dirs.sort()
                for name in sorted(names):
                    full = os.path.join(root, name)
                    if stat.S_ISREG(os.lstat(full).st_mode):
                        add(full)
            continue
        if not stat.S_ISREG(st.st_mode):
            raise FsverityFilesError("%s is not a regular file (fs-verity applies to regular files only)" % path)
        add(os.path.realpath(path) if follow else path)
    return found


class FsverityRun:
    """One module run over a list of files."""

    def __init__(self, hash_algorithm="sha256", block_size=4096, salt=b"", workers=None):
        check_params(hash_algorithm, block_size, salt)
        self.hash_algorithm = hash_algorithm
        self.block_size = block_size
        self.salt = salt
        self.workers = workers
        self.warnings = []

    @staticmethod
    def _open(path):
        """A read-only fd of the regular file ``path`` (no symlink, no FIFO: never blocks)."""
        try:
            return open_regular(path, follow=False)
        except NotRegularFile as exc:
            raise FsverityFilesError(exc.strerror)
        except OSError as exc:
            raise FsverityFilesError("%s: cannot open: %s" % (path, exc.strerror))

    def _kernel_state(self, path, fd=None):
        """(verity_enabled, kernel digest hex or None) for one file (through ``fd`` when given)."""
        own = fd is None
        if own:
            fd = self._open(path)
        try:
            if not ioctl.verity_enabled(fd, path):
                return False, None
            alg, digest = ioctl.measure(fd, path)
            if alg != self.hash_algorithm:
                self.warnings.append("%s has fs-verity with %s, not %s; its kernel digest is reported" % (path, alg, self.hash_algorithm))
            return True, digest.hex()
        except ioctl.VerityError as exc:
            raise FsverityFilesError(str(exc))
        finally:
            if own:
                os.close(fd)

    def _userspace_digests(self, paths):
        digests = {}
        for path, result in digest_files(paths, self.hash_algorithm, self.block_size, self.salt, self.workers):
            if isinstance(result, OSError):
                raise FsverityFilesError("%s: cannot read: %s" % (path, result.strerror or result))
            digests[path] = result.hex()
        return digests

    def run(self, files, state="measured", expected=None, check_mode=False, allow_unsupported=False):
        """Measure or enable ``files``; return a list of result dicts, in order.

        ``expected`` maps a path to an expected hex digest.
        """
        expected = expected or {}
        kernel = dict((path, self._kernel_state(path)) for path in files)
        need_userspace = [p for p in files if not kernel[p][0] and (state == "measured" or check_mode or p in expected)]
        # Enabling needs the userspace digest first only to vet expected digests; else the kernel's is read after.
        userspace = self._userspace_digests(need_userspace)
        results = []
        for path in files:
            enabled, kdigest = kernel[path]
            digest = kdigest or userspace.get(path)
            results.append({"path": path, "digest": digest, "verity": enabled, "changed": False})
        self._check_expected(results, expected)
        if state != "enabled":
            return results
        done = []
        for result in results:
            if result["verity"]:
                continue
            path = result["path"]
            if check_mode:
                reason = ioctl.predict_enable_failure(path)
                if reason is None:
                    result["changed"] = True
                    result["verity"] = True
                elif allow_unsupported:
                    self.warnings.append("%s: fs-verity would not be enabled (%s); its digest was computed in userspace" % (path, reason))
                else:
                    raise FsverityFilesError("%s: cannot enable fs-verity: %s" % (path, reason), results)
                continue
            # Enable and measure through one fd: the digest checked below is the one the
            # kernel sealed, whatever happened to the name or the bytes in between.
            fd = self._open(path)
            try:
                try:
                    ioctl.enable(fd, path, hash_algorithm=self.hash_algorithm, block_size=self.block_size, salt=self.salt)
                except ioctl.VerityError as exc:
                    if allow_unsupported and exc.unsupported:
                        self.warnings.append("%s: fs-verity not enabled (%s); its digest was computed in userspace" % (path, exc.reason))
                        if result["digest"] is None:
                            result["digest"] = self._userspace_digests([path])[path]
                        continue
                    msg = str(exc)
                    if done:
                        msg += "; fs-verity was already enabled on (and cannot be removed from): %s" % ", ".join(done)
                    raise FsverityFilesError(msg, results)
                result["changed"] = True
                done.append(path)
                enabled, result["digest"] = self._kernel_state(path, fd)
                result["verity"] = enabled
            finally:
                os.close(fd)
            want = expected.get(path)
            if want is not None and result["digest"] != want:
                raise FsverityFilesError(
                    "%s: fs-verity is now enabled with digest %s, but expected_digest is %s: the file changed between "
                    "the check and the enable. The file is sealed with the other digest for good (fs-verity cannot be "
                    "removed); replace it with a new copy of the expected content and enable that" % (path, result["digest"], want),
                    results)
        return results

    @staticmethod
    def _check_expected(results, expected):
        for result in results:
            want = expected.get(result["path"])
            if want is not None and result["digest"] != want:
                raise FsverityFilesError(
                    "%s: fs-verity digest %s does not match expected_digest %s" % (result["path"], result["digest"], want), results)
