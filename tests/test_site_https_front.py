"""A site serving HTTPS with its own certificate files (real server, real client daemon, loopback): Caddy in
front sends the published files (the default), the plain-HTTP port redirects, a second SIGTERM cuts the
downloads Caddy is sending, and SYNCER_TLS_FRONT=python keeps TLS in the daemon."""

from __future__ import annotations

import http.client
import signal
import socket
import ssl
import time
from pathlib import Path

import pytest

from client_fixture import running_client
from server_fixture import running_server
from support import free_port, port_refused, require_tool, wait_until
from web.helpers import make_cert

from library_syncer.web.rules import etag_of, front_etag


def _get(port: int, cert: Path, path: str) -> tuple[int, http.client.HTTPMessage, bytes]:
    ctx = ssl.create_default_context(cafile=str(cert))
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=30)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.headers, resp.read()
    finally:
        conn.close()


@pytest.mark.parametrize("front", ["caddy", "python"])
def test_a_site_with_certificate_files_serves_its_published_files(tmp_path, front):
    if front == "caddy":
        require_tool("caddy", "caddy")
    source = tmp_path / "primary"
    (source / "Alpha").mkdir(parents=True)
    (source / "Alpha" / "a.iso").write_bytes(b"a" * 100_000)
    cert, _ = make_cert(tmp_path / "certs")
    https_port = free_port()
    with running_server(tmp_path, source) as srv:
        with running_client(tmp_path, srv, TLS_CUSTOM_CERT="true", SYNCER_CERTS_DIR=str(tmp_path / "certs"),
                            SYNCER_HTTPS_PORT=str(https_port), SYNCER_TLS_FRONT=front) as site:
            def published():
                try:
                    answer = _get(https_port, cert, "/Alpha/a.iso")
                except OSError:
                    return None
                return answer if answer[0] == 200 else None

            status, head, body = wait_until(published, 90, "the published file over HTTPS")
            assert body == b"a" * 100_000
            served = (site.library / "current" / "Alpha" / "a.iso").stat()
            # Who sent the bytes shows in the ETag: Caddy's own, or aiohttp's.
            expected = (front_etag(int(served.st_mtime), served.st_size) if front == "caddy"
                        else etag_of(served.st_mtime_ns, served.st_size))
            assert head["ETag"] == f'"{expected}"'
            conn = http.client.HTTPConnection("127.0.0.1", site.port, timeout=30)  # plain HTTP redirects
            conn.request("GET", "/Alpha/a.iso", headers={"Host": "127.0.0.1"})
            resp = conn.getresponse()
            assert resp.status in (301, 302, 307, 308) and f":{https_port}/Alpha/a.iso" in resp.headers["Location"]
            conn.close()
            assert site.stop() == 0


def test_a_second_sigterm_cuts_the_downloads_caddy_is_sending(tmp_path):
    require_tool("caddy", "caddy")
    source = tmp_path / "primary"
    (source / "Alpha").mkdir(parents=True)
    (source / "Alpha" / "big.iso").write_bytes(b"b" * (48 * 1024 * 1024))
    cert, _ = make_cert(tmp_path / "certs")
    https_port = free_port()
    with running_server(tmp_path, source) as srv:
        with running_client(tmp_path, srv, TLS_CUSTOM_CERT="true", SYNCER_CERTS_DIR=str(tmp_path / "certs"),
                            SYNCER_HTTPS_PORT=str(https_port), SYNCER_SHUTDOWN_GRACE="300") as site:
            def published():
                try:
                    return _get(https_port, cert, "/items.json")[0] == 200
                except OSError:
                    return False

            wait_until(published, 90, "the first publication over HTTPS")
            raw = socket.create_connection(("127.0.0.1", https_port), timeout=30)
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
            tls = ssl.create_default_context(cafile=str(cert)).wrap_socket(raw, server_hostname="127.0.0.1")
            with tls:
                tls.sendall(b"GET /Alpha/big.iso HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
                assert tls.recv(4096).startswith(b"HTTP/1.1 200")  # a download in progress, its reader stalled
                site.proc.send_signal(signal.SIGTERM)
                wait_until(lambda: "send it again to cut them" in site.log_text(), 30, "the graceful stop")
                wait_until(lambda: port_refused(https_port), 30, "Caddy to stop accepting connections")
                assert site.proc.poll() is None  # Caddy's download holds the stop (grace 300 s)
                started = time.monotonic()
                site.proc.send_signal(signal.SIGTERM)
                assert site.proc.wait(60) == 0
                assert time.monotonic() - started < 60 and "cutting running downloads" in site.log_text()
