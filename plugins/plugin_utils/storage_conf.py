# -*- coding: utf-8 -*-
# Copyright: composefs.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Controller-side logic of composefs.fleet.storage_conf: TOML parsing, editing and checks with tomlkit.

This module runs on the controller only (it is imported by the action plugin and
by the unit tests); the managed node never needs a TOML library. It is pure: it
takes the module's parameters and what ``storage_conf_info`` read on the host,
and returns the new file text and everything the module reports. It does no I/O.
"""

from __future__ import annotations

import re
import tomllib

try:
    import tomlkit
    from tomlkit.container import Container
    from tomlkit.exceptions import TOMLKitError
    from tomlkit.items import AoT, Comment, InlineTable, Table
except ImportError as _exc:  # the controller requirement is missing: fail when used, not when imported
    tomlkit = None
    TOMLKIT_IMPORT_ERROR = _exc

    class TOMLKitError(Exception):
        """Stand-in so that except clauses stay valid without tomlkit."""

    Container = AoT = Comment = InlineTable = Table = type("MissingTomlkit", (), {})
else:
    TOMLKIT_IMPORT_ERROR = None

from ansible_collections.composefs.fleet.plugins.module_utils.storage_conf import (
    DEFAULT_GRAPHROOT,
    KNOWN_OVERLAY_OPTIONS,
    KNOWN_PULL_OPTIONS,
    MAIN_FILE,
    MIN_MKCOMPOSEFS,
    MIN_PODMAN_COMPOSEFS,
    MIN_PODMAN_DROPINS,
    RESET_KEYS,
    ROOTFUL_DROPIN_DIR,
    ROOTFUL_DROPIN_DIRS,
    USER_MAIN_FILE,
    VENDOR_FILE,
    parse_version,
    version_string,
)
from ansible_collections.composefs.fleet.plugins.plugin_utils.suggestions import did_you_mean

OVERLAY = ("storage", "options", "overlay")
PULL = ("storage", "options", "pull_options")
USE_COMPOSEFS = OVERLAY + ("use_composefs",)
PARTIAL = PULL + ("enable_partial_images",)

_MISSING = object()

MINIMAL_STORAGE_CONF = """\
# containers-storage configuration written by composefs.fleet.storage_conf.
# No vendor file (%s) was found to start from; see containers-storage.conf(5).
[storage]
driver = "overlay"
runroot = "/run/containers/storage"
graphroot = "%s"
""" % (VENDOR_FILE, DEFAULT_GRAPHROOT)

DROPIN_HEADER = """\
# containers-storage drop-in written by composefs.fleet.storage_conf.
# Podman >= 6 reads it on top of storage.conf. Files in storage.rootful.conf.d
# are read by rootful Podman only: rootless users never see these settings.
"""

SEED_HEADER = "# Copied from %s by composefs.fleet.storage_conf, then edited in place.\n"


class StorageConfError(Exception):
    """A problem the module reports as its failure message."""


# --------------------------------------------------------------------------
# Option validation: from module parameters to the TOML values to write
# --------------------------------------------------------------------------

def bool_string(value, what):
    """A containers-storage "string bool": Python bools and "true"/"false" strings become "true"/"false"."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower()
    raise StorageConfError('%s must be a boolean (written as the string "true" or "false"), not %r' % (what, value))


def plain_string(value, what):
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (str, int)):
        return str(value)
    raise StorageConfError("%s must be a string, not %r" % (what, value))


def _unknown_key(kind, key, known):
    return StorageConfError("unknown %s key %r%s; known keys: %s. containers-storage silently ignores unknown keys, "
                            "so a typo would never fail on its own." % (kind, key, did_you_mean(key, known), ", ".join(sorted(known))))


