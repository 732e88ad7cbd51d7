# -*- coding: utf-8 -*-
# Copyright: composefs.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What the collection's fleet reports share: JSON rendering, Markdown escaping, the HTML
page and palette, and writing the report files on the controller.

The fs-verity report (plugins/plugin_utils/verity_report.py) and the deploy drift report
(plugins/plugin_utils/drift_report.py) both render through these, so host strings are
escaped the same way in both: in Markdown by :func:`md` (HTML entities, the characters that
open code spans, links and emphasis or end a table cell backslashed, control characters
written visibly), in HTML by ``html.escape``.
"""

from __future__ import annotations

import html
import json
import os
import re
import stat
import tempfile

from ansible.module_utils.common.text.converters import to_bytes

FILE_NAMES = dict(json="report.json", md="report.md", html="report.html")


class ReportRenderError(Exception):
    """Bad report parameters (a file mode, a format)."""


def render_json(report):
    return json.dumps(report, indent=2, sort_keys=True, ensure_ascii=False, default=str) + "\n"


def hosts_phrase(count):
    return "%d host%s" % (count, "" if count == 1 else "s")


# Host data in report.md is text, never markup: HTML (<, >, &) becomes entities; the
# characters that open code spans, links, emphasis or end a table cell are backslash
# escaped; control and line-separator characters (a "\\r" would end a table row in
# some renderers) are written as visible \\xNN / \\uNNNN.
_MD_ENTITIES = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}
_MD_BACKSLASHED = frozenset("\\`*[]|#~!")


def md_char(ch):
    if ch in _MD_ENTITIES:
        return _MD_ENTITIES[ch]
    if ch in _MD_BACKSLASHED:
        return "\\" + ch
    code = ord(ch)
    if code < 0x20 or 0x7F <= code <= 0x9F:
        return "\\x%02x" % code
    if ch in "\u2028\u2029\ufeff":
        return "\\u%04x" % code
    return ch


def md(text):
    text = str(text if text is not None else "")
    out = []
    for i, ch in enumerate(text):
        if ch == "_":
            # "_" emphasises only at a word's edge: CONFIG_FS_VERITY stays readable
            inner = 0 < i < len(text) - 1 and text[i - 1].isalnum() and text[i + 1].isalnum()
            out.append("_" if inner else "\\_")
        else:
            out.append(md_char(ch))
    return "".join(out)


_OCTAL_MODE = re.compile(r"\A0?[0-7]{3,4}\Z")


def parse_mode(mode):
    """The file mode from an octal string ("0644", "644"); integers are refused.

    YAML reads ``mode: 644`` as the decimal number 644 and ``mode: 0644`` as 420, and
    ansible.builtin.file documents that only a quoted string is read as octal: an
    integer here is almost always a mode that would come out wrong, so it is refused.
    """
    if not isinstance(mode, str):
        what = "the number %d" % mode if isinstance(mode, int) and not isinstance(mode, bool) else "%s" % type(mode).__name__
        raise ReportRenderError("mode must be a quoted octal string such as '0644', not %s: YAML reads 644 as a decimal number "
                                "and 0644 as 420 (quote it, as for ansible.builtin.file)" % what)
    if not _OCTAL_MODE.match(mode):
        raise ReportRenderError("mode %r is not an octal file mode such as '0644'" % (mode,))
    return int(mode, 8)


def write_if_changed(path, data, mode, check_mode):
    """Replace ``path`` atomically with ``data`` unless it already has it (and ``mode``). Returns whether it changed."""
    try:
        st = os.stat(path)
        with open(path, "rb") as f:
            same = f.read() == data
        if same and stat.S_IMODE(st.st_mode) == mode:
            return False
        if same:
            if not check_mode:
                os.chmod(path, mode)
            return True
    except FileNotFoundError:
        pass
    if check_mode:
        return True
    fd, tmp = tempfile.mkstemp(prefix=".%s." % os.path.basename(path), dir=os.path.dirname(path))
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return True


def html_page(title, css, body):
    """A self-contained page (no scripts, no external resources): ``body`` is a list of already escaped lines."""
    e = html.escape
    out = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        "<title>%s</title>" % e(title),
        "<style>%s</style>" % css,
        "</head>",
        "<body>",
        "<h1>%s</h1>" % e(title),
    ]
    return "\n".join(out + list(body) + ["</body>", "</html>"]) + "\n"


def write_report(dest, rendered, mode, check_mode):
    """Write ``rendered`` (format -> text) as the report files in ``dest``; returns (changed, [paths written]).

    Each file is replaced atomically, and only when its content or mode differs. ``dest`` is
    made (0755) when missing. OSError propagates.
    """
    changed = False
    written = []
    if not os.path.isdir(dest):
        changed = True
        if not check_mode:
            os.makedirs(dest, 0o755)
    for fmt in rendered:
        path = os.path.join(dest, FILE_NAMES[fmt])
        data = to_bytes(rendered[fmt], errors="surrogate_then_replace")
        if (check_mode and not os.path.isdir(dest)) or write_if_changed(path, data, mode, check_mode):
            changed = True
            written.append(path)
    return changed, written
