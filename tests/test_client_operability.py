"""The client's own endpoints end to end: status API and page, metrics, health, token, on-demand sync,
webhook, JSON logs with run ids, history across restarts, the status command (real server and client)."""

from __future__ import annotations

import json
import os
import shutil
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace

import requests
from prometheus_client.parser import text_string_to_metric_families

from client_fixture import running_client
from library_syncer.sample import make_sample_library
from server_fixture import running_server
from support import cli, free_port, wait_until

TOKEN = "t0ken-for-tests"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


class _Hook(BaseHTTPRequestHandler):
    received: list = []

    def do_POST(self) -> None:  # noqa: N802
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.received.append(json.loads(body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


def _webhook_receiver():
    _Hook.received = []
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), _Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, _Hook.received


def _status(site) -> dict:
    r = requests.get(site.url("_syncer/api/status"), headers=AUTH, timeout=10)
    r.raise_for_status()
    return r.json()


def _ready(site) -> bool:
    try:
        return requests.get(site.url("_syncer/readyz"), timeout=5).status_code == 200
    except requests.ConnectionError:
        return False


def _finished(site, run_id: str) -> dict | None:
    last = _status(site)["last_sync"]
    return last if last and last["run_id"] == run_id else None


def _sync_now(site) -> str:
    r = requests.post(site.url("_syncer/api/sync"), headers=AUTH, timeout=10)
    assert r.status_code == 202, r.text
    return r.json()["run_id"]


def test_status_metrics_on_demand_sync_webhook_and_logs(tmp_path):
    source = tmp_path / "primary"
    make_sample_library(source, disk_size=256 * 1024)
    backup = tmp_path / "backup"
    shutil.copytree(source, backup)
    hook, received = _webhook_receiver()
    env = dict(SYNCER_ADMIN_TOKEN=TOKEN, SYNCER_WEBHOOK_URL=f"http://127.0.0.1:{hook.server_port}/hook",
               LIBRARY_NAME="Branch 7", SYNC_MAX_BW="512")
    try:
        with running_server(tmp_path, source) as srv:
            with running_client(tmp_path, srv, "--log-format", "json", **env) as site:
                wait_until(lambda: _ready(site), 90, "the first publication")
                # token: status, API and metrics need it; health does not
                assert requests.get(site.url("_syncer/api/status"), timeout=10).status_code == 401
                assert requests.get(site.url("_syncer/metrics"), timeout=10).status_code == 401
                assert requests.post(site.url("_syncer/api/sync"), timeout=10).status_code == 401
                assert requests.get(site.url("_syncer/api/status"), headers={"Authorization": "Bearer x"},
                                    timeout=10).status_code == 401
                assert requests.get(site.url("_syncer/healthz"), timeout=10).text == "ok\n"
                st = _status(site)
                assert st["site"] == "Branch 7" and st["ready"] and st["next_run"]
                assert len(st["published"]["items"]) == 3 and st["last_sync"]["ok"]
                assert requests.get(site.url("_syncer/"), auth=("admin", TOKEN), timeout=10).status_code == 200

                # on demand: a new 1 MiB item at 512 KiB/s takes seconds, so a second request is refused
                (source / "New ISO").mkdir()
                (source / "New ISO" / "new.iso").write_bytes(os.urandom(1 << 20))  # incompressible (zstd on the wire)
                run_id = _sync_now(site)
                again = requests.post(site.url("_syncer/api/sync"), headers=AUTH, timeout=10)
                assert again.status_code == 409 and again.json()["running"] == run_id
                done = wait_until(lambda: _finished(site, run_id), 90, f"sync {run_id}")
                assert done["ok"] and done["items"] == 4 and done["wire_bytes"] > 1 << 20

                # the primary's share loses most items: the guard refuses, the webhook hears of it once
                generation = _status(site)["published"]["generation"]
                for name in [p.name for p in source.iterdir()][:3]:
                    shutil.rmtree(source / name)
                guarded = _sync_now(site)
                failed = wait_until(lambda: _finished(site, guarded), 90, f"sync {guarded}")
                assert not failed["ok"] and failed["kind"] == "guard"
                wait_until(lambda: [e["event"] for e in received] == ["sync_failed"], 30, "webhook: failed")
                assert received[0]["site"] == "Branch 7" and received[0]["run_id"] == guarded
                st = _status(site)
                assert st["published"]["generation"] == generation and len(st["published"]["items"]) == 4

                # restored: the next sync succeeds and the webhook hears of the recovery
                shutil.rmtree(source)
                shutil.copytree(backup, source)
                r = cli("status", "--url", site.url("_syncer/"), "--sync-now", "--wait", "90",
                        env={"SYNCER_ADMIN_TOKEN": TOKEN})
                assert r.returncode == 0 and "succeeded" in r.stdout, r.stdout + r.stderr
                wait_until(lambda: [e["event"] for e in received] == ["sync_failed", "sync_recovered"], 30,
                           "webhook: recovered")
                r = cli("status", "--url", site.url("_syncer/"), env={"SYNCER_ADMIN_TOKEN": TOKEN})
                assert r.returncode == 0 and r.stdout.startswith("Branch 7: ready"), r.stdout + r.stderr
                assert cli("status", "--url", site.url("_syncer/")).returncode == 1  # no token

                metrics = requests.get(site.url("_syncer/metrics"), headers=AUTH, timeout=10).text
                before_restart = {r["run_id"] for r in _status(site)["history"]}
                assert site.stop() == 0

            names = {s.name: s.value for f in text_string_to_metric_families(metrics) for s in f.samples
                     if not s.labels or s.name.startswith("library_syncer_syncs")}
            for series in ("library_syncer_sync_duration_seconds_count", "library_syncer_sync_wire_bytes_total",
                           "library_syncer_last_success_timestamp_seconds", "library_syncer_items",
                           "library_syncer_library_bytes", "library_syncer_http_requests_total",
                           "library_syncer_http_sent_bytes_total", "library_syncer_syncs_total"):
                assert any(n == series for n in names) or series in metrics, series
            assert 'library_syncer_sync_failures_total{reason="guard"} 1.0' in metrics

            lines = [json.loads(ln) for ln in site.log_text().splitlines() if ln.startswith("{")]
            steps = [ln for ln in lines if ln["message"].startswith(("listing", "transfer", "manifest", "publish"))]
            assert steps and all(ln.get("run_id") for ln in steps)  # every step line names its run
            assert {run_id, guarded} <= {ln["run_id"] for ln in steps}
            assert any(ln["message"].startswith("sync " + run_id + " succeeded") and ln["run_id"] == run_id
                       for ln in lines)
            assert TOKEN not in site.log_text()

            # history survives a restart
            with running_client(tmp_path, srv, **env) as site2:
                wait_until(lambda: _ready(site2), 90, "the restarted client")
                assert before_restart <= {r["run_id"] for r in _status(site2)["history"]}
    finally:
        hook.shutdown()


def test_not_ready_before_publication_and_a_separate_status_port(tmp_path):
    nobody = SimpleNamespace(host="127.0.0.1", port=free_port(), user="site", key=tmp_path / "missing-key",
                             host_key_line="ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl")
    status_port = free_port()
    with running_client(tmp_path, nobody, SYNCER_STATUS_PORT=str(status_port)) as site:
        base = f"http://127.0.0.1:{status_port}/_syncer/"

        def answered():
            try:
                return requests.get(base + "api/status", timeout=5).json()["last_sync"]
            except requests.ConnectionError:
                return None

        last = wait_until(answered, 60, "the status port")
        assert not last["ok"] and last["kind"] == "config" and "sync_key" in last["reason"]
        r = requests.get(base + "readyz", timeout=5)
        assert r.status_code == 503 and "nothing published yet" in r.text
        assert requests.get(site.url("_syncer/api/status"), timeout=5).status_code == 404  # not on the library port
        assert requests.get(site.url("_syncer/healthz"), timeout=5).status_code == 404
        r = requests.post(base + "api/sync", timeout=5)  # no token configured: loopback may ask
        assert r.status_code == 202
        assert site.stop() == 0
