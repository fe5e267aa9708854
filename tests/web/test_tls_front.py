"""HTTPS with certificate files through Caddy (the default SYNCER_TLS_FRONT=caddy), as a real ``serve``
process: Caddy sends the library files the app names, with the app's rules (Range plan, If-Range,
Content-Type, hidden names, password), each subscriber keeps its generation by its own address, and the
stop signals behave as without the front; SYNCER_TLS_FRONT=python keeps TLS in our process."""

from __future__ import annotations

import http.client
import signal
import socket
import ssl
import time
from pathlib import Path

import pytest
from support import free_port, port_refused, require_tool, wait_until

from library_syncer.web.rules import etag_of, front_etag

from .helpers import make_cert, sparse_file
from .test_serve_cli import Served

SIZE = 3 * 1024 * 1024 + 7
NAMES = {"a b": "/a%20b/a%20b", "c%d": "/c%25d/c%25d", "q?#x": "/q%3F%23x/q%3F%23x", "café": "/caf%C3%A9/caf%C3%A9"}


@pytest.fixture(autouse=True)
def _caddy():
    require_tool("caddy", "caddy")


def _https(port: int, cert: Path, source: str = "127.0.0.1") -> http.client.HTTPSConnection:
    ctx = ssl.create_default_context(cafile=str(cert))
    return http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=30, source_address=(source, 0))


