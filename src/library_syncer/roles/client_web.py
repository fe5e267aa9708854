"""The site's web servers: the library app, the status app, the HTTPS redirect and the Caddy front.

:class:`SiteWeb` is the web half of the client daemon (mixed into
:class:`~.client.ClientDaemon`): it builds the apps, starts one task per listening
server on the daemon's loop (or the app on a unix socket with Caddy in front, which
terminates HTTPS and sends the library files: automatic HTTPS, or certificate files unless
SYNCER_TLS_FRONT=python) and reports once all of them listen, so a port in use is the one
error shown.  Before the first publication the library app serves an empty folder,
and ``lib.json``/``items.json`` answer 503 with the daemon's VCSP progress document.  Every server stops when the daemon's stop event is set; a second stop
signal (the daemon's cut event) cuts the running downloads.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from pathlib import Path
from typing import Any, Callable

from aiohttp import web

from ..config import Settings
from ..errors import ConfigError, OperationFailed
from ..publish.generations import Layout
from ..publish.pins import GenerationPins
from ..web.app import create_app
from ..web.caddy import CaddyFront
from ..web.limits import HttpLimits
from ..web.ops import add_status_routes
from ..web.redirect import redirect_app
from ..web.rules import subscription_urls
from ..web.runner import REQUEST_OBSERVER, serve_app
from ..web.tls import load_tls_context, sha1_thumbprint
from .site_metrics import ClientMetrics

log = logging.getLogger("library_syncer.roles.client")

ACME_START_TIMEOUT = 3600.0  # Caddy keeps retrying the CA meanwhile; then the daemon exits non-zero


def served_root(settings: Settings) -> GenerationPins:
    """Root provider for the web app: the generation each subscriber reads, an empty folder before the first."""
    empty = Layout(settings.library).meta / "empty"
    empty.mkdir(parents=True, exist_ok=True)
    return GenerationPins(settings.library, settings.generation_grace_seconds, fallback=empty)



class SiteWeb:
    """The web servers of one site; the daemon provides the settings, the stop/cut events and the metrics."""

    settings: Settings
    stop: asyncio.Event
    _cut: asyncio.Event
    metrics_: ClientMetrics
    thumbprint: str | None
    front: CaddyFront | None
    # what the status routes ask (web.ops.StatusSource), answered by the daemon
    status: Callable[[], dict[str, Any]]
    metrics: Callable[[], bytes]
    start_sync: Callable[[str], tuple[bool, str]]
    not_ready: Callable[[], dict[str, Any] | None]  # lib.json's 503 document before the first publication

    def _apps(self):
        """The library app, and the status app when the status endpoints have a port of their own."""
        s = self.settings
        password = s.library_password_value()
        library = create_app(served_root(s), browse=s.library_browse, password=password,
                             front_sends_files=self.caddy_tls, not_ready=self.not_ready)
        library[REQUEST_OBSERVER] = self.metrics_.observe_request
        status_app = web.Application() if s.status_port else library
        add_status_routes(status_app, self, token=s.admin_token_value(), password=password)
        return library, (status_app if s.status_port else None)

    @property
    def acme(self) -> bool:
        """Automatic HTTPS: TLS_NAME without certificate files, Caddy in front."""
        return bool(self.settings.tls_name) and self.settings.tls_files() is None

    @property
    def caddy_tls(self) -> bool:
        """Caddy in front terminates TLS (and sends the library files): automatic HTTPS, or
        certificate files with SYNCER_TLS_FRONT=caddy (the default)."""
        return self.acme or (self.settings.tls_files() is not None and self.settings.tls_front == "caddy")

    async def _front(self, socket_path: Path, web_started: asyncio.Event,
                     on_started: Callable[[list[str]], None] | None) -> None:
        """Run Caddy in front of the library (unix socket) until stopped; raise if it dies."""
        s = self.settings
        https_port = s.https_port or s.http_port
        certificate = None if self.acme else s.tls_files()
        data = s.certs_dir / "acme" if self.acme else s.resolved_state_dir() / "caddy"
        front = self.front = CaddyFront(s, f"unix/{socket_path}", data, https_port=https_port,
                                        http_port=s.acme_http_port, certificate=certificate)
        try:
            if not await self._until_stopped(web_started.wait()):
                return
            if not await self._until_stopped(front.start(timeout=ACME_START_TIMEOUT)):
                return
            self.thumbprint = front.last_thumbprint
            if certificate is None:
                urls = [f"https://{s.tls_name}{'' if https_port == 443 else f':{https_port}'}/lib.json"]
            else:
                urls = subscription_urls(s.http_host, https_port, tls=True, hostname=s.tls_name or socket.gethostname())
            log.info("subscription URL: %s (certificate SHA-1 thumbprint %s)", " ".join(urls), self.thumbprint)
            if on_started is not None:
                on_started(urls)
            if await self._until_stopped(front.wait()):
                raise OperationFailed(f"caddy (HTTPS for TLS_NAME={s.tls_name or '-'}) exited with code "
                                      f"{front.returncode}" + (f": {front.last_error}" if front.last_error else ""))
        finally:
            cutter = asyncio.ensure_future(self._cut.wait())  # a second stop signal cuts Caddy's downloads
            cutter.add_done_callback(lambda done: None if done.cancelled() else front.kill())
            try:
                await front.stop()
            finally:
                cutter.cancel()

    async def _until_stopped(self, coro) -> bool:
        """Run ``coro`` until it ends (True; its exception is raised) or the daemon stops (False, cancelled)."""
        task = asyncio.ensure_future(coro)
        stopping = asyncio.ensure_future(self.stop.wait())
        try:
            await asyncio.wait({task, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
        if task.done():
            task.result()
            return True
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return False

    async def _serve(self, settings_named: str, app, host: str, port: int, listening: asyncio.Event,
                     on_started: Callable[[list[str]], None] | None = None, **kw) -> None:
        """``serve_app`` whose bind error names the settings behind the address."""
        kw.setdefault("limits", HttpLimits.from_settings(self.settings))

        def started(urls: list[str]) -> None:
            listening.set()
            if on_started is not None:
                on_started(urls)

        try:
            await serve_app(app, host, port, on_started=started, stop_event=self.stop, handle_signals=False, **kw)
        except ConfigError as exc:
            raise ConfigError(f"{settings_named}: {exc}") from None

    async def _all_listening(self, servers: list[asyncio.Task], listening: list[asyncio.Event]) -> bool:
        """Wait until every web server listens (True); raise the error of one that could not start.

        False when the daemon was stopped meanwhile."""
        async def all_set() -> None:
            for event in listening:
                await event.wait()

        ready = asyncio.ensure_future(all_set())
        try:
            await asyncio.wait({ready, *servers}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            ready.cancel()
        if all(e.is_set() for e in listening) and not any(t.done() for t in servers):
            return True
        self.stop.set()
        await asyncio.gather(*servers, return_exceptions=True)
        for task in servers:
            if not task.cancelled() and (exc := task.exception()) is not None:
                raise exc
        return False

    def _redirect(self, listening: asyncio.Event) -> asyncio.Task:
        """The plain-HTTP port that redirects to HTTPS_PORT (certificate files, two ports)."""
        s = self.settings
        assert s.https_port is not None
        return asyncio.create_task(self._serve(
            "settings http_host/http_port", redirect_app(s.tls_name, s.https_port), s.http_host,
            s.http_port, listening, shutdown_grace=1, announce=False,
        ))

    def _start_web(self, on_started: Callable[[list[str]], None] | None
                   ) -> tuple[list[asyncio.Task], list[asyncio.Task], list[asyncio.Event]]:
        """Start the site's web servers (and the Caddy front): (server tasks, front tasks, their listening events)."""
        s = self.settings
        library, status_app = self._apps()
        ssl_context = None
        tls = s.tls_files()
        if tls:
            ssl_context = load_tls_context(*tls)
            self.thumbprint = sha1_thumbprint(tls[0])
            log.info("TLS certificate %s, SHA-1 thumbprint %s", tls[0], self.thumbprint)
        listening = [asyncio.Event()]
        front: list[asyncio.Task] = []
        if self.caddy_tls:  # the app listens on a private unix socket; Caddy serves HTTPS in front of it
            state = s.resolved_state_dir()
            state.mkdir(parents=True, exist_ok=True)
            socket_path = state / "web.sock"
            servers = [asyncio.create_task(self._serve(
                "setting state_dir", library, "", 0, listening[0], unix_path=str(socket_path),
                shutdown_grace=s.shutdown_grace_seconds, cut_event=self._cut,
            ))]
            front = [asyncio.create_task(self._front(socket_path, listening[0], on_started))]
            if tls and s.https_port and s.https_port != s.http_port:  # plain HTTP redirects, as Caddy does
                listening.append(asyncio.Event())
                servers.append(self._redirect(listening[-1]))
        else:
            port_setting = "https_port" if tls and s.https_port else "http_port"
            servers = [asyncio.create_task(self._serve(
                f"settings http_host/{port_setting}", library, s.http_host,
                s.https_port if tls and s.https_port else s.http_port, listening[0], on_started,
                ssl_context=ssl_context, shutdown_grace=s.shutdown_grace_seconds, cut_event=self._cut,
                public_name=s.tls_name if tls else None,
            ))]
            if tls and s.https_port and s.https_port != s.http_port:  # plain HTTP redirects, as Caddy did
                listening.append(asyncio.Event())
                servers.append(self._redirect(listening[-1]))
        if status_app is not None and s.status_port:
            listening.append(asyncio.Event())
            servers.append(asyncio.create_task(self._serve(
                "settings http_host/status_port", status_app, s.http_host, s.status_port, listening[-1],
                ssl_context=ssl_context, shutdown_grace=1,
            )))
        return servers, front, listening
