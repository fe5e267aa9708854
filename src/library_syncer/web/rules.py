"""Pure rules of the library web server: request paths, content types, listings, auth, URLs.

Nothing here touches files or sockets, so every rule is unit-testable.
"""

from __future__ import annotations

import hmac
import ipaddress
import html
import mimetypes
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Mapping
from urllib.parse import quote, unquote_to_bytes

from aiohttp import BasicAuth

from ..vcsp.names import name_problem
from ..util.net import is_wildcard

LIBRARY_USER = "vcsp"
REALM = "library-syncer"

# Files of a Content Library: always bytes to download, whatever a MIME table says.
_BINARY_SUFFIXES = {".vmdk", ".ovf", ".ova", ".mf", ".iso", ".nvram", ".cert", ".img", ".vmx"}
_MIME = mimetypes.MimeTypes()  # built-in table only: the same answers on every machine


def split_request_path(raw_path: str) -> tuple[str, ...] | None:
    """Decoded segments of a raw (percent-encoded) request path, or None if it must be refused.

    Refused: every segment :func:`library_syncer.served.name_problem` refuses once
    decoded (empty, dot-names, ``.``/``..`` also percent-encoded, a ``/``, a backslash,
    control characters, invalid UTF-8): the scanner applies the same rule to the
    names it lists. A trailing slash is allowed.
    """
    if not raw_path.startswith("/"):
        return None
    raw_parts = raw_path[1:].split("/")
    if raw_parts and raw_parts[-1] == "":
        raw_parts.pop()  # trailing slash (or the root itself)
    parts: list[str] = []
    for raw in raw_parts:
        try:
            part = unquote_to_bytes(raw).decode("utf-8")
        except UnicodeDecodeError:
            return None
        if name_problem(part) is not None:
            return None
        parts.append(part)
    return tuple(parts)


def is_hidden(parts: tuple[str, ...]) -> bool:
    """True when any path component is a dot-name (never served nor listed)."""
    return any(p.startswith(".") for p in parts)


def content_type_for(name: str) -> str:
    """Content-Type of a library file: JSON for manifests, bytes for VM files, else a guess."""
    suffix = "." + name.rsplit(".", 1)[-1].lower() if "." in name else ""
    if suffix == ".json":
        return "application/json"
    if suffix in _BINARY_SUFFIXES:
        return "application/octet-stream"
    guessed, encoding = _MIME.guess_type(name, strict=True)
    if guessed is None or encoding is not None:
        return "application/octet-stream"
    return guessed


def etag_of(mtime_ns: int, size: int) -> str:
    """The (unquoted) ETag aiohttp's FileResponse gives a file: same bytes across hard links."""
    return f"{mtime_ns:x}-{size:x}"


def front_etag(mtime_s: int, size: int) -> str:
    """The (unquoted) ETag Caddy's file_server gives a file: mtime seconds and size in base 36."""
    return f"{_base36(mtime_s)}{_base36(size)}"


def _base36(n: int) -> str:
    digits = ""
    while True:
        n, d = divmod(n, 36)
        digits = "0123456789abcdefghijklmnopqrstuvwxyz"[d] + digits
        if not n:
            return digits


_SINGLE_RANGE = re.compile(r"bytes=(\d*)-(\d*)", re.IGNORECASE | re.ASCII)


def range_plan(headers_range: str | None, if_range: str | None, etag: str, last_modified: int) -> str:
    """How to answer a GET/HEAD of a file (RFC 9110 sections 13.1.5 and 14): ``whole`` (200,
    the Range ignored), ``range`` (206, or 416 past the end), ``unsatisfiable`` (416).

    ``etag`` is the file's (unquoted) ETag, ``last_modified`` its Last-Modified in seconds.
    If-Range must name exactly this version: a strong ETag equal to ``etag`` or an HTTP-date
    equal to ``last_modified``; a weak ETag or anything else means the whole file. Multiple
    ranges get the whole file (no multipart), and so do other units and invalid ranges;
    a suffix of zero bytes (``bytes=-0``) is unsatisfiable.
    """
    if headers_range is None:
        return "whole"
    if if_range is not None and not _if_range_holds(if_range.strip(), etag, last_modified):
        return "whole"
    match = _SINGLE_RANGE.fullmatch(headers_range.strip())
    if match is None or match.group(1) == match.group(2) == "":
        return "whole"
    first, last = match.groups()
    if first and last and int(last) < int(first):
        return "whole"
    if not first and int(last) == 0:
        return "unsatisfiable"
    return "range"


def front_range(range_header: str) -> str:
    """The single range of a request :func:`range_plan` planned as ``range``, spelt as Go's parser wants it
    (lower-case unit, no spaces): what the Caddy front is told to send."""
    match = _SINGLE_RANGE.fullmatch(range_header.strip())
    assert match is not None, range_header
    return f"bytes={match.group(1)}-{match.group(2)}"


def planned_bytes(range_header: str | None, size: int) -> int:
    """Body bytes of the answer to a GET of a ``size``-byte file: all of it, or the single range
    of a request that :func:`range_plan` planned as ``range`` (0 past the end)."""
    match = _SINGLE_RANGE.fullmatch(range_header.strip()) if range_header else None
    if match is None:
        return size
    first, last = match.groups()
    if not first:
        return min(int(last), size)
    start = int(first)
    if start >= size:
        return 0
    end = min(int(last), size - 1) if last else size - 1
    return end - start + 1