def build_settings(params):
    """Validate the options; return (settings, notes, warnings).

    ``settings`` is a list of (key path tuple, string value) in the order they are applied.
    """
    settings = []
    notes = []
    warnings = []
    for key in ("driver", "graphroot", "runroot"):
        if params.get(key):
            settings.append((("storage", key), plain_string(params[key], key)))
    if params.get("driver") and params["driver"] not in ("overlay", "overlay2") and params.get("use_composefs"):
        raise StorageConfError("use_composefs works only with the overlay driver, not %r" % params["driver"])

    use_composefs = params.get("use_composefs")
    if use_composefs is not None:
        settings.append((USE_COMPOSEFS, bool_string(use_composefs, "use_composefs")))

    for key, value in (params.get("overlay_options") or {}).items():
        if key == "use_composefs":
            raise StorageConfError("set use_composefs with the use_composefs option, not in overlay_options")
        if key not in KNOWN_OVERLAY_OPTIONS:
            raise _unknown_key("overlay_options", key, KNOWN_OVERLAY_OPTIONS)
        what = "overlay_options.%s" % key
        text = bool_string(value, what) if KNOWN_OVERLAY_OPTIONS[key] == "bool" else plain_string(value, what)
        settings.append((OVERLAY + (key,), text))

    pull_options = dict(params.get("pull_options") or {})
    for key in pull_options:
        if key not in KNOWN_PULL_OPTIONS:
            raise _unknown_key("pull_options", key, KNOWN_PULL_OPTIONS)
    if use_composefs:
        if "enable_partial_images" not in pull_options:
            pull_options["enable_partial_images"] = True
            notes.append('pull_options.enable_partial_images is managed as "true" too: composefs layers are only made by partial '
                         '(zstd:chunked) pulls, and partial pulls are off by default since containers/storage 1.56.')
    for key, value in pull_options.items():
        what = "pull_options.%s" % key
        text = bool_string(value, what) if KNOWN_PULL_OPTIONS[key][0] == "bool" else plain_string(value, what)
        settings.append((PULL + (key,), text))
    return settings, notes, warnings


# --------------------------------------------------------------------------
# TOML documents
# --------------------------------------------------------------------------

def require_tomlkit():
    if TOMLKIT_IMPORT_ERROR is not None:
        raise StorageConfError("composefs.fleet.storage_conf needs the Python library tomlkit on the controller "
                               "(pip install tomlkit): %s" % TOMLKIT_IMPORT_ERROR)


def parse_toml(text, name):
    """Parse ``text``; a StorageConfError naming ``name`` and the TOML error if it is not valid TOML."""
    require_tomlkit()
    try:
        return tomlkit.parse(text)
    except TOMLKitError as exc:
        raise StorageConfError("%s is not valid TOML (%s); it was left untouched. Fix or remove it first." % (name, exc))
    except (ValueError, TypeError) as exc:
        raise StorageConfError("%s could not be parsed as TOML (%s); it was left untouched." % (name, exc))


def get_in(data, keys, default=None):
    for key in keys:
        if not isinstance(data, dict) or key not in data:
            return default
        data = data[key]
    return data


def _body_container(table):
    if isinstance(table, Table):
        return table.value
    if isinstance(table, Container):
        return table
    return None


def _insert_position(body, key):
    """Where a new ``key = value`` line goes in a table body: after its commented-out default, else after
    the last key/value, else first; always before the table's sub-tables."""
    end = len(body)
    for idx, (dummy, item) in enumerate(body):
        if isinstance(item, (Table, AoT)):
            end = idx
            break
    commented = re.compile(r"^\s*#\s*%s\s*=" % re.escape(key))
    for idx in range(end):
        k, item = body[idx]
        if k is None and isinstance(item, Comment) and commented.match(item.as_string()):
            return idx + 1
    last_kv = None
    for idx in range(end):
        k, item = body[idx]
        if k is not None and not isinstance(item, (Table, AoT)):
            last_kv = idx
    if last_kv is not None:
        return last_kv + 1
    return 0


