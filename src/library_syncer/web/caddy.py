"""Caddy as the TLS front of the library web server.

When ``TLS_NAME`` is set without certificate files (automatic HTTPS), and with certificate
files unless ``SYNCER_TLS_FRONT=python``, the client (and ``serve``) runs Caddy (Debian
package ``caddy``) as a child process. Caddy terminates TLS and reverse-proxies every
request to the aiohttp app listening plain HTTP on a private unix socket; the app names
the library file to send and Caddy sends it (web/app.py, ``front_sends_files``). For
automatic HTTPS Caddy obtains and renews the certificate by ACME and its plain-HTTP
listener answers ACME HTTP challenges and redirects everything else to HTTPS.

:func:`caddy_config` (in :mod:`.caddy_config`) builds Caddy's JSON configuration from the
settings (pure); :class:`CaddyFront` runs Caddy, folds its JSON log lines into Python logging,
waits for the certificate and reports the SHA-1 thumbprint vCenter pins.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import socket
import ssl
import subprocess
import time
from pathlib import Path

from ..config import Settings
from ..errors import ConfigError, OperationFailed
from ..util.proc import Child
from .caddy_config import caddy_config, caddy_env, fold_log_line
from .tls import format_thumbprint

__all__ = ["CaddyFront", "caddy_config", "caddy_env", "fold_log_line", "format_thumbprint"]

log = logging.getLogger(__name__)
caddy_log = logging.getLogger("library_syncer.caddy")


class CaddyFront:
    """Caddy as a child process: the HTTPS front of the library for ``settings.tls_name``.

    ``upstream`` is where the aiohttp app listens plain HTTP: "127.0.0.1:PORT" or
    "unix//path/to.sock"; ``data_dir`` keeps Caddy's certificates and ACME account across
    restarts. ``last_thumbprint`` is the thumbprint seen at start or at the last renewal
    (no I/O, for status pages); :meth:`thumbprint` asks the TLS port now (blocking).
    """

    def __init__(self, settings: Settings, upstream: str, data_dir: Path, *, https_port: int | None = None,
                 http_port: int | None = None, caddy: str | None = None,
                 certificate: tuple[Path, Path] | None = None) -> None:
        self.settings = settings
        self.upstream = upstream
        self.data_dir = Path(data_dir)
        # given files (TLS_CUSTOM_CERT, --cert/--key; absolute: Caddy runs in data_dir); None: ACME
        self.certificate = (certificate[0].absolute(), certificate[1].absolute()) if certificate else None
        self.config = caddy_config(settings, upstream, self.data_dir, https_port=https_port, http_port=http_port,
                                   certificate=self.certificate)
        self.https_port = self.config["apps"]["http"]["https_port"]
        self.http_port = self.config["apps"]["http"]["http_port"]
        self.caddy = caddy or "caddy"
        self.child: Child | None = None
        self.proc: subprocess.Popen | None = None  # the child's process (pid, returncode)
        self.last_error: str | None = None
        self.last_thumbprint: str | None = None
        self._started = False

    # -- state -----------------------------------------------------------------------------
    @property
    def returncode(self) -> int | None:
        """Caddy's exit code once it has exited, else None (also None before start)."""
        return self.child.returncode if self.child is not None else None

    async def wait(self) -> int:
        """Wait until Caddy exits (for whatever reason); its exit code."""
        if self.child is None:
            raise RuntimeError("caddy was not started")
        return await self.child.wait()

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
        if exe is None and self.certificate is not None:
            raise ConfigError(
                "setting tls_front (SYNCER_TLS_FRONT=caddy): HTTPS with a certificate file through Caddy needs the "
                "caddy program: install the Debian package 'caddy', or set SYNCER_TLS_FRONT=python"
            )
        if exe is None:
            raise ConfigError(
                f"automatic HTTPS (TLS_NAME={self.settings.tls_name}) needs the caddy program: "
                "install the Debian package 'caddy', or set TLS_CUSTOM_CERT=true with your own certificate"
            )
        config = self._write_config()
        env = caddy_env(self.data_dir)
        if self.certificate is not None:
            log.info("starting caddy (HTTPS with %s on port %d) in front of %s", self.certificate[0],
                     self.https_port, self.upstream)
        else:
            log.info("starting caddy (HTTPS for %s on port %d, ACME HTTP port %d, CA %s) in front of %s",
                     self.settings.tls_name, self.https_port, self.http_port,
                     self.settings.acme_ca or "Let's Encrypt", self.upstream)
        self.child = Child([exe, "run", "--config", str(config)], env=env, on_line=self._log_line,
                           merge_output=True, new_session=True, guard=True, cwd=str(self.data_dir))
        self.proc = self.child.proc
        try:
            thumb = await self._wait_certificate(timeout)
        except BaseException:
            await self.stop()
            raise
        self._started = True
        self.last_thumbprint = thumb
        log.info("HTTPS for %s: certificate served, SHA-1 thumbprint %s",
                 self.settings.tls_name or "any name", thumb)
        return thumb

    async def _wait_certificate(self, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        delay = 0.05
        while True:
            if self.child is not None and self.child.returncode is not None:
                await self.child.lines_done(2)  # take in the last log lines, for the message
                if self.certificate is not None:
                    raise OperationFailed(f"caddy exited with code {self.child.returncode} while starting HTTPS "
                                          f"on port {self.https_port}" + (f": {self.last_error}" if self.last_error else ""))
                raise OperationFailed(
                    f"caddy exited with code {self.child.returncode} while starting HTTPS for "
                    f"TLS_NAME={self.settings.tls_name}" + (f": {self.last_error}" if self.last_error else "")
                )
            thumb = await asyncio.to_thread(self.thumbprint, 2.0)
            if thumb is not None:
                return thumb
            if time.monotonic() >= deadline and self.certificate is not None:
                raise OperationFailed(f"caddy serves no certificate on port {self.https_port} within {timeout:g}s"
                                      + (f": {self.last_error}" if self.last_error else ""))
            if time.monotonic() >= deadline:
                raise OperationFailed(
                    f"no certificate for TLS_NAME={self.settings.tls_name} from the ACME CA "
                    f"{self.settings.acme_ca or 'Let' + chr(39) + 's Encrypt'} within {timeout:g}s"
                    + (f": {self.last_error}" if self.last_error else
                       " (the name must resolve to this host and the CA must reach it on the ACME HTTP port)")
                )
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.25)

    def _log_line(self, line: str) -> None:
        """One line of Caddy's output (the child's reader thread): folded into our log."""
        level, message = fold_log_line(line)
        if not message:
            return
        if level >= logging.ERROR:
            self.last_error = message
        caddy_log.log(level, "%s", message)
        if self._started and "replaced certificate in cache" in message:
            # A renewal: show the new thumbprint vCenter will be asked to confirm.
            thumb = self.thumbprint()
            self.last_thumbprint = thumb or self.last_thumbprint
            log.warning("HTTPS for %s: certificate renewed, new SHA-1 thumbprint %s",
                        self.settings.tls_name, thumb)

    def kill(self) -> None:
        """Stop Caddy at once (a second stop signal: running downloads are cut)."""
        if self.child is not None and self.child.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.child.proc.kill()

    async def stop(self, timeout: float | None = None) -> int | None:
        """Stop Caddy gracefully (SIGTERM; running downloads get the shutdown grace), then kill.

        Returns Caddy's exit code (None if it was never started).
        """
        child = self.child
        if child is None:
            return None
        grace = self.settings.shutdown_grace_seconds + 5 if timeout is None else timeout
        code = await child.stop(grace, on_kill=lambda: log.warning("caddy did not stop within %gs: killing it",
                                                                    grace))
        await child.lines_done(5)
        return code
