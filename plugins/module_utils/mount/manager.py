# -*- coding: utf-8 -*-
# Copyright: composefs.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The logic of the ``composefs.fleet.mount`` module: bring a path to the requested state.

States, as in ``ansible.posix.mount`` (:data:`STATES` is the table):

``mounted``     mounted now, with the pinned digest and these options, and persisted (the fstab line)
``present``     persisted only: the fstab line is written, the mount is not touched
``ephemeral``   mounted now, not persisted: fstab is not touched
``unmounted``   our mount at the path is gone; the fstab line, if any, is kept
``absent``      unmounted, and the fstab line is gone
``remounted``   mounted afresh even if the same image is mounted (the old mount is replaced); fstab is not touched

Idempotence comes from the real state: the top mount at the path in
``/proc/self/mountinfo`` must be the one our record names (:mod:`.state`), and
its overlay options (``datadir+``, ``verity=require``, ``upperdir``, ``ro``) must
be the requested ones; the digest, which mountinfo cannot show, comes from the
record. The same digest and options give ``changed=false``; anything else
replaces the mount in place (:func:`.composefs_mount.attach`).

Every check that can fail runs before the host changes, in check mode too
(:meth:`MountRun.preflight`): the mount point (never a symlink, a directory),
the upper and work directories, and whether the fstab can be written when its
line must change. A failure after the host changed anyway (the fstab write
failing after the mount was made) rolls a new mount back, or reports
``changed=true``.

A mount at the path that this module did not make is never touched: mounting
over it fails, and unmounting leaves it (with a warning). One exception: a
mount made at boot from this module's own fstab line (by mount.composefs, so
without a record) is recognised by its options matching that line, and taken
over.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os

from ansible_collections.composefs.fleet.plugins.module_utils.common.mountinfo import read_mountinfo
from ansible_collections.composefs.fleet.plugins.module_utils.mount import composefs_mount as cm
from ansible_collections.composefs.fleet.plugins.module_utils.mount import image_copy, persist, state, verify
from ansible_collections.composefs.fleet.plugins.module_utils.mount.errors import MountError

# state: (what happens to the mount, what happens to the fstab line)
STATES = {
    "mounted": ("mount", "write"),
    "present": (None, "write"),
    "ephemeral": ("mount", None),
    "unmounted": ("unmount", None),
    "absent": ("unmount", "remove"),
    "remounted": ("remount", None),
}
HELPER_CHOICES = ("auto", "always", "never")
MOUNTING_STATES = tuple(name for name, (mount, _p) in STATES.items() if mount in ("mount", "remount"))
# States that need an image, basedirs and a pin: they mount it, or write a line that mounts it at boot.
IMAGE_STATES = tuple(name for name, (mount, persist_) in STATES.items() if mount in ("mount", "remount") or
                     persist_ == "write")


def _remove_dirs(created):
    """Remove the directories :meth:`MountRun._mount_point` created, deepest first (only while empty)."""
    for path in created:
        try:
            os.rmdir(path)
        except OSError:
            break


def _norm(path):
    return os.path.normpath(path) if path else path


def _refuse_covered(req, current):
    """Our mount at req.path has another mount on top: touching it would act on the wrong one."""
    if current.kind == "covered":
        raise MountError("the composefs mount this module made at %s is covered by another mount (%s %s, mount id "
                         "%d); unmount that one first" % (req.path, current.entry.fstype, current.entry.source,
                                                          current.entry.mount_id), "foreign-mount")


