"""Automatic HTTPS: Caddy as the TLS front of the library web server.

When ``TLS_NAME`` is set without ``TLS_CUSTOM_CERT``, the client runs Caddy
(Debian package ``caddy``) as a child process. Caddy obtains and renews the
certificate by ACME, terminates TLS for ``TLS_NAME`` and reverse-proxies every
request to the aiohttp app listening plain HTTP on loopback; its plain-HTTP
listener answers ACME HTTP challenges and redirects everything else to HTTPS.

:func:`caddy_config` builds Caddy's JSON configuration from the settings (pure);
:class:`CaddyFront` runs Caddy, folds its JSON log lines into Python logging,
waits for the certificate and reports the SHA-1 thumbprint vCenter pins.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import ssl
import time
from pathlib import Path
from typing import Any

from ..util.childenv import child_environ
from ..config import Settings
from ..errors import ConfigError, OperationFailed
from ..util.net import host_port
from .tls import format_thumbprint

log = logging.getLogger(__name__)
caddy_log = logging.getLogger("library_syncer.caddy")

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warn": logging.WARNING, "warning": logging.WARNING,
           "error": logging.ERROR, "dpanic": logging.CRITICAL, "panic": logging.CRITICAL,
           "fatal": logging.CRITICAL}
# Fields of a Caddy log entry not repeated in the folded line.
_SKIP_FIELDS = {"ts", "level", "logger", "msg", "stacktrace"}


def _ns(seconds: float) -> int:
    """A duration in Caddy's JSON unit (nanoseconds)."""
    return int(seconds * 1_000_000_000)


