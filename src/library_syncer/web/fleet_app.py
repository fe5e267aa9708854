"""The server's small web server: the fleet view under ``/_syncer/``, the same layout as a site's.

=========================  ======  ===================================================
path                       access  answer
=========================  ======  ===================================================
``/_syncer/``              read    HTML fleet page (one row per site)
``/_syncer/api/fleet``     read    the fleet document (JSON, :meth:`Fleet.snapshot`)
``/_syncer/metrics``       read    Prometheus text (own registry, series below)
``/_syncer/healthz``       open    200 while sshd runs, else 503
``/healthz``               open    the same (health checks that do not follow redirects)
``/``, ``/api/fleet``,     read    308 to the paths above (the paths of earlier versions)
``/metrics``
=========================  ======  ===================================================

The routes are the shared ops routes (:mod:`.ops`) with their one access rule:
"read" needs the admin token when one is set (``Authorization: Bearer TOKEN`` or
HTTP Basic with any user name and the token as password, so a browser can open
the page); without one, it is open.
"""

from __future__ import annotations

import logging
from functools import partial
from typing import Callable, Iterator

from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from ..errors import ConfigError
from ..fleet.model import RESULTS, STATES, Fleet
from ..util.net import host_port
from .metrics import new_registry, render
from .ops import P, OpsSurface, add_ops_routes, check_access
from .pages.fleet import render_fleet_page
from .runner import AccessLogger, access_log

log = logging.getLogger(__name__)
MOVED = {"/": "", "/api/fleet": "api/fleet", "/metrics": "metrics"}  # old path -> path under /_syncer/


class FleetCollector:
    """Prometheus series read from the fleet at each scrape (sites with a key only)."""

    def __init__(self, fleet: Fleet, document: Callable[[], dict] | None = None) -> None:
        self.fleet = fleet
        self.document = document or fleet.snapshot

    def collect(self) -> Iterator[Metric]:
        doc = self.document()
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
        yield from _publication_metrics(doc)
        yield CounterMetricFamily("library_syncer_unknown_key_attempts",
                                  "Connections refused whose key belongs to no site",
                                  value=doc["unknown_keys"]["attempts"])
        yield GaugeMetricFamily("library_syncer_sshd_up", "1 while sshd listens", value=1 if doc["sshd"]["up"] else 0)
        yield CounterMetricFamily("library_syncer_sshd_restarts", "Times sshd exited unexpectedly and was restarted",
                                  value=doc["sshd"]["restarts"])


def _publication_metrics(doc: dict) -> Iterator[Metric]:
    """Series from the sites' reports (see fleet/truth.py), for alerts such as "sites behind per item" or
    ``library_syncer_site_seconds_since_last_success > 86400``."""
    behind = GaugeMetricFamily("library_syncer_site_origin_versions_behind",
                               "Origin versions the site's publication is behind the primary (from its report)",
                               labels=["site"])
    held = GaugeMetricFamily("library_syncer_site_items_held_back", "Items the site holds back (from its report)",
                             labels=["site"])
    items_behind = GaugeMetricFamily("library_syncer_site_items_behind",
                                     "Items the site publishes at an older version (from its report)", labels=["site"])
    since_ok = GaugeMetricFamily("library_syncer_site_seconds_since_last_success",
                                 "Seconds since the site's last successful sync (from its report)", labels=["site"])
    report_age = GaugeMetricFamily("library_syncer_site_report_age_seconds",
                                   "Seconds since the site's latest report was received", labels=["site"])
    stale = GaugeMetricFamily("library_syncer_site_report_stale",
                              "1 when the site's latest report is older than site_silent_after_seconds",
                              labels=["site"])
    reported = GaugeMetricFamily("library_syncer_site_publication_state",
                                 "1 for the site's publication state (no report, silent, held back, behind, unknown, "
                                 "current)", labels=["site", "state", "via"])
    per_item = GaugeMetricFamily("library_syncer_item_sites_not_current",
                                 "Reporting sites that do not publish the item's current version", labels=["item"])
    per_item_ok = GaugeMetricFamily("library_syncer_item_sites_current",
                                    "Reporting sites that publish the item's current version", labels=["item"])
    by_state = GaugeMetricFamily("library_syncer_sites_by_publication_state",
                                 "Sites per publication state (from their reports)", labels=["state"])
    for s in doc["sites"]:
        if not (s.get("key") or s.get("relayed")):
            continue
        pub, name = s.get("publication"), s["site"]
        if pub is None:
            reported.add_metric([name, "no report", ""], 1)
            continue
        reported.add_metric([name, pub["state"], "/".join(pub.get("via") or [])], 1)
        if pub["versions_behind"] is not None:
            behind.add_metric([name], pub["versions_behind"])
        held.add_metric([name], len(pub["held_back"]))
        items_behind.add_metric([name], len(pub["items_behind"]))
        if pub.get("seconds_since_success") is not None:
            since_ok.add_metric([name], pub["seconds_since_success"])
        if pub.get("report_age_seconds") is not None:
            report_age.add_metric([name], pub["report_age_seconds"])
        stale.add_metric([name], 1 if pub.get("stale") else 0)
    for name, item in (doc.get("items") or {}).items():
        per_item.add_metric([name], len(item["sites_not_current"]))
        per_item_ok.add_metric([name], item["sites_current"])
    for state, n in (doc.get("publication_summary") or {}).items():
        by_state.add_metric([state], n)
    yield from (behind, held, items_behind, since_ok, report_age, stale, reported, per_item, per_item_ok, by_state)


