"""`library-syncer status` against a real client serving HTTPS with TLS_CUSTOM_CERT (real server, loopback)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from client_fixture import running_client
from server_fixture import running_server
from support import cli, free_port, require_tool, wait_until


def _cert(folder: Path, name: str) -> Path:
    openssl = require_tool("openssl", "openssl")
    folder.mkdir(parents=True)
    subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN={name}",
                    "-addext", f"subjectAltName=DNS:{name}", "-keyout", str(folder / "key.pem"),
                    "-out", str(folder / "cert.pem")], check=True, capture_output=True)
    return folder


def test_status_asks_the_https_port_and_trusts_only_the_sites_certificate(tmp_path):
    source = tmp_path / "primary"
    (source / "Alpha").mkdir(parents=True)
    (source / "Alpha" / "a.iso").write_bytes(b"a" * 4096)
    certs = _cert(tmp_path / "certs", "site.example")
    https_port = free_port()
    with running_server(tmp_path, source) as srv:
        with running_client(tmp_path, srv, TLS_CUSTOM_CERT="true", SYNCER_CERTS_DIR=str(certs),
                            SYNCER_HTTPS_PORT=str(https_port), LIBRARY_NAME="Branch TLS") as site:
            assert int(site.env["SYNCER_HTTP_PORT"]) != https_port

            def answered():
                r = cli("status", "--json", env=site.env, timeout=60)
                return r if r.returncode == 0 and json.loads(r.stdout)["published"] else None

            r = wait_until(answered, 90, "the status over HTTPS with a published library")
            st = json.loads(r.stdout)
            assert st["site"] == "Branch TLS" and st["ready"], st
            r = cli("status", env=site.env, timeout=60)
            assert r.returncode == 0 and r.stdout.startswith("Branch TLS: ready"), r.stderr

            # The certificate is checked against the site's own file: another one is refused.
            other = _cert(tmp_path / "other", "site.example")
            r = cli("status", env={**site.env, "SYNCER_CERTS_DIR": str(other)}, timeout=60)
            assert r.returncode == 1 and "certificate verify failed" in r.stderr, r.stderr
            assert site.stop() == 0


def test_status_asks_the_status_port_when_one_is_set(tmp_path):
    source = tmp_path / "primary"
    (source / "Alpha").mkdir(parents=True)
    (source / "Alpha" / "a.iso").write_bytes(b"a")
    certs = _cert(tmp_path / "certs", "site.example")
    with running_server(tmp_path, source) as srv:
        with running_client(tmp_path, srv, TLS_CUSTOM_CERT="true", SYNCER_CERTS_DIR=str(certs),
                            SYNCER_HTTPS_PORT=str(free_port()), SYNCER_STATUS_PORT=str(free_port())) as site:
            r = wait_until(lambda: (p := cli("status", "--json", env=site.env, timeout=60)).returncode == 0 and p,
                           90, "the status on the status port")
            assert json.loads(r.stdout)["site"] == "Library"
            assert site.stop() == 0


def test_status_asks_caddys_https_port_with_automatic_https(tmp_path):
    from deploy.acme import Pebble

    require_tool("caddy", "caddy")
    https_port, http_port = free_port(), free_port()
    pebble = Pebble(tmp_path / "pebble", http_port=http_port, tls_port=https_port).start()
    try:
        source = tmp_path / "primary"
        (source / "Alpha").mkdir(parents=True)
        (source / "Alpha" / "a.iso").write_bytes(b"a")
        env = dict(pebble.client_env("branch.library.test", tmp_path / "certs"), LIBRARY_NAME="Branch ACME")
        with running_server(tmp_path, source) as srv, running_client(tmp_path, srv, **env) as site:
            def answered():
                assert site.proc.poll() is None, site.log_text()
                r = cli("status", "--json", env=site.env, timeout=60)
                return r if r.returncode == 0 and json.loads(r.stdout)["published"] else None

            r = wait_until(answered, 120, "the status through Caddy's HTTPS port")
            assert json.loads(r.stdout)["site"] == "Branch ACME"
            assert site.stop() == 0
    finally:
        pebble.stop()
