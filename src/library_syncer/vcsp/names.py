"""Which file and folder names the library web server serves: one pure rule for the server and the scanner.

The web server (:mod:`library_syncer.web`) refuses every request path this
module refuses, and the manifest scanner (:mod:`library_syncer.vcsp.scan`)
leaves out of the manifest every item folder and file it refuses, so a
published href is never a 404.  Nothing here touches files or sockets.
"""

from __future__ import annotations

import unicodedata
from typing import Sequence
from urllib.parse import quote

RESERVED_SEGMENT = "_syncer"
"""First path segment of the web server's own pages (status, API, metrics, health)."""

MAX_REQUEST_PATH = 8190
"""Longest request path (``/`` + percent-encoded href) the web server reads: aiohttp's request-line limit."""


def name_problem(name: str) -> str | None:
    """Why one decoded path segment is never served, or None when it is.

    Refused: empty names, dot-names (hidden), names that are not valid UTF-8
    (``surrogateescape`` file-system names), slashes, backslashes and control
    characters (C0, DEL, C1; NUL included).
    """
    if not name:
        return "is empty"
    if name.startswith("."):
        return "starts with a dot"
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return "is not valid UTF-8"
    if "/" in name or "\\" in name:
        return "contains a slash or backslash"
    bad = next((c for c in name if unicodedata.category(c) == "Cc"), None)
    if bad is not None:
        return f"contains a control character (U+{ord(bad):04X})"
    return None


def path_problem(parts: Sequence[str]) -> str | None:
    """Why the root-relative path made of ``parts`` is never served, or None when it is (``()``: the root)."""
    for part in parts:
        why = name_problem(part)
        if why is not None:
            return f"name '{printable(part)}' {why}"
    if parts and parts[0] == RESERVED_SEGMENT:
        return f"name '{RESERVED_SEGMENT}' is reserved for the web server's own pages"
    length = 1 + len(quote("/".join(parts), safe="/"))
    if length > MAX_REQUEST_PATH:
        return f"its URL path has {length} characters, over the web server's limit of {MAX_REQUEST_PATH}"
    return None


def printable(text: str) -> str:
    """``text`` on one line: control characters and undecodable bytes as backslash escapes."""
    text = text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return "".join(c.encode("unicode_escape").decode("ascii") if unicodedata.category(c) == "Cc" else c
                   for c in text)
