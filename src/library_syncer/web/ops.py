"""The ops routes under ``/_syncer/``, one set for both roles: the site (client) and the fleet view (server).

============================  ======  =====================================================
path                          access  answer
============================  ======  =====================================================
``/_syncer/``                 read    HTML page (the site's status, or the fleet of sites)
``/_syncer/api/<name>``       read    the page's document as JSON: ``api/status`` or ``api/fleet``
``/_syncer/api/sync``         write   site only: POST starts a sync -> 202 ``{"run_id"}``, 409 if one runs
``/_syncer/metrics``          read    Prometheus text (:mod:`.metrics`)
``/_syncer/healthz``          open    200 while the role is alive (the server: while sshd runs, else 503)
``/_syncer/readyz``           open    site only: 200 when published and recently synced, else 503
============================  ======  =====================================================

One access rule, :func:`rules.status_access`: with an admin token set, read and
write need it (``Bearer TOKEN`` or Basic with the token as password); without
one, read needs the library password if there is one and write is allowed from
loopback only. A refusal names one realm, :func:`rules.www_authenticate`.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any, Callable, Protocol

from aiohttp import hdrs, web

from .app import RESERVED_PREFIX, client_address
from .metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from .pages.site import render_status
from .rules import is_loopback, status_access, www_authenticate

P = RESERVED_PREFIX
NO_STORE = {"Cache-Control": "no-store"}


@dataclass(frozen=True)
class OpsSurface:
    """What one role shows under ``/_syncer/``; the callables that may read files run in a worker thread."""

    api_name: str  # the document's path: api/<api_name>
    document: Callable[[], dict[str, Any]]  # worker thread
    render_page: Callable[[dict[str, Any]], str]  # the HTML page of a document (pure)
    metrics: Callable[[], bytes]  # worker thread
    health: Callable[[], tuple[bool, str]] = lambda: (True, "ok\n")  # (alive, text)
    readiness: Callable[[dict[str, Any]], tuple[bool, str]] | None = None  # readyz from a document
    start_sync: Callable[[str], tuple[bool, str]] | None = None  # POST api/sync: (started, run id)


def check_access(request: web.Request, action: str, *, token: str | None, password: str | None) -> None:
    """Let the request through or raise 401 (naming the one realm) or 403: :func:`rules.status_access`."""
    if status_access(action, header=request.headers.get(hdrs.AUTHORIZATION), token=token,
                     password=password, loopback=is_loopback(client_address(request))):
        return
    if action == "write" and not token:
        raise web.HTTPForbidden(text="on-demand syncs from another host need an admin token "
                                     "(setting admin_token / SYNCER_ADMIN_TOKEN)\n")
    needed = "admin token" if token else "library password"
    raise web.HTTPUnauthorized(text=f"{needed} required\n", headers={hdrs.WWW_AUTHENTICATE: www_authenticate()})


def add_ops_routes(app: web.Application, surface: OpsSurface, *, token: str | None,
                   password: str | None = None) -> None:
    """Add the ``/_syncer/`` routes of ``surface`` to ``app`` (see the module doc)."""

    def allow(request: web.Request, action: str) -> None:
        check_access(request, action, token=token, password=password)

    async def page(request: web.Request) -> web.Response:
        allow(request, "read")
        doc = await asyncio.to_thread(surface.document)
        return web.Response(text=surface.render_page(doc), content_type="text/html", headers=NO_STORE)

    async def api(request: web.Request) -> web.Response:
        allow(request, "read")
        return web.json_response(await asyncio.to_thread(surface.document), dumps=_dumps, headers=NO_STORE)

    async def metrics(request: web.Request) -> web.Response:
        allow(request, "read")
        return web.Response(body=await asyncio.to_thread(surface.metrics),
                            headers={hdrs.CONTENT_TYPE: METRICS_CONTENT_TYPE})

    async def healthz(request: web.Request) -> web.Response:
        alive, text = surface.health()
        return web.Response(status=200 if alive else 503, text=text)

    async def to_page(request: web.Request) -> web.Response:
        raise web.HTTPFound(P)

    app.router.add_get(P.rstrip("/"), to_page)
    app.router.add_get(P, page)
    app.router.add_get(P + "api/" + surface.api_name, api)
    app.router.add_get(P + "metrics", metrics)
    app.router.add_get(P + "healthz", healthz)
    if surface.start_sync is not None:
        start_sync = surface.start_sync

        async def api_sync(request: web.Request) -> web.Response:
            allow(request, "write")
            started, run_id = start_sync("on demand")
            if started:
                return web.json_response({"started": True, "run_id": run_id}, status=202)
            return web.json_response({"started": False, "running": run_id,
                                      "reason": "a sync is already running"}, status=409)

        app.router.add_post(P + "api/sync", api_sync)
    if surface.readiness is not None:
        readiness = surface.readiness

        async def readyz(request: web.Request) -> web.Response:
            ready, text = readiness(await asyncio.to_thread(surface.document))
            return web.Response(status=200 if ready else 503, text=text)

        app.router.add_get(P + "readyz", readyz)


class StatusSource(Protocol):
    """What the site's routes ask the client daemon."""

    def status(self) -> dict[str, Any]: ...  # may read files: called in a worker thread

    def metrics(self) -> bytes: ...  # called in a worker thread

    def start_sync(self, trigger: str) -> tuple[bool, str]: ...  # (started, run id)


def site_surface(source: StatusSource) -> OpsSurface:
    """The site's status page, ``api/status``, on-demand sync, metrics, health and readiness."""
    return OpsSurface("status", source.status, render_status, source.metrics,
                      readiness=_site_readiness, start_sync=source.start_sync)


def _site_readiness(status: dict[str, Any]) -> tuple[bool, str]:
    if status["ready"]:
        return True, "ready\n"
    return False, f"not ready: {status['ready_reason']}\n"


def add_status_routes(app: web.Application, source: StatusSource, *, token: str | None,
                      password: str | None) -> None:
    """Add the site's ``/_syncer/`` routes to ``app``."""
    add_ops_routes(app, site_surface(source), token=token, password=password)


def _dumps(data: Any) -> str:
    return json.dumps(data, indent=1)
