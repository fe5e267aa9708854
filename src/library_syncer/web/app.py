"""The library web app: the served folder over GET/HEAD, with Range and conditional requests.

Files go out through aiohttp's ``FileResponse`` (sendfile, Range, ETag,
Last-Modified, If-None-Match, If-Modified-Since); this module decides Range and
If-Range itself (rules.range_plan, RFC 9110), and adds the path rules (nothing
outside the root, no dot-names, no symlink escapes), optional listings and the
optional password, and on request the VCSP "not ready" answer of the manifest
before anything is published (:func:`not_ready_document`).

Behind our Caddy front (``front_sends_files``) a library file is not sent by this app: it
answers with the file to send (:data:`FRONT_FILE` and its companions, never shown to the
client) and Caddy's ``file_server`` sends the bytes (web/caddy_config.py): the choice of
file (generation pin, path rules, password, Range plan) stays here, the TLS bytes go out
at Caddy's speed.

The library route matches every path except those under :data:`RESERVED_PREFIX`,
so other modules may add routes there (``app.router.add_get(RESERVED_PREFIX +
"status", ...)``) before the app starts.  The library password does not apply
under that prefix: routes there check access themselves (web/ops.py does).
"""

from __future__ import annotations

import asyncio
import math
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from aiohttp import hdrs, web
from multidict import CIMultiDict

from ..vcsp.names import RESERVED_SEGMENT, name_problem, path_problem
from .rules import (
    Entry,
    check_basic_auth,
    content_type_for,
    etag_of,
    front_etag,
    front_precondition,
    front_range,
    is_hidden,
    planned_bytes,
    range_plan,
    render_listing,
    split_request_path,
    www_authenticate,
)

RESERVED_PREFIX = f"/{RESERVED_SEGMENT}/"
TLS_CHUNK_SIZE = 512 * 1024  # bytes read per step when a file goes out over TLS

BEHIND_PROXY = web.AppKey("behind_proxy", bool)
"""True when every request comes through our own TLS front (Caddy), which sets X-Forwarded-For."""

FRONT_SENDS_FILES = web.AppKey("front_sends_files", bool)
"""True when our Caddy front sends library files itself, told which by the headers below."""

FRONT_FILE = "X-Library-File"  # absolute path (UTF-8) of the file the front sends
FRONT_RANGE = "X-Library-Range"  # the Range the front applies (absent: the whole file)
FRONT_TYPE = "X-Library-Type"  # the Content-Type of the file

RootProvider = Callable[[str, tuple[str, ...]], Path]
"""``provider(client, parts)``: the folder to answer a request for ``parts`` from ``client`` (its address)."""

ROOT_PROVIDER = web.AppKey[RootProvider]("library_root")  # not a class: the type goes in brackets

NotReady = Callable[[], dict | None]
"""``not_ready()``: the document to answer the manifest with (503) while nothing is published, else None."""

NOT_READY_PATHS = (("lib.json",), ("items.json",))  # the endpoint descriptor and the endpoint index
NOT_READY_RETRY_AFTER = 30  # seconds, in the Retry-After header of a 503


def not_ready_document(progress: int, message: str = "") -> dict:
    """The VCSP answer body of a file that is not ready yet, sent with status 503.

    Format: VMware vCloud API Programming Guide, "Content Subscription Endpoint
    Specification", section "Responses" (vCloud Director 5.5; the same text is in the
    VMware Cloud Director API Programming Guide): a GET of the descriptor or the index
    may answer 503 with an ``application/json`` document of the keys ``status`` (status
    of the requested file, no values defined: the spec's in-progress example has ``""``),
    ``progress`` (an integer 0 to 100) and ``message`` (an error that prevented the file
    from being made).  The client keeps polling until a 200, or a 503 whose message is not
    empty: so ``message`` stays empty while the file is still coming.
    """
    return {"status": "", "progress": max(0, min(100, int(progress))), "message": message}


@dataclass(frozen=True)
class _Found:
    base: Path  # the resolved root
    path: Path  # resolved, inside base
    parts: tuple[str, ...]  # request segments
    st: os.stat_result


# A first byte past the end of any file: aiohttp answers 416 (after its precondition checks).
_PAST_THE_END = f"bytes={1 << 63}-"