class Request:
    """The module's parameters, validated and normalised."""

    def __init__(self, path, image=None, basedir=None, digest=None, insecure=False, verity="require", upperdir=None,
                 workdir=None, ro=False, state="ephemeral", helper="auto", fstab=persist.FSTAB, verify_objects="exists",
                 backup=False):
        if not path or not os.path.isabs(path):
            raise MountError("path must be an absolute path, not %r" % (path,), "invalid")
        if state not in STATES:
            raise MountError("state must be one of %s" % ", ".join(STATES), "invalid")
        if verify_objects not in verify.VERIFY_OBJECTS:
            raise MountError("verify_objects must be one of %s" % ", ".join(verify.VERIFY_OBJECTS), "invalid")
        if verify_objects == "digest" and verity != "userspace":
            raise MountError("verify_objects=digest hashes the objects in userspace, for verity=userspace only (with "
                             "verity=require the kernel checks every object at each open; verity=off checks none)",
                             "invalid")
        if verity not in verify.VERITY_MODES:
            raise MountError("verity must be one of %s" % ", ".join(verify.VERITY_MODES), "invalid")
        if helper not in HELPER_CHOICES:
            raise MountError("helper must be one of %s" % ", ".join(HELPER_CHOICES), "invalid")
        self.path = _norm(path)
        self.state = state
        self.image = _norm(image)
        self.basedirs = [_norm(b) for b in (basedir or [])]
        self.digest = verify.normalize_digest(digest)
        self.insecure = bool(insecure)
        self.verity = verity
        self.upperdir = _norm(upperdir)
        self.workdir = _norm(workdir)
        self.ro = bool(ro)
        self.helper = helper
        self.fstab = fstab
        self.verify_objects = verify_objects
        self.backup = bool(backup)
        self.mount_action, self.persist_action = STATES[state]
        if state in IMAGE_STATES:
            if not self.image:
                raise MountError("state=%s needs image" % state, "invalid")
            if not self.basedirs:
                raise MountError("state=%s needs basedir: at least one object store" % state, "invalid")
            if self.digest is None and not self.insecure:
                raise MountError("digest is required: pin the image's fs-verity digest (composefs.fleet.image returns "
                                 "it), or set insecure: true to mount whatever the image holds", "invalid")
        for name in ("image", "upperdir", "workdir"):
            value = getattr(self, name)
            if value and not os.path.isabs(value):
                raise MountError("%s must be an absolute path, not %r" % (name, value), "invalid")
        for base in self.basedirs:
            if not os.path.isabs(base):
                raise MountError("basedir must hold absolute paths, not %r" % (base,), "invalid")
        if bool(self.upperdir) != bool(self.workdir):
            raise MountError("upperdir and workdir go together: give both or neither", "invalid")

    @property
    def readonly(self):
        """The mount is read-only when asked, and always without an upper directory."""
        return self.ro or not self.upperdir

    @property
    def kernel_verity(self):
        return self.verity == "require"


class Current:
    """What is at the path now: ``kind`` none | ours | covered | other, and for ours its digest and facts."""

    def __init__(self, kind, entry=None, record=None, adopted=False):
        self.kind = kind
        self.entry = entry
        self.record = record
        self.adopted = adopted
        self.facts = state.MountFacts(entry) if entry is not None and state.is_composefs(entry) else None

    @property
    def digest(self):
        return self.record.get("digest") if self.record else None


