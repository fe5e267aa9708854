"""Status document, readiness, webhook decisions, access rules, page rendering, log lines (pure parts)."""

from __future__ import annotations

import json
import logging
from datetime import datetime, timedelta, timezone

from aiohttp import encode_basic_auth

from library_syncer import logs
from library_syncer.roles import site_status as st
from library_syncer.roles.site_metrics import ClientMetrics
from library_syncer.sync.result import SyncResult
from library_syncer.web.rules import check_admin_token, status_access
from library_syncer.web.pages.site import render_status

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=timezone.utc)


def result(ok: bool, hours_ago: float = 1, kind: str | None = None, reason: str = "", run_id: str = "r1"):
    end = NOW - timedelta(hours=hours_ago)
    return SyncResult(ok=ok, reason=reason, started=end - timedelta(seconds=90), ended=end,
                      kind=kind or ("ok" if ok else "fatal"), bytes_received=5000, library_bytes=10 ** 9,
                      run_id=run_id, attempts=2)


PUBLISHED = {"generation": 3, "name": "Lib", "id": "urn:uuid:x", "version": "7",
             "published_at": (NOW - timedelta(days=30)).isoformat(), "bytes": 2048,
             "items": [{"name": "<script>alert(1)</script>", "type": "vcsp.ovf", "version": "2", "size": 2048,
                        "files": 2, "changed": (NOW - timedelta(days=3)).isoformat()}]}


def test_readiness():
    assert st.readiness(None, None, NOW, 3600) == (False, "nothing published yet")
    assert st.readiness(PUBLISHED, NOW - timedelta(minutes=30), NOW, 3600) == (True, "ok")
    ready, why = st.readiness(PUBLISHED, NOW - timedelta(hours=3), NOW, 3600)
    assert not ready and "3.0 h ago" in why and "stale_after_seconds" in why


def test_last_success_falls_back_to_the_publication_time():
    assert st.last_success_time([result(False)], PUBLISHED["published_at"]) == NOW - timedelta(days=30)
    assert st.last_success_time([result(True, 5), result(False, 1)], None) == NOW - timedelta(hours=5)
    assert st.last_success_time([], None) is None


def test_webhook_only_on_transitions():
    ok, bad, busy = result(True), result(False), result(False, kind="busy")
    assert st.webhook_event(None, bad) == "sync_failed"
    assert st.webhook_event(ok, bad) == "sync_failed"
    assert st.webhook_event(bad, bad) is None  # still failing: no repeat
    assert st.webhook_event(bad, ok) == "sync_recovered"
    assert st.webhook_event(ok, ok) is None and st.webhook_event(None, ok) is None
    assert st.webhook_event(ok, busy) is None
    payload = st.webhook_payload("sync_failed", bad, site="Branch", host="h", last_success=None)
    assert payload["event"] == "sync_failed" and payload["run_id"] == "r1" and json.dumps(payload)


def test_history_round_trip(tmp_path):
    history = [result(True, 5, run_id="a"), result(False, 1, reason="boom", run_id="b")]
    st.save_history(tmp_path, history)
    again = st.load_history(tmp_path)
    assert [r.to_dict() for r in again] == [r.to_dict() for r in history]
    (tmp_path / st.HISTORY_FILE).write_text("{not json")
    assert st.load_history(tmp_path) == []


def test_status_document_and_page():
    doc = st.client_status(site="Branch & Co", history=[result(True, 2), result(False, 1, reason="disk <full>")],
                           running=None, next_run=NOW + timedelta(hours=4), published=PUBLISHED, now=NOW,
                           stale_after=86400, schedule="0 21 * * 5", tz=None, peer="primary.example",
                           thumbprint="AA:BB")
    assert doc["ready"] and doc["history"][0]["reason"] == "disk <full>" and doc["tz"] == "UTC"
    assert json.loads(json.dumps(doc)) == doc
    page = render_status(doc)
    assert "<script>alert" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "Branch &amp; Co" in page and "disk &lt;full&gt;" in page and "AA:BB" in page
    assert "in 4.0 h" in page and "http://" not in page and "https://" not in page  # no external assets


def test_page_before_anything_happened():
    doc = st.client_status(site="New", history=[], running="r9", next_run=None, published=None, now=NOW,
                           stale_after=60, schedule="* * * * *", tz="Europe/Paris", peer=None, thumbprint=None)
    page = render_status(doc)
    assert "Nothing published yet" in page and "syncing (r9)" in page and "not ready" in page


def test_access_rules():
    bearer, basic = "Bearer s3cret", encode_basic_auth("anyone", "s3cret")
    vcsp = encode_basic_auth("vcsp", "libpw")
    assert check_admin_token(bearer, "s3cret") and check_admin_token(basic, "s3cret")
    assert not check_admin_token("Bearer nope", "s3cret") and not check_admin_token(None, "s3cret")
    for action in ("read", "write"):
        assert status_access(action, header=bearer, token="s3cret", password=None, loopback=False)
        assert not status_access(action, header=None, token="s3cret", password=None, loopback=True)
    assert status_access("health", header=None, token="s3cret", password="libpw", loopback=False)
    assert status_access("read", header=None, token=None, password=None, loopback=False)
    assert not status_access("read", header=None, token=None, password="libpw", loopback=True)
    assert status_access("read", header=vcsp, token=None, password="libpw", loopback=False)
    assert status_access("write", header=None, token=None, password=None, loopback=True)
    assert not status_access("write", header=None, token=None, password=None, loopback=False)


def test_metrics_series():
    from prometheus_client.parser import text_string_to_metric_families

    m = ClientMetrics()
    m.observe_sync(result(True))
    m.observe_sync(result(False, kind="gave-up"))
    m.observe_published(PUBLISHED)
    m.observe_request("GET", 200, 1234)
    fams = {f.name: f for f in text_string_to_metric_families(m.render().decode())}
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value for f in fams.values() for s in f.samples}
    assert samples[("library_syncer_syncs_total", (("result", "ok"),))] == 1
    assert samples[("library_syncer_sync_failures_total", (("reason", "gave-up"),))] == 1
    assert samples[("library_syncer_items", ())] == 1 and samples[("library_syncer_library_bytes", ())] == 2048
    assert samples[("library_syncer_http_sent_bytes_total", ())] == 1234
    assert samples[("library_syncer_sync_duration_seconds_count", ())] == 2
    assert samples[("library_syncer_last_success_timestamp_seconds", ())] == (NOW - timedelta(hours=1)).timestamp()


def test_json_log_lines_carry_the_run_id(capsys):
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    logs.configure("json")
    try:
        log = logging.getLogger("library_syncer.test")
        log.info("outside")
        with logs.run_context("20261125T120000Z-1"):
            log.warning("inside %d", 1)
            t = logs.in_context(log.info, "from a thread")
            t.start()
            t.join()
    finally:
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert [ln.get("run_id") for ln in lines] == [None, "20261125T120000Z-1", "20261125T120000Z-1"]
    assert lines[1]["message"] == "inside 1" and lines[1]["level"] == "WARNING" and "time" in lines[1]
