"""The shared ops routes under /_syncer/ of the site and the fleet view, in-process (aiohttp's test client):
one layout, one access rule, one realm, one metrics format; the fleet's old paths redirect."""

from __future__ import annotations

import asyncio
import base64
from datetime import datetime, timedelta, timezone
from typing import Any

from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families

from library_syncer.fleet.model import Fleet
from library_syncer.roles.site_status import client_status
from library_syncer.util.fmt import iso_utc
from library_syncer.web.app import create_app
from library_syncer.web.fleet_app import make_fleet_app
from library_syncer.web.metrics import CONTENT_TYPE
from library_syncer.web.ops import add_status_routes
from library_syncer.web.rules import www_authenticate

TOKEN = "ops-token-7c1d"
BEARER = {"Authorization": f"Bearer {TOKEN}"}
PARIS = "SHA256:paris"


class Site:
    """What the site's routes ask the daemon (a fixed status document)."""

    def status(self) -> dict[str, Any]:
        return {"site": "paris", "ready": False, "ready_reason": "nothing published yet"}

    def metrics(self) -> bytes:
        return b"# HELP library_syncer_items Items\n# TYPE library_syncer_items gauge\nlibrary_syncer_items 3.0\n"

    def start_sync(self, trigger: str) -> tuple[bool, str]:
        return True, "run-1"


def fleet() -> Fleet:
    f = Fleet({PARIS: "branch-paris"}, silent_after=3600, clock=lambda: 1_800_000_000.0)
    f.feed("Server listening on 127.0.0.1 port 2222.")
    return f


def site_app(tmp_path, *, token: str | None = None, password: str | None = None):
    app = create_app(tmp_path, password=password)
    add_status_routes(app, Site(), token=token, password=password)
    return app


def run(app, requests):
    """Answers (status, headers, body) of (method, path, headers) requests, redirects not followed."""
    async def go():
        async with TestClient(TestServer(app)) as client:
            out = []
            for method, path, headers in requests:
                r = await client.request(method, path, headers=headers or {}, allow_redirects=False)
                out.append((r.status, r.headers, await r.text()))
            return out
    return asyncio.run(go())


def test_fleet_view_under_syncer_with_the_old_paths_redirecting():
    app = make_fleet_app(fleet(), token=TOKEN)
    answers = run(app, [
        ("GET", "/", BEARER), ("GET", "/api/fleet?x=1", BEARER), ("GET", "/metrics", BEARER),
        ("GET", "/_syncer/", BEARER), ("GET", "/_syncer/api/fleet", BEARER), ("GET", "/_syncer/metrics", BEARER),
        ("GET", "/_syncer/healthz", None), ("GET", "/healthz", None),
    ])
    moved = [(s, h.get("Location")) for s, h, _ in answers[:3]]
    assert moved == [(308, "/_syncer/"), (308, "/_syncer/api/fleet?x=1"), (308, "/_syncer/metrics")]
    (page, _, html), (api, api_headers, doc), (metrics, metrics_headers, text) = answers[3:6]
    assert page == 200 and "Fleet of sites" in html
    assert api == 200 and '"branch-paris"' in doc and api_headers["Cache-Control"] == "no-store"
    assert metrics == 200 and metrics_headers["Content-Type"] == CONTENT_TYPE
    assert "library_syncer_sshd_up" in {f.name for f in text_string_to_metric_families(text)}
    # health answers directly on both paths (health checks that do not follow redirects)
    assert [(s, b) for s, _, b in answers[6:]] == [(200, "ok: sshd is running\n")] * 2


def test_fleet_old_paths_need_the_token_before_they_redirect():
    answers = run(make_fleet_app(fleet(), token=TOKEN), [("GET", p, None) for p in ("/", "/api/fleet", "/metrics")])
    assert [(s, h["WWW-Authenticate"]) for s, h, _ in answers] == [(401, www_authenticate())] * 3


