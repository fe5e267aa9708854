"""A real ACME CA on loopback for the tests: Pebble, with pebble-challtestsrv as its DNS server.

pebble-challtestsrv answers every A query with 127.0.0.1, so Pebble validates any
name against this machine without touching /etc/hosts. Pebble's own HTTPS uses a
throw-away certificate (``ca_root`` is what an ACME client must trust); the roots
of the certificates it issues are at its management port (``issuer_roots``).
"""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import urllib.request
from pathlib import Path

from support import free_port, require_tool, stop_process, wait_port
from web.helpers import make_cert


class Pebble:
    """Pebble + DNS on free loopback ports; validates HTTP-01 on ``http_port`` and TLS-ALPN-01 on ``tls_port``."""

    def __init__(self, folder: Path, *, http_port: int, tls_port: int, validity_seconds: int | None = None) -> None:
        self.folder = folder
        self.http_port, self.tls_port = http_port, tls_port
        self.validity_seconds = validity_seconds
        self.port, self.mgmt_port, self.dns_port, self.dns_mgmt_port = (free_port() for _ in range(4))
        self.procs: list[subprocess.Popen] = []

    @property
    def directory(self) -> str:
        return f"https://127.0.0.1:{self.port}/dir"

    def client_env(self, tls_name: str, certs_dir: Path) -> dict[str, str]:
        """A client's settings for automatic HTTPS for ``tls_name`` from this CA, on the ports it validates."""
        return dict(TLS_NAME=tls_name, SYNCER_HTTPS_PORT=str(self.tls_port),
                    SYNCER_ACME_HTTP_PORT=str(self.http_port), SYNCER_ACME_CA=self.directory,
                    SYNCER_ACME_CA_ROOT=str(self.ca_root), SYNCER_CERTS_DIR=str(certs_dir))

    def start(self) -> "Pebble":
        pebble = require_tool("pebble", "pebble")
        challtestsrv = require_tool("pebble-challtestsrv", "pebble")
        self.folder.mkdir(parents=True, exist_ok=True)
        self.ca_root, key = make_cert(self.folder / "tls")
        config = {"pebble": {
            "listenAddress": f"127.0.0.1:{self.port}",
            "managementListenAddress": f"127.0.0.1:{self.mgmt_port}",
            "certificate": str(self.ca_root), "privateKey": str(key),
            "httpPort": self.http_port, "tlsPort": self.tls_port,
            "ocspResponderURL": "", "externalAccountBindingRequired": False,
        }}
        if self.validity_seconds:
            config["pebble"]["certificateValidityPeriod"] = self.validity_seconds
        (self.folder / "pebble.json").write_text(json.dumps(config))
        env = dict(os.environ, PEBBLE_VA_NOSLEEP="1", PEBBLE_WFE_NONCEREJECT="0", PEBBLE_AUTHZREUSE="0")
        log = open(self.folder / "pebble.log", "wb")
        self.procs.append(subprocess.Popen(
            [challtestsrv, "-dns01", f"127.0.0.1:{self.dns_port}", "-http01", "", "-https01", "",
             "-tlsalpn01", "", "-management", f"127.0.0.1:{self.dns_mgmt_port}",
             "-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""],
            stdout=log, stderr=subprocess.STDOUT,
        ))
        self.procs.append(subprocess.Popen(
            [pebble, "-config", str(self.folder / "pebble.json"), "-dnsserver", f"127.0.0.1:{self.dns_port}"],
            stdout=log, stderr=subprocess.STDOUT, env=env,
        ))
        for port in (self.dns_mgmt_port, self.port, self.mgmt_port):
            wait_port("127.0.0.1", port, timeout=30)
        return self

    def stop(self) -> None:
        for proc in reversed(self.procs):
            stop_process(proc)

    def issuer_roots(self) -> Path:
        """PEM file of the root that signs Pebble's certificates (it changes at every Pebble start)."""
        ctx = ssl.create_default_context(cafile=str(self.ca_root))
        with urllib.request.urlopen(f"https://127.0.0.1:{self.mgmt_port}/roots/0", context=ctx, timeout=10) as r:
            pem = r.read()
        path = self.folder / "issuer-root.pem"
        path.write_bytes(pem)
        return path

    def log_text(self) -> str:
        path = self.folder / "pebble.log"
        return path.read_text(errors="replace") if path.exists() else ""
