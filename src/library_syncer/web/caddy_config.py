"""Caddy's JSON configuration, environment and log folding for the TLS front (pure, no I/O apart from
reading the environment).

:func:`caddy_config` builds the configuration from the settings (automatic HTTPS, or given
certificate files), :func:`front_file_handlers` what Caddy does with the library file the app
names, :func:`caddy_env` the
environment of the child (no settings, no secrets), :func:`fold_log_line` one line of
Caddy's JSON log as a Python logging level and message. :mod:`.caddy` runs Caddy with them.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from ..config import Settings
from ..errors import ConfigError
from ..util.childenv import child_environ
from ..util.net import host_port
from .app import FRONT_FILE, FRONT_RANGE, FRONT_TYPE

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warn": logging.WARNING, "warning": logging.WARNING,
           "error": logging.ERROR, "dpanic": logging.CRITICAL, "panic": logging.CRITICAL,
           "fatal": logging.CRITICAL}
# Fields of a Caddy log entry not repeated in the folded line.
_SKIP_FIELDS = {"ts", "level", "logger", "msg", "stacktrace"}


def _ns(seconds: float) -> int:
    """A duration in Caddy's JSON unit (nanoseconds)."""
    return int(seconds * 1_000_000_000)


def front_file_handlers() -> list[dict[str, Any]]:
    """What Caddy does with an upstream answer naming a library file (web/app.py's FRONT_* headers):
    it sends that file itself with ``file_server`` (TLS at Go's speed), with the Range the app planned
    (none: the whole file; If-Range decided already) and the app's Content-Type.

    Two handlers, the first matching one applies: a header list ``[]`` means "present", None "absent".
    """
    header = "{http.reverse_proxy.header.%s}"
    content_type = {"set": {"Content-Type": [header % FRONT_TYPE]}}

    def send(match: dict[str, Any], request: dict[str, Any]) -> dict[str, Any]:
        return {"match": {"headers": match}, "routes": [{"handle": [
            {"handler": "headers", "request": request, "response": content_type},
            # The root is the file itself (a path, never parsed as a URI), the request path "/" adds nothing.
            {"handler": "rewrite", "uri": "/"},
            {"handler": "file_server", "root": header % FRONT_FILE, "canonical_uris": False},
        ]}]}

    return [
        send({FRONT_FILE: [], FRONT_RANGE: []}, {"set": {"Range": [header % FRONT_RANGE]}, "delete": ["If-Range"]}),
        send({FRONT_FILE: [], FRONT_RANGE: None}, {"delete": ["Range", "If-Range"]}),
    ]