def _add_scalar(table, key, value):
    body_container = _body_container(table)
    if body_container is not None:
        body = body_container.body
        pos = _insert_position(body, key)
        if pos < len(body):
            try:
                # tomlkit has no public "insert at"; fall back to appending if the private helper changes.
                body_container._insert_at(pos, key, value)  # pylint: disable=protected-access
                if isinstance(table, Table):
                    dict.__setitem__(table, key, body_container[key])
                return
            except (AttributeError, ValueError, TypeError):
                pass
    table[key] = value


def _child_table(container, key, super_table):
    if key in container:
        child = container[key]
        if not isinstance(child, dict):
            raise StorageConfError("%r is a %s, not a table" % (key, type(child).__name__))
        return child
    child = tomlkit.table(is_super_table=super_table)
    if isinstance(container, InlineTable):
        child = tomlkit.inline_table()
    container[key] = child
    return container[key]


def set_value(doc, keys, value, scalar_tables):
    """Set ``keys`` to ``value`` in ``doc``, creating tables as needed and keeping everything else."""
    container = doc
    for depth, key in enumerate(keys[:-1]):
        path = keys[:depth + 1]
        try:
            container = _child_table(container, key, super_table=path not in scalar_tables)
        except StorageConfError as exc:
            raise StorageConfError("cannot set %s: %s is not a table (%s)" % (".".join(keys), ".".join(path), exc))
    last = keys[-1]
    if last in container:
        container[last] = value
    else:
        _add_scalar(container, last, value)


def apply_settings(doc, settings):
    """Apply ``settings`` to ``doc`` in place; return the list of changes (parsed values compared)."""
    scalar_tables = set(keys[:-1] for keys, dummy in settings)
    # A table that receives keys must not be a super table; nor may its parents that receive keys.
    changes = []
    for keys, value in settings:
        before = get_in(doc.unwrap(), keys, _MISSING)
        if isinstance(before, str) and before == value:
            continue
        set_value(doc, keys, value, scalar_tables)
        changes.append(dict(key=".".join(keys), before=None if before is _MISSING else before, after=value))
    return changes


def merge(base, top):
    """Merge ``top`` into ``base`` the way containers-storage decodes several files into one struct:
    tables merge key by key (BurntSushi/toml keeps an existing map and sets keys into it), other values replace."""
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            merge(base[key], value)
        else:
            base[key] = value
    return base


def lint(plain, name):
    """Warnings for things in a parsed storage.conf that Podman rejects or ignores."""
    warnings = []
    options = get_in(plain, ("storage", "options"), {})
    if isinstance(options, dict) and "use_composefs" in options:
        warnings.append("%s sets use_composefs under [storage.options], where containers-storage ignores it; "
                        "only [storage.options.overlay] use_composefs counts." % name)
    for table_keys, known in ((OVERLAY, set(KNOWN_OVERLAY_OPTIONS) | {"use_composefs"}), (PULL, set(KNOWN_PULL_OPTIONS))):
        table = get_in(plain, table_keys, {})
        if not isinstance(table, dict):
            warnings.append("%s: %s is not a table; Podman cannot read this file." % (name, ".".join(table_keys)))
            continue
        for key, value in table.items():
            dotted = ".".join(table_keys + (key,))
            if not isinstance(value, str):
                warnings.append('%s: %s is a TOML %s, but containers-storage needs a string (e.g. "true"); '
                                "Podman fails to parse the whole file." % (name, dotted, type(value).__name__))
            if key not in known:
                warnings.append("%s: containers-storage ignores unknown key %s%s." % (name, dotted, did_you_mean(key, known)))
    return warnings


# --------------------------------------------------------------------------
# The plan: from parameters and what the host has to the new file
# --------------------------------------------------------------------------

def decide_scope(params):
    """The scope: O(path) alone implies scope=path; path with scope=rootful is an error, never ignored."""
    scope = params.get("scope")
    path = params.get("path")
    if scope is None:
        return "path" if path else "rootful"
    if scope == "rootful" and path:
        raise StorageConfError("path=%s was given with scope=rootful, which edits the system files and would ignore "
                               "path: drop scope (path implies scope=path) or drop path." % path)
    if scope == "path" and not path:
        raise StorageConfError("scope=path needs path")
    return scope