def front_precondition(headers: Mapping[str, str], etag: str, last_modified: int) -> int | None:
    """What Caddy's file server (Go's ServeContent, RFC 9110 section 13.2.2) answers a GET/HEAD of a file
    with ETag ``etag`` (unquoted) and Last-Modified ``last_modified`` instead of the file: 412, 304, or
    None when it sends the file. For the log and the byte counters of requests the front answers."""
    if_match = headers.get("If-Match")
    if if_match is not None:
        if not _etag_listed(if_match, etag, weak=False):
            return 412
    elif (since := _http_date(headers.get("If-Unmodified-Since"))) is not None and last_modified > since:
        return 412
    if_none_match = headers.get("If-None-Match")
    if if_none_match is not None:
        return 304 if _etag_listed(if_none_match, etag, weak=True) else None
    since = _http_date(headers.get("If-Modified-Since"))
    return 304 if since is not None and last_modified <= since else None


def _etag_listed(value: str, etag: str, *, weak: bool) -> bool:
    for entry in (e.strip() for e in value.split(",")):
        if entry == "*":
            return True
        if entry.startswith("W/"):
            if not weak:
                continue
            entry = entry[2:]
        if entry == f'"{etag}"':
            return True
    return False


def _http_date(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # asctime form: GMT by definition
        when = when.replace(tzinfo=timezone.utc)
    return int(when.timestamp())


def _if_range_holds(value: str, etag: str, last_modified: int) -> bool:
    if value.startswith('"'):
        return value == f'"{etag}"'
    if value.startswith("W/"):
        return False
    return _http_date(value) == last_modified


def check_basic_auth(header: str | None, password: str) -> bool:
    """True when an Authorization header carries user ``vcsp`` and ``password`` (constant time)."""
    if not header:
        return False
    try:
        auth = BasicAuth.decode(header, encoding="utf-8")
    except ValueError:
        return False
    user_ok = hmac.compare_digest(auth.login.encode(), LIBRARY_USER.encode())
    password_ok = hmac.compare_digest(auth.password.encode(), password.encode())
    return user_ok and password_ok


def www_authenticate() -> str:
    """The WWW-Authenticate header value of every 401 answer (library, site ops, fleet view): one realm."""
    return f'Basic realm="{REALM}", charset="UTF-8"'


@dataclass(frozen=True)
class Entry:
    """One row of a directory listing."""

    name: str
    is_dir: bool
    size: int
    mtime: float


def render_listing(parts: tuple[str, ...], entries: list[Entry]) -> str:
    """HTML listing of a folder: escaped names, percent-encoded relative links, folders first."""
    title = "/" + "".join(p + "/" for p in parts)
    rows = []
    if parts:
        rows.append('<tr><td><a href="../">../</a></td><td></td><td></td></tr>')
    for e in sorted(entries, key=lambda e: (not e.is_dir, e.name)):
        label = e.name + ("/" if e.is_dir else "")
        href = quote(e.name, safe="") + ("/" if e.is_dir else "")
        size = "" if e.is_dir else str(e.size)
        when = datetime.fromtimestamp(e.mtime, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
        rows.append(
            f'<tr><td><a href="{html.escape(href)}">{html.escape(label)}</a></td>'
            f'<td class="size">{size}</td><td>{when}</td></tr>'
        )
    body = "\n".join(rows)
    t = html.escape(title)
    return (
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">"
        f"<title>Index of {t}</title>"
        "<style>body{font-family:sans-serif}td{padding:0 1em}.size{text-align:right}</style>"
        f"</head><body><h1>Index of {t}</h1>\n<table>\n"
        "<tr><th>Name</th><th>Size</th><th>Modified</th></tr>\n"
        f"{body}\n</table></body></html>\n"
    )


def subscription_urls(host: str, port: int, *, tls: bool, hostname: str) -> list[str]:
    """The ``lib.json`` URL(s) to subscribe to; a wildcard address shows ``hostname`` instead."""
    scheme = "https" if tls else "http"
    shown = hostname if is_wildcard(host) else host
    if ":" in shown and not shown.startswith("["):
        shown = f"[{shown}]"
    return [f"{scheme}://{shown}:{port}/lib.json"]


def check_admin_token(header: str | None, token: str) -> bool:
    """True when an Authorization header carries the admin token: ``Bearer TOKEN``, or Basic
    with any user name and the token as password (so a browser can open the pages)."""
    if not header:
        return False
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer":
        return hmac.compare_digest(value.strip().encode(), token.encode())
    try:
        auth = BasicAuth.decode(header, encoding="utf-8")
    except ValueError:
        return False
    return hmac.compare_digest(auth.password.encode(), token.encode())


def status_access(action: str, *, header: str | None, token: str | None, password: str | None,
                  loopback: bool) -> bool:
    """Whether a request to the ops routes under ``/_syncer/`` (a site's or the fleet view's) may proceed.

    ``action``: ``health`` (always), ``read`` (page, API, metrics: the admin token when one
    is set, else the library password when one is set, else open), ``write`` (on-demand
    sync: the admin token when one is set, else only from a loopback address).
    """
    if action == "health":
        return True
    if token:
        return check_admin_token(header, token)
    if action == "write":
        return loopback
    return check_basic_auth(header, password) if password else True


def is_loopback(host: str | None) -> bool:
    """True for a loopback address (``127.0.0.0/8``, ``::1``, with or without brackets/zone) or ``localhost``."""
    if not host:
        return False
    host = host.strip("[]").split("%")[0]
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"
