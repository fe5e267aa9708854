"""A web server one client cannot starve: ``library-syncer serve`` as a real process on loopback,
flooded with idle, half-open and excess connections from several 127.x addresses."""

from __future__ import annotations

import http.client
import re
import resource
import selectors
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from aiohttp import web
from client_fixture import running_client
from inprocess import run_cli
from support import cli_popen, free_port, wait_until

from library_syncer.web.app import create_app
from library_syncer.web.limits import FDS_PER_CONNECTION, FDS_RESERVED, HttpLimits
from library_syncer.web.tls import load_tls_context

from .helpers import ServerThread, make_cert

PARTIAL = b"GET /lib.json HTTP/1.1\r\nHost: site\r\nUser-Agent: slow"  # headers never finished


@pytest.fixture
def library(tmp_path: Path) -> Path:
    lib = tmp_path / "lib"
    (lib / "item").mkdir(parents=True)
    (lib / "lib.json").write_text('{"vcspVersion": "2"}')
    return lib


@pytest.fixture
def many_files():
    """This test process may open a few thousand sockets (restored afterwards)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 4096
    if 0 <= hard < want:
        pytest.fail(f"RLIMIT_NOFILE hard limit {hard} < {want}: raise it to run this test (ulimit -Hn)")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, want), hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


class Served:
    """``library-syncer serve`` with the given settings and open-file limit; stderr collected."""

    def __init__(self, library: Path, env: dict[str, str], nofile: tuple[int, int] | None = None) -> None:
        self.port = free_port()
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        soft_hard = nofile or (1024, hard)
        self.proc = cli_popen("serve", library, "--host", "127.0.0.1", "--port", self.port, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, soft_hard))
        self.err: list[str] = []
        self._reader = threading.Thread(target=lambda: self.err.extend(self.proc.stderr), daemon=True)
        self._reader.start()
        while "/lib.json" not in (line := self.proc.stdout.readline()):
            if not line:
                self.proc.wait(10)
                pytest.fail(f"serve exited {self.proc.returncode}: {''.join(self.err)}")

    def open_files_limit(self) -> int:
        for line in Path(f"/proc/{self.proc.pid}/limits").read_text().splitlines():
            if line.startswith("Max open files"):
                return int(line.split()[3])
        pytest.fail("no 'Max open files' line in /proc/PID/limits")

    def warnings(self) -> list[str]:
        return [line for line in self.err if " WARNING " in line or " ERROR " in line or "Traceback" in line]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            pytest.fail("serve did not stop within 30s after SIGTERM")
        self._reader.join(10)


def get(port: int, source: str = "127.0.0.1", conn: http.client.HTTPConnection | None = None):
    """GET /lib.json from ``source`` (on ``conn`` if given, left open); returns (status, body)."""
    c = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=10, source_address=(source, 0))
    try:
        c.request("GET", "/lib.json")
        r = c.getresponse()
        return r.status, r.read()
    finally:
        if conn is None:
            c.close()


def connect(port: int, source: str, send: bytes = b"") -> socket.socket:
    s = socket.socket()
    s.bind((source, 0))
    s.settimeout(10)
    s.connect(("127.0.0.1", port))
    if send:
        s.sendall(send)
    return s


def refused(port: int, source: str) -> bool:
    """True when the server drops a new connection from ``source`` without answering."""
    try:
        with connect(port, source) as s:
            s.sendall(b"GET /lib.json HTTP/1.1\r\nHost: site\r\n\r\n")
            return s.recv(100) == b""
    except (ConnectionResetError, BrokenPipeError):
        return True


def wait_all_closed(socks: list[socket.socket], timeout: float) -> dict[socket.socket, float]:
    """When the server closed each socket (monotonic time); fails after ``timeout`` seconds."""
    closed: dict[socket.socket, float] = {}
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as sel:
        for s in socks:
            s.setblocking(False)
            sel.register(s, selectors.EVENT_READ)
        while len(closed) < len(socks):
            left = deadline - time.monotonic()
            if left <= 0:
                pytest.fail(f"{len(socks) - len(closed)} of {len(socks)} connections still open after {timeout}s")
            for key, _ in sel.select(left):
                try:
                    data = key.fileobj.recv(4096)
                except BlockingIOError:
                    continue
                except ConnectionResetError:
                    data = b""
                if not data:
                    closed[key.fileobj] = time.monotonic()
                    sel.unregister(key.fileobj)
    return closed


def test_idle_and_half_open_connections_are_closed_by_the_header_timeout(library, many_files):
    header, max_connections = 1.5, 1100
    srv = Served(library, {"SYNCER_HTTP_HEADER_TIMEOUT": str(header), "SYNCER_HTTP_IDLE_TIMEOUT": "60",
                           "SYNCER_HTTP_MAX_CONNECTIONS": str(max_connections)})
    socks: list[socket.socket] = []
    opened: dict[socket.socket, float] = {}
    try:
        # Started with a soft limit of 1024, the server raised it to what 1,100 connections need.
        assert srv.open_files_limit() >= FDS_RESERVED + FDS_PER_CONNECTION * max_connections
        # 1,000 connections from 20 addresses (50 each, under the per-client cap of 64):
        # half send nothing, half the start of a request whose headers never end.
        for i in range(1000):
            s = connect(srv.port, f"127.0.1.{i % 20 + 1}", PARTIAL if i % 2 else b"")
            opened[s] = time.monotonic()
            socks.append(s)
        assert get(srv.port) == (200, b'{"vcspVersion": "2"}')  # a normal client is served meanwhile...
        served = time.monotonic()
        closed = wait_all_closed(socks, timeout=header + 10)  # the idle timeout would take 60 s
        assert served < min(closed.values())  # ...before the first of them timed out
        waited = [closed[s] - opened[s] for s in socks]
        assert min(waited) >= header - 0.1, "closed before the header timeout: refused, not timed out"
        assert get(srv.port)[0] == 200  # and after
    finally:
        for s in socks:
            s.close()
        srv.stop()
    assert srv.warnings() == []  # timeouts are routine: not one warning per connection


def test_caps_per_client_and_in_total_refuse_at_once_with_one_warning(library):
    srv = Served(library, {"SYNCER_HTTP_MAX_PER_CLIENT": "8", "SYNCER_HTTP_MAX_CONNECTIONS": "12",
                           "SYNCER_HTTP_HEADER_TIMEOUT": "60"})
    kept: list[http.client.HTTPConnection] = []
    try:
        for source in ["127.0.0.1"] * 8 + ["127.0.0.2"] * 3:  # served and kept alive
            kept.append(http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10, source_address=(source, 0)))
            assert get(srv.port, conn=kept[-1])[0] == 200
        assert refused(srv.port, "127.0.0.1")  # the 9th from one address
        kept.append(http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10, source_address=("127.0.0.2", 0)))
        assert get(srv.port, conn=kept[-1])[0] == 200  # another address is still served: 12 open now
        assert refused(srv.port, "127.0.0.3")  # the total cap
        assert all(refused(srv.port, "127.0.0.1") for _ in range(200))  # a flood: no log flood
        kept.pop(0).close()  # a slot of 127.0.0.1 frees up
        wait_until(lambda: not refused(srv.port, "127.0.0.1"), 10, "a freed slot to be usable again")
    finally:
        for c in kept:
            c.close()
        srv.stop()
    # one line at the first refusal, one summary of the others (here at shutdown, else each minute)
    lines = srv.warnings()
    assert len(lines) == 2, lines
    assert "connection from 127.0.0.1 refused: SYNCER_HTTP_MAX_PER_CLIENT=8 reached" in lines[0]
    held = re.search(r": (\d+) more connections refused at the caps", lines[1])
    assert held and int(held.group(1)) >= 201, lines[1]  # and any refused while the freed slot was noticed


def test_a_low_hard_file_limit_lowers_the_cap_with_one_warning(library):
    srv = Served(library, {}, nofile=(256, 256))
    try:
        assert get(srv.port)[0] == 200
        assert srv.open_files_limit() == 256
    finally:
        srv.stop()
    allowed = (256 - FDS_RESERVED) // FDS_PER_CONNECTION
    lines = srv.warnings()
    assert len(lines) == 1 and f"SYNCER_HTTP_MAX_CONNECTIONS lowered from 512 to {allowed}" in lines[0], lines


def test_out_of_file_descriptors_at_accept_logs_one_warning(library):
    header = 1.0
    srv = Served(library, {"SYNCER_HTTP_HEADER_TIMEOUT": str(header)})
    socks: list[socket.socket] = []
    pid = srv.proc.pid
    try:
        # Someone lowered the server's limit behind its back: 10 file descriptors to spare.
        soft, hard = resource.prlimit(pid, resource.RLIMIT_NOFILE)
        in_use = len(list(Path(f"/proc/{pid}/fd").iterdir()))
        resource.prlimit(pid, resource.RLIMIT_NOFILE, (in_use + 10, hard))
        started = time.monotonic()
        socks = [connect(srv.port, f"127.0.2.{i % 5 + 1}") for i in range(40)]
        # Accepts fail (EMFILE) until the header timeout frees descriptors, round after round:
        # asyncio retries each second, so this takes several rounds.
        wait_all_closed(socks, timeout=30)
        assert time.monotonic() - started >= 2 * header
        resource.prlimit(pid, resource.RLIMIT_NOFILE, (soft, hard))
        assert get(srv.port)[0] == 200
    finally:
        for s in socks:
            s.close()
        srv.stop()
    lines = srv.warnings()
    assert len(lines) == 2, lines  # the first failure, and the summary of the others at shutdown
    assert "cannot accept connections: Too many open files" in lines[0]
    assert "more connection accepts failed for lack of file descriptors" in lines[1]


def test_a_further_request_on_a_kept_alive_connection_gets_the_header_timeout(library):
    limits = HttpLimits(header_timeout=1.0, idle_timeout=4.0)
    with ServerThread(create_app(library), limits=limits) as srv:
        idle = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
        slow = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
        try:
            assert get(srv.port, conn=idle)[0] == 200
            idle_since = time.monotonic()
            assert get(srv.port, conn=slow)[0] == 200
            slow.sock.sendall(PARTIAL)  # a second request that never finishes its headers
            partial_at = time.monotonic()
            slow_closed = wait_all_closed([slow.sock], timeout=10)[slow.sock]
            assert slow_closed - partial_at < limits.idle_timeout - 1  # the header timeout, not the idle one
            idle.sock.setblocking(False)
            with pytest.raises(BlockingIOError):
                idle.sock.recv(1)  # an idle kept-alive connection is still open...
            idle_closed = wait_all_closed([idle.sock], timeout=10)[idle.sock]
            assert idle_closed - idle_since >= limits.header_timeout + 1  # ...until the idle timeout
        finally:
            idle.close()
            slow.close()


def test_a_tls_handshake_gets_the_header_timeout(library, tmp_path):
    cert, key = make_cert(tmp_path / "certs")
    limits = HttpLimits(header_timeout=1.0)
    with ServerThread(create_app(library), ssl_context=load_tls_context(cert, key), limits=limits) as srv:
        silent = connect(srv.port, "127.0.0.1")  # TCP only, no ClientHello (asyncio waits 60 s)
        try:
            wait_all_closed([silent], timeout=10)
        finally:
            silent.close()
        import requests

        assert requests.get(srv.base + "/lib.json", verify=str(cert), timeout=10).status_code == 200


def test_aiohttp_handler_state_the_guard_reads():
    # web/guard.py reads these attributes of aiohttp's RequestHandler; an aiohttp upgrade that
    # renames them must fail here, not silently disable the header timeout.
    assert {"_request_count", "_messages", "_request_in_progress", "_force_close", "_close"} <= set(
        web.RequestHandler.__slots__)


@pytest.mark.parametrize("args, env, expected", [
    (["--http-max-per-client", "0"], {}, "setting http_max_per_client from --http-max-per-client: "
                                         "Input should be greater than or equal to 1 (got 0)"),
    ([], {"SYNCER_HTTP_HEADER_TIMEOUT": "-1"}, "setting http_header_timeout_seconds from environment "
                                              "SYNCER_HTTP_HEADER_TIMEOUT: Input should be greater than 0"),
    ([], {"SYNCER_HTTP_MAX_CONNECTIONS": "many"}, "setting http_max_connections from environment "
                                                  "SYNCER_HTTP_MAX_CONNECTIONS: Input should be a valid integer"),
])
def test_bad_limit_settings_stop_with_one_line(library, args, env, expected):
    result = run_cli("serve", library, "--port", free_port(), *args, env=env)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert expected in result.stderr


def test_the_client_daemon_applies_the_limits(tmp_path):
    # No server to sync from: the site still serves (nothing published yet) under its caps.
    nobody = SimpleNamespace(host="127.0.0.1", port=free_port(), user="site", key=tmp_path / "missing-key",
                             host_key_line="ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl")
    with running_client(tmp_path, nobody, SYNCER_HTTP_MAX_PER_CLIENT="2") as site:
        kept = [http.client.HTTPConnection("127.0.0.1", site.port, timeout=10) for _ in range(2)]

        def health(conn: http.client.HTTPConnection) -> int | None:
            try:
                conn.request("GET", "/_syncer/healthz")
                r = conn.getresponse()
                r.read()
                return r.status
            except OSError:
                conn.close()
                return None

        try:
            wait_until(lambda: health(kept[0]) == 200, 60, "the site's web server")
            assert health(kept[1]) == 200
            assert refused(site.port, "127.0.0.1")  # the 3rd from one address
            c = http.client.HTTPConnection("127.0.0.1", site.port, timeout=10, source_address=("127.0.0.2", 0))
            assert health(c) == 200
            c.close()
        finally:
            for c in kept:
                c.close()
        assert site.stop() == 0
    assert "SYNCER_HTTP_MAX_PER_CLIENT=2 reached" in site.log_text()
