"""Caddy's configuration for the TLS front, built from the settings (pure), and its log folding."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import pytest

from library_syncer.config import Settings
from library_syncer.errors import ConfigError
from library_syncer.web.caddy import caddy_config, fold_log_line, format_thumbprint
from library_syncer.web.caddy_config import front_file_handlers


def settings(**env) -> Settings:
    return Settings(**{"TLS_NAME": "lib.example.com", **env})


def test_defaults_serve_https_on_the_library_port_and_acme_on_80():
    c = caddy_config(settings(), "127.0.0.1:9000", Path("/data/acme"))
    http = c["apps"]["http"]
    assert (http["https_port"], http["http_port"]) == (8080, 80)
    lib, plain = http["servers"]["library"], http["servers"]["acme_http"]
    assert lib["listen"] == ["0.0.0.0:8080"] and plain["listen"] == ["0.0.0.0:80"]
    assert lib["routes"] == [{"handle": [{"handler": "reverse_proxy", "upstreams": [{"dial": "127.0.0.1:9000"}],
                                          "flush_interval": -1, "handle_response": front_file_handlers()}]}]
    assert lib["tls_connection_policies"] == [{"default_sni": "lib.example.com"}]
    redirect = plain["routes"][0]["handle"][0]
    assert redirect["status_code"] == 308
    assert redirect["headers"]["Location"] == ["https://{http.request.host}:8080{http.request.uri}"]
    assert c["admin"]["disabled"] is True and c["admin"]["config"]["persist"] is False
    assert c["storage"] == {"module": "file_system", "root": "/data/acme"}
    tls = c["apps"]["tls"]
    assert tls["certificates"]["automate"] == ["lib.example.com"]
    issuer = tls["automation"]["policies"][0]["issuers"][0]
    assert issuer["module"] == "acme" and "ca" not in issuer and "email" not in issuer  # Let's Encrypt
    assert issuer["challenges"] == {"http": {"alternate_port": 80}, "tls-alpn": {"alternate_port": 8080}}
    assert http["grace_period"] == 30_000_000_000
    json.dumps(c)  # serialisable as is


def test_the_front_sends_the_file_the_app_names_with_the_planned_range():
    with_range, whole = front_file_handlers()
    assert with_range["match"] == {"headers": {"X-Library-File": [], "X-Library-Range": []}}
    assert whole["match"] == {"headers": {"X-Library-File": [], "X-Library-Range": None}}  # None: absent
    for handler, request in ((with_range, {"set": {"Range": ["{http.reverse_proxy.header.X-Library-Range}"]},
                                           "delete": ["If-Range"]}),
                             (whole, {"delete": ["Range", "If-Range"]})):
        headers, rewrite, files = handler["routes"][0]["handle"]
        assert headers["request"] == request
        assert headers["response"] == {"set": {"Content-Type": ["{http.reverse_proxy.header.X-Library-Type}"]}}
        assert rewrite == {"handler": "rewrite", "uri": "/"}  # the file is the root: no name parsed as a URI
        assert files == {"handler": "file_server", "root": "{http.reverse_proxy.header.X-Library-File}",
                         "canonical_uris": False}


def test_certificate_files_are_served_for_any_name_and_nothing_else_listens():
    c = caddy_config(Settings(SYNCER_HTTP_HOST="127.0.0.1"), "unix//s/web.sock", Path("/d"), https_port=80,
                     http_port=80, certificate=(Path("/c/cert.pem"), Path("/c/key.pem")))  # no TLS_NAME needed
    http = c["apps"]["http"]
    assert list(http["servers"]) == ["library"] and http["servers"]["library"]["listen"] == ["127.0.0.1:80"]
    assert http["https_port"] == 80 and http["http_port"] != 80  # a listener on Caddy's HTTP port gets no TLS
    assert http["servers"]["library"]["tls_connection_policies"] == [{"certificate_selection": {"any_tag": ["library"]}}]
    assert c["apps"]["tls"] == {"certificates": {"load_files": [
        {"certificate": "/c/cert.pem", "key": "/c/key.pem", "tags": ["library"]}]}}
    assert http["servers"]["library"]["routes"][0]["handle"][0]["handle_response"] == front_file_handlers()
    json.dumps(c)


def test_acme_settings_and_ports():
    c = caddy_config(settings(
        SYNCER_ACME_CA="https://acme.internal/dir", SYNCER_ACME_EMAIL="ops@example.com",
        SYNCER_ACME_CA_ROOT="/etc/ssl/internal-ca.pem", SYNCER_HTTP_HOST="::", SYNCER_SHUTDOWN_GRACE=2,
    ), "127.0.0.1:9000", Path("/d"), https_port=443, http_port=8081)
    issuer = c["apps"]["tls"]["automation"]["policies"][0]["issuers"][0]
    assert issuer["ca"] == "https://acme.internal/dir" and issuer["email"] == "ops@example.com"
    assert issuer["trusted_roots_pem_files"] == ["/etc/ssl/internal-ca.pem"]
    servers = c["apps"]["http"]["servers"]
    assert servers["library"]["listen"] == ["[::]:443"] and servers["acme_http"]["listen"] == ["[::]:8081"]
    assert servers["acme_http"]["routes"][0]["handle"][0]["headers"]["Location"] == [
        "https://{http.request.host}{http.request.uri}"]  # no :443
    assert c["apps"]["http"]["grace_period"] == 2_000_000_000


def test_unix_socket_upstream_is_dialled_as_given():
    c = caddy_config(settings(), "unix//run/library-syncer/web.sock", Path("/d"))
    assert c["apps"]["http"]["servers"]["library"]["routes"][0]["handle"][0]["upstreams"] == [
        {"dial": "unix//run/library-syncer/web.sock"}]


def test_bad_combinations_are_one_line_errors():
    with pytest.raises(ConfigError, match="TLS_NAME"):
        caddy_config(Settings(), "127.0.0.1:1", Path("/d"))
    with pytest.raises(ConfigError, match="SYNCER_ACME_HTTP_PORT"):
        caddy_config(settings(SYNCER_HTTP_PORT=80), "127.0.0.1:1", Path("/d"))


def test_caddy_log_lines_fold_into_one_line_with_level():
    line = ('{"level":"error","ts":1.5,"logger":"tls.obtain","msg":"could not get certificate from issuer",'
            '"identifier":"lib.example.com","error":"HTTP 400\\nbad"}')
    level, msg = fold_log_line(line)
    assert level == logging.ERROR
    assert msg == 'tls.obtain: could not get certificate from issuer identifier=lib.example.com error=HTTP 400 bad'
    assert fold_log_line('{"level":"warn","msg":"admin endpoint disabled","logger":"admin"}') == (
        logging.WARNING, "admin: admin endpoint disabled")
    assert fold_log_line('{"level":"info","msg":"x","ids":["a","b"]}') == (logging.INFO, 'x ids=["a","b"]')
    assert fold_log_line("Error: loading initial config: listen tcp :80: bind: address already in use\n") == (
        logging.ERROR, "Error: loading initial config: listen tcp :80: bind: address already in use")
    assert fold_log_line("plain text") == (logging.INFO, "plain text")


def test_thumbprint_format():
    der = b"certificate bytes"
    digest = hashlib.sha1(der).hexdigest().upper()
    assert format_thumbprint(der) == ":".join(digest[i:i + 2] for i in range(0, 40, 2))


def test_front_applies_the_web_servers_header_and_idle_timeouts(tmp_path):
    s = settings(SYNCER_HTTP_HEADER_TIMEOUT="7", SYNCER_HTTP_IDLE_TIMEOUT="30")
    servers = caddy_config(s, "unix//tmp/x.sock", tmp_path)["apps"]["http"]["servers"]
    for server in servers.values():
        assert server["read_header_timeout"] == 7_000_000_000
        assert server["idle_timeout"] == 30_000_000_000
