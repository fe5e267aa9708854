"""``library-syncer serve`` as a real process: start-up output, TLS, password, SIGTERM; its errors through
the CLI in-process."""

from __future__ import annotations

import hashlib
import signal
import socket
import ssl
import subprocess
import time
from pathlib import Path

import pytest
import requests
from inprocess import run_cli
from support import cli_popen, free_port, port_refused, wait_until

from .helpers import make_cert, openssl_sha1, sparse_file


@pytest.fixture
def library(tmp_path: Path) -> Path:
    lib = tmp_path / "lib"
    (lib / "item").mkdir(parents=True)
    (lib / "lib.json").write_text('{"vcspVersion": "2"}')
    return lib


class Served:
    """A running ``serve`` process and the lines it printed so far."""

    def __init__(self, *args, env: dict | None = None) -> None:
        self.proc = cli_popen("serve", *args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []

    def wait_started(self) -> list[str]:
        """Read stdout up to the subscription URL; fail with stderr if the process ends first."""
        while True:
            line = self.proc.stdout.readline()
            if not line:
                self.proc.wait(10)
                pytest.fail(f"serve exited {self.proc.returncode}: {self.proc.stderr.read()}")
            self.lines.append(line.rstrip("\n"))
            if "/lib.json" in line:
                return self.lines

    def stop(self, timeout: float = 30) -> tuple[int, str]:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            out, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.communicate()
            pytest.fail(f"serve did not stop within {timeout}s after SIGTERM")
        self.lines += out.splitlines()
        return self.proc.returncode, err


def test_http_start_and_stop(library):
    port = free_port()
    s = Served(library, "--host", "127.0.0.1", "--port", port)
    try:
        lines = s.wait_started()
        assert f"  http://127.0.0.1:{port}/lib.json" in lines
        assert requests.get(f"http://127.0.0.1:{port}/lib.json").json() == {"vcspVersion": "2"}
    finally:
        code, err = s.stop()
    assert code == 0
    assert f"127.0.0.1 GET /lib.json 200 20 " in err  # the access log line
    assert "SIGTERM received" in err


def test_https_with_thumbprint_and_password(library, tmp_path):
    cert, key = make_cert(tmp_path / "certs")
    pwfile = tmp_path / "pw"
    pwfile.write_text("s3cret\n")
    port = free_port()
    s = Served(library, "--host", "127.0.0.1", "--port", port, "--password-file", pwfile,
               env={"TLS_CUSTOM_CERT": "true", "SYNCER_CERTS_DIR": str(tmp_path / "certs")})
    try:
        lines = s.wait_started()
        expected = openssl_sha1(cert)
        assert f"TLS certificate SHA-1 thumbprint: {expected}" in lines
        assert f"  https://127.0.0.1:{port}/lib.json" in lines
        served = ssl.get_server_certificate(("127.0.0.1", port))
        digest = hashlib.sha1(ssl.PEM_cert_to_DER_cert(served)).hexdigest().upper()
        assert ":".join(digest[i:i + 2] for i in range(0, 40, 2)) == expected
        url = f"https://127.0.0.1:{port}/lib.json"
        assert requests.get(url, verify=str(cert)).status_code == 401
        r = requests.get(url, verify=str(cert), auth=("vcsp", "s3cret"))
        assert r.status_code == 200 and r.headers["Content-Type"] == "application/json"
        r = requests.get(url, verify=str(cert), headers={"Range": "bytes=2-5"}, auth=("vcsp", "s3cret"))
        assert r.status_code == 206 and r.content == b'vcsp'
    finally:
        code, err = s.stop()
    assert code == 0 and "s3cret" not in err and "Authorization" not in err
    assert f"thumbprint {expected}" in err


def test_password_from_environment(library):
    port = free_port()
    s = Served(library, "--host", "127.0.0.1", "--port", port, env={"LIBRARY_PASSWORD": "envpw"})
    try:
        s.wait_started()
        url = f"http://127.0.0.1:{port}/lib.json"
        assert requests.get(url).status_code == 401
        assert requests.get(url, auth=("vcsp", "envpw")).status_code == 200
    finally:
        code, err = s.stop()
    assert code == 0 and "envpw" not in err


def _error_line(result) -> str:
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr
    return lines[-1]


def test_tls_errors(library, tmp_path):
    cert, key = make_cert(tmp_path / "a")
    cert2, key2 = make_cert(tmp_path / "b")
    _, enc_key = make_cert(tmp_path / "c", encrypted=True)
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("hello\n")
    port = str(free_port())
    base = ["serve", library, "--host", "127.0.0.1", "--port", port]
    cases = [
        (["--cert", cert, "--key", tmp_path / "missing.pem"], f"TLS key {tmp_path / 'missing.pem'}: cannot read"),
        (["--cert", tmp_path / "nocert.pem", "--key", key], f"TLS certificate {tmp_path / 'nocert.pem'}: cannot read"),
        (["--cert", cert, "--key", key2], f"TLS key {key2}: does not match the certificate {cert}"),
        (["--cert", garbage, "--key", key], f"TLS certificate {garbage}: no PEM certificate"),
        (["--cert", cert, "--key", garbage], f"TLS key {garbage}: no PEM private key"),
        (["--cert", cert, "--key", enc_key], f"TLS key {enc_key}: the key is protected by a passphrase"),
    ]
    for extra, message in cases:
        line = _error_line(run_cli(*base, *extra))
        assert line.startswith("library-syncer: error: " + message), line
    line = _error_line(run_cli(*base, env={"TLS_CUSTOM_CERT": "true", "SYNCER_CERTS_DIR": str(tmp_path / "none")}))
    assert f"TLS certificate {tmp_path / 'none' / 'cert.pem'}: cannot read" in line


def test_start_errors(library, tmp_path):
    line = _error_line(run_cli("serve", tmp_path / "nope", "--host", "127.0.0.1", "--port", str(free_port())))
    assert line == f"library-syncer: error: library folder {tmp_path / 'nope'}: does not exist"
    line = _error_line(run_cli("serve", library / "lib.json", "--host", "127.0.0.1", "--port", str(free_port())))
    assert line.endswith("lib.json: is not a folder")
    line = _error_line(run_cli("serve", library, "--port", "0"))
    assert "http_port" in line and "--port" in line
    line = _error_line(run_cli("serve", library, "--port", "1", "--password-file", tmp_path / "nopw"))
    assert f"library_password_file {tmp_path / 'nopw'}: cannot read" in line
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        line = _error_line(run_cli("serve", library, "--host", "127.0.0.1", "--port", str(port)))
    assert line.startswith(f"library-syncer: error: web server cannot listen on 127.0.0.1:{port}: ")
    line = _error_line(run_cli("serve", library, "--host", "192.0.2.1", "--port", str(free_port())))
    assert "cannot listen on 192.0.2.1:" in line
    line = _error_line(run_cli("serve", library, "--port", "1", env={"TLS_NAME": "lib.example.org"}))
    assert "tls_name (lib.example.org): serve has no automatic ACME certificate" in line


def test_ipv6_loopback_and_browse_from_environment(library):
    port = free_port("::1")
    s = Served(library, "--host", "::1", "--port", port, env={"LIBRARY_BROWSE": "true"})
    try:
        assert f"  http://[::1]:{port}/lib.json" in s.wait_started()
        r = requests.get(f"http://[::1]:{port}/")
        assert r.status_code == 200 and 'href="lib.json"' in r.text
    finally:
        assert s.stop()[0] == 0


def test_follows_published_generation(tmp_path):
    lib = tmp_path / "lib"
    for gen, text in (("000001", "one"), ("000002", "two")):
        (lib / ".library-syncer" / "generations" / gen).mkdir(parents=True)
        (lib / ".library-syncer" / "generations" / gen / "lib.json").write_text(f'"{text}"')
    (lib / "current").symlink_to(".library-syncer/generations/000001")
    port = free_port()
    s = Served(lib, "--host", "127.0.0.1", "--port", port)
    try:
        s.wait_started()
        url = f"http://127.0.0.1:{port}/lib.json"
        assert requests.get(url).json() == "one"
        (lib / "next").symlink_to(".library-syncer/generations/000002")
        (lib / "next").rename(lib / "current")
        assert requests.get(url).json() == "two"
        assert requests.get(f"http://127.0.0.1:{port}/current/lib.json").status_code == 404
    finally:
        assert s.stop()[0] == 0


def _start_download(port: int, path: str) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(4096)
    assert head.startswith(b"HTTP/1.1 200"), head[:100]
    return sock, head.split(b"\r\n\r\n", 1)[1]


def test_sigterm_lets_a_running_download_finish(library):
    size = 64 * 1024 * 1024
    sparse_file(library / "item" / "disk.vmdk", size, {size - 4: b"DONE"})
    port = free_port()
    s = Served(library, "--host", "127.0.0.1", "--port", port)
    try:
        s.wait_started()
        sock, body = _start_download(port, "/item/disk.vmdk")  # the client stops reading: the server blocks
        s.proc.send_signal(signal.SIGTERM)
        wait_until(lambda: port_refused(port), 10, "the server to stop accepting connections")
        assert s.proc.poll() is None  # still sending the running download
        received = len(body)
        tail = body[-4:]
        with sock:
            while chunk := sock.recv(1024 * 1024):
                received += len(chunk)
                tail = (tail + chunk)[-4:]
        assert received == size and tail == b"DONE"
        code = s.proc.wait(30)
        err = s.proc.stderr.read()
    finally:
        if s.proc.poll() is None:
            s.stop()
    assert code == 0
    assert f"GET /item/disk.vmdk 200 {size} " in err


def test_shutdown_grace_is_bounded(library):
    size = 64 * 1024 * 1024
    sparse_file(library / "item" / "disk.vmdk", size, {})
    port = free_port()
    s = Served(library, "--host", "127.0.0.1", "--port", port, env={"SYNCER_SHUTDOWN_GRACE": "1"})
    s.wait_started()
    sock, _ = _start_download(port, "/item/disk.vmdk")
    with sock:
        started = time.monotonic()
        code, _ = s.stop(timeout=20)  # the client never reads on: the download is cut after the grace
        assert code == 0 and time.monotonic() - started < 15


def test_second_signal_cuts_running_downloads(library):
    size = 64 * 1024 * 1024
    sparse_file(library / "item" / "disk.vmdk", size, {})
    port = free_port()
    s = Served(library, "--host", "127.0.0.1", "--port", port)  # default grace: 30 s
    s.wait_started()
    sock, _ = _start_download(port, "/item/disk.vmdk")
    with sock:
        s.proc.send_signal(signal.SIGTERM)
        wait_until(lambda: port_refused(port), 10, "the server to stop accepting connections")
        started = time.monotonic()
        s.proc.send_signal(signal.SIGINT)
        code, err = s.stop(timeout=20)
    assert code == 0 and time.monotonic() - started < 10
    assert "SIGINT received again: cutting running downloads" in err
