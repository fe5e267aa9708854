"""The site's start, with a real client daemon syncing from a real server (sshd) on loopback:
SYNC_SKIP_INITIAL skips the sync at start only when a generation is published, and lib.json answers
503 with the VCSP progress document while the first sync runs, then 200 once it is published."""

from __future__ import annotations

from datetime import datetime, timezone

import requests

from client_fixture import running_client
from inprocess import run_cli
from library_syncer.config import load_settings
from library_syncer.sample import make_sample_library
from library_syncer.sync.schedule import next_run
from library_syncer.util.fmt import iso_utc
from server_fixture import running_server
from support import wait_until

TOKEN = "start-control-token-3f1"
SCHEDULE = "0 3 1 1 *"  # far away: no scheduled sync during the test


def _status(site) -> dict | None:
    try:
        r = requests.get(site.url("_syncer/api/status"), headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5)
    except requests.ConnectionError:
        return None
    return r.json() if r.status_code == 200 else None


def _lib_json(site) -> requests.Response | None:
    try:
        return requests.get(site.url("lib.json"), timeout=5)
    except requests.ConnectionError:
        return None


def test_skip_initial_is_off_by_default_and_read_from_the_environment_toml_and_flags(tmp_path, monkeypatch):
    assert load_settings().sync_skip_initial is False  # the original's behaviour: sync at start
    toml = tmp_path / "site.toml"
    toml.write_text("sync_skip_initial = true\n")
    assert load_settings(toml).sync_skip_initial is True
    monkeypatch.setenv("SYNC_SKIP_INITIAL", "true")
    assert load_settings().sync_skip_initial is True


def test_a_bad_skip_initial_is_one_line_and_exit_2(tmp_path):
    r = run_cli("client", "--library", tmp_path, env={"SYNC_PEER": "127.0.0.1", "SYNC_SKIP_INITIAL": "maybe"})
    assert r.returncode == 2
    line, = r.stderr.strip().splitlines()
    assert "sync_skip_initial" in line and "SYNC_SKIP_INITIAL" in line and "'maybe'" in line
    assert "--sync-skip-initial" in run_cli("client", "--help").stdout


def test_skip_initial_syncs_a_first_start_and_skips_the_sync_at_a_later_start(tmp_path):
    source = tmp_path / "primary-library"
    make_sample_library(source, disk_size=64 * 1024)
    env = {"SYNC_SKIP_INITIAL": "true", "SYNC_SCHEDULE": SCHEDULE, "SYNCER_ADMIN_TOKEN": TOKEN}
    with running_server(tmp_path, source) as srv:
        with running_client(tmp_path, srv, **env) as site:  # nothing published yet: it syncs
            first = wait_until(lambda: (s := _status(site)) and s["last_sync"] and s, 90, "the first sync")
            assert first["last_sync"]["ok"], first["last_sync"]
            assert _lib_json(site).status_code == 200
            assert "nothing is published yet: syncing at start" in site.log_text()
        assert site.proc.returncode == 0, site.log_text()

        with running_client(tmp_path, srv, **env) as site:  # generation 1 is published: no sync at start
            status = wait_until(lambda: (s := _status(site)) and s["next_run"] and s, 60, "the schedule")
            expected = next_run(SCHEDULE, datetime.now(timezone.utc), None)
            assert status["next_run"] == iso_utc(expected)  # the schedule's next tick, not a sync now
            assert status["running"] is None
            assert [h["run_id"] for h in status["history"]] == [first["last_sync"]["run_id"]]
            assert status["sync_skip_initial"] is True
            log = site.log_text()
            assert "sync at start skipped (sync_skip_initial): generation 1 is published" in log
            assert "started (start)" not in log
            assert _lib_json(site).status_code == 200  # still serving the published generation
        assert site.proc.returncode == 0, site.log_text()


def test_lib_json_is_503_with_progress_during_the_first_sync_then_200(tmp_path):
    source = tmp_path / "primary-library"
    make_sample_library(source, disk_size=1024 * 1024)  # about 2 MiB in all, at 128 KiB/s: some seconds
    not_ready: list[tuple[dict, str | None]] = []

    def published() -> requests.Response | None:
        r = _lib_json(site)
        if r is not None and r.status_code == 503:
            not_ready.append((r.json(), r.headers.get("Retry-After")))
        return r if r is not None and r.status_code == 200 else None

    with running_server(tmp_path, source) as srv, \
            running_client(tmp_path, srv, SYNC_MAX_BW="128", SYNC_SCHEDULE=SCHEDULE) as site:
        lib = wait_until(published, 180, "the first publication", interval=0.2).json()
        assert lib["vcspVersion"] == "2"
        assert requests.get(site.url("items.json"), timeout=5).status_code == 200
    assert len(not_ready) >= 3, "lib.json was never seen not ready"
    for doc, retry_after in not_ready:
        assert set(doc) == {"status", "progress", "message"} and doc["message"] == ""
        assert isinstance(doc["progress"], int) and 0 <= doc["progress"] <= 99
        assert retry_after == "30"
    progress = [doc["progress"] for doc, _ in not_ready]
    assert progress == sorted(progress) and progress[-1] > 0, progress  # the running sync's percent