class MountRun:
    """One run of the module. ``run()`` returns the result dict; ``warnings`` collects what to warn about.

    ``mounts_dir``, ``tmp_dir``, ``images_dir``, ``backing`` and ``api`` are for
    tests (the module uses the defaults). ``before_mount``, if given, is called
    with the :class:`.verify.ImageCheck` after every check passed and just
    before the image is mounted: tests use it to change files in that window.
    """

    def __init__(self, request, check_mode=False, diff=False, mounts_dir=state.MOUNTS_DIR, tmp_dir=state.TMP_DIR,
                 backing="auto", api="auto", images_dir=image_copy.IMAGES_DIR, before_mount=None):
        self.req = request
        self.check_mode = check_mode
        self.diff = diff
        self.mounts_dir = mounts_dir
        self.tmp_dir = tmp_dir
        self.images_dir = images_dir
        self.backing = backing
        self.api = api
        self.before_mount = before_mount
        self.warnings = []
        self.changed = False
        self.host_changed = False  # something on the host really changed (for a failure's changed=)
        self.mount_changed = False  # the mount itself (not the fstab line) changed or would change
        self.check = None
        self.used = None  # backing of a mount made in this run
        self.backup_file = None
        self.rollback = None  # undoes a mount this run made, while the fstab line is not written yet

    # -- what is there ------------------------------------------------------------------

    def current(self, fstab_view=None):
        path = self.req.path
        mounts = read_mountinfo()
        record = state.load_record(path, self.mounts_dir)
        kind, entry, stale = state.identify(path, mounts, record)
        if stale and not self.check_mode:
            state.remove_record(path, self.mounts_dir)
            image_copy.remove_if_unused(record.get("copy"), self.mounts_dir, self.images_dir)
        if kind == "ours":
            return Current("ours", entry, record), mounts
        if kind == "covered":
            return Current("covered", entry, record), mounts
        if kind == "other" and state.is_composefs(entry):
            adopted = self._adopt(path, entry, fstab_view)
            if adopted is not None:
                return adopted, mounts
        return Current(kind, entry), mounts

    def _adopt(self, path, entry, fstab_view):
        """A composefs mount made at boot from our own fstab line, or None.

        It counts as ours when its options match the managed line: the same
        basedirs (``datadir+``), upper/work directories, and ``verity=require``
        exactly when the line asks for it. Its digest is the pin: mount.composefs
        checked it with ``digest=`` (verity=require); otherwise the image the line
        names is hashed now and must still have the pinned digest.
        """
        if fstab_view is None:
            fstab_view = persist.FstabView(persist.read_fstab(self.req.fstab), self.req.path)
        if fstab_view.managed is None:
            return None
        line = fstab_view.managed[1]
        if line.verity not in verify.VERITY_MODES:
            return None
        facts = state.MountFacts(entry)
        if facts.datadirs != line.basedirs or facts.upperdir != line.upperdir or facts.workdir != line.workdir:
            return None
        if (facts.verity == "require") != (line.verity == "require"):
            return None
        digest = None
        if line.verity == "require":
            digest = line.digest
        elif line.digest and verify.userspace_digest(line.image) == line.digest:
            digest = line.digest
        record = self._record_for(path, entry, line.image, digest, line.verity, line.basedirs, line.upperdir,
                                  line.workdir, "helper", adopted=True)
        if not self.check_mode:
            state.save_record(record, self.mounts_dir)
        return Current("ours", entry, record, adopted=True)

    @staticmethod
    def _record_for(path, entry, image, digest, verity_mode, basedirs, upperdir, workdir, backing, adopted=False,
                    copy=None):
        facts = state.MountFacts(entry)
        return {
            "path": path,
            "image": image,
            "digest": digest,
            "verity_mode": verity_mode,
            "verity": verify.VERITY_RESULT[verity_mode],
            "basedir": list(basedirs),
            "upperdir": upperdir,
            "workdir": workdir,
            "backing": backing,
            "mount_id": entry.mount_id,
            "label": facts.label,
            "options": entry.super_options,
            "adopted": adopted,
            "copy": copy,
        }

    def matches(self, current, digest):
        """Whether our mount ``current`` is what the request asks for (digest from the record, the rest from mountinfo)."""
        req = self.req
        facts = current.facts
        record = current.record or {}
        return (
            digest is not None
            and current.digest == digest
            and record.get("verity_mode") == req.verity
            and facts.datadirs == req.basedirs
            and (facts.verity == "require") == req.kernel_verity
            and facts.upperdir == req.upperdir
            and facts.workdir == req.workdir
            and facts.readonly == req.readonly
        )

    # -- the run ------------------------------------------------------------------------------

    def preflight(self, fstab_view, planned):
        """The checks the real run would fail on after changing something; run in check mode too."""
        req = self.req
        if req.mount_action in ("mount", "remount") or req.persist_action == "write":
            self._check_mount_point()
        if req.mount_action in ("mount", "remount") and req.upperdir:
            self._check_upper()
        if fstab_view is None:
            return
        if req.persist_action == "write" and fstab_view.others:
            other = fstab_view.others[0]
            raise MountError("%s already has an entry for %s that this module did not write (line %d: %s); remove "
                             "it first" % (req.fstab, req.path, other[0], other[1]), "foreign-mount")
        wanted = planned if req.persist_action == "write" else None
        if wanted != fstab_view.managed_lines():
            persist.check_writable(req.fstab)

    def _check_mount_point(self):
        """The mount point must be a directory reached without symlinks, or not exist yet (it is created)."""
        path = self.req.path
        if os.path.islink(path):
            raise MountError("mount point %s is a symlink (to %s); refusing to mount over where it points: give the "
                             "real directory" % (path, os.readlink(path)), "invalid")
        real = os.path.realpath(path)
        if real != path:
            raise MountError("mount point %s goes through a symlink (it resolves to %s); refusing to follow it: give "
                             "the real path" % (path, real), "invalid")
        if os.path.lexists(path) and not os.path.isdir(path):
            raise MountError("mount point %s exists and is not a directory" % path, "invalid")

    def _check_upper(self):
        req = self.req
        devices = []
        for name, value in (("upperdir", req.upperdir), ("workdir", req.workdir)):
            try:
                st = os.stat(value)
            except OSError as exc:
                raise MountError("%s %s: %s (create it first: overlayfs needs an existing directory)"
                                 % (name, value, exc.strerror or exc), "invalid")
            if not os.path.isdir(value):
                raise MountError("%s %s is not a directory" % (name, value), "invalid")
            devices.append(st.st_dev)
        if devices[0] != devices[1]:
            raise MountError("upperdir %s and workdir %s are on different filesystems; overlayfs needs both on the "
                             "same one" % (req.upperdir, req.workdir), "invalid")

    def run(self):
        req = self.req
        if os.geteuid() != 0:
            raise cm.not_root_error()
        fstab_view = None
        planned = None
        if req.persist_action is not None:
            fstab_view = persist.FstabView(persist.read_fstab(req.fstab), req.path)
        if req.persist_action == "write":
            # The line is built (and its paths validated) before anything is mounted.
            planned = persist.FstabEntry(req.path, req.image, req.basedirs, req.digest, req.verity, req.upperdir,
                                         req.workdir, req.ro).lines()
        self.preflight(fstab_view, planned)
        current, mounts = self.current(fstab_view)
        before = self._describe(current)
        try:
            if req.mount_action in ("mount", "remount"):
                self._ensure_mounted(current)
            elif req.mount_action == "unmount":
                self._ensure_unmounted(current, mounts)
            fstab_before = fstab_after = None
            if fstab_view is not None:
                try:
                    fstab_before, fstab_after = self._persist(fstab_view, planned)
                except BaseException:
                    if self.rollback is not None:
                        self.rollback()
                    raise
        finally:
            if self.check is not None:
                self.check.close()
        after = self._after(current)
        result = {
            "changed": self.changed,
            "path": req.path,
            "mounted": after["mounted"],
            "digest": after["digest"],
            "verity": after["verity"],
            "options": after["options"],
        }
        if req.mount_action in ("mount", "remount"):
            result["image"] = req.image
            result["backing"] = self.used or after["backing"]
            result["objects"] = self.check.objects if self.check is not None else None
            result["image_copy"] = after.get("copy")
        if fstab_view is not None:
            result["fstab"] = fstab_after
            if self.backup_file:
                result["backup_file"] = self.backup_file
        if self.diff:
            before = dict(before, fstab=fstab_before) if fstab_view is not None else before
            after = dict(after, fstab=fstab_after) if fstab_view is not None else after
            result["diff"] = {"before": before, "after": after}
        return result

    def _ensure_mounted(self, current):
        req = self.req
        _refuse_covered(req, current)
        if current.kind == "other":
            e = current.entry
            raise MountError("%s is already a mount point of something this module did not mount (%s, source %s, "
                             "mount id %d); it is left alone: unmount it first to mount the image there"
                             % (req.path, e.fstype, e.source, e.mount_id), "foreign-mount")
        # The image is checked against the pin on every run, even when the mount is already right: an image file
        # that no longer has the pinned digest is reported, not ignored. Objects are checked before mounting.
        self.check = verify.check_image(req.image, req.digest, req.verity, req.basedirs, objects=False)
        if current.kind == "ours" and req.state != "remounted" and self.matches(current, self.check.digest):
            self._mode_warnings()
            return
        verify.check_objects(self.check, req.basedirs, req.verify_objects)
        self.warnings.extend(self.check.warnings)
        helper = self._helper()
        if helper is None:
            cm.probe_overlay(req.kernel_verity)
        self.changed = self.mount_changed = True
        if self.check_mode:
            return
        path, created = self._mount_point()
        replacing = current.entry if current.kind == "ours" else None
        old_copy = (current.record or {}).get("copy") if replacing is not None else None
        try:
            if not req.kernel_verity:
                # Without kernel fs-verity the checked bytes are what gets mounted: a private copy of them.
                image_copy.make_copy(self.check, self.images_dir)
            if self.before_mount is not None:
                self.before_mount(self.check)
            if helper is not None:
                detached = cm.helper_overlay(helper, self.check, req.basedirs, req.upperdir, req.workdir, req.readonly,
                                             self.tmp_dir)
            else:
                detached = cm.build_overlay(self.check, req.basedirs, req.upperdir, req.workdir, req.readonly,
                                            self.tmp_dir, self.backing, self.api)
            try:
                cm.attach(detached, path, replacing)
            finally:
                detached.close()
        except BaseException:
            _remove_dirs(created)  # a mount point this run created goes again when nothing got mounted on it
            self._drop_copy(self.check.copy)
            raise
        self.host_changed = True
        self.used = detached.backing
        entry = state.top_mount(read_mountinfo(), path)
        if not state.is_composefs(entry):
            raise MountError("after mounting, %s shows no composefs mount (%s)" % (path, entry and entry.fstype))
        record = self._record_for(path, entry, req.image, self.check.digest, req.verity, req.basedirs, req.upperdir,
                                  req.workdir, detached.backing, copy=self.check.copy)
        try:
            state.save_record(record, self.mounts_dir)
        except OSError as exc:
            if replacing is None:
                cm.detach_quietly(path)  # an unrecorded mount would not be ours on the next run: take it away
                _remove_dirs(created)
                self._drop_copy(self.check.copy)
                self.host_changed = False
            raise MountError("mounted %s, but cannot record it in %s: %s" % (path, self.mounts_dir, exc.strerror or exc))
        if old_copy != self.check.copy:
            self._drop_copy(old_copy)
        if replacing is None:
            self.rollback = lambda: self._undo_new_mount(path, created)

    def _undo_new_mount(self, path, created):
        """Take back the mount this run made (the fstab write after it failed): the host is as before the run."""
        try:
            mounts = read_mountinfo()
            entry = state.top_mount(mounts, path)
            cm.unmount(path, state.submounts(mounts, entry) if entry is not None else ())
        except MountError as exc:
            self.warnings.append("could not take back the new mount at %s: %s" % (path, exc))
            return
        state.remove_record(path, self.mounts_dir)
        self._drop_copy(self.check.copy if self.check is not None else None)
        _remove_dirs(created)
        self.host_changed = False
        self.changed = self.mount_changed = False

    def _drop_copy(self, copy):
        if copy:
            image_copy.remove_if_unused(copy, self.mounts_dir, self.images_dir)

    def _mode_warnings(self):
        if self.req.verity == "userspace":
            self.warnings.append(verify.userspace_warning())

    def _helper(self):
        if self.req.helper == "never":
            return None
        found = cm.find_helper()
        if found is None and self.req.helper == "always":
            raise MountError("helper: always, but %s is not installed (looked in PATH and %s); install the composefs "
                             "package or use helper: auto" % (cm.HELPER, ", ".join(cm.HELPER_DIRS)), "helper")
        return found

    def _mount_point(self):
        """The mount point, created (0755, with missing parents) if need be: ``(path, [directories created])``."""
        path = self.req.path
        created = []
        probe = path
        while not os.path.lexists(probe):
            created.append(probe)
            probe = os.path.dirname(probe)
        if created:
            try:
                os.makedirs(path, 0o755)
            except OSError as exc:
                raise MountError("cannot create the mount point %s: %s" % (path, exc.strerror or exc))
        self._check_mount_point()  # again: what was checked before the image was may have been swapped since
        return path, created

    def _ensure_unmounted(self, current, mounts):
        req = self.req
        _refuse_covered(req, current)
        if current.kind == "other":
            e = current.entry
            self.warnings.append("%s holds a mount this module did not make (%s, source %s, mount id %d); it was left "
                                 "alone" % (req.path, e.fstype, e.source, e.mount_id))
            return
        if current.kind != "ours":
            return
        self.changed = self.mount_changed = True
        if self.check_mode:
            return
        path = req.path
        cm.unmount(path, state.submounts(mounts, current.entry))
        self.host_changed = True
        state.remove_record(path, self.mounts_dir)
        self._drop_copy((current.record or {}).get("copy"))

    def _write_fstab(self, text):
        req = self.req
        if req.backup and os.path.exists(req.fstab):
            self.backup_file = persist.backup_fstab(req.fstab)
        persist.write_fstab(req.fstab, text)
        self.host_changed = True
        self.rollback = None

    def _persist(self, view, lines):
        req = self.req
        before = view.managed_lines()
        if req.persist_action == "remove":
            if view.others:
                self.warnings.append("%s has entries for %s that this module did not write (line %s); they were left "
                                     "alone" % (req.fstab, req.path, ", ".join(str(n) for n, _l in view.others)))
            if before is None:
                return None, None
            if not self.check_mode:
                self._write_fstab(view.with_entry(None))
            self.changed = True
            return "\n".join(before), None
        if cm.find_helper() is None:
            self.warnings.append("%s is not installed: the fstab line for %s will not mount at boot until it is (install "
                                 "the composefs package)" % (cm.HELPER, req.path))
        if req.verity != "require":
            self.warnings.append("verity=%s: at boot, mount.composefs mounts %s without checking the pinned digest (it "
                                 "can only do that with kernel fs-verity); this module checks it on its next run"
                                 % (req.verity, req.image))
        if lines != before:
            if not self.check_mode:
                self._write_fstab(view.with_entry(lines))
            self.changed = True
        return ("\n".join(before) if before else None), "\n".join(lines)

    # -- results ------------------------------------------------------------------------------

    @staticmethod
    def _describe(current):
        if current.kind != "ours":
            return {"mounted": False, "digest": None, "verity": None, "options": [], "backing": None, "copy": None}
        record = current.record or {}
        return {"mounted": True, "digest": record.get("digest"), "verity": record.get("verity"),
                "options": state.split_options(current.entry.super_options), "backing": record.get("backing"),
                "copy": record.get("copy")}

    def _after(self, current_before):
        """What the path holds after this run (in check mode: what it would hold)."""
        req = self.req
        if not self.check_mode:
            current, _mounts = self.current()
            return self._describe(current)
        if not self.mount_changed:
            return self._describe(current_before)
        if req.mount_action in ("mount", "remount"):
            copy = None if req.kernel_verity else image_copy.copy_path(self.check.digest, self.images_dir)
            return {"mounted": True, "digest": self.check.digest, "verity": verify.VERITY_RESULT[req.verity],
                    "options": [], "backing": None, "copy": copy}
        return {"mounted": False, "digest": None, "verity": None, "options": [], "backing": None, "copy": None}