def caddy_config(
    settings: Settings, upstream: str, data_dir: Path, *, https_port: int | None = None,
    http_port: int | None = None, certificate: tuple[Path, Path] | None = None,
) -> dict[str, Any]:
    """Caddy's JSON configuration for the TLS front (pure: no I/O).

    HTTPS on ``http_host:https_port`` (default ``settings.http_port``) proxied to ``upstream``
    ("127.0.0.1:PORT" or "unix//path"), library files sent by Caddy as the app names them
    (:func:`front_file_handlers`). With ``certificate`` (cert, key files) that certificate is
    served whatever name a client asks for, and nothing else listens. Without it, automatic
    HTTPS for ``settings.tls_name``: plain HTTP on ``http_host:http_port`` (default
    ``settings.acme_http_port``) for ACME HTTP challenges and a redirect to HTTPS, the
    certificate from ``acme_ca`` (default: Let's Encrypt), kept in ``data_dir``. Admin API off.
    """
    name = settings.tls_name
    if not name and certificate is None:
        raise ConfigError("setting tls_name (TLS_NAME): required for automatic HTTPS")
    https_port = settings.http_port if https_port is None else https_port
    http_port = settings.acme_http_port if http_port is None else http_port
    if https_port == http_port and certificate is None:
        raise ConfigError(
            f"automatic HTTPS needs two ports: HTTPS port {https_port} and ACME HTTP port "
            f"(SYNCER_ACME_HTTP_PORT) {http_port} are the same"
        )
    host = settings.http_host
    # The web server's own limits, applied by the front too (its TLS handshake counts as header time).
    timeouts = {"read_header_timeout": _ns(settings.http_header_timeout_seconds),
                "idle_timeout": _ns(settings.http_idle_timeout_seconds)}
    issuer: dict[str, Any] = {
        "module": "acme",
        "challenges": {"http": {"alternate_port": http_port}, "tls-alpn": {"alternate_port": https_port}},
    }
    if settings.acme_ca:
        issuer["ca"] = settings.acme_ca
    if settings.acme_email:
        issuer["email"] = settings.acme_email
    if settings.acme_ca_root:
        issuer["trusted_roots_pem_files"] = [str(settings.acme_ca_root)]
    port_suffix = "" if https_port == 443 else f":{https_port}"
    proxy = {
        "handler": "reverse_proxy",
        "upstreams": [{"dial": upstream}],
        # Downloads of multi-gigabyte disks: stream, never buffer.
        "flush_interval": -1,
        "handle_response": front_file_handlers(),
    }
    library = {
        "listen": [host_port(host, https_port)],
        "protocols": ["h1", "h2"],  # no HTTP/3: TCP only, like the published ports
        **timeouts,
        "routes": [{"handle": [proxy]}],
        # A client connecting by address (no SNI) gets the certificate too.
        "tls_connection_policies": [{"default_sni": name}],
        "automatic_https": {"disable": True},
    }
    if certificate is not None:
        library["tls_connection_policies"] = [{"certificate_selection": {"any_tag": ["library"]}}]
        # Nothing listens on Caddy's HTTP port here, but a listener on it would get no TLS.
        http_port = 80 if https_port != 80 else 81
        return {
            "admin": {"disabled": True, "config": {"persist": False}},
            "logging": _logging(),
            "storage": {"module": "file_system", "root": str(data_dir)},
            "apps": {
                "http": {"http_port": http_port, "https_port": https_port,
                         "grace_period": _ns(settings.shutdown_grace_seconds), "servers": {"library": library}},
                "tls": {"certificates": {"load_files": [
                    {"certificate": str(certificate[0]), "key": str(certificate[1]), "tags": ["library"]}]}},
            },
        }
    return {
        "admin": {"disabled": True, "config": {"persist": False}},
        "logging": _logging(),
        "storage": {"module": "file_system", "root": str(data_dir)},
        "apps": {
            "http": {
                "http_port": http_port,
                "https_port": https_port,
                "grace_period": _ns(settings.shutdown_grace_seconds),
                "servers": {
                    "library": library,
                    "acme_http": {
                        "listen": [host_port(host, http_port)],
                        "protocols": ["h1"],
                        **timeouts,
                        "routes": [{"handle": [{
                            "handler": "static_response",
                            "status_code": 308,
                            "headers": {"Location": [f"https://{{http.request.host}}{port_suffix}{{http.request.uri}}"]},
                        }]}],
                        "automatic_https": {"disable": True},
                    },
                },
            },
            "tls": {
                "certificates": {"automate": [name]},
                "automation": {"policies": [{"subjects": [name], "issuers": [issuer]}]},
            },
        },
    }


def _logging() -> dict[str, Any]:
    return {"logs": {"default": {"writer": {"output": "stderr"}, "encoder": {"format": "json"}, "level": "INFO"}}}


def caddy_env(data_dir: Path, base: dict[str, str] | None = None) -> dict[str, str]:
    """Caddy's environment: none of the tool's settings (secrets included), its data under ``data_dir``."""
    env = {k: v for k, v in child_environ(base).items()
           if not k.upper().startswith(("SYNC_", "SYNCER_", "LIBRARY_"))}
    env.update(HOME=str(data_dir), XDG_DATA_HOME=str(data_dir), XDG_CONFIG_HOME=str(data_dir))
    return env


def fold_log_line(line: str) -> tuple[int, str]:
    """(logging level, one-line message) for one line of Caddy's stderr."""
    line = line.strip()
    try:
        entry = json.loads(line)
    except ValueError:
        entry = None
    if not isinstance(entry, dict):  # e.g. "Error: loading initial config: ..." before exiting
        level = logging.ERROR if line.startswith(("Error:", "panic:")) else logging.INFO
        return level, " ".join(line.split())
    level = _LEVELS.get(str(entry.get("level", "info")).lower(), logging.INFO)
    logger = entry.get("logger")
    parts = [f"{logger}: " if logger else "", str(entry.get("msg", ""))]
    for key, value in entry.items():
        if key not in _SKIP_FIELDS:
            text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
            parts.append(f" {key}={text}")
    return level, " ".join("".join(parts).split())
