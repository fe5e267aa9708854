"""The client daemon with automatic HTTPS: TLS_NAME without certificate files runs Caddy in front, which
gets its certificate from a real ACME CA (Pebble) on loopback; a subscriber reads the library over HTTPS."""

from __future__ import annotations

import os
import signal
import socket

import requests

from client_fixture import running_client
from library_syncer.sample import make_sample_library
from library_syncer.web.app import client_address, create_app
from server_fixture import running_server
from support import free_port, processes, require_tool, wait_until

from .acme import Pebble
from .test_caddy_acme import served_thumbprint, subscriber

NAME = "branch.library.test"
TOKEN = "acme-token"


def test_client_serves_https_with_an_acme_certificate(tmp_path):
    require_tool("caddy", "caddy")
    https_port, http_port = free_port(), free_port()
    pebble = Pebble(tmp_path / "pebble", http_port=http_port, tls_port=https_port).start()
    try:
        source = tmp_path / "primary"
        make_sample_library(source, disk_size=128 * 1024)
        env = dict(pebble.client_env(NAME, tmp_path / "certs"), SYNCER_ADMIN_TOKEN=TOKEN, LIBRARY_NAME="Secure")
        with running_server(tmp_path, source) as srv, running_client(tmp_path, srv, **env) as site:
            url = f"https://{NAME}:{https_port}/lib.json"
            wait_until(lambda: f"Subscription URL: {url}" in site.log_text() or site.proc.poll() is not None,
                       120, "the ACME certificate")
            assert site.proc.poll() is None, site.log_text()
            roots = pebble.issuer_roots()
            s = subscriber(NAME, roots)
            base = f"https://127.0.0.1:{https_port}/"
            lib = wait_until(lambda: (r := s.get(base + "lib.json", timeout=10)).ok and r.json(), 90,
                             "the first publication over HTTPS")
            assert lib["name"] == "Secure"
            for item in s.get(base + "items.json", timeout=10).json()["items"]:
                for f in item["files"]:
                    assert len(s.get(base + f["hrefs"][0], timeout=10).content) == f["size"]
            st = s.get(base + "_syncer/api/status", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10)
            thumb = served_thumbprint(https_port, NAME, roots)
            assert st.json()["tls_thumbprint"] == thumb and thumb in site.log_text()
            assert s.post(base + "_syncer/api/sync", timeout=10).status_code == 401
            plain = requests.get(f"http://127.0.0.1:{http_port}/lib.json", allow_redirects=False, timeout=10)
            assert plain.status_code == 308 and plain.headers["Location"].startswith("https://")
            assert site.stop() == 0
            assert "caddy" in site.log_text()
    finally:
        pebble.stop()


def test_forwarded_address_is_trusted_only_behind_our_front(tmp_path):
    from aiohttp.test_utils import make_mocked_request

    forged = {"X-Forwarded-For": "10.0.0.1, 203.0.113.9"}
    behind = make_mocked_request("GET", "/lib.json", headers=forged, app=create_app(tmp_path, behind_proxy=True))
    direct = make_mocked_request("GET", "/lib.json", headers=forged, app=create_app(tmp_path))
    assert client_address(behind) == "203.0.113.9"  # the entry our Caddy front wrote
    assert "203.0.113.9" not in client_address(direct) and "10.0.0.1" not in client_address(direct)


def _caddy_pids(marker: str) -> list[int]:
    return [pid for pid, (_, _, argv) in processes(marker).items() if argv[0].endswith("caddy")]


def test_caddy_dies_with_a_killed_client(tmp_path):
    """kill -9 of the client daemon must not leave its Caddy front holding the site's ports."""
    require_tool("caddy", "caddy")
    https_port, http_port = free_port(), free_port()
    pebble = Pebble(tmp_path / "pebble", http_port=http_port, tls_port=https_port).start()
    try:
        source = tmp_path / "primary"
        make_sample_library(source, disk_size=64 * 1024)
        env = pebble.client_env(NAME, tmp_path / "certs")
        with running_server(tmp_path, source) as srv, running_client(tmp_path, srv, **env) as site:
            wait_until(lambda: "Subscription URL: https://" in site.log_text() or site.proc.poll() is not None,
                       120, "the ACME certificate")
            assert site.proc.poll() is None, site.log_text()
            marker = str(tmp_path / "certs")
            assert wait_until(lambda: _caddy_pids(marker), 10, "the Caddy front's process")
            os.kill(site.proc.pid, signal.SIGKILL)
            site.proc.wait(10)
            wait_until(lambda: not _caddy_pids(marker), 10, "Caddy to end with its client")
            with socket.socket() as s:  # nothing listens on the HTTPS port any more (TIME_WAIT is fine)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind(("127.0.0.1", https_port))
                s.listen()
    finally:
        pebble.stop()
