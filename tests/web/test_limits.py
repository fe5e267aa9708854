"""Pure rules of the web server's connection limits (web/limits.py)."""

from __future__ import annotations

from library_syncer.config import Settings
from library_syncer.web.limits import FDS_RESERVED, ConnectionCounts, HttpLimits, Throttle, plan_nofile


def test_defaults_are_the_settings_defaults():
    assert HttpLimits() == HttpLimits.from_settings(Settings.model_construct())


def test_counts_cap_each_client_and_the_total():
    counts = ConnectionCounts(max_connections=3, max_per_client=2)
    assert counts.admit("10.0.0.1") is None and counts.admit("10.0.0.1") is None
    assert counts.admit("10.0.0.1") == "SYNCER_HTTP_MAX_PER_CLIENT"
    assert counts.admit("10.0.0.2") is None
    assert counts.admit("10.0.0.3") == "SYNCER_HTTP_MAX_CONNECTIONS"
    counts.release("10.0.0.1")
    assert counts.admit("10.0.0.1") is None
    counts.release("10.0.0.2")
    assert "10.0.0.2" not in counts.per_client and counts.total == 2


def test_counts_a_unix_socket_in_the_total_only():
    counts = ConnectionCounts(max_connections=3, max_per_client=1)
    assert [counts.admit("") for _ in range(4)] == [None, None, None, "SYNCER_HTTP_MAX_CONNECTIONS"]


def test_throttle_reports_once_per_interval_with_the_count():
    t = Throttle(60)
    assert t.hit(0.0)  # the first one at once
    assert not any(t.hit(float(s)) for s in range(1, 60))
    assert t.flush(60.0) == 59  # the window's count
    assert not t.hit(70.0)  # a new window started with the summary
    assert t.flush(120.0) == 1
    assert t.flush(180.0) == 0  # quiet: nothing to say, no new window
    assert t.hit(500.0)


def test_plan_nofile():
    need = FDS_RESERVED + 2 * 512
    assert plan_nofile(1024, 524288, 0, 512) == (need, 512)  # raised
    assert plan_nofile(100_000, 100_000, 0, 512) == (100_000, 512)  # already enough
    assert plan_nofile(1024, -1, 0, 512) == (need, 512)  # unlimited hard limit
    assert plan_nofile(256, 256, 0, 512) == (256, (256 - FDS_RESERVED) // 2)  # the cap lowered
    assert plan_nofile(1024, 1024, 400, 512) == (1024, (1024 - FDS_RESERVED) // 2 - 400)  # a second server
    assert plan_nofile(32, 32, 0, 512) == (32, 1)
