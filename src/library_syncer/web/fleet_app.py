"""The server's small web server: fleet view, JSON API, Prometheus metrics, health.

=================  ======  ===================================================
path               access  answer
=================  ======  ===================================================
``/``              token   HTML fleet page (one row per site)
``/api/fleet``     token   the fleet document (JSON, :meth:`Fleet.snapshot`)
``/metrics``       token   Prometheus text (own registry, series below)
``/healthz``       open    200 while sshd runs, else 503
=================  ======  ===================================================

"token": with an admin token set, ``Authorization: Bearer TOKEN`` or HTTP
Basic with any user name and the token as password (so a browser can open the
page); without one, open.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Callable, Iterator

from aiohttp import hdrs, web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from ..fleet.model import RESULTS, STATES, Fleet
from ..errors import ConfigError
from .pages.fleet import render_fleet_page
from .rules import check_admin_token
from .runner import AccessLogger, access_log

log = logging.getLogger(__name__)
REALM = "library-syncer fleet"
METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class FleetCollector:
    """Prometheus series read from the fleet at each scrape (sites with a key only)."""

    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet

    def collect(self) -> Iterator[Metric]:
        doc = self.fleet.snapshot()
        summary = doc["summary"]
        yield GaugeMetricFamily("library_syncer_sites", "Sites with a key in the keys folder",
                                value=summary["sites"])
        yield GaugeMetricFamily("library_syncer_sites_silent",
                                "Sites not seen for longer than site_silent_after_seconds (or never)",
                                value=summary["silent"])
        by_state = GaugeMetricFamily("library_syncer_sites_by_state", "Sites per fleet-view state", labels=["state"])
        for state in STATES:
            by_state.add_metric([state], summary[state.replace(" ", "_")])
        yield by_state
        seen = GaugeMetricFamily("library_syncer_site_last_seen_timestamp_seconds",
                                 "When the site last connected or ended a session (Unix time)", labels=["site"])
        duration = GaugeMetricFamily("library_syncer_site_last_sync_duration_seconds",
                                     "Duration of the site's latest finished session", labels=["site"])
        last_ok = GaugeMetricFamily("library_syncer_site_last_sync_ok",
                                    "1 when the site's latest session ended cleanly, else 0", labels=["site"])
        silent = GaugeMetricFamily("library_syncer_site_silent", "1 when the site is flagged silent",
                                   labels=["site"])
        syncing = GaugeMetricFamily("library_syncer_site_syncing", "1 while the site has a session open",
                                    labels=["site"])
        sessions = CounterMetricFamily("library_syncer_site_sessions", "Finished sessions of the site by result",
                                       labels=["site", "result"])
        for s in doc["sites"]:
            if not s["key"]:
                continue
            name = s["site"]
            silent.add_metric([name], 1 if s["silent"] else 0)
            syncing.add_metric([name], 1 if s["syncing_since"] else 0)
            if s["last_seen_timestamp"] is not None:
                seen.add_metric([name], s["last_seen_timestamp"])
            if s["last_sync"] is not None:
                duration.add_metric([name], s["last_sync"]["duration_seconds"] or 0.0)
                last_ok.add_metric([name], 1 if s["last_sync"]["result"] == "ok" else 0)
            for result in RESULTS:
                sessions.add_metric([name, result], s["sessions"][result])
        yield from (seen, duration, last_ok, silent, syncing, sessions)
        yield CounterMetricFamily("library_syncer_unknown_key_attempts",
                                  "Connections refused whose key belongs to no site",
                                  value=doc["unknown_keys"]["attempts"])
        yield GaugeMetricFamily("library_syncer_sshd_up", "1 while sshd listens", value=1 if doc["sshd"]["up"] else 0)
        yield CounterMetricFamily("library_syncer_sshd_restarts", "Times sshd exited unexpectedly and was restarted",
                                  value=doc["sshd"]["restarts"])


def metrics_registry(fleet: Fleet) -> CollectorRegistry:
    """A registry of its own (not the process-global one) holding the fleet's series."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(FleetCollector(fleet))
    return registry


def make_fleet_app(fleet: Fleet, *, token: str | None, refresh_seconds: int = 30) -> web.Application:
    """The fleet web app (see the module doc for its paths)."""
    registry = metrics_registry(fleet)

    @web.middleware
    async def require_token(request: web.Request, handler: Callable) -> web.StreamResponse:
        if token and request.path != "/healthz" and not check_admin_token(request.headers.get(hdrs.AUTHORIZATION), token):
            raise web.HTTPUnauthorized(text="admin token required\n",
                                       headers={hdrs.WWW_AUTHENTICATE: f'Basic realm="{REALM}", charset="UTF-8"'})
        return await handler(request)

    async def page(request: web.Request) -> web.Response:
        html = render_fleet_page(fleet.snapshot(), refresh_seconds=refresh_seconds)
        return web.Response(text=html, content_type="text/html", headers={"Cache-Control": "no-store"})

    async def api(request: web.Request) -> web.Response:
        return web.json_response(fleet.snapshot(), dumps=_dumps, headers={"Cache-Control": "no-store"})

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(registry), headers={hdrs.CONTENT_TYPE: METRICS_CONTENT_TYPE})

    async def healthz(request: web.Request) -> web.Response:
        if fleet.snapshot()["sshd"]["up"]:
            return web.Response(text="ok: sshd is running\n")
        return web.Response(status=503, text="sshd is not running\n")

    app = web.Application(middlewares=[require_token])
    app.router.add_get("/", page)
    app.router.add_get("/api/fleet", api)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    return app


def _dumps(data: Any) -> str:
    return json.dumps(data, indent=1)


async def start_fleet_server(app: web.Application, host: str, port: int) -> web.AppRunner:
    """Start serving ``app`` on host:port (stop with ``runner.cleanup()``); ConfigError if it cannot bind."""
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=2,
                           access_log_class=AccessLogger, access_log=access_log)
    await runner.setup()
    shown = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        await web.TCPSite(runner, host, port).start()
    except OSError as exc:
        await runner.cleanup()
        raise ConfigError(f"setting fleet_port: cannot listen on {shown} ({exc.strerror or exc})") from None
    log.info("fleet view, metrics and health on http://%s/", shown)
    return runner