def decide_layout(requested, podman_version, scope, version_check=True):
    """(layout, notes, warnings); raises if dropin is asked of a Podman that reads no drop-ins, unless the version
    check is off."""
    notes = []
    warnings = []
    reads_dropins = podman_version is not None and podman_version >= MIN_PODMAN_DROPINS
    if requested == "auto":
        if podman_version is None:
            notes.append("Podman is not installed; layout auto assumed Podman <= 5 and edits the full file.")
            return "file", notes, warnings
        return ("dropin" if reads_dropins else "file"), notes, warnings
    if requested == "dropin" and podman_version is not None and not reads_dropins and scope == "rootful":
        why = ("layout=dropin needs Podman >= %s, which reads storage.conf drop-ins; Podman %s reads exactly one "
               "storage.conf, so a drop-in has no effect" % (version_string(MIN_PODMAN_DROPINS), version_string(podman_version)))
        if version_check:
            raise StorageConfError(why + ". Use layout=file or auto, or podman_version_check=false to write it anyway "
                                         "(for example before upgrading Podman).")
        warnings.append(why + " until Podman is upgraded; written anyway because podman_version_check=false.")
    return requested, notes, warnings


def target_path(params, layout, scope):
    if scope == "path":
        return params["path"]
    if layout == "dropin":
        name = params.get("dropin_name") or ""
        if "/" in name or not name.endswith(".conf") or name.startswith("."):
            raise StorageConfError("dropin_name must be a plain file name ending in .conf (Podman reads only *.conf), "
                                   "not %r" % name)
        return "%s/%s" % (ROOTFUL_DROPIN_DIR, name)
    return MAIN_FILE


def _records(probe):
    """Map requested and expanded path -> file record from storage_conf_info's answer."""
    recs = {}
    for rec in probe.get("files") or []:
        recs[rec["requested"]] = rec
        recs[rec["path"]] = rec
    return recs


def _expand_home(path, probe):
    home = (probe.get("env") or {}).get("HOME") or "/root"
    return home + path[1:] if path.startswith("~") else path


