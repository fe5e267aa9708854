"""The site's web apps as the client daemon wires them (the real ClientDaemon, its settings, a generation
published by a real local sync), served in-process by aiohttp's test server: one app for the whole module.
The same surface in a real client process, with syncs over sshd, is test_client_operability.py's."""

from __future__ import annotations

import base64
import html
import json

import pytest
from prometheus_client.parser import text_string_to_metric_families

from inprocess import AppClient
from library_syncer.config import load_settings
from library_syncer.roles.client import ClientDaemon
from library_syncer.sample import make_sample_library
from library_syncer.sync.run import run_sync

TOKEN = "site-web-token-5b2e"
PASSWORD = "library-pw"
BEARER = {"Authorization": f"Bearer {TOKEN}"}


def basic(user: str, password: str) -> dict:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def daemon_for(root, **extra) -> ClientDaemon:
    settings = load_settings(library=root / "L", state_dir=root / "state", sync_peer="127.0.0.1",
                             library_name="Branch 9", admin_token=TOKEN, library_password=PASSWORD, **extra)
    return ClientDaemon(settings)


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    """A site folder with generation 1 published from the sample library (real rsync, local)."""
    root = tmp_path_factory.mktemp("site")
    items = make_sample_library(root / "primary", disk_size=64 * 1024)
    settings = load_settings(library=root / "L", state_dir=root / "state", library_name="Branch 9")
    assert run_sync(settings, source=str(root / "primary")).ok
    return root, items


@pytest.fixture(scope="module")
def site(published):
    library_app, status_app = daemon_for(published[0])._apps()
    assert status_app is None  # no status port: /_syncer/ on the library app
    with AppClient(library_app) as client:
        yield client


@pytest.mark.parametrize("path", ["/_syncer/", "/_syncer/api/status", "/_syncer/metrics"])
def test_the_admin_token_guards_page_api_and_metrics(site, path):
    for headers in (None, {"Authorization": "Bearer wrong"}, basic("admin", "wrong"), basic("vcsp", PASSWORD)):
        r = site.get(path, headers=headers)
        assert r.status == 401 and r.headers["WWW-Authenticate"].startswith("Basic realm="), (path, headers)
    assert site.get(path, headers=BEARER).status == 200
    assert site.get(path, headers=basic("admin", TOKEN)).status == 200  # a browser's Basic prompt


def test_health_is_open_and_a_sync_needs_the_token(site):
    r = site.get("/_syncer/healthz")
    assert (r.status, r.text) == (200, "ok\n")
    assert site.post("/_syncer/api/sync").status == 401
    assert site.post("/_syncer/api/sync", headers={"Authorization": "Bearer wrong"}).status == 401
    r = site.get("/_syncer", headers=basic("vcsp", PASSWORD), allow_redirects=False)
    assert r.status == 302 and r.headers["Location"] == "/_syncer/"


def test_the_status_document_and_page_show_the_published_generation(site, published):
    _, items = published
    doc = json.loads(site.get("/_syncer/api/status", headers=BEARER).text)
    assert doc["site"] == "Branch 9" and doc["published"]["generation"] == 1
    assert sorted(i["name"] for i in doc["published"]["items"]) == sorted(items)
    page = site.get("/_syncer/", headers=BEARER)
    assert page.headers["Content-Type"].startswith("text/html") and page.headers["Cache-Control"] == "no-store"
    assert "<h1>Branch 9</h1>" in page.text and "<dt>Generation</dt><dd>1</dd>" in page.text
    for item in items:  # names as HTML text ("readme & notes" escaped)
        assert html.escape(item) in page.text, item
    assert TOKEN not in page.text and PASSWORD not in page.text


def test_metrics_are_prometheus_text_with_the_library_gauges(site, published):
    r = site.get("/_syncer/metrics", headers=BEARER)
    assert r.headers["Content-Type"].startswith("text/plain")
    samples = {s.name: s.value for f in text_string_to_metric_families(r.text) for s in f.samples if not s.labels}
    assert samples["library_syncer_items"] == len(published[1])
    assert samples["library_syncer_published_generation"] == 1 and samples["library_syncer_library_bytes"] > 0


def test_the_library_password_guards_the_library_not_the_ops_routes(site):
    assert site.get("/lib.json").status == 401
    assert site.get("/lib.json", headers=basic("vcsp", "wrong")).status == 401
    r = site.get("/lib.json", headers=basic("vcsp", PASSWORD))
    assert r.status == 200 and json.loads(r.text)["name"] == "Branch 9"
    assert site.get("/_syncer/healthz").status == 200  # no library password there
    assert site.get("/.library-syncer/state.json", headers=basic("vcsp", PASSWORD)).status == 404


def test_a_status_port_takes_the_ops_routes_off_the_library_port(tmp_path):
    library_app, status_app = daemon_for(tmp_path, status_port=9)._apps()
    assert status_app is not None
    with AppClient(library_app) as library, AppClient(status_app) as status:
        assert library.get("/_syncer/healthz").status == 404
        assert library.get("/_syncer/api/status", headers=BEARER).status == 404
        assert status.get("/_syncer/healthz").text == "ok\n"
        r = status.get("/_syncer/readyz")
        assert r.status == 503 and "nothing published yet" in r.text
