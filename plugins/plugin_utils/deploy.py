# -*- coding: utf-8 -*-
# Copyright: composefs.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Controller-side logic of the deploy role: which refs a host's repository gets.

Pure: it is given the refs a host's repository has (``repository_info``'s ``refs``,
name -> digest) and returns what the role does. The refs of a deployment ``NAME``:

* ``NAME/current`` -> the image that is (to be) mounted;
* ``NAME/releases/<SEQ>-<VERSION>`` -> every version deployed and kept, ``SEQ`` a
  six-digit counter that orders them (the repository has no other clock), ``VERSION``
  the user's label (``deploy_version``, default the digest's first 12 hex digits).

gc keeps ``NAME/current`` and the ``keep`` most recent other releases; every other
release ref is removed before the repository's gc runs, so their objects go. A
rollback names a version; it is found among the release refs.
"""

from __future__ import annotations

import re

CURRENT = "current"
RELEASES = "releases"
SEQ_WIDTH = 6

_VERSION = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9._+-]{0,99}\Z")
_NAME = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9._+-]{0,99}(/[A-Za-z0-9][A-Za-z0-9._+-]{0,99})*\Z")
_DIGEST = re.compile(r"\A[0-9a-f]{64}([0-9a-f]{64})?\Z")
_RELEASE = re.compile(r"\A(\d{%d,})-(.+)\Z" % SEQ_WIDTH)


class DeployPlanError(Exception):
    """Input the role cannot act on; the message names the cause and the fix."""


def check_name(name):
    if not isinstance(name, str) or not _NAME.match(name):
        raise DeployPlanError("deploy_name %r is not a usable ref prefix: use letters, digits, '.', '_', '+', '-' "
                              "(and '/' between components), starting with a letter or digit" % (name,))
    return name


def check_version(version):
    if not isinstance(version, str) or not _VERSION.match(version):
        raise DeployPlanError("deploy_version %r is not a usable version label: use up to 100 letters, digits, '.', '_', "
                              "'+', '-', starting with a letter or digit (no '/')" % (version,))
    return version


def check_digest(digest):
    if not isinstance(digest, str):
        raise DeployPlanError("the image digest must be a string of hex digits, not %r" % (digest,))
    text = digest.split(":", 1)[1] if digest.startswith(("sha256:", "sha512:")) else digest
    if not _DIGEST.match(text):
        raise DeployPlanError("%r is not an fs-verity digest (64 or 128 lowercase hex digits)" % (digest,))
    return text


def current_ref(name):
    return "%s/%s" % (check_name(name), CURRENT)


def release_ref(name, seq, version):
    return "%s/%s/%0*d-%s" % (check_name(name), RELEASES, SEQ_WIDTH, seq, check_version(version))


def releases(refs, name):
    """The release refs of ``name`` as dicts (ref, seq, version, digest), oldest first."""
    prefix = "%s/%s/" % (check_name(name), RELEASES)
    out = []
    for ref, digest in sorted((refs or {}).items()):
        if not ref.startswith(prefix):
            continue
        match = _RELEASE.match(ref[len(prefix):])
        if not match or "/" in match.group(2):
            continue
        out.append(dict(ref=ref, seq=int(match.group(1)), version=match.group(2), digest=digest))
    out.sort(key=lambda r: (r["seq"], r["ref"]))
    return out


def _release_of(found, digest):
    """The newest release naming ``digest``, or None."""
    matching = [r for r in found if r["digest"] == digest]
    return matching[-1] if matching else None


def _removals(found, current_digest, keep):
    """Release refs to remove: all but the newest one naming the current image and the ``keep`` newest others."""
    kept_current = _release_of(found, current_digest)
    others = [r for r in found if r is not kept_current and r["digest"] != current_digest]
    kept = set(r["ref"] for r in others[max(0, len(others) - keep):]) if keep > 0 else set()
    if kept_current is not None:
        kept.add(kept_current["ref"])
    return [r["ref"] for r in found if r["ref"] not in kept]


def _keep_count(keep):
    if isinstance(keep, bool) or not isinstance(keep, int) or keep < 0:
        raise DeployPlanError("deploy_keep must be a whole number of previous versions (0 or more), not %r" % (keep,))
    return keep


def deploy_plan(refs, name, digest, version=None, keep=1):
    """What deploying ``digest`` does to a repository with ``refs``.

    Returns a dict: ``current_ref``, ``release_ref`` (the versioned ref the image gets,
    an existing one when the host has this image already), ``new_release``, ``version``,
    ``digest``, ``previous`` (the release ``NAME/current`` named before, or a dict with
    only ``digest`` when it named an image without a release ref, or None on a first
    deploy), ``changes_current`` and ``remove_refs`` (release refs to drop once the new
    version is healthy, keeping it and ``keep`` previous ones).
    """
    check_name(name)
    digest = check_digest(digest)
    keep = _keep_count(keep)
    version = check_version(version if version else digest[:12])
    refs = dict(refs or {})
    found = releases(refs, name)
    existing = _release_of(found, digest)
    clash = [r for r in found if r["version"] == version and r["digest"] != digest]
    if existing is None and clash:
        raise DeployPlanError("version %s of %s already names image %s on this host (%s): give this image a new "
                              "deploy_version, or roll back to %s with the rollback playbook" % (
                                  version, name, clash[-1]["digest"], clash[-1]["ref"], version))
    if existing is not None:
        planned = found
        ref = existing["ref"]
        version = existing["version"]
    else:
        seq = (found[-1]["seq"] + 1) if found else 1
        ref = release_ref(name, seq, version)
        planned = found + [dict(ref=ref, seq=seq, version=version, digest=digest)]
    before = refs.get(current_ref(name))
    previous = None
    if before:
        previous = _release_of(found, before) or dict(ref=None, seq=None, version=None, digest=before)
    return dict(
        name=name,
        digest=digest,
        version=version,
        current_ref=current_ref(name),
        release_ref=ref,
        new_release=existing is None,
        previous=previous,
        changes_current=before != digest,
        remove_refs=_removals(planned, digest, keep),
        releases=planned,
    )


def rollback_plan(refs, name, version=None, keep=1):
    """What putting a previous version back does: the plan of deploying the release named ``version``.

    ``version`` may be a version label, a release ref or a digest; empty means the
    newest release older than the current one (the one before it).
    """
    check_name(name)
    found = releases(refs, name)
    if not found:
        raise DeployPlanError("%s has no releases on this host: nothing to roll back to" % name)
    available = ", ".join(r["version"] for r in found)
    current = (refs or {}).get(current_ref(name))
    if not version:
        current_release = _release_of(found, current)
        older = [r for r in found if current_release is None or r["seq"] < current_release["seq"]]
        older = [r for r in older if r["digest"] != current]
        if not older:
            raise DeployPlanError("%s has no release older than the current one on this host (releases: %s)" % (name, available))
        target = older[-1]
    else:
        matches = [r for r in found if version in (r["version"], r["ref"], r["digest"])]
        if not matches:
            raise DeployPlanError("%s has no release %r on this host; it has: %s" % (name, version, available))
        target = matches[-1]
    return deploy_plan(refs, name, target["digest"], target["version"], keep)