def plan(params, probe):
    """Compute the new file. Returns the result dict; raises StorageConfError for a failure message."""
    require_tomlkit()
    settings, notes, warnings = build_settings(params)
    podman = probe.get("podman") or None
    podman_version = parse_version(podman.get("version")) if podman else None
    scope = decide_scope(params)
    version_check = params.get("podman_version_check", True) is not False
    layout, layout_notes, layout_warnings = decide_layout(params.get("layout") or "auto", podman_version, scope,
                                                          version_check)
    notes.extend(layout_notes)
    warnings.extend(layout_warnings)
    path = target_path(params, layout, scope)
    use_composefs = params.get("use_composefs")

    result = dict(
        changed=False, path=path, target=path, scope=scope, layout=layout, created=False,
        podman_version=version_string(podman_version) if podman_version else (podman or {}).get("version"),
        podman_supports_composefs=None if podman_version is None else podman_version >= MIN_PODMAN_COMPOSEFS,
        podman_reads_dropins=None if podman_version is None else podman_version >= MIN_PODMAN_DROPINS,
        rootless_users=list(probe.get("rootless_users") or []),
    )
    if podman_version is None:
        warnings.append("Podman was not found on the host, so its version could not be checked; "
                        "composefs needs Podman >= %s." % version_string(MIN_PODMAN_COMPOSEFS))
    elif podman_version < MIN_PODMAN_COMPOSEFS and use_composefs:
        why = ("Podman %s on this host is too old for composefs: containers-storage reads "
               "[storage.options.overlay] use_composefs since v1.52.0 (containers/storage#1769), and the first Podman "
               "built on it is %s (storage v1.53.0; Podman 4.9.x stays on storage v1.51.0)"
               % (result["podman_version"], version_string(MIN_PODMAN_COMPOSEFS)))
        if version_check:
            raise StorageConfError(
                "%s. Upgrade Podman (for example Debian trixie has 5.4), or set podman_version_check=false to write the "
                "setting for a later Podman; %s was left untouched." % (why, path))
        warnings.append("%s. Written anyway because podman_version_check=false: this Podman ignores use_composefs "
                        "until it is upgraded." % why)
    if podman_version is not None:
        for keys, dummy in settings:
            since = KNOWN_PULL_OPTIONS[keys[-1]][1] if keys[:-1] == PULL else None
            if since and podman_version < since:
                warnings.append("pull_options.%s is read only by Podman >= %s; Podman %s ignores it."
                                % (keys[-1], version_string(since), result["podman_version"]))

    records = _records(probe)
    rec = records.get(path)
    if rec is None:
        raise StorageConfError("internal error: %s was not read from the host" % path)
    if rec.get("error"):
        raise StorageConfError("cannot edit %s: %s; it was left untouched." % (path, rec["error"]))
    follow = params.get("follow", True) is not False
    replaces_link = bool(rec.get("link")) and not follow
    if rec.get("link"):
        result["target"] = rec.get("target") if follow else path
        if follow:
            notes.append("%s is a symlink: its target %s is edited and the link stays (follow=true)."
                         % (path, rec.get("target")))
            if layout == "dropin" and scope == "rootful":
                warnings.append("%s is a symlink, and containers-storage skips symlinked drop-ins: Podman will not read "
                                "it. Use follow=false to replace the link with a regular file." % path)
        else:
            notes.append("%s is a symlink to %s: follow=false replaces the link with a regular file and leaves %s "
                         "as it is." % (path, rec.get("target"), rec.get("target")))
    exists = bool(rec.get("exists"))
    before_text = (rec.get("content") or "") if exists else None
    if exists:
        doc = parse_toml(before_text, path)
    else:
        result["created"] = True
        doc = _new_document(layout, records, path, notes, warnings)
    before_plain = doc.unwrap() if exists else {}

    # On a Podman without composefs an absent use_composefs already means "false": do not add a key it cannot read.
    if podman_version is not None and podman_version < MIN_PODMAN_COMPOSEFS and use_composefs is False:
        if get_in(doc.unwrap(), USE_COMPOSEFS, _MISSING) is _MISSING:
            settings = [(k, v) for k, v in settings if k != USE_COMPOSEFS]
            notes.append("Podman %s does not know use_composefs; composefs is off, so the key was not added."
                         % result["podman_version"])

    changes = apply_settings(doc, settings)
    after_plain = doc.unwrap()
    content_changed = bool(changes) if not exists else after_plain != before_plain
    changed = content_changed or replaces_link
    after_text = tomlkit.dumps(doc) if content_changed else before_text
    if content_changed:
        check_round_trip(after_text, after_plain, path)
    result.update(
        changed=changed,
        changes=changes if content_changed else [],
        content=after_text,
        expected_sha256=rec.get("sha256") if exists else "absent",
        diff=[dict(before=before_text or "", after=after_text or "",
                   before_header=path if exists else "%s (absent)" % path,
                   after_header=path if result["target"] == path else "%s (-> %s)" % (path, result["target"]))],
        settings=dict((".".join(k), v) for k, v in settings),
    )
    warnings.extend(lint(after_plain, path))

    eff_before, dummy, dummy_notes, dummy_warnings = effective_config(result, probe, before_text)
    effective, sources, eff_notes, eff_warnings = effective_config(result, probe, after_text)
    notes.extend(eff_notes)
    warnings.extend(eff_warnings)
    known = bool(effective)
    if not known:
        # scope=path, or a drop-in for a Podman whose reading rules are unknown: judge the file alone.
        effective, sources = after_plain, dict((k, path) for k in _leaf_keys(after_plain))
        eff_before = before_plain
    report_keys = [USE_COMPOSEFS, PARTIAL] + [k for k, dummy in settings if k not in (USE_COMPOSEFS, PARTIAL)]
    result["effective"] = dict((".".join(k), dict(value=get_in(effective, k), source=sources.get(k))) for k in report_keys)
    for keys, value in settings:
        actual = get_in(effective, keys)
        if known and actual != value:
            warnings.append("%s = %r in %s is overridden: Podman will use %r from %s."
                            % (".".join(keys), value, path, actual, sources.get(keys, "its built-in default")))
    composefs_on = get_in(effective, USE_COMPOSEFS) == "true"
    if composefs_on and get_in(effective, PARTIAL) != "true":
        warnings.append('use_composefs is "true" but the effective pull_options.enable_partial_images is not "true": '
                        "Podman pulls no layer as composefs, silently.")
    driver = get_in(effective, ("storage", "driver"))
    if composefs_on and driver and driver not in ("overlay", "overlay2"):
        warnings.append("use_composefs applies only to the overlay driver; the storage driver is %r." % driver)
    result["composefs_enabled"] = composefs_on

    result["reset_reasons"] = reset_reasons(eff_before, effective, settings)
    result["reset_required"] = bool(result["reset_reasons"])
    result["graphroot"] = dict(path=get_in(effective, ("storage", "graphroot")) or DEFAULT_GRAPHROOT)
    result["notes"] = notes
    result["warnings"] = warnings
    return result


