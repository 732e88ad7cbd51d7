# -*- coding: utf-8 -*-
# Copyright: composefs.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What is mounted at a path and with which digest, and what the fstab persists: read only.

The same reading :class:`.manager.MountRun` does before it acts (``/proc/self/mountinfo``,
the record of the module's own mounts, a boot-time mount of the managed fstab line taken
for ours when its options match), in check mode, so nothing is written: a stale record is
left for the next mounting run to drop, and a boot-time mount is recognised without a
record being saved.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.composefs.fleet.plugins.module_utils.mount import persist
from ansible_collections.composefs.fleet.plugins.module_utils.mount.manager import MountRun, Request


def _describe(entry):
    return None if entry is None else "%s %s (mount id %d)" % (entry.fstype, entry.source, entry.mount_id)


def mount_status(path, fstab=persist.FSTAB, **run_options):
    """A dict describing ``path``: the mount there (``kind``, ``digest``, ``verity``...) and its fstab line.

    ``kind``: ``none`` (nothing mounted), ``ours`` (a composefs mount of this collection's, or a
    boot-time mount of its fstab line), ``covered`` (ours, with something else stacked on
    it) or ``other`` (someone else's mount). ``digest`` is known only for ``ours``.
    ``run_options`` go to :class:`.manager.MountRun` (tests give private directories).
    """
    request = Request(path, state="unmounted", fstab=fstab)
    run = MountRun(request, check_mode=True, **run_options)
    view = persist.FstabView(persist.read_fstab(fstab), request.path)
    current, dummy = run.current(view)
    record = current.record or {}
    ours = current.kind == "ours"
    facts = current.facts
    line = view.managed[1] if view.managed is not None else None
    return dict(
        path=request.path,
        kind=current.kind,
        mounted=ours,
        digest=record.get("digest") if ours else None,
        verity=record.get("verity") if ours else None,
        verity_mode=record.get("verity_mode") if ours else None,
        image=record.get("image") if ours else None,
        basedir=list(record.get("basedir") or []) if ours else [],
        adopted=bool(current.adopted),
        kernel_verity=(facts.verity == "require") if facts is not None else None,
        readonly=facts.readonly if facts is not None else None,
        top=_describe(current.entry),
        persisted=line is not None,
        fstab=dict(path=fstab, digest=line.digest, verity=line.verity, image=line.image, basedir=list(line.basedirs))
        if line is not None else None,
        fstab_others=[text for dummy_n, text in view.others],
    )