def metrics_registry(fleet: Fleet, document: Callable[[], dict] | None = None) -> CollectorRegistry:
    """A registry of its own (not the process-global one) holding the fleet's series."""
    registry = new_registry()
    registry.register(FleetCollector(fleet, document))
    return registry


def fleet_surface(fleet: Fleet, *, refresh_seconds: int = 30,
                  enrich: Callable[[dict], dict] | None = None) -> OpsSurface:
    """The fleet page, ``api/fleet``, metrics and health (sshd up) as ops routes; ``enrich`` adds what
    the sites report (fleet/reports.py) to the fleet document."""

    def document() -> dict:
        return enrich(fleet.snapshot()) if enrich is not None else fleet.snapshot()

    registry = metrics_registry(fleet, document)

    def health() -> tuple[bool, str]:
        if fleet.snapshot()["sshd"]["up"]:
            return True, "ok: sshd is running\n"
        return False, "sshd is not running\n"

    return OpsSurface("fleet", document, partial(render_fleet_page, refresh_seconds=refresh_seconds),
                      partial(render, registry), health=health)


def make_fleet_app(fleet: Fleet, *, token: str | None, refresh_seconds: int = 30,
                   enrich: Callable[[dict], dict] | None = None) -> web.Application:
    """The fleet web app (see the module doc for its paths)."""
    surface = fleet_surface(fleet, refresh_seconds=refresh_seconds, enrich=enrich)
    app = web.Application()
    add_ops_routes(app, surface, token=token)

    async def moved(request: web.Request) -> web.Response:
        # The same rule as the new path: an old bookmark without the token learns nothing, and a
        # browser that logged in here sends its credentials on to the new path (same realm).
        check_access(request, "read", token=token, password=None)
        target = P + MOVED[request.path]
        raise web.HTTPPermanentRedirect(target + (f"?{request.query_string}" if request.query_string else ""))

    async def healthz(request: web.Request) -> web.Response:
        alive, text = surface.health()
        return web.Response(status=200 if alive else 503, text=text)

    for old in MOVED:
        app.router.add_get(old, moved)
    app.router.add_get("/healthz", healthz)
    return app


async def start_fleet_server(app: web.Application, host: str, port: int) -> web.AppRunner:
    """Start serving ``app`` on host:port (stop with ``runner.cleanup()``); ConfigError if it cannot bind."""
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=2,
                           access_log_class=AccessLogger, access_log=access_log)
    await runner.setup()
    shown = host_port(host, port)
    try:
        await web.TCPSite(runner, host, port).start()
    except OSError as exc:
        await runner.cleanup()
        raise ConfigError(f"setting fleet_port: cannot listen on {shown} ({exc.strerror or exc})") from None
    log.info("fleet view, metrics and health on http://%s%s", shown, P)
    return runner