def check_round_trip(text, expected, path):
    """Refuse to write text that an independent TOML parser does not read back as ``expected``."""
    try:
        got = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise StorageConfError("internal error: the edited %s would not be valid TOML (%s); nothing was written." % (path, exc))
    if got != expected:
        raise StorageConfError("internal error: the edited %s would not read back as intended; nothing was written." % path)


_RESET_DEFAULTS = {"driver": "overlay", "graphroot": DEFAULT_GRAPHROOT, "runroot": "/run/containers/storage"}


def reset_reasons(before, after, settings):
    """Why `podman system reset` is needed: a driver, graphroot or runroot this module sets changes."""
    managed = set(k[-1] for k, dummy in settings if k[:-1] == ("storage",))
    reasons = []
    for key in RESET_KEYS:
        if key not in managed:
            continue
        old = get_in(before, ("storage", key)) or _RESET_DEFAULTS[key]
        new = get_in(after, ("storage", key)) or _RESET_DEFAULTS[key]
        if key == "driver":
            old, new = old.replace("overlay2", "overlay"), new.replace("overlay2", "overlay")
        if old != new:
            reasons.append("storage.%s changes from %r to %r" % (key, old, new))
    return reasons


def _new_document(layout, records, path, notes, warnings):
    if layout == "dropin":
        return parse_toml(DROPIN_HEADER, "the drop-in skeleton")
    vendor = records.get(VENDOR_FILE)
    if vendor and vendor.get("exists"):
        if vendor.get("error"):
            raise StorageConfError("cannot start %s from %s: %s" % (path, VENDOR_FILE, vendor["error"]))
        notes.append("%s did not exist: created from %s, keeping its comments." % (path, VENDOR_FILE))
        return parse_toml(SEED_HEADER % VENDOR_FILE + (vendor.get("content") or ""), VENDOR_FILE)
    warnings.append("neither %s nor %s exists: created a minimal storage.conf (driver overlay, default graphroot "
                    "and runroot)." % (path, VENDOR_FILE))
    return parse_toml(MINIMAL_STORAGE_CONF, "the minimal storage.conf")


def _parse_quiet(name, text, warnings):
    try:
        return tomlkit.parse(text).unwrap()
    except (TOMLKitError, ValueError, TypeError) as exc:
        warnings.append("%s is not valid TOML (%s): Podman will fail on it." % (name, exc))
        return None


