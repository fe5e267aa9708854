"""The client daemon (`library-syncer client`) and the quick-start demo, end to end on loopback."""

from __future__ import annotations

import getpass
import json
import signal
import subprocess
import urllib.request

from library_syncer.sample import make_sample_library
from inprocess import run_cli
from server_fixture import running_server
from support import cli, cli_popen, free_port, wait_until


def _get_json(url: str):
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return json.load(r)
    except OSError:
        return None


def test_client_serves_syncs_and_stops_cleanly(tmp_path):
    source = tmp_path / "primary-library"
    make_sample_library(source, disk_size=256 * 1024)
    with running_server(tmp_path, source) as srv:
        port = free_port()
        env = {
            "SYNC_PEER": srv.host, "SYNC_PORT": str(srv.port), "SYNC_USER": srv.user,
            "SYNC_KEY": str(srv.key), "SYNC_HOST_KEY": srv.host_key_line,
            "SYNCER_LIBRARY": str(tmp_path / "site"), "SYNCER_STATE_DIR": str(tmp_path / "site-state"),
            "SYNCER_HTTP_HOST": "127.0.0.1", "SYNCER_HTTP_PORT": str(port), "LIBRARY_NAME": "Branch",
        }
        proc = cli_popen("client", env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            lib = wait_until(lambda: _get_json(f"http://127.0.0.1:{port}/lib.json"), 60, "first publication")
            assert lib["name"] == "Branch" and lib["vcspVersion"] == "2"
            items = _get_json(f"http://127.0.0.1:{port}/items.json")["items"]
            assert len(items) == 3
            for item in items:
                for f in item["files"]:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/{f['hrefs'][0]}", timeout=5) as r:
                        assert len(r.read()) == f["size"]
        finally:
            proc.send_signal(signal.SIGTERM)
            out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0, out
        assert "next sync at" in out and "Subscription URL: http://127.0.0.1:" in out


def test_client_requires_peer(tmp_path):
    r = cli("client", "--library", tmp_path)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines()[-1].startswith("library-syncer: error: setting sync_peer")


def test_client_bad_schedule_is_one_line(tmp_path):
    r = run_cli("client", env={"SYNC_PEER": "127.0.0.1", "SYNC_SCHEDULE": "every friday"})
    assert r.returncode == 2
    assert "sync_schedule" in r.stderr and "SYNC_SCHEDULE" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_demo_runs_the_main_job(tmp_path):
    r = cli("demo", "--workdir", tmp_path / "demo", "--http-port", str(free_port()), "--once", timeout=180)
    assert r.returncode == 0, r.stderr
    assert "Published library 'Demo Library' version 1 with 3 items" in r.stdout
    assert "Subscription URL: http://127.0.0.1:" in r.stdout
    assert getpass.getuser()  # the demo logs in as the current user in unprivileged mode


def test_second_sigterm_cuts_running_downloads(tmp_path):
    import http.client
    import time

    from client_fixture import running_client

    source = tmp_path / "primary-library"
    make_sample_library(source, disk_size=48 * 1024 * 1024)
    with running_server(tmp_path, source) as srv, \
            running_client(tmp_path, srv, SYNCER_SHUTDOWN_GRACE="300") as site:
        items = wait_until(lambda: _get_json(site.url("items.json")), 90, "the first publication")["items"]
        href = max((f for i in items for f in i["files"]), key=lambda f: f["size"])["hrefs"][0]
        conn = http.client.HTTPConnection("127.0.0.1", site.port, timeout=30)
        conn.request("GET", "/" + href)
        resp = conn.getresponse()
        assert resp.status == 200 and resp.read(1024)  # a download in progress, its reader stalled
        site.proc.send_signal(signal.SIGTERM)
        wait_until(lambda: "send it again to cut them" in site.log_text(), 30, "the graceful stop")
        assert site.proc.poll() is None  # the download holds the stop (grace 300 s)
        started = time.monotonic()
        site.proc.send_signal(signal.SIGTERM)
        assert site.proc.wait(60) == 0
        assert time.monotonic() - started < 60 and "cutting running downloads" in site.log_text()
        conn.close()
