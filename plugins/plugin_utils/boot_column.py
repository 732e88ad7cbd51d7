# -*- coding: utf-8 -*-
# Copyright: composefs.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The fleet report's "boot" column: what composefs.fleet.boot_facts says about a host, reduced for the report.

Runs on the controller only. The boot facts come from the host (or, for a host
without Python, from its raw output parsed here) and are untrusted like every other
host datum: :func:`boot_view` reads only what the column shows, checks its type, and
raises :class:`MalformedBootFacts` naming the first part it cannot use. The renderers
in verity_report.py escape the text; nothing here is markup.
"""

from __future__ import annotations

from collections.abc import Mapping

KINDS = ("ostree", "bootc", "none")
# statuses of a host's boot entry: the facts (module or raw), or why there are none
BOOT_OK = "ok"
BOOT_RAW = "raw"
BOOT_UNREACHABLE = "unreachable"
BOOT_ERROR = "error"
BOOT_SKIPPED = "skipped"
BOOT_NOT_GATHERED = "not_gathered"
# the word of the summary (boot_facts' ``summary`` is "KIND: WORD", or "none")
LEVELS = ("none", "off", "best-effort", "enforced", "signed")
DIGEST_SHOWN = 16


class MalformedBootFacts(Exception):
    """Boot facts that do not have the shape boot_facts returns."""


def _kind_of(value):
    if value is None:
        return "missing"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    text = str(value)
    return "%s %r" % (type(value).__name__, text[:40] + ("..." if len(text) > 40 else ""))


def _get(mapping, key, where, types, optional=True):
    value = mapping.get(key)
    if value is None and optional:
        return None
    if not isinstance(value, types):
        wanted = " or ".join({str: "text", bool: "true or false", Mapping: "a mapping", list: "a list"}.get(t, t.__name__) for t in types)
        raise MalformedBootFacts("%s is %s, not %s" % (where, _kind_of(value), wanted))
    return value


def boot_view(facts):
    """The report's view of one host's ``composefs_boot`` facts (a plain dict), or :class:`MalformedBootFacts`.

    ``booted_digest`` is the booted image's digest (ostree: the measured or computed
    fs-verity digest of the booted deployment's ``.ostree.cfs``; bootc: the ``composefs=``
    karg), ``digest_checked_against`` what it was compared with (``commit``, ``karg``) and
    ``digest_matches`` the outcome (null when it could not be compared).
    """
    if not isinstance(facts, Mapping):
        raise MalformedBootFacts("the boot facts are %s, not a mapping" % _kind_of(facts))
    kind = _get(facts, "kind", "kind", (str,), optional=False)
    if kind not in KINDS:
        raise MalformedBootFacts("kind is %s, not one of %s" % (_kind_of(kind), ", ".join(KINDS)))
    cfs = _get(facts, "composefs", "composefs", (Mapping,)) or {}
    errors = _get(facts, "errors", "errors", (list,)) or []
    for i, error in enumerate(errors):
        if not isinstance(error, str):
            raise MalformedBootFacts("errors[%d] is %s, not text" % (i, _kind_of(error)))
    enabled = _get(cfs, "enabled", "composefs.enabled", (bool,))
    enforced = _get(cfs, "verity_enforced", "composefs.verity_enforced", (bool,))
    signed = _get(cfs, "signed", "composefs.signed", (bool,))
    if kind == "ostree":
        matches, against = _get(cfs, "image_matches_commit", "composefs.image_matches_commit", (bool,)), "commit"
        digest = _get(cfs, "image_digest", "composefs.image_digest", (str,))
    elif kind == "bootc":
        matches, against = _get(cfs, "image_matches_karg", "composefs.image_matches_karg", (bool,)), "karg"
        digest = _get(cfs, "image_digest", "composefs.image_digest", (str,))
    else:
        matches = against = digest = None
    view = dict(
        kind=kind,
        source=_get(facts, "source", "source", (str,)),
        summary=_get(facts, "summary", "summary", (str,)) or kind,
        composefs=enabled,
        mode=_get(cfs, "mode", "composefs.mode", (str,)),
        decided_by=_get(cfs, "decided_by", "composefs.decided_by", (str,)),
        verity_enforced=enforced,
        signed=signed,
        signed_with=_get(cfs, "signed_with", "composefs.signed_with", (str,)),
        booted_deployment=_get(facts, "booted_deployment", "booted_deployment", (str,)),
        booted_digest=digest,
        digest_checked_against=against if matches is not None else None,
        digest_matches=matches,
        pending=bool(_get(cfs, "pending", "composefs.pending", (bool,))),
        configured_mode=_get(cfs, "configured_mode", "composefs.configured_mode", (str,)),
        errors=list(errors),
    )
    view["level"] = level(view)
    return view


def level(view):
    """``none``, ``off``, ``best-effort``, ``enforced`` or ``signed``: how much composefs protects this boot."""
    if view["kind"] == "none":
        return "none"
    if not view["composefs"]:
        return "off"
    if view["signed"]:
        return "signed"
    return "enforced" if view["verity_enforced"] else "best-effort"


def short_digest(digest):
    if not digest:
        return None
    return digest if len(digest) <= DIGEST_SHOWN else digest[:DIGEST_SHOWN] + "..."


def _yes(value, yes, no):
    return "unknown" if value is None else yes if value else no


def details(entry):
    """The column's detail phrases for a host whose boot facts were read (plain text, to be escaped)."""
    if entry["kind"] == "none":
        return []
    out = []
    if entry.get("mode"):
        out.append("mode %s%s" % (entry["mode"], " by %s" % entry["decided_by"] if entry.get("decided_by") else ""))
    out.append(_yes(entry.get("verity_enforced"), "verity enforced", "verity not enforced"))
    out.append(_yes(entry.get("signed"), "signed", "not signed"))
    digest = short_digest(entry.get("booted_digest"))
    if digest:
        check = ""
        if entry.get("digest_matches") is not None:
            check = " (%s the %s)" % ("matches" if entry["digest_matches"] else "differs from", entry["digest_checked_against"])
        out.append("digest %s%s" % (digest, check))
    else:
        out.append("digest unknown")
    if entry.get("pending"):
        out.append("pending: configured %s" % (entry.get("configured_mode") or "differently"))
    if entry.get("errors"):
        out.append("%d error%s" % (len(entry["errors"]), "" if len(entry["errors"]) == 1 else "s"))
    return out


def not_read(entry):
    """The column's text for a host whose boot facts could not be read (plain text), or None."""
    status = entry["status"]
    if status in (BOOT_OK, BOOT_RAW):
        return None
    if status == BOOT_NOT_GATHERED:
        return "not gathered" + (": %s" % entry["message"] if entry.get("message") else "")
    return "not read: %s" % (entry.get("message") or status)


def cell_text(entry):
    """The whole cell as one line of plain text: the summary and its details, or why there are none."""
    missing = not_read(entry)
    if missing is not None:
        return missing
    return "; ".join([entry["summary"]] + details(entry))