def effective_config(result, probe, text):
    """What Podman will read if the target holds ``text`` (None: absent): (merged, {keys: file}, notes, warnings).

    The merged dict is empty when it cannot be known (scope=path: the file is used however the caller uses it).
    """
    notes = []
    warnings = []
    if result["scope"] == "path":
        return {}, {}, notes, warnings
    records = _records(probe)
    path = result["path"]
    env = probe.get("env") or {}
    if env.get("CONTAINERS_STORAGE_CONF"):
        warnings.append("CONTAINERS_STORAGE_CONF=%s is set in the module's environment: Podman run with it reads that "
                        "file instead of %s." % (env["CONTAINERS_STORAGE_CONF"], path))

    def text_of(file_path):
        if file_path == path:
            return text
        rec = records.get(file_path)
        if rec and rec.get("exists") and not rec.get("error"):
            return rec.get("content") or ""
        return None

    layers = []  # (file name, text), in the order Podman reads them
    if result["podman_reads_dropins"]:
        user_main = _expand_home(USER_MAIN_FILE, probe)
        for main in (user_main, MAIN_FILE, VENDOR_FILE):
            main_text = text_of(USER_MAIN_FILE) if main == user_main else text_of(main)
            if main_text is not None:
                layers.append((main, main_text))
                if main == user_main and path == MAIN_FILE:
                    warnings.append("%s exists, and Podman >= 6 reads it instead of %s, even as root."
                                    % (user_main, MAIN_FILE))
                break
        dropins = {}
        for directory in ROOTFUL_DROPIN_DIRS:
            for drec in probe.get("dropin_dirs") or []:
                if drec["requested"] == directory:
                    for frec in drec.get("files") or []:
                        dropins[frec["name"]] = frec["path"]
                        records.setdefault(frec["path"], frec)
        if result["layout"] == "dropin" and result["scope"] == "rootful":
            dropins[path.rsplit("/", 1)[1]] = path
        for name in sorted(dropins):
            dropin_text = text_of(dropins[name])
            if dropin_text is not None:
                layers.append((dropins[name], dropin_text))
    elif result["layout"] == "file":
        # Podman <= 5 reads exactly one file: /etc/containers/storage.conf if it exists, else the vendor file.
        main_text = text_of(MAIN_FILE)
        layers.append((MAIN_FILE, main_text) if main_text is not None else (VENDOR_FILE, text_of(VENDOR_FILE)))
    else:
        return {}, {}, notes, warnings

    merged = {}
    sources = {}
    for name, layer_text in layers:
        if layer_text is None:
            continue
        plain = _parse_quiet(name, layer_text, warnings)
        if plain is None:
            continue
        merge(merged, plain)
        for keys in _leaf_keys(plain):
            sources[keys] = name
    return merged, sources, notes, warnings


def _leaf_keys(plain, prefix=()):
    for key, value in plain.items():
        if isinstance(value, dict):
            yield from _leaf_keys(value, prefix + (key,))
        else:
            yield prefix + (key,)


# --------------------------------------------------------------------------
# Host checks: Podman users, mkcomposefs, kernel, graphroot filesystem
# --------------------------------------------------------------------------