def caddy_config(
    settings: Settings, upstream: str, data_dir: Path, *, https_port: int | None = None,
    http_port: int | None = None,
) -> dict[str, Any]:
    """Caddy's JSON configuration for the TLS front (pure: no I/O).

    HTTPS for ``settings.tls_name`` on ``http_host:https_port`` (default
    ``settings.http_port``) proxied to ``upstream`` ("127.0.0.1:PORT"); plain HTTP on
    ``http_host:http_port`` (default ``settings.acme_http_port``) for ACME HTTP
    challenges and a redirect to HTTPS. The certificate comes from ``acme_ca``
    (default: Let's Encrypt) and is kept in ``data_dir``. Admin API off.
    """
    name = settings.tls_name
    if not name:
        raise ConfigError("setting tls_name (TLS_NAME): required for automatic HTTPS")
    https_port = settings.http_port if https_port is None else https_port
    http_port = settings.acme_http_port if http_port is None else http_port
    if https_port == http_port:
        raise ConfigError(
            f"automatic HTTPS needs two ports: HTTPS port {https_port} and ACME HTTP port "
            f"(SYNCER_ACME_HTTP_PORT) {http_port} are the same"
        )
    host = settings.http_host
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
    }
    return {
        "admin": {"disabled": True, "config": {"persist": False}},
        "logging": {"logs": {"default": {
            "writer": {"output": "stderr"}, "encoder": {"format": "json"}, "level": "INFO",
        }}},
        "storage": {"module": "file_system", "root": str(data_dir)},
        "apps": {
            "http": {
                "http_port": http_port,
                "https_port": https_port,
                "grace_period": _ns(settings.shutdown_grace_seconds),
                "servers": {
                    "library": {
                        "listen": [host_port(host, https_port)],
                        "protocols": ["h1", "h2"],  # no HTTP/3: TCP only, like the published ports
                        "routes": [{"handle": [proxy]}],
                        # A client connecting by address (no SNI) gets the certificate too.
                        "tls_connection_policies": [{"default_sni": name}],
                        "automatic_https": {"disable": True},
                    },
                    "acme_http": {
                        "listen": [host_port(host, http_port)],
                        "protocols": ["h1"],
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


class CaddyFront:
    """Caddy as a child process: the HTTPS front of the library for ``settings.tls_name``.

    ``upstream`` is where the aiohttp app listens plain HTTP: "127.0.0.1:PORT" or
    "unix//path/to.sock"; ``data_dir`` keeps Caddy's certificates and ACME account across
    restarts. ``last_thumbprint`` is the thumbprint seen at start or at the last renewal
    (no I/O, for status pages); :meth:`thumbprint` asks the TLS port now (blocking).
    """

    def __init__(self, settings: Settings, upstream: str, data_dir: Path, *, https_port: int | None = None,
                 http_port: int | None = None, caddy: str | None = None) -> None:
        self.settings = settings
        self.upstream = upstream
        self.data_dir = Path(data_dir)
        self.config = caddy_config(settings, upstream, self.data_dir, https_port=https_port, http_port=http_port)
        self.https_port = self.config["apps"]["http"]["https_port"]
        self.http_port = self.config["apps"]["http"]["http_port"]
        self.caddy = caddy or "caddy"
        self.proc: asyncio.subprocess.Process | None = None
        self.last_error: str | None = None
        self.last_thumbprint: str | None = None
        self._reader: asyncio.Task | None = None
        self._started = False

    # -- state -----------------------------------------------------------------------------
    @property
    def returncode(self) -> int | None:
        """Caddy's exit code once it has exited, else None (also None before start)."""
        return self.proc.returncode if self.proc is not None else None

    async def wait(self) -> int:
        """Wait until Caddy exits (for whatever reason); its exit code."""
        if self.proc is None:
            raise RuntimeError("caddy was not started")
        return await self.proc.wait()

    def _connect_host(self) -> str:
        host = self.settings.http_host
        if host in ("0.0.0.0", ""):
            return "127.0.0.1"
        if host == "::":
            return "::1"
        return host

    def served_certificate(self, timeout: float = 5.0) -> bytes | None:
        """DER of the certificate Caddy serves for TLS_NAME right now, or None (no certificate yet)."""
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        try:
            with socket.create_connection((self._connect_host(), self.https_port), timeout=timeout) as sock:
                with ctx.wrap_socket(sock, server_hostname=self.settings.tls_name) as tls:
                    return tls.getpeercert(binary_form=True)
        except (OSError, ssl.SSLError):
            return None

    def thumbprint(self, timeout: float = 5.0) -> str | None:
        """SHA-1 thumbprint of the certificate served now (follows renewals), or None."""
        der = self.served_certificate(timeout)
        return format_thumbprint(der) if der is not None else None

    # -- lifecycle ---------------------------------------------------------------------------
    def _write_config(self) -> Path:
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            os.chmod(self.data_dir, 0o700)
            path = self.data_dir / "caddy.json"
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(self.config, indent=2))
            tmp.replace(path)
        except OSError as exc:
            raise ConfigError(f"Caddy data folder {self.data_dir}: cannot write ({exc.strerror})") from None
        return path

    async def start(self, timeout: float = 120.0) -> str:
        """Start Caddy and wait until it serves a certificate for TLS_NAME; returns its thumbprint.

        Raises ConfigError when the caddy binary is missing, OperationFailed (one line)
        when Caddy exits or no certificate is served within ``timeout`` seconds.
        """
        exe = shutil.which(self.caddy)
        if exe is None:
            raise ConfigError(
                f"automatic HTTPS (TLS_NAME={self.settings.tls_name}) needs the caddy program: "
                "install the Debian package 'caddy', or set TLS_CUSTOM_CERT=true with your own certificate"
            )
        config = self._write_config()
        env = caddy_env(self.data_dir)
        log.info("starting caddy (HTTPS for %s on port %d, ACME HTTP port %d, CA %s) in front of %s",
                 self.settings.tls_name, self.https_port, self.http_port,
                 self.settings.acme_ca or "Let's Encrypt", self.upstream)
        self.proc = await asyncio.create_subprocess_exec(
            exe, "run", "--config", str(config),
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            env=env, cwd=str(self.data_dir), start_new_session=True,
        )
        self._reader = asyncio.create_task(self._read_log())
        try:
            thumb = await self._wait_certificate(timeout)
        except BaseException:
            await self.stop()
            raise
        self._started = True
        self.last_thumbprint = thumb
        log.info("HTTPS for %s: certificate served, SHA-1 thumbprint %s", self.settings.tls_name, thumb)
        return thumb

    async def _wait_certificate(self, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        delay = 0.05
        while True:
            if self.proc is not None and self.proc.returncode is not None:
                if self._reader is not None:  # take in the last log lines, for the message
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(asyncio.shield(self._reader), 2)
                raise OperationFailed(
                    f"caddy exited with code {self.proc.returncode} while starting HTTPS for "
                    f"TLS_NAME={self.settings.tls_name}" + (f": {self.last_error}" if self.last_error else "")
                )
            thumb = await asyncio.to_thread(self.thumbprint, 2.0)
            if thumb is not None:
                return thumb
            if time.monotonic() >= deadline:
                raise OperationFailed(
                    f"no certificate for TLS_NAME={self.settings.tls_name} from the ACME CA "
                    f"{self.settings.acme_ca or 'Let' + chr(39) + 's Encrypt'} within {timeout:g}s"
                    + (f": {self.last_error}" if self.last_error else
                       " (the name must resolve to this host and the CA must reach it on the ACME HTTP port)")
                )
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.25)

    async def _read_log(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        while True:
            raw = await self.proc.stdout.readline()
            if not raw:
                return
            level, message = fold_log_line(raw.decode("utf-8", "replace"))
            if not message:
                continue
            if level >= logging.ERROR:
                self.last_error = message
            caddy_log.log(level, "%s", message)
            if self._started and "replaced certificate in cache" in message:
                # A renewal: show the new thumbprint vCenter will be asked to confirm.
                thumb = await asyncio.to_thread(self.thumbprint)
                self.last_thumbprint = thumb or self.last_thumbprint
                log.warning("HTTPS for %s: certificate renewed, new SHA-1 thumbprint %s",
                            self.settings.tls_name, thumb)

    async def stop(self, timeout: float | None = None) -> int | None:
        """Stop Caddy gracefully (SIGTERM; running downloads get the shutdown grace), then kill.

        Returns Caddy's exit code (None if it was never started).
        """
        proc = self.proc
        if proc is None:
            return None
        if timeout is None:
            timeout = self.settings.shutdown_grace_seconds + 5
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), timeout)
            except asyncio.TimeoutError:
                log.warning("caddy did not stop within %gs: killing it", timeout)
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        if self._reader is not None:
            with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(self._reader, 5)
        return proc.returncode
