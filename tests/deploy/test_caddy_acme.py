"""Automatic HTTPS end to end on loopback: Caddy gets a certificate from a real ACME CA (Pebble)
and serves the library over HTTPS as a subscriber (vCenter) sees it."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import signal
import socket
import ssl
import threading
import time
from pathlib import Path

import pytest
import requests
from aiohttp import web
from requests.adapters import HTTPAdapter
from support import free_port, require_tool, wait_until
from web.helpers import ServerThread

from library_syncer.config import Settings
from library_syncer.errors import ConfigError, OperationFailed
from library_syncer.sample import make_sample_library
from library_syncer.vcsp.manifest import update_manifest
from library_syncer.web.app import create_app
from library_syncer.web.caddy import CaddyFront, format_thumbprint

from .acme import Pebble

NAME = "library.site-a.example"


class Loop:
    """An asyncio loop in a thread: the test drives CaddyFront with ``run(coro)`` while its log is read."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro, timeout: float = 120):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture
def acme_bench(tmp_path):
    """Yields a factory: make(...) -> (Pebble, settings); everything started is stopped at the end."""
    require_tool("caddy", "caddy")
    loop = Loop()
    started: list = []
    fronts: list[CaddyFront] = []

    def make(*, validity: int | None = None, acme_ca: str | None = None, **env) -> tuple[Pebble, Settings]:
        https_port, http_port = free_port(), free_port()
        pebble = Pebble(tmp_path / "pebble", http_port=http_port, tls_port=https_port,
                        validity_seconds=validity).start()
        started.append(pebble)
        settings = Settings(**{
            "TLS_NAME": NAME, "SYNCER_HTTP_HOST": "127.0.0.1", "SYNCER_HTTP_PORT": https_port,
            "SYNCER_ACME_HTTP_PORT": http_port, "SYNCER_ACME_CA": acme_ca or pebble.directory,
            "SYNCER_ACME_CA_ROOT": str(pebble.ca_root), "SYNCER_ACME_EMAIL": "ops@example.com",
            "SYNCER_SHUTDOWN_GRACE": 5, **env,
        })
        return pebble, settings

    def front(settings: Settings, upstream: str, data_dir: Path | None = None, **kw) -> CaddyFront:
        f = CaddyFront(settings, upstream, data_dir or tmp_path / "caddy", **kw)
        fronts.append(f)
        return f

    yield loop, make, front
    try:
        for f in fronts:
            if f.proc is not None and f.returncode is None:
                loop.run(f.stop(10), timeout=30)
    finally:
        for f in fronts:  # a stuck stop must not leave caddy running
            if f.proc is not None and f.proc.returncode is None:
                try:
                    os.kill(f.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        loop.close()
        for pebble in started:
            pebble.stop()


class _SNIAdapter(HTTPAdapter):
    """Connect to the address in the URL, but send and verify the TLS name ``name``."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__()

    def init_poolmanager(self, *args, **kwargs):
        kwargs["server_hostname"] = self.name
        return super().init_poolmanager(*args, **kwargs)


def subscriber(name: str, roots: Path) -> requests.Session:
    """A client that trusts only Pebble's issuing root and checks the certificate is for ``name``."""
    s = requests.Session()
    s.trust_env = False  # REQUESTS_CA_BUNDLE or a proxy from the environment must not interfere
    s.mount("https://", _SNIAdapter(name))
    s.verify = str(roots)
    return s


def served_thumbprint(port: int, name: str, roots: Path) -> str:
    """SHA-1 of the certificate served on port for name, verified against ``roots``."""
    ctx = ssl.create_default_context(cafile=str(roots))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        with ctx.wrap_socket(sock, server_hostname=name) as tls:
            return format_thumbprint(tls.getpeercert(binary_form=True))


def library_app(folder: Path) -> web.Application:
    make_sample_library(folder, disk_size=256 * 1024)
    update_manifest(folder, "Branch library", state_path=folder.parent / "manifest-state.json")
    app = create_app(folder)

    async def echo(request: web.Request) -> web.Response:
        return web.json_response({"xff": request.headers.get("X-Forwarded-For"),
                                  "proto": request.headers.get("X-Forwarded-Proto"), "host": request.host})

    app.router.add_get("/_syncer/echo", echo)
    return app


@pytest.mark.parametrize("challenge", ["tls-alpn-01", "http-01"])
def test_subscriber_gets_the_library_over_https(acme_bench, tmp_path, caplog, challenge):
    caplog.set_level(logging.INFO)
    loop, make, front = acme_bench
    pebble, settings = make()
    folder = tmp_path / "library"
    with ServerThread(library_app(folder)) as upstream:
        f = front(settings, f"127.0.0.1:{upstream.port}")
        other = "tls-alpn" if challenge == "http-01" else "http"  # Caddy picks either: leave one
        f.config["apps"]["tls"]["automation"]["policies"][0]["issuers"][0]["challenges"][other]["disabled"] = True
        thumb = loop.run(f.start(timeout=60))

        roots = pebble.issuer_roots()
        https = f"https://127.0.0.1:{settings.http_port}"
        s = subscriber(NAME, roots)
        lib = s.get(f"{https}/lib.json", timeout=10)
        assert lib.status_code == 200
        assert lib.json()["name"] == "Branch library"
        assert lib.headers["Content-Type"].startswith("application/json")
        items = s.get(f"{https}/{lib.json()['itemsHref']}", timeout=10).json()["items"]
        file = next(x for it in items for x in it["files"] if x["name"].endswith(".vmdk"))
        data = (folder / file["hrefs"][0]).read_bytes() if (folder / file["hrefs"][0]).exists() else None
        head = s.head(f"{https}/{file['hrefs'][0]}", timeout=10)
        assert head.status_code == 200 and int(head.headers["Content-Length"]) == file["size"]
        part = s.get(f"{https}/{file['hrefs'][0]}", headers={"Range": "bytes=1000-1999"}, timeout=10)
        assert part.status_code == 206 and len(part.content) == 1000
        if data is not None:
            assert part.content == data[1000:2000]
        etag = head.headers["ETag"]
        assert s.get(f"{https}/{file['hrefs'][0]}", headers={"If-None-Match": etag}, timeout=10).status_code == 304

        # the client's address reaches the library server, a forged one does not
        echo = s.get(f"{https}/_syncer/echo", headers={"X-Forwarded-For": "203.0.113.9"}, timeout=10).json()
        assert echo == {"xff": "127.0.0.1", "proto": "https", "host": f"127.0.0.1:{settings.http_port}"}

        # the certificate is for TLS_NAME, also for a client sending no name (subscribing by address)
        assert served_thumbprint(settings.http_port, NAME, roots) == thumb == f.thumbprint() == f.last_thumbprint
        ctx = ssl.create_default_context(cafile=str(roots))
        ctx.check_hostname = False
        with socket.create_connection(("127.0.0.1", settings.http_port), timeout=10) as sock:
            with ctx.wrap_socket(sock) as tls:
                assert format_thumbprint(tls.getpeercert(binary_form=True)) == thumb

        # plain HTTP redirects to HTTPS
        r = requests.get(f"http://127.0.0.1:{settings.acme_http_port}/lib.json?x=1", allow_redirects=False, timeout=10)
        assert r.status_code == 308
        assert r.headers["Location"] == f"https://127.0.0.1:{settings.http_port}/lib.json?x=1"

        loop.run(f.stop())
    assert f.returncode == 0
    messages = [r.getMessage() for r in caplog.records]
    assert any(f"challenge_type={challenge}" in m for m in messages if r"acme_client" in m), messages
    assert any(thumb in m and NAME in m for m in messages)
    # Caddy's JSON lines arrive as single lines with levels
    caddy = [r for r in caplog.records if r.name == "library_syncer.caddy"]
    assert caddy and all("\n" not in r.getMessage() for r in caddy)
    assert {logging.INFO, logging.WARNING} <= {r.levelno for r in caddy}


def test_restart_reuses_the_stored_certificate(acme_bench, tmp_path):
    loop, make, front = acme_bench
    pebble, settings = make()
    data = tmp_path / "certs" / "acme"
    f1 = front(settings, "127.0.0.1:9", data)
    first = loop.run(f1.start(timeout=60))
    roots = pebble.issuer_roots()
    loop.run(f1.stop())
    pebble.stop()  # the CA is gone: a restart must serve the stored certificate without it
    # this time the library server listens on a unix socket (reachable only through the front)
    sock = tmp_path / "web.sock"
    runner = loop.run(_unix_app(sock))
    try:
        f2 = front(settings, f"unix/{sock}", data)
        assert loop.run(f2.start(timeout=30)) == first
        r = subscriber(NAME, roots).get(f"https://127.0.0.1:{settings.http_port}/hello", timeout=10)
        assert r.text == "hello 127.0.0.1"
    finally:
        loop.run(runner.cleanup())
    assert (data / "caddy.json").exists()
    assert (data.stat().st_mode & 0o777) == 0o700


async def _unix_app(path: Path) -> web.AppRunner:
    async def hello(request: web.Request) -> web.Response:
        return web.Response(text=f"hello {request.headers.get('X-Forwarded-For')}")

    app = web.Application()
    app.router.add_get("/hello", hello)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.UnixSite(runner, str(path)).start()
    return runner


def test_renewal_is_served_and_its_thumbprint_logged(acme_bench, caplog):
    caplog.set_level(logging.INFO)
    loop, make, front = acme_bench
    pebble, settings = make(validity=6)  # Caddy renews when a third of the lifetime is left
    f = front(settings, "127.0.0.1:9")
    f.config["apps"]["tls"]["automation"]["renew_interval"] = 500_000_000  # check every 0.5s
    first = loop.run(f.start(timeout=60))
    second = wait_until(lambda: (t := f.thumbprint()) not in (None, first) and t, timeout=40,
                        what="the renewed certificate to be served")
    assert served_thumbprint(settings.http_port, NAME, pebble.issuer_roots()) == second
    wait_until(lambda: any(second in r.getMessage() and "renewed" in r.getMessage() for r in caplog.records),
               timeout=10, what="the new thumbprint in the log")
    assert f.last_thumbprint == second


def test_unreachable_ca_fails_in_bounded_time_with_one_line(acme_bench):
    loop, make, front = acme_bench
    dead_ca = f"https://127.0.0.1:{free_port()}/dir"
    _, settings = make(acme_ca=dead_ca)
    f = front(settings, "127.0.0.1:9")
    t0 = time.monotonic()
    with pytest.raises(OperationFailed) as exc:
        loop.run(f.start(timeout=4))
    assert time.monotonic() - t0 < 4 + 15  # bounded: the wait plus a graceful stop
    msg = str(exc.value)
    assert "\n" not in msg and f"TLS_NAME={NAME}" in msg and dead_ca in msg, msg
    assert f.returncode is not None  # caddy was stopped


def test_port_in_use_is_reported(acme_bench):
    loop, make, front = acme_bench
    _, settings = make()
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", settings.http_port))
        busy.listen()
        f = front(settings, "127.0.0.1:9")
        with pytest.raises(OperationFailed) as exc:
            loop.run(f.start(timeout=30))
    msg = str(exc.value)
    assert "caddy exited" in msg and str(settings.http_port) in msg and "address already in use" in msg, msg


def test_missing_caddy_is_a_config_error(acme_bench, tmp_path):
    loop, make, front = acme_bench
    settings = Settings(TLS_NAME=NAME)
    with pytest.raises(ConfigError, match="Debian package 'caddy'"):
        loop.run(front(settings, "127.0.0.1:9", caddy="/nonexistent/caddy").start(timeout=5))


def test_a_dead_caddy_is_noticed(acme_bench):
    loop, make, front = acme_bench
    _, settings = make()
    f = front(settings, "127.0.0.1:9")
    loop.run(f.start(timeout=60))
    assert f.returncode is None
    os.kill(f.proc.pid, signal.SIGKILL)
    assert loop.run(f.wait(), timeout=10) == -signal.SIGKILL
    assert f.returncode == -signal.SIGKILL
    assert f.thumbprint() is None
    assert loop.run(f.stop()) == -signal.SIGKILL