class _LibraryFile(web.FileResponse):
    """FileResponse that never swaps in a ``.gz``/``.br`` sibling, gets the Range decided by
    rules.range_plan (never an If-Range of its own), and reads big chunks over TLS (two
    private aiohttp methods overridden; tests/web guards both)."""

    def __init__(self, path: Path, *, plan: str, content_type: str) -> None:
        super().__init__(path, chunk_size=TLS_CHUNK_SIZE, headers={hdrs.CONTENT_TYPE: content_type})
        self._plan = plan
        self.bytes_sent: int | None = None  # body bytes, known once the response completed

    def _get_file_path_stat_encoding(self, accept_encoding: str):
        # Library files are served exactly as stored: no pre-compressed variants.
        return super()._get_file_path_stat_encoding("")

    async def _sendfile(self, request: web.BaseRequest, fobj, offset: int, count: int):
        # Over TLS asyncio can only emulate sendfile, 16 KiB per thread-pool read and drain
        # (about 8x slower than big reads); plain HTTP keeps the kernel's sendfile.
        transport = request.transport
        if transport is None or transport.get_extra_info("sslcontext") is None:
            return await super()._sendfile(request, fobj, offset, count)
        writer = await web.StreamResponse.prepare(self, request)
        assert writer is not None
        return await self._sendfile_fallback(writer, fobj, offset, count)

    async def prepare(self, request: web.BaseRequest):
        if hdrs.IF_RANGE in request.headers or self._plan != "range":
            headers = CIMultiDict(request.headers)
            headers.popall(hdrs.IF_RANGE, None)  # decided already: aiohttp's own check is looser
            if self._plan != "range":
                headers.popall(hdrs.RANGE, None)
            if self._plan == "unsatisfiable":
                headers[hdrs.RANGE] = _PAST_THE_END
            request = request.clone(headers=headers)
        writer = await super().prepare(request)
        with_body = request.method != hdrs.METH_HEAD and self.status in (200, 206)
        self.bytes_sent = (self.content_length or 0) if with_body else 0
        return writer


class _FrontFile(web.Response):
    """The answer telling the front which file to send; ``bytes_sent`` is what the front will send."""

    bytes_sent: int | None = None


def _header_safe(path: str) -> bool:
    """A path the front can be told in a header (UTF-8, no control characters); else we send the file."""
    return not any(ord(c) < 32 or 127 <= ord(c) < 160 for c in path) and path == path.encode(
        "utf-8", "replace").decode("utf-8")


def _front_file(request: web.Request, found: _Found, plan: str, content_type: str, validators: tuple[str, int]
                ) -> web.Response:
    headers = {FRONT_FILE: str(found.path), FRONT_TYPE: content_type}
    range_header = front_range(request.headers.get(hdrs.RANGE, "")) if plan == "range" else ""
    if range_header:
        headers[FRONT_RANGE] = range_header
    planned = planned_bytes(range_header or None, found.st.st_size)
    # The status and body bytes the front will send, for the access log and the metrics.
    status = front_precondition(request.headers, *validators) or ((206 if planned else 416) if range_header else 200)
    response = _FrontFile(status=status, headers=headers)
    response.bytes_sent = planned if request.method != hdrs.METH_HEAD and status in (200, 206) else 0
    return response


def client_address(request: web.BaseRequest) -> str:
    """The subscriber's address: the peer's, or behind our TLS front the one it reports.

    Caddy replaces any X-Forwarded-For a client sends with the address it saw, so
    the last entry is trusted, and only on an app created with ``behind_proxy``.
    """
    app = getattr(request, "app", None)
    if app is not None and app.get(BEHIND_PROXY):
        forwarded = request.headers.get("X-Forwarded-For", "")
        if forwarded.strip():
            return forwarded.split(",")[-1].strip()
    return request.remote or ""


def _locate(provider: RootProvider, client: str, parts: tuple[str, ...]) -> _Found | None:
    """The file or folder ``parts`` names under the client's root, or None if it must not be served."""
    try:
        base = Path(provider(client, parts)).resolve(strict=True)  # once per request
        target = base.joinpath(*parts).resolve(strict=True)
        rel = target.relative_to(base)
        st = target.stat()
    except (OSError, RuntimeError, ValueError):  # missing, symlink loop, outside the root
        return None
    if is_hidden(rel.parts):
        return None  # a symlink into a dot-folder
    if not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)):
        return None
    return _Found(base, target, parts, st)


def _list_dir(folder: Path, base: Path) -> list[Entry]:
    """Entries of ``folder`` that would be served from ``base``: no dot-names or other refused names, no escapes."""
    entries = []
    for name in os.listdir(folder):
        if name_problem(name) is not None:
            continue
        try:
            real = (folder / name).resolve(strict=True)
            rel = real.relative_to(base)
            st = real.stat()
        except (OSError, RuntimeError, ValueError):
            continue
        if not is_hidden(rel.parts) and (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)):
            entries.append(Entry(name, stat.S_ISDIR(st.st_mode), st.st_size, st.st_mtime))
    return entries


