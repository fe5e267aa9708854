"""Before the first publication the site's lib.json and items.json answer 503 with the VCSP progress document
(in-process: the real ClientDaemon's apps on aiohttp's test server); a plain served folder keeps its 404;
the status document and page show sync_skip_initial. The same with a real client process and sshd:
test_client_start_control.py."""

from __future__ import annotations

import base64
import json
from datetime import datetime, timezone

import pytest

from inprocess import AppClient
from library_syncer.config import load_settings
from library_syncer.roles.client import ClientDaemon
from library_syncer.sample import make_sample_library
from library_syncer.sync.result import SyncResult
from library_syncer.sync.run import run_sync
from library_syncer.web.app import NOT_READY_RETRY_AFTER, create_app, not_ready_document

TOKEN = "not-ready-token-81c"
BEARER = {"Authorization": f"Bearer {TOKEN}"}


def _daemon(root, **extra) -> ClientDaemon:
    return ClientDaemon(load_settings(library=root / "L", state_dir=root / "state", sync_peer="127.0.0.1",
                                      admin_token=TOKEN, **extra))


def _json(response) -> dict:
    return json.loads(response.body)


def test_the_document_has_the_three_vcsp_keys_and_a_bounded_progress():
    assert not_ready_document(42) == {"status": "", "progress": 42, "message": ""}
    assert not_ready_document(-5)["progress"] == 0 and not_ready_document(250)["progress"] == 100
    assert not_ready_document(0, "broken")["message"] == "broken"


def test_lib_json_is_503_with_progress_until_the_first_publication_then_200(tmp_path):
    daemon = _daemon(tmp_path, library_name="Branch 4")
    library_app, _ = daemon._apps()
    with AppClient(library_app) as site:
        for path in ("/lib.json", "/items.json"):
            r = site.get(path)
            assert r.status == 503, path
            assert r.headers["Content-Type"].startswith("application/json")
            assert r.headers["Retry-After"] == str(NOT_READY_RETRY_AFTER) and r.headers["Cache-Control"] == "no-store"
            assert _json(r) == {"status": "", "progress": 0, "message": ""}
        assert site.request("HEAD", "/lib.json").status == 503
        # only the descriptor and the index: anything else is simply not there yet
        assert site.get("/item-1/item.json").status == 404 and site.get("/x/lib.json").status == 404

        daemon.state.running, daemon.state.progress = "run-1", 42  # a first sync under way
        assert _json(site.get("/lib.json")) == {"status": "", "progress": 42, "message": ""}
        daemon.state.progress = 100  # transfer done, manifest and publication still to come
        assert _json(site.get("/lib.json"))["progress"] == 99

        # the first sync failed and none runs: a message, so a subscriber stops polling and shows it
        daemon.state.running, daemon.state.progress = None, None
        now = datetime.now(timezone.utc)
        daemon.state.history.append(SyncResult(ok=False, reason="connection refused", started=now, ended=now,
                                               kind="error"))
        daemon.state.next_run = datetime(2030, 1, 4, 21, 0, tzinfo=timezone.utc)
        doc = _json(site.get("/lib.json"))
        assert doc["progress"] == 0 and "connection refused" in doc["message"] and "2030-01-04T21:00:00" in doc["message"]

        make_sample_library(tmp_path / "primary", disk_size=32 * 1024)
        assert run_sync(daemon.settings, source=str(tmp_path / "primary")).ok
        r = site.get("/lib.json")
        assert r.status == 200 and _json(r)["name"] == "Branch 4"
        assert site.get("/items.json").status == 200
        assert site.get("/nothing-here.json").status == 404


def test_the_library_password_still_comes_first(tmp_path):
    library_app, _ = _daemon(tmp_path, library_password="pw-1")._apps()
    with AppClient(library_app) as site:
        assert site.get("/lib.json").status == 401
        auth = {"Authorization": "Basic " + base64.b64encode(b"vcsp:pw-1").decode()}
        assert site.get("/lib.json", headers=auth).status == 503


def test_a_plain_served_folder_without_lib_json_stays_404(tmp_path):
    (tmp_path / "folder").mkdir()
    with AppClient(create_app(tmp_path / "folder")) as web:
        assert web.get("/lib.json").status == 404 and web.get("/items.json").status == 404


@pytest.mark.parametrize("skip", [False, True])
def test_status_document_and_page_show_sync_skip_initial(tmp_path, skip):
    daemon = _daemon(tmp_path, sync_skip_initial=skip)
    library_app, _ = daemon._apps()
    with AppClient(library_app) as site:
        assert _json(site.get("/_syncer/api/status", headers=BEARER))["sync_skip_initial"] is skip
        page = site.get("/_syncer/", headers=BEARER).body.decode()
        assert "At start" in page
        assert ("sync skipped when a generation is published" in page) is skip