def host_checks(result, probe, fs_record):
    """Add warnings and notes about the host's readiness for composefs to ``result``."""
    warnings = result["warnings"]
    notes = result["notes"]
    mk = probe.get("mkcomposefs")
    result["mkcomposefs"] = mk
    result["kernel"] = probe.get("kernel")
    if fs_record:
        result["graphroot"].update(dict((k, fs_record.get(k)) for k in ("mountpoint", "fstype", "source", "verity", "reason")))
    if not result.get("composefs_enabled"):
        return result
    users = result["rootless_users"]
    if users:
        who = ", ".join(users[:10]) + (" and %d more" % (len(users) - 10) if len(users) > 10 else "")
        if result["podman_reads_dropins"]:
            rootless_files = _rootless_composefs_files(result, probe)
            if rootless_files:
                warnings.append("rootless Podman users (%s) read %s, which turns use_composefs on for them too, and "
                                '"composefs is not supported in user namespaces" breaks their Podman. Put it in '
                                "%s instead (layout=dropin)." % (who, ", ".join(rootless_files), ROOTFUL_DROPIN_DIR))
        else:
            notes.append("rootless Podman users (%s): Podman <= 5 gives them this file's pull_options but not "
                         "use_composefs (containers-storage copies only ignore_chown_errors to rootless stores), so "
                         "their layers stay plain overlay." % who)
    if probe.get("euid") not in (0, None):
        warnings.append("the module ran as uid %s, not root: composefs works for rootful Podman only." % probe.get("euid"))
    if not mk:
        warnings.append("mkcomposefs is not on PATH: Podman cannot write composefs blobs. Install the composefs "
                        "package (mkcomposefs >= %s)." % version_string(MIN_MKCOMPOSEFS))
    else:
        mk_version = parse_version(mk.get("version"))
        if not mk.get("from_file") or (mk_version is not None and mk_version < MIN_MKCOMPOSEFS):
            warnings.append("%s is too old: containers-storage runs mkcomposefs --from-file, which needs composefs >= %s%s."
                            % (mk.get("path"), version_string(MIN_MKCOMPOSEFS),
                               " (found %s)" % mk.get("version") if mk.get("version") else ""))
    kernel = probe.get("kernel") or {}
    missing = [name for name in ("erofs", "overlay", "loop") if kernel.get(name) == "missing"]
    if missing:
        warnings.append("the kernel %s lacks %s, which composefs mounts need." % (kernel.get("release"), ", ".join(missing)))
    graphroot = result["graphroot"]
    notes.append("fs-verity in Podman's composefs is best effort: Podman never mounts with verity=require, so files "
                 "are verified only when the graphroot filesystem supports fs-verity.")
    if graphroot.get("verity") == "unsupported":
        warnings.append("the graphroot %s is on %s (%s): composefs layers will work, but without fs-verity."
                        % (graphroot.get("path"), graphroot.get("fstype"), graphroot.get("reason")))
    return result


def _rootless_composefs_files(result, probe):
    """Files a rootless Podman >= 6 reads that set use_composefs = "true"."""
    found = []
    candidates = [MAIN_FILE, VENDOR_FILE]
    records = _records(probe)
    texts = {}
    for cand in candidates:
        rec = records.get(cand)
        if cand == result["path"]:
            texts[cand] = result["content"]
        elif rec and rec.get("exists") and not rec.get("error"):
            texts[cand] = rec.get("content") or ""
    # The main file rootless users read is the first of /etc and /usr/share that exists.
    main = next((c for c in candidates if c in texts), None)
    shared = [main] if main else []
    for drec in probe.get("dropin_dirs") or []:
        if drec["requested"].endswith("/storage.conf.d") and not drec["requested"].startswith("~"):
            for frec in drec.get("files") or []:
                if not frec.get("error"):
                    texts[frec["path"]] = frec.get("content") or ""
                    shared.append(frec["path"])
    for name in shared:
        try:
            plain = tomlkit.parse(texts[name]).unwrap()
        except (TOMLKitError, ValueError, TypeError):
            continue
        if get_in(plain, USE_COMPOSEFS) == "true":
            found.append(name)
    return found


# --------------------------------------------------------------------------
# What to read from the host
# --------------------------------------------------------------------------

def probe_request(params):
    """Arguments for storage_conf_info: every file and drop-in directory the plan may need."""
    paths = [MAIN_FILE, VENDOR_FILE, USER_MAIN_FILE]
    if params.get("scope") != "rootful" and params.get("path"):
        paths.insert(0, params["path"])
    name = params.get("dropin_name")
    if name and "/" not in name:
        paths.append("%s/%s" % (ROOTFUL_DROPIN_DIR, name))
    seen = []
    for p in paths:
        if p not in seen:
            seen.append(p)
    return dict(paths=seen, dropin_dirs=list(ROOTFUL_DROPIN_DIRS), fs_paths=[params.get("graphroot") or DEFAULT_GRAPHROOT])


def find_filesystem(probe, path):
    for rec in probe.get("filesystems") or []:
        if rec.get("path") == path:
            return rec
    return None
