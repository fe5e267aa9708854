"""Helpers of the web tests: an in-process server thread, raw HTTP requests, test certificates."""

from __future__ import annotations

import asyncio
import http.client
import ssl
import subprocess
import threading
from pathlib import Path

import pytest
from support import require_tool

from library_syncer.web.runner import serve_app


class ServerThread:
    """``serve_app`` on 127.0.0.1 (a free port) in its own thread and loop; use as a context manager."""

    def __init__(self, app, *, ssl_context: ssl.SSLContext | None = None, grace: float = 10, limits=None) -> None:
        self.app, self.ssl_context, self.grace, self.limits = app, ssl_context, grace, limits
        self.loop = asyncio.new_event_loop()
        self.urls: list[str] = []
        self.error: BaseException | None = None
        self._started = threading.Event()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)

        async def main() -> None:
            self._stop = asyncio.Event()
            await serve_app(
                self.app, "127.0.0.1", 0, ssl_context=self.ssl_context, shutdown_grace=self.grace,
                on_started=self._on_started, stop_event=self._stop, handle_signals=False, limits=self.limits,
            )

        try:
            self.loop.run_until_complete(main())
        except BaseException as exc:  # reported to the test
            self.error = exc
        finally:
            self._started.set()
            self.loop.close()

    def _on_started(self, urls: list[str]) -> None:
        self.urls = urls
        self._started.set()

    @property
    def port(self) -> int:
        return int(self.urls[0].rsplit(":", 1)[1].split("/")[0])

    @property
    def base(self) -> str:
        scheme = "https" if self.ssl_context else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    def __enter__(self) -> "ServerThread":
        self._thread.start()
        if not self._started.wait(30):
            pytest.fail("web server did not start within 30s")
        if self.error is not None:
            raise self.error
        return self

    def stop(self, timeout: float = 30) -> None:
        if self._thread.is_alive() and self._stop is not None:
            self.loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout)
        if self._thread.is_alive():
            pytest.fail(f"web server did not stop within {timeout}s")

    def __exit__(self, *exc) -> None:
        self.stop()


def raw_request(port: int, path: str, method: str = "GET", headers: dict | None = None):
    """Send ``path`` exactly as given (no client-side normalisation); returns (status, headers, body)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request(method, path, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()
    finally:
        conn.close()


def make_cert(folder: Path, name: str = "", *, encrypted: bool = False) -> tuple[Path, Path]:
    """A self-signed EC certificate for 127.0.0.1/localhost: (cert.pem, key.pem) in ``folder``."""
    openssl = require_tool("openssl", "openssl")
    folder.mkdir(parents=True, exist_ok=True)
    cert, key = folder / f"{name}cert.pem", folder / f"{name}key.pem"
    cmd = [
        openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
        "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=localhost",
        "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
    ]
    cmd += ["-passout", "pass:secret"] if encrypted else ["-noenc"]
    subprocess.run(cmd, check=True, capture_output=True)
    return cert, key


def openssl_sha1(cert: Path) -> str:
    """The certificate's SHA-1 fingerprint as computed by the openssl CLI (``AB:CD:…``)."""
    openssl = require_tool("openssl", "openssl")
    out = subprocess.run([openssl, "x509", "-in", str(cert), "-noout", "-fingerprint", "-sha1"],
                         check=True, capture_output=True, text=True).stdout
    return out.strip().split("=", 1)[1].upper()


def sparse_file(path: Path, size: int, marks: dict[int, bytes]) -> None:
    """A sparse file of ``size`` bytes holding ``marks`` (offset -> bytes) and zeros elsewhere."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.truncate(size)
        for offset, data in marks.items():
            f.seek(offset)
            f.write(data)