class _Library:
    """The catch-all handler serving the current root."""

    def __init__(self, provider: RootProvider, browse: bool, not_ready: NotReady | None = None) -> None:
        self.provider = provider
        self.browse = browse
        self.not_ready = not_ready

    async def handle(self, request: web.Request) -> web.StreamResponse:
        parts = split_request_path(request.rel_url.raw_path)
        if parts is None or path_problem(parts) is not None:
            raise web.HTTPNotFound()
        found = await asyncio.to_thread(_locate, self.provider, client_address(request), parts)
        if found is None:
            if self.not_ready is not None and parts in NOT_READY_PATHS:
                doc = await asyncio.to_thread(self.not_ready)
                if doc is not None:
                    return web.json_response(doc, status=503, headers={
                        hdrs.RETRY_AFTER: str(NOT_READY_RETRY_AFTER), hdrs.CACHE_CONTROL: "no-store"})
            raise web.HTTPNotFound()
        if stat.S_ISDIR(found.st.st_mode):
            return await self._folder(request, found)
        front = FRONT_SENDS_FILES in request.app and request.app[FRONT_SENDS_FILES]
        if front:  # the validators Caddy sends: its ETag, Last-Modified in whole seconds rounded down
            etag, last_modified = front_etag(int(found.st.st_mtime), found.st.st_size), int(found.st.st_mtime)
        else:  # aiohttp's: Last-Modified in whole seconds, rounded up
            etag, last_modified = etag_of(found.st.st_mtime_ns, found.st.st_size), math.ceil(found.st.st_mtime)
        plan = range_plan(request.headers.get(hdrs.RANGE), request.headers.get(hdrs.IF_RANGE), etag, last_modified)
        name = parts[-1] if parts else ""
        if front and plan != "unsatisfiable" and _header_safe(str(found.path)):
            return _front_file(request, found, plan, content_type_for(name), (etag, last_modified))
        return _LibraryFile(found.path, plan=plan, content_type=content_type_for(name))

    async def _folder(self, request: web.Request, found: _Found) -> web.StreamResponse:
        if not self.browse:
            raise web.HTTPNotFound()
        raw = request.rel_url.raw_path
        if not raw.endswith("/"):
            raise web.HTTPMovedPermanently(raw + "/")
        try:
            entries = await asyncio.to_thread(_list_dir, found.path, found.base)
        except OSError:  # unreadable folder
            raise web.HTTPNotFound() from None
        page = render_listing(found.parts, entries)
        return web.Response(text=page, content_type="text/html", headers={"Cache-Control": "no-cache"})


def _auth_middleware(password: str):
    @web.middleware
    async def auth(request: web.Request, handler):
        # The reserved prefix does its own access checks (web/ops.py).
        if request.path.startswith(RESERVED_PREFIX) or check_basic_auth(
            request.headers.get(hdrs.AUTHORIZATION), password
        ):
            return await handler(request)
        raise web.HTTPUnauthorized(headers={hdrs.WWW_AUTHENTICATE: www_authenticate()})

    return auth


def create_app(
    root: Path | RootProvider, *, browse: bool = False, password: str | None = None, behind_proxy: bool = False,
    not_ready: NotReady | None = None, front_sends_files: bool = False,
) -> web.Application:
    """The web app serving ``root``: a folder, or a :data:`RootProvider` choosing one per request
    (e.g. ``publish.pins.GenerationPins``, which follows generation switches per subscriber).

    ``browse`` enables HTML folder listings (otherwise a folder, ``/`` included, is 404);
    ``password`` requires HTTP Basic auth as user ``vcsp`` on every path outside RESERVED_PREFIX;
    ``behind_proxy`` takes client addresses from X-Forwarded-For (see :func:`client_address`);
    ``not_ready`` (the site's) is asked when ``lib.json`` or ``items.json`` is missing: a document
    it returns is sent with 503 (:func:`not_ready_document`), None keeps the 404;
    ``front_sends_files`` (only behind our Caddy front) answers a file with the headers that make
    the front send it.
    """
    provider: RootProvider = root if callable(root) else (lambda client, parts: root)
    app = web.Application(middlewares=[_auth_middleware(password)] if password else [])
    app[BEHIND_PROXY] = behind_proxy or front_sends_files
    app[FRONT_SENDS_FILES] = front_sends_files
    app[ROOT_PROVIDER] = provider
    # Every path but the reserved prefix; aiohttp adds HEAD to GET routes.
    app.router.add_get(r"/{path:(?!" + RESERVED_SEGMENT + r"(/|$)).*}", _Library(provider, browse, not_ready).handle,
                       name="library")
    return app
