"""Container health check: exit 0 when the role's health endpoint answers 200, else 1.

``healthcheck.py server``: GET http://127.0.0.1:SYNCER_FLEET_PORT/healthz.
``healthcheck.py client``: GET /_syncer/healthz on the status port if set, else on the
library port, over HTTPS (certificate not checked: this asks "alive?", not "trusted?")
when TLS is on. Settings are read like the CLI reads them (environment, SYNCER_CONFIG).
"""

from __future__ import annotations

import os
import ssl
import sys
import urllib.request
from pathlib import Path

from library_syncer.config import load_settings


def health_url(role: str) -> tuple[str, str | None]:
    """(URL, TLS server name or None) of the health endpoint of ``role``."""
    config = os.environ.get("SYNCER_CONFIG")
    s = load_settings(Path(config) if config else None)
    if role == "server":
        if not s.fleet_port:
            raise SystemExit("healthcheck: SYNCER_FLEET_PORT is not set, the server has no health endpoint")
        return f"http://127.0.0.1:{s.fleet_port}/healthz", None
    if s.status_port:
        return f"http://127.0.0.1:{s.status_port}/_syncer/healthz", None
    if s.tls_name or s.tls_files():
        port = getattr(s, "https_port", None) or s.http_port
        return f"https://127.0.0.1:{port}/_syncer/healthz", s.tls_name or "localhost"
    return f"http://127.0.0.1:{s.http_port}/_syncer/healthz", None


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[1] not in ("server", "client"):
        print("usage: healthcheck.py server|client", file=sys.stderr)
        return 2
    url, name = health_url(argv[1])
    handlers = []
    if name:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        handlers.append(_SNIHandler(ctx, name))
    try:
        with urllib.request.build_opener(*handlers).open(url, timeout=8) as r:
            ok = r.status == 200
    except OSError as exc:
        print(f"healthcheck: {url}: {exc}", file=sys.stderr)
        return 1
    print(f"healthcheck: {url}: {'ok' if ok else 'not ok'}")
    return 0 if ok else 1


class _SNIHandler(urllib.request.HTTPSHandler):
    """HTTPS to 127.0.0.1 sending TLS_NAME as the server name (Caddy picks the certificate by it)."""

    def __init__(self, context: ssl.SSLContext, name: str) -> None:
        super().__init__(context=context)
        self.name = name

    def https_open(self, req):
        import http.client

        name = self.name

        class Conn(http.client.HTTPSConnection):
            def connect(self) -> None:
                http.client.HTTPConnection.connect(self)
                self.sock = self._context.wrap_socket(self.sock, server_hostname=name)

        return self.do_open(Conn, req, context=self._context)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
