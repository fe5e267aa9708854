"""The site's policy settings on the status document, the status page and the metrics (the real ClientDaemon's
apps in-process): the bandwidth slot in force and its next change, the timetable, SYNC_INCLUDE / SYNC_EXCLUDE
and SYNC_SKIP_INITIAL."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

from inprocess import AppClient
from library_syncer.config import load_settings
from library_syncer.roles.client import ClientDaemon
from library_syncer.roles.site_status import site_policy

TOKEN = "policy-token-3f9"
BEARER = {"Authorization": f"Bearer {TOKEN}"}


def _pages(tmp_path, **settings) -> tuple[dict, str, str]:
    daemon = ClientDaemon(load_settings(library=tmp_path / "L", state_dir=tmp_path / "state", sync_peer="127.0.0.1",
                                        admin_token=TOKEN, **settings))
    library_app, _ = daemon._apps()
    with AppClient(library_app) as site:
        doc = json.loads(site.get("/_syncer/api/status", headers=BEARER).body)
        page = site.get("/_syncer/", headers=BEARER).body.decode()
        metrics = site.get("/_syncer/metrics", headers=BEARER).body.decode()
    return doc, page, metrics


def test_policy_part_is_pure_and_reads_the_table_in_the_zone():
    monday_0830_berlin = datetime(2026, 1, 12, 7, 30, tzinfo=timezone.utc)
    doc = site_policy(skip_initial=True, include=("Win*",), exclude=(), max_bw="08:00,512k 18:00,off",
                      tz="Europe/Berlin", now=monday_0830_berlin)
    assert doc == {"sync_skip_initial": True, "sync_include": ["Win*"], "sync_exclude": [],
                   "bandwidth": {"setting": "08:00,512k 18:00,off", "slot": "08:00,512k", "limit": "512k",
                                 "bytes_per_second": 524288.0, "paused": False,
                                 "next_change": "2026-01-12T17:00:00Z", "next_limit": "unlimited"}}


def test_status_document_page_and_metrics_show_the_slot_in_force(tmp_path):
    now = datetime.now(timezone.utc)
    current, later = now.strftime("%H:%M"), (now + timedelta(minutes=10)).strftime("%H:%M")
    table = f"{current},1.5m {later},pause"
    doc, page, metrics = _pages(tmp_path, sync_max_bw=table, sync_include="Win*,Tools", sync_exclude="*-old",
                                sync_skip_initial=True)
    bw = doc["bandwidth"]
    assert (bw["setting"], bw["slot"], bw["limit"], bw["paused"]) == (table, f"{current},1.5m", "1.5m", False)
    assert bw["next_limit"] == "pause" and bw["next_change"] is not None
    assert (doc["sync_include"], doc["sync_exclude"], doc["sync_skip_initial"]) == (["Win*", "Tools"], ["*-old"], True)
    assert "Site policy" in page and "1.5m (1.5 MiB/s) from <code>" + f"{current},1.5m</code>" in page
    assert f"pause from {(now + timedelta(minutes=10)).strftime('%Y-%m-%d %H:%M')}" in page
    assert f"<code>{table}</code> (UTC)" in page
    assert "only Win*, Tools; not *-old" in page
    assert "sync skipped when a generation is published" in page
    assert "library_syncer_bandwidth_limit_bytes_per_second 1.572864e+06" in metrics
    assert f'library_syncer_bandwidth_slot{{entry="{current},1.5m",limit="1.5m"}} 1.0' in metrics


def test_a_pause_slot_and_a_plain_value(tmp_path):
    now = datetime.now(timezone.utc)
    table = f"{now.strftime('%H:%M')},pause {(now + timedelta(minutes=30)).strftime('%H:%M')},off"
    doc, page, metrics = _pages(tmp_path / "a", sync_max_bw=table)
    assert doc["bandwidth"]["paused"] and doc["bandwidth"]["bytes_per_second"] == 0
    assert "no transfer in this slot" in page and "unlimited from" in page
    assert "library_syncer_bandwidth_limit_bytes_per_second 0.0" in metrics
    doc, page, metrics = _pages(tmp_path / "b")
    assert doc["bandwidth"] == {"setting": "0", "slot": "always", "limit": "unlimited", "bytes_per_second": None,
                                "paused": False, "next_change": None, "next_limit": None}
    assert "Timetable" not in page and "all (no sync_include / sync_exclude)" in page
    assert "library_syncer_bandwidth_limit_bytes_per_second +Inf" in metrics
