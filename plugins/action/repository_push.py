# -*- coding: utf-8 -*-
# Copyright: composefs.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin behind composefs.fleet.repository_push: ask, bundle only what is missing, send it once, import.

1. Reads the image ``ref`` of the controller's repository ``src`` and lists its
   objects (plugins/module_utils/repository/transfer.py ``source_plan``).
2. Runs the module on the host (step ``probe``, read-only): which of those objects
   the host's repository lacks, whether it has the image, its refs.
3. Nothing missing and the ref right: done, ``changed=false``, no transfer. Check
   mode: report what would be sent, done.
4. Writes the missing objects (and the image when the host lacks it) into one
   bundle file on the controller, copies it into the host's remote temporary
   directory (one transfer), and runs the module again (step ``receive``): the host
   verifies and publishes every object, links the image and sets ``dest_ref``.
   The remote temporary directory and the local bundle are removed afterwards.
"""

from __future__ import annotations

import os
import tempfile

from ansible import constants as C
from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase

from ansible_collections.composefs.fleet.plugins.module_utils.repository import transfer
from ansible_collections.composefs.fleet.plugins.module_utils.repository.errors import RepositoryError

MODULE = "composefs.fleet.repository_push"
BUNDLE_NAME = "composefs-bundle"


class ActionModule(ActionBase):
    TRANSFERS_FILES = False

    def run(self, tmp=None, task_vars=None):
        task_vars = task_vars or {}
        result = super().run(tmp, task_vars)
        del tmp
        _validation, args = self.validate_argument_spec(argument_spec=transfer.push_argument_spec())
        src = self._loader.path_dwim(args["src"])
        try:
            plan = transfer.source_plan(src, args["ref"], cache_dir=C.DEFAULT_LOCAL_TMP)
        except RepositoryError as exc:
            raise AnsibleActionFail("src %s: %s" % (src, exc)) from exc
        dest_ref = args["dest_ref"] if args["dest_ref"] is not None else plan["name"]
        digest = plan["digest"]
        base = dict(args, src=src, dest_ref=dest_ref, digest=digest, algorithm=plan["algorithm"],
                    erofs_version=plan["erofs_version"], objects=plan["objects"])
        try:
            return self._push(result, base, plan, task_vars)
        finally:
            self._remove_tmp_path(self._connection._shell.tmpdir)

    def _push(self, result, base, plan, task_vars):
        digest, dest_ref = base["digest"], base["dest_ref"]
        probe = self._execute_module(module_name=MODULE, module_args=dict(base, step="probe"), task_vars=task_vars)
        if probe.get("failed"):
            result.update(probe)
            return result
        missing = list(probe.get("missing") or [])
        send_image = not probe.get("image_object")
        refs_before = dict(probe.get("refs") or {})
        result.update(changed=False, digest=digest, objects_missing=len(missing), objects_sent=0, image_sent=False,
                      bytes_sent=0, dest_ref=dest_ref, ref_before=refs_before.get(dest_ref) if dest_ref else None,
                      initialized=False)
        refs_after = dict(refs_before)
        if dest_ref:
            refs_after[dest_ref] = digest
        ref_ok = dest_ref is None or refs_before.get(dest_ref) == digest
        if probe.get("exists") and not missing and not send_image and probe.get("image_linked") and ref_ok:
            self._diff(result, refs_before, refs_before)
            return result
        if self._task.check_mode:
            result.update(changed=True, objects_sent=len(missing), image_sent=send_image,
                          bytes_sent=transfer.payload_size(base["src"], digest, missing, send_image),
                          initialized=not probe.get("exists"))
            self._diff(result, refs_before, refs_after)
            return result
        remote = None
        local = None
        try:
            if missing or send_image:
                fd, local = tempfile.mkstemp(prefix="composefs-bundle-", dir=C.DEFAULT_LOCAL_TMP)
                with os.fdopen(fd, "wb") as out:
                    try:
                        payload = transfer.build_bundle(base["src"], digest, missing, send_image, out)
                    except RepositoryError as exc:
                        raise AnsibleActionFail("src %s: %s" % (base["src"], exc)) from exc
                if self._connection._shell.tmpdir is None:
                    self._make_tmp_path()
                remote = self._connection._shell.join_path(self._connection._shell.tmpdir, BUNDLE_NAME)
                self._transfer_file(local, remote)
                self._fixup_perms2((self._connection._shell.tmpdir, remote))
                result.update(objects_sent=len(missing), image_sent=send_image, bytes_sent=payload)
        finally:
            if local is not None:
                os.unlink(local)
        received = self._execute_module(module_name=MODULE, module_args=dict(base, step="receive", bundle=remote),
                                        task_vars=task_vars)
        if received.get("failed"):
            received.update(objects_sent=result["objects_sent"], bytes_sent=result["bytes_sent"], digest=digest)
            result.update(received)
            return result
        result.update(changed=bool(received.get("changed")), initialized=bool(received.get("initialized")),
                      ref_before=received.get("ref_before"))
        self._diff(result, received.get("refs_before") or {}, received.get("refs_after") or {})
        return result

    def _diff(self, result, before, after):
        if self._task.diff:
            result["diff"] = dict(before=dict(refs=before), after=dict(refs=after))