def _get(port: int, cert: Path, path: str, headers: dict | None = None, method: str = "GET",
         source: str = "127.0.0.1") -> tuple[int, http.client.HTTPMessage, bytes]:
    conn = _https(port, cert, source)
    try:
        conn.request(method, path, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.headers, resp.read()
    finally:
        conn.close()


def _served(lib: Path, tmp_path: Path, *args, env: dict | None = None) -> tuple[Served, int, Path]:
    cert, key = make_cert(tmp_path / "certs")
    port = free_port()
    s = Served(lib, "--host", "127.0.0.1", "--port", port, "--cert", cert, "--key", key, *args, env=env)
    s.wait_started()
    return s, port, cert


def test_caddy_sends_the_files_with_the_apps_rules(tmp_path):
    lib = tmp_path / "lib"
    sparse_file(lib / "item" / "disk.vmdk", SIZE, {0: b"HEAD", SIZE - 4: b"TAIL"})
    (lib / "item" / "t.ovf").write_text("<?xml version='1.0'?><Envelope/>")
    (lib / "item" / "notes.txt").write_text("hello")
    (lib / ".hidden").write_text("secret")
    for name in NAMES:
        (lib / name).mkdir()
        (lib / name / name).write_text(name)
    pw = tmp_path / "pw"
    pw.write_text("s3cret\n")
    s, port, cert = _served(lib, tmp_path, "--password-file", pw)
    auth = {"Authorization": "Basic dmNzcDpzM2NyZXQ="}  # vcsp:s3cret
    try:
        assert _get(port, cert, "/item/disk.vmdk")[0] == 401
        status, head, body = _get(port, cert, "/item/disk.vmdk", auth)
        st = (lib / "item" / "disk.vmdk").stat()
        assert status == 200 and head["ETag"] == f'"{front_etag(int(st.st_mtime), SIZE)}"'  # Caddy sent the bytes
        assert len(body) == SIZE and body[:4] == b"HEAD" and body[-4:] == b"TAIL"
        assert head["Content-Type"] == "application/octet-stream" and head["Content-Length"] == str(SIZE)
        etag, modified = head["ETag"], head["Last-Modified"]
        ranged = {**auth, "Range": f"bytes={SIZE - 4}-"}
        assert _get(port, cert, "/item/disk.vmdk", ranged)[::2] == (206, b"TAIL")
        assert _get(port, cert, "/item/disk.vmdk", {**ranged, "If-Range": etag})[::2] == (206, b"TAIL")
        assert _get(port, cert, "/item/disk.vmdk", {**auth, "Range": "Bytes=0-3"})[::2] == (206, b"HEAD")
        assert _get(port, cert, "/item/disk.vmdk", {**ranged, "If-Range": modified})[::2] == (206, b"TAIL")
        assert _get(port, cert, "/item/disk.vmdk", {**ranged, "If-Range": '"other"'})[0] == 200
        status, _, body = _get(port, cert, "/item/disk.vmdk", {**auth, "Range": "bytes=0-1,4-5"})
        assert status == 200 and len(body) == SIZE  # multiple ranges: the whole file, as without the front
        assert _get(port, cert, "/item/disk.vmdk", {**auth, "Range": "bytes=-0"})[0] == 416
        assert _get(port, cert, "/item/disk.vmdk", {**auth, "Range": f"bytes={SIZE}-"})[0] == 416
        status, head, body = _get(port, cert, "/item/disk.vmdk", auth, method="HEAD")
        assert status == 200 and head["Content-Length"] == str(SIZE) and body == b""
        assert _get(port, cert, "/item/disk.vmdk", {**auth, "If-None-Match": etag})[0] == 304
        # Our Content-Type, not Caddy's guess (it would sniff XML, add a charset).
        assert _get(port, cert, "/item/t.ovf", auth)[1]["Content-Type"] == "application/octet-stream"
        assert _get(port, cert, "/item/notes.txt", auth)[1]["Content-Type"] == "text/plain"
        assert _get(port, cert, "/.hidden", auth)[0] == 404 and _get(port, cert, "/missing", auth)[0] == 404
        assert _get(port, cert, "/item/", auth)[0] == 404  # no listings unless --browse
        for name, path in NAMES.items():  # names a URI would escape: the front sends the right file
            assert _get(port, cert, path, auth)[::2] == (200, name.encode()), name
    finally:
        code, err = s.stop()
    assert code == 0
    # The access log and the metrics see what the front sent.
    assert f"GET /item/disk.vmdk 200 {SIZE} " in err and "GET /item/disk.vmdk 206 4 " in err
    assert "GET /item/disk.vmdk 304 0 " in err and "GET /item/disk.vmdk 416 0 " in err
    assert "X-Library-File" not in err


def test_each_subscriber_keeps_its_generation_through_the_front(tmp_path):
    lib = tmp_path / "lib"
    for gen in ("000001", "000002"):
        folder = lib / ".library-syncer" / "generations" / gen
        (folder / "item").mkdir(parents=True)
        (folder / "lib.json").write_text(f'"{gen}"')
        (folder / "item" / "disk.vmdk").write_bytes(gen.encode() * 1000)
    (lib / "current").symlink_to(".library-syncer/generations/000001")
    s, port, cert = _served(lib, tmp_path)
    try:
        assert _get(port, cert, "/lib.json")[2] == b'"000001"'  # subscriber A starts reading generation 1
        (lib / "next").symlink_to(".library-syncer/generations/000002")
        (lib / "next").rename(lib / "current")  # a publication switches L/current
        # A keeps generation 1 for its files; B (another address) reads generation 2.
        assert _get(port, cert, "/item/disk.vmdk")[2] == b"000001" * 1000
        assert _get(port, cert, "/item/disk.vmdk", source="127.0.0.2")[2] == b"000002" * 1000
        # B claiming to be A in its own X-Forwarded-For does not get A's pin: Caddy writes the address it saw.
        spoofed = {"X-Forwarded-For": "127.0.0.1"}
        assert _get(port, cert, "/item/disk.vmdk", spoofed, source="127.0.0.2")[2] == b"000002" * 1000
        assert _get(port, cert, "/item/disk.vmdk")[2] == b"000001" * 1000
        assert _get(port, cert, "/lib.json")[2] == b'"000002"'  # A starts again: the new generation
        assert _get(port, cert, "/item/disk.vmdk")[2] == b"000002" * 1000
    finally:
        assert s.stop()[0] == 0


def _start_tls_download(port: int, cert: Path) -> tuple[ssl.SSLSocket, int]:
    raw = socket.create_connection(("127.0.0.1", port), timeout=30)
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    sock = ssl.create_default_context(cafile=str(cert)).wrap_socket(raw, server_hostname="127.0.0.1")
    sock.sendall(b"GET /item/disk.vmdk HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(4096)
    assert head.startswith(b"HTTP/1.1 200"), head[:100]
    return sock, len(head.split(b"\r\n\r\n", 1)[1])


def test_sigterm_lets_a_download_finish_and_a_second_signal_cuts(tmp_path):
    lib = tmp_path / "lib"
    size = 64 * 1024 * 1024
    sparse_file(lib / "item" / "disk.vmdk", size, {size - 4: b"DONE"})
    s, port, cert = _served(lib, tmp_path)
    try:
        sock, received = _start_tls_download(port, cert)  # the client stops reading: Caddy blocks
        s.proc.send_signal(signal.SIGTERM)
        wait_until(lambda: port_refused(port), 10, "the front to stop accepting connections")
        assert s.proc.poll() is None  # still sending the running download
        with sock:
            while chunk := sock.recv(1024 * 1024):
                received += len(chunk)
        assert received == size
        assert s.proc.wait(30) == 0
    finally:
        if s.proc.poll() is None:
            s.stop()
    s, port, cert = _served(lib, tmp_path / "again")
    sock, _ = _start_tls_download(port, cert)
    with sock:
        s.proc.send_signal(signal.SIGTERM)
        wait_until(lambda: port_refused(port), 10, "the front to stop accepting connections")
        started = time.monotonic()
        s.proc.send_signal(signal.SIGINT)  # default grace 30 s: the second signal cuts at once
        code, _ = s.stop(timeout=20)
    assert code == 0 and time.monotonic() - started < 10


def test_python_front_terminates_tls_in_our_process(tmp_path):
    lib = tmp_path / "lib"
    sparse_file(lib / "item" / "disk.vmdk", SIZE, {SIZE - 4: b"TAIL"})
    s, port, cert = _served(lib, tmp_path, "--tls-front", "python")
    try:
        status, head, body = _get(port, cert, "/item/disk.vmdk")
        assert status == 200 and head["Server"].startswith("Python/") and body[-4:] == b"TAIL"  # no Caddy
    finally:
        assert s.stop()[0] == 0


def test_a_path_no_header_can_carry_is_sent_through_the_front(tmp_path):
    lib = tmp_path / "lib\x7fx"  # a library folder named with a control character
    (lib / "item").mkdir(parents=True)
    (lib / "item" / "disk.vmdk").write_bytes(b"bytes")
    s, port, cert = _served(lib, tmp_path)
    try:
        status, head, body = _get(port, cert, "/item/disk.vmdk")
        st = (lib / "item" / "disk.vmdk").stat()
        assert (status, body) == (200, b"bytes") and head["ETag"] == f'"{etag_of(st.st_mtime_ns, 5)}"'  # ours sent it
    finally:
        assert s.stop()[0] == 0