def test_one_realm_for_the_library_the_site_ops_and_the_fleet(tmp_path):
    basic_wrong = {"Authorization": "Basic " + base64.b64encode(b"vcsp:wrong").decode()}
    library = run(site_app(tmp_path, password="secret"), [("GET", "/lib.json", basic_wrong)])
    site = run(site_app(tmp_path, password="secret"), [("GET", "/_syncer/api/status", basic_wrong)])
    site_token = run(site_app(tmp_path, token=TOKEN), [("GET", "/_syncer/", None)])
    fleet_ = run(make_fleet_app(fleet(), token=TOKEN), [("GET", "/_syncer/api/fleet", None)])
    for status, headers, _ in (*library, *site, *site_token, *fleet_):
        assert status == 401 and headers["WWW-Authenticate"] == 'Basic realm="library-syncer", charset="UTF-8"'
    assert site_token[0][2] == fleet_[0][2] == "admin token required\n"


def test_site_and_fleet_share_the_routes_and_the_metrics_format(tmp_path):
    site = run(site_app(tmp_path), [("GET", "/_syncer/metrics", None), ("GET", "/_syncer/healthz", None),
                                    ("GET", "/_syncer/readyz", None), ("GET", "/_syncer", None),
                                    ("POST", "/_syncer/api/sync", None)])
    fleet_ = run(make_fleet_app(fleet(), token=None), [("GET", "/_syncer/metrics", None), ("GET", "/_syncer", None),
                                                      ("GET", "/_syncer/readyz", None),
                                                      ("POST", "/_syncer/api/sync", None)])
    assert site[0][1]["Content-Type"] == fleet_[0][1]["Content-Type"] == CONTENT_TYPE
    assert (site[1][0], site[1][2]) == (200, "ok\n")
    assert (site[2][0], site[2][2]) == (503, "not ready: nothing published yet\n")
    assert site[3][0] == fleet_[1][0] == 302 and site[3][1]["Location"] == fleet_[1][1]["Location"] == "/_syncer/"
    assert site[4][0] == 202  # from loopback without a token
    assert fleet_[2][0] == 404 and fleet_[3][0] in (404, 405)  # site only


def test_fleet_health_is_503_on_both_paths_while_sshd_is_down():
    answers = run(make_fleet_app(Fleet({}, silent_after=60), token=TOKEN),
                  [("GET", "/healthz", None), ("GET", "/_syncer/healthz", None)])
    assert [(s, b) for s, _, b in answers] == [(503, "sshd is not running\n")] * 2


def test_one_iso_time_format():
    when = datetime(2026, 5, 1, 21, 0, 3, 500_000, tzinfo=timezone.utc)
    assert iso_utc(when.timestamp()) == iso_utc(when) == "2026-05-01T21:00:03Z"
    assert iso_utc(when.astimezone(timezone(timedelta(hours=2)))) == "2026-05-01T21:00:03Z"
    assert iso_utc(None) is None
    assert fleet().snapshot()["generated_at"] == iso_utc(1_800_000_000.0)
    # the site's status document (GET /_syncer/api/status) has the fleet's format
    berlin = timezone(timedelta(hours=2))
    doc = client_status(site="s", history=[], running=None, next_run=when.astimezone(berlin), published=None,
                        now=when, stale_after=60, schedule="0 21 * * 5", tz=None, peer=None, thumbprint=None)
    assert doc["now"] == doc["next_run"] == "2026-05-01T21:00:03Z"


def test_status_command_shows_the_next_run_in_the_site_zone(capsys):
    from library_syncer.cli.status import _print

    when = datetime(2026, 5, 1, 19, 0, tzinfo=timezone.utc)
    doc = client_status(site="s", history=[], running=None, next_run=when, published=None, now=when,
                        stale_after=60, schedule="0 21 * * 5", tz="Europe/Berlin", peer=None, thumbprint=None)
    _print(doc)
    assert "next run:  2026-05-01T21:00:00+02:00 (schedule 0 21 * * 5, Europe/Berlin)" in capsys.readouterr().out
