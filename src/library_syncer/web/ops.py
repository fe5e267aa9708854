"""The site's own endpoints under ``/_syncer/``: status page, JSON API, metrics, health, on-demand sync.

=========================  ======  =====================================================
path                       access  answer
=========================  ======  =====================================================
``/_syncer/``              read    HTML status page
``/_syncer/api/status``    read    the status document (JSON)
``/_syncer/api/sync``      write   POST: start a sync now -> 202 ``{"run_id"}``, 409 if one runs
``/_syncer/metrics``       read    Prometheus text
``/_syncer/healthz``       open    200 while the daemon is alive
``/_syncer/readyz``        open    200 when published and recently synced, else 503 with the reason
=========================  ======  =====================================================

Access rules are :func:`rules.status_access`: with an admin token set, read and
write need it; without one, read needs the library password if there is one and
write is allowed from loopback only.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, Protocol

from aiohttp import hdrs, web

from .app import RESERVED_PREFIX, client_address
from .rules import is_loopback, status_access
from .pages.site import render_status

P = RESERVED_PREFIX


class StatusSource(Protocol):
    """What the endpoints ask the daemon."""

    def status(self) -> dict[str, Any]: ...  # may read files: called in a worker thread

    def metrics(self) -> bytes: ...  # called in a worker thread

    def start_sync(self, trigger: str) -> tuple[bool, str]: ...  # (started, run id)


def add_status_routes(app: web.Application, source: StatusSource, *, token: str | None,
                      password: str | None) -> None:
    """Add the ``/_syncer/`` endpoints to ``app``."""

    def allow(request: web.Request, action: str) -> None:
        if status_access(action, header=request.headers.get(hdrs.AUTHORIZATION), token=token,
                         password=password, loopback=is_loopback(client_address(request))):
            return
        if action == "write" and not token:
            raise web.HTTPForbidden(text="on-demand syncs from another host need an admin token "
                                         "(setting admin_token / SYNCER_ADMIN_TOKEN)\n")
        raise web.HTTPUnauthorized(headers={hdrs.WWW_AUTHENTICATE: 'Basic realm="library-syncer status"'})

    async def page(request: web.Request) -> web.Response:
        allow(request, "read")
        status = await asyncio.to_thread(source.status)
        return web.Response(text=render_status(status), content_type="text/html",
                            headers={"Cache-Control": "no-store"})

    async def api_status(request: web.Request) -> web.Response:
        allow(request, "read")
        return web.json_response(await asyncio.to_thread(source.status), dumps=_dumps)

    async def api_sync(request: web.Request) -> web.Response:
        allow(request, "write")
        started, run_id = source.start_sync("on demand")
        if started:
            return web.json_response({"started": True, "run_id": run_id}, status=202)
        return web.json_response({"started": False, "running": run_id,
                                  "reason": "a sync is already running"}, status=409)

    async def metrics(request: web.Request) -> web.Response:
        allow(request, "read")
        return web.Response(body=await asyncio.to_thread(source.metrics), headers={hdrs.CONTENT_TYPE: "text/plain; version=0.0.4"})

    async def healthz(request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def readyz(request: web.Request) -> web.Response:
        status = await asyncio.to_thread(source.status)
        if status["ready"]:
            return web.Response(text="ready\n")
        return web.Response(status=503, text=f"not ready: {status['ready_reason']}\n")

    async def to_page(request: web.Request) -> web.Response:
        raise web.HTTPFound(P)

    app.router.add_get(P.rstrip("/"), to_page)
    app.router.add_get(P, page)
    app.router.add_get(P + "api/status", api_status)
    app.router.add_post(P + "api/sync", api_sync)
    app.router.add_get(P + "metrics", metrics)
    app.router.add_get(P + "healthz", healthz)
    app.router.add_get(P + "readyz", readyz)


def _dumps(data: Any) -> str:
    return json.dumps(data, indent=1)
