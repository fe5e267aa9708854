"""The plain-HTTP port beside HTTPS with given certificate files: every request is redirected
(308) to the same path over HTTPS, as the original's Caddy front did.

:func:`https_location` is the pure rule; :func:`redirect_app` the aiohttp app using it.
"""

from __future__ import annotations

from aiohttp import web


def https_location(host_header: str | None, path_qs: str, *, name: str | None, https_port: int) -> str:
    """The HTTPS URL for a plain-HTTP request: host ``name`` (TLS_NAME) if set, else the request's
    Host without its port; the port only when it is not 443."""
    host = name
    if not host:
        host = (host_header or "localhost").strip()
        if host.startswith("["):  # [v6]:port
            host = host[: host.find("]") + 1] or host
        elif host.count(":") == 1:
            host = host.split(":", 1)[0]
    port = "" if https_port == 443 else f":{https_port}"
    return f"https://{host}{port}{path_qs if path_qs.startswith('/') else '/' + path_qs}"


def redirect_app(name: str | None, https_port: int) -> web.Application:
    """An app answering every request with a 308 redirect to HTTPS."""

    async def handler(request: web.Request) -> web.Response:
        location = https_location(request.headers.get("Host"), request.rel_url.raw_path_qs, name=name,
                                  https_port=https_port)
        return web.Response(status=308, headers={"Location": location})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    return app
