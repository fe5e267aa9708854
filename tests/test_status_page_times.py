"""Times on the status page are shown in the site's TZ with that zone's abbreviation, or in UTC labelled UTC
(the page rendered from a status document, and a real client started with TZ=America/New_York)."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import requests

from client_fixture import running_client
from library_syncer.roles import site_status as st
from library_syncer.sync.schedule import next_run
from library_syncer.sync.result import SyncResult
from library_syncer.web.pages.site import render_status
from server_fixture import running_server
from support import wait_until

NOW = datetime(2026, 7, 1, 16, 0, tzinfo=timezone.utc)  # summer in New York (EDT, UTC-4)
ZONEINFO = Path("/usr/share/zoneinfo/America/New_York")


def _doc(tz: str | None) -> dict:
    ended = NOW - timedelta(hours=1)
    run = SyncResult(ok=True, reason="", started=ended - timedelta(minutes=2), ended=ended, run_id="r1")
    published = {"generation": 1, "name": "Lib", "id": "urn:uuid:x", "version": "1", "bytes": 1,
                 "published_at": ended.isoformat(), "items": [
                     {"name": "Alpha", "type": "vcsp.iso", "version": "1", "size": 1, "files": 1,
                      "changed": datetime(2026, 1, 15, 17, 30, tzinfo=timezone.utc).isoformat()}]}
    return st.client_status(site="Branch", history=[run], running=None,
                            next_run=next_run("0 21 * * 5", NOW, tz), published=published, now=NOW,
                            stale_after=86400, schedule="0 21 * * 5", tz=tz, peer=None, thumbprint=None)


def _times(page: str) -> list[str]:
    return re.findall(r"\d{4}-\d\d-\d\d \d\d:\d\d [A-Z][A-Za-z0-9+-]*", page)


def test_times_in_the_sites_zone_with_its_abbreviation():
    assert ZONEINFO.is_file(), "tzdata (Debian package) is needed for TZ=America/New_York"
    page = render_status(_doc("America/New_York"))
    times = _times(page)
    assert times and not [t for t in times if t.endswith("UTC")], times
    assert "2026-07-03 21:00 EDT" in times  # next run: Friday 21:00 in New York, as scheduled
    assert "2026-07-01 12:00 EDT" in times  # "now" (16:00 UTC)
    assert "2026-07-01 11:00 EDT" in times  # the sync ended an hour ago
    assert "2026-01-15 12:30 EST" in times  # an item changed in winter: that day's offset
    assert "in 2.4 days" in page and "60 min ago" in page  # 57 h from now, whatever the zone


def test_times_in_utc_when_tz_is_unset():
    page = render_status(_doc(None))
    times = _times(page)
    assert times and all(t.endswith(" UTC") for t in times), times
    assert "2026-07-03 21:00 UTC" in times and "2026-01-15 17:30 UTC" in times


def test_a_client_started_with_tz_shows_local_times(tmp_path):
    assert ZONEINFO.is_file(), "tzdata (Debian package) is needed for TZ=America/New_York"
    source = tmp_path / "primary"
    (source / "Alpha").mkdir(parents=True)
    (source / "Alpha" / "a.iso").write_bytes(b"a")
    with running_server(tmp_path, source) as srv, running_client(tmp_path, srv, TZ="America/New_York") as site:
        def page():
            try:
                r = requests.get(site.url("_syncer/"), timeout=5)
            except requests.ConnectionError:
                return None
            return r.text if r.ok and "Alpha" in r.text else None

        text = wait_until(page, 60, "the status page with the published item")
        label = datetime.now(ZoneInfo("America/New_York")).strftime("%Z")  # EST or EDT today
        times = _times(text)
        assert times and all(t.endswith(f" {label}") for t in times), times
        assert "(America/New_York)" in text
        assert site.stop() == 0
