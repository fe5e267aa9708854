"""The client's status page as a person sees it: real headless Chromium, phone and wall-screen widths."""

from __future__ import annotations

import shutil

import requests

from browser import dump_dom, screenshot, visible_text
from client_fixture import running_client
from library_syncer.sample import make_sample_library
from server_fixture import running_server
from support import wait_until

TOKEN = "page-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def test_status_page_in_a_browser(tmp_path):
    source = tmp_path / "primary"
    items = make_sample_library(source, disk_size=128 * 1024)
    with running_server(tmp_path, source) as srv, \
            running_client(tmp_path, srv, SYNCER_ADMIN_TOKEN=TOKEN, LIBRARY_NAME="Branch Office 12") as site:
        def last_sync():
            try:
                return requests.get(site.url("_syncer/api/status"), headers=AUTH, timeout=5).json()["last_sync"]
            except (requests.ConnectionError, ValueError):
                return None

        assert wait_until(last_sync, 90, "the first sync")["ok"]
        for name in [p.name for p in source.iterdir()][:2]:  # 2 of 3 items gone: refused by the guard
            shutil.rmtree(source / name)
        run_id = requests.post(site.url("_syncer/api/sync"), headers=AUTH, timeout=10).json()["run_id"]
        wait_until(lambda: (last_sync() or {}).get("run_id") == run_id, 60, "the refused sync")

        page = f"http://admin:{TOKEN}@127.0.0.1:{site.port}/_syncer/"
        phone = screenshot(page, "client-status-phone.png", width=390, height=1400)
        wall = screenshot(page, "client-status-wall.png", width=1920, height=1080)
        assert phone.stat().st_size > 10_000 and wall.stat().st_size > 10_000
        text = visible_text(dump_dom(page, width=390))
        assert "Branch Office 12" in text and "ready" in text and "not ready" not in text
        for item in items:
            assert item in text, item
        assert "guard" in text and "delete guard" in text  # the refusal, with its reason, in the history
        assert "Recent syncs" in text and "Next run" in text and "Generation 1" in text
        assert "UTC (" in text.split("Changed", 1)[1].split("Recent syncs")[0]  # when each item last changed

        denied = visible_text(dump_dom(f"http://127.0.0.1:{site.port}/_syncer/"))
        assert "Branch Office 12" not in denied  # no token: nothing shown
